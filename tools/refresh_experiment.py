"""The self-supervised refresh experiment of issue #7, end to end, on simulated `shifted`-preset bags.

1. ``ctrnet-eval`` of the pretrained model on a shifted test bag: ADD AUC = A.
2. A *different* shifted bag is replayed (``ctrnet-play``) into a ``collector_node`` subprocess, which
   saves unlabeled samples (image, joints at the stamp, camera info) into a collection.
3. ``ctrnet-train refresh`` on that collection from the pretrained checkpoint, exported to ONNX.
4. ``ctrnet-eval`` of the refreshed model on the same test bag: ADD AUC = B.

Protocol (``--collect-scene``). By default both bags are recorded in one *cell*: one draw of the
shifted preset's camera pose, intrinsics, room, lights and distractors, and one robot trajectory
that the camera frames whole (``--cell-span`` s). The test bag is its first 10 s, the collection bag
the next ``--collect-duration`` s (with its own image noise), so the two share the fixed camera and
never an image: the refresh's use case, a model adapted to the camera it works with. What is left
after them is a spare window for tuning (never tune on the test window). ``--collect-scene own``
instead records the collection bag in a different cell drawn from ``--collect-seed``: a test of
cross-scene generalisation, which the refresh is not designed for.

Writes ``<out>/summary.json`` and ``<out>/summary.md`` (A, B, B - A, wall-clock times, loss curves).
Starts ROS: run it inside a private network namespace, e.g. ``make refresh-experiment``, or
``unshare -n bash -c 'ip link set lo up && .venv/bin/python tools/refresh_experiment.py ...'``.

Usage::

    python tools/refresh_experiment.py [--init models/panda_ctrnet.pt --model models/panda_ctrnet.onnx] \\
        [--collect-scene test|own] [--steps 300] [--collect-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(cmd: list[str], log: Path, *, env=None) -> float:
    """Run ``cmd`` (output to ``log``); returns its wall-clock seconds; raises on failure."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc != 0:
        sys.exit(f"failed ({rc}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def ensure_bag(path: Path, seed: int, duration: float, camera_hz: float, **scene) -> None:
    """A shifted-preset bag at ``path`` (recorded unless complete), camera anywhere in the preset's range."""
    from ctrnet_ros.ros.replay_session import ensure_sim_bag

    ensure_sim_bag(path, duration_s=duration, seed=seed, domain="shifted", distance_m=None, camera_hz=camera_hz,
                   **scene)


def evaluate(bag: Path, model: Path, out: Path, log: Path) -> tuple[dict, float]:
    secs = run([str(Path(PY).parent / "ctrnet-eval"), str(bag), "--model", str(model), "--out", str(out)], log)
    return json.loads((out / "metrics.json").read_text()), secs


def collect_live(bag: Path, out_dir: Path, work: Path, args) -> tuple[int, float]:
    """Replay ``bag`` into a new collection ``out_dir`` (emptied first) through a collector_node subprocess;
    returns (samples saved, seconds)."""
    from ctrnet_ros.ros.replay_session import network_is_private, node_command, use_large_shm_profile

    if not network_is_private():
        sys.exit("this step starts ROS: run inside a private network namespace (make refresh-experiment)")
    shutil.rmtree(out_dir, ignore_errors=True)  # a collection continues where it is: start from none
    use_large_shm_profile(work)  # sets FASTDDS_DEFAULT_PROFILES_FILE (unless the user set one)
    env = dict(os.environ)
    params = {"output_directory": str(out_dir), "max_rate_hz": args.max_rate_hz,
              "min_joint_distance": args.min_joint_distance, "max_samples": args.max_samples}
    cmd = node_command(params, node_name="collector_node", module="ctrnet_ros.ros.collector_node_main")
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    node_log = (work / "collector_node.log").open("w")
    node = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        run([str(Path(PY).parent / "ctrnet-play"), str(bag), "--wait-for-subscribers", "60", "--rate",
             str(args.play_rate)], work / "play.log", env=env)
        time.sleep(2.0)  # let the worker write the last frames
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
        node_log.close()
    from ctrnet_ros.collect.dataset import load_collection

    coll = load_collection(out_dir)
    summary = [line for line in (work / "collector_node.log").read_text().splitlines() if "summary:" in line]
    if summary:  # how many images arrived live and why the others were not saved
        print(summary[-1].split("summary:", 1)[1].strip(), flush=True)
    return len(coll.samples), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", default="models/panda_ctrnet.pt",
                    help="pretrained checkpoint (.pt) behind --model (default: the shipped one, written by "
                         "ctrnet-export --torch-checkpoint)")
    ap.add_argument("--model", default="models/panda_ctrnet.onnx", help="the pretrained model as shipped (ONNX)")
    ap.add_argument("--out", default="build/refresh_experiment")
    ap.add_argument("--collect-scene", choices=["test", "own"], default="test",
                    help="test (default): both bags are windows of one recorded cell, so they share the fixed "
                         "camera, room and lights: the test bag is its first 10 s, the collection bag the next "
                         "--collect-duration s of the robot's motion (never the same image): the refresh's use "
                         "case, a model adapted to the camera it runs on. own: the collection bag is a different "
                         "cell (camera, room, lights) drawn from --collect-seed: cross-scene generalisation")
    ap.add_argument("--test-bag", default=None,
                    help="default: build/exp/cell_test (--collect-scene test) or build/exp/test_shifted (own)")
    ap.add_argument("--test-seed", type=int, default=7001, help="test bag seed (and the cell's, with test)")
    ap.add_argument("--collect-bag", default=None,
                    help="default: build/exp/cell_collect (--collect-scene test) or build/exp/collect_shifted (own)")
    ap.add_argument("--collect-seed", type=int, default=4242, help="collection bag seed (image noise only, with test)")
    ap.add_argument("--cell-span", type=float, default=60.0,
                    help="seconds of the cell's robot trajectory, all framed by its camera (with test): the test "
                         "window, the collection window, and a spare window after them (a labelled validation "
                         "window: tune on it, never on the test window)")
    ap.add_argument("--collect-duration", type=float, default=40.0)
    ap.add_argument("--collect-hz", type=float, default=10.0)
    ap.add_argument("--max-rate-hz", type=float, default=10.0)
    ap.add_argument("--play-rate", type=float, default=1.0,
                    help="replay speed of the collection bag (stamps are unchanged)")
    ap.add_argument("--min-joint-distance", type=float, default=0.05)
    ap.add_argument("--max-samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=0,
                    help="silhouette gradient steps after AdaBN (default 0: AdaBN alone, the variant that raises "
                         "ADD AUC on the shifted cell; 300 lowers the pose-error medians but costs ADD AUC)")
    ap.add_argument("--collect-only", action="store_true",
                    help="only record the bags and collect live (to measure the collector's yield)")
    ap.add_argument("--refresh-args", default="", help="more ctrnet-train refresh options, one string")
    args = ap.parse_args(argv)

    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    same_cell = args.collect_scene == "test"
    args.test_bag = args.test_bag or ("build/exp/cell_test" if same_cell else "build/exp/test_shifted")
    args.collect_bag = args.collect_bag or ("build/exp/cell_collect" if same_cell else "build/exp/collect_shifted")
    test_bag, collect_bag = ROOT / args.test_bag, ROOT / args.collect_bag
    test_s = 10.0
    if same_cell:  # one cell trajectory: test window [0, 10) s, collection window after it
        if args.cell_span < test_s + args.collect_duration:
            sys.exit(f"--cell-span {args.cell_span} s is shorter than the test and collection windows")
        cell = dict(scene_seed=args.test_seed, scene_duration_s=args.cell_span)
        ensure_bag(test_bag, args.test_seed, test_s, 30.0, start_s=0.0, **cell)
        ensure_bag(collect_bag, args.collect_seed, args.collect_duration, args.collect_hz, start_s=test_s, **cell)
    else:
        ensure_bag(test_bag, args.test_seed, test_s, 30.0)
        ensure_bag(collect_bag, args.collect_seed, args.collect_duration, args.collect_hz)

    if args.collect_only:
        n_samples, t_collect = collect_live(collect_bag, out / "collection_only", out, args)
        print(f"collected {n_samples} samples in {t_collect:.0f} s")
        return 0
    before, t_eval_a = evaluate(test_bag, ROOT / args.model, out / "eval_before", out / "eval_before.log")
    print(f"A: ADD AUC {before['add_auc']:.2f} ({before['frames_with_estimate']}/{before['frames']} frames)")

    coll_dir = out / "collection"
    n_samples, t_collect = collect_live(collect_bag, coll_dir, out, args)
    print(f"collected {n_samples} samples in {t_collect:.0f} s")

    refreshed = out / "refreshed.onnx"
    t_refresh = run([str(Path(PY).parent / "ctrnet-train"), "refresh", "--data", str(coll_dir), "--init",
                     str(ROOT / args.init), "--out", str(out / "refresh"), "--steps", str(args.steps),
                     "--export", str(refreshed), "--quiet", *args.refresh_args.split()], out / "refresh.log")
    after, t_eval_b = evaluate(test_bag, refreshed, out / "eval_after", out / "eval_after.log")
    print(f"B: ADD AUC {after['add_auc']:.2f} ({after['frames_with_estimate']}/{after['frames']} frames)")

    keys = ("frames", "frames_with_estimate", "add_auc", "add_median_m", "trans_err_median_m", "rot_err_median_deg")
    summary = {"A_add_auc": before["add_auc"], "B_add_auc": after["add_auc"],
               "B_minus_A": after["add_auc"] - before["add_auc"], "before": {k: before[k] for k in keys},
               "after": {k: after[k] for k in keys}, "samples_collected": n_samples,
               "wall_clock_s": {"collect": t_collect, "refresh": t_refresh, "eval_before": t_eval_a,
                                "eval_after": t_eval_b},
               "loss_curves": str(out / "refresh" / "curves.png"), "test_bag": str(test_bag),
               "collect_bag": str(collect_bag), "collect_scene": args.collect_scene, "init": args.init,
               "steps": args.steps,
               "refresh_args": args.refresh_args}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [f"# Self-supervised refresh experiment ({out.name})", "",
          "| | pretrained (A) | refreshed (B) |", "|---|---:|---:|"]
    for k in keys:
        md.append(f"| {k} | {before[k]:.4g} | {after[k]:.4g} |")
    md += ["", f"**B - A = {summary['B_minus_A']:+.2f} ADD AUC points** on `{args.test_bag}`; "
               f"{n_samples} samples collected live by collector_node from `{args.collect_bag}` "
               f"({'the same cell, another recording' if same_cell else 'another cell'}).", "",
           f"Wall clock: collection {t_collect:.0f} s, refresh {t_refresh:.0f} s ({args.steps} steps), "
           f"evaluations {t_eval_a:.0f} + {t_eval_b:.0f} s.", "", "![loss curves](refresh/curves.png)", ""]
    (out / "summary.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
