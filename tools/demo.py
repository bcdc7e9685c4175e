#!/usr/bin/env python3
"""``make demo``: a simulated rosbag replayed into ctrnet_node; the published transform vs ground truth.

Steps: (1) record the 10 s static-camera sim bag ``build/demo/bag_static`` (or reuse it); (2) start
``ctrnet_node`` as a subprocess with the model; (3) replay the bag in real time; (4) listen on
``/tf``, ``/tf_static`` and ``/diagnostics``; (5) print the final transform, its error against the
bag's ``groundtruth.yaml``, the time to the first TF, the TF rate and the share of frames processed,
then save the calibration through ``~/save``.

Run it inside a private network namespace (``make demo`` does); it refuses otherwise, since DDS
discovery would go out of every interface. Exit status: 0 on success, 1 if the node published no TF
or failed, 2 for a set-up problem (model missing, not isolated).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="models/panda_ctrnet.onnx", help="keypoint model (ONNX or torch checkpoint)")
    p.add_argument("--bag", default="build/demo/bag_static", help="sim bag to record or reuse")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--out", default="build/demo", help="folder for the node log and the saved calibration")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra ctrnet_node parameter (repeatable)")
    return p.parse_args(argv)


def _fail(code: int, message: str) -> int:
    print(f"demo: {message}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    model = Path(args.model)
    if not model.is_file():
        return _fail(2, f"model file {model} not found. Train and export one (see README, `ctrnet-train` / "
                        f"`ctrnet-export`) or pass --model PATH.")
    from ctrnet_ros.ros.replay_session import NodeProcessError, ReplaySession, ensure_sim_bag, network_is_private

    if not network_is_private() or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        return _fail(2, "run this through `make demo` (a private network namespace with loopback only and "
                        "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST); DDS traffic must not leave the machine")

    import numpy as np

    from ctrnet_ros.core import se3
    from ctrnet_ros.eval.bagio import bag_info
    from ctrnet_ros.sim.groundtruth import GroundTruth

    bag = Path(args.bag)
    if not (bag / "metadata.yaml").is_file():
        print(f"demo: recording the 10 s sim bag {bag} (once; about a minute)...", flush=True)
    bag = ensure_sim_bag(bag, duration_s=10.0, seed=1, width=640, height=480, domain="train")
    info = bag_info(bag)
    gt = GroundTruth.load(bag / "groundtruth.yaml")
    out = Path(args.out)
    params = {"model": str(model), "save_directory": str(out / "calibration")}
    for item in args.param:
        name, sep, value = item.partition(":=")
        if not sep:
            return _fail(2, f"--param expects NAME:=VALUE, got {item!r}")
        params[name] = value

    with ReplaySession(bag, params, log_path=out / "ctrnet_node.log", rate=args.rate) as session:
        try:
            session.wait_until_ready()
        except NodeProcessError as exc:
            return _fail(1, str(exc))
        played = session.play()
        session.wait_until_idle()
        saved = session.call_service("save")
        diag = session.last_diagnostic()
        kv = session.diagnostic_values()
        exit_code = session.stop_node()
        rec = session.rec
        images = dict(rec.image_published_s)
        tfs = [t for t in rec.tf if t.child == gt.child_frame or t.parent == gt.child_frame]

    n_images = sum(n for t, n in played.published.items() if t in session.image_topics)
    processed = int(kv.get("processed frames", 0) or 0)
    print(f"bag        {bag} ({info.end_ns / 1e9 - info.start_ns / 1e9:.1f} s, {n_images} images), model {model}")
    frames_line = (f"frames            {n_images} published, {processed} processed "
                   f"({processed / max(n_images, 1):.0%}), {kv.get('dropped frames', '?')} dropped, "
                   f"rejections: {kv.get('error counts', '?')}")
    if not tfs:
        print(frames_line)
        print(f"no TF was published. node diagnostics: {diag.message if diag else '(none)'}; log: "
              f"{out / 'ctrnet_node.log'}")
        return 1

    def T_of(t):
        T = se3.transform_from_translation_quat(t.translation, t.rotation)
        return T if t.parent == gt.parent_frame else se3.invert_transform(T)

    def error_at(t):
        T_true = gt.T_parent_child_at((t.stamp_ns - info.start_ns) * 1e-9)
        if T_true is None:
            return float("nan"), float("nan")
        T = T_of(t)
        return se3.translation_error(T, T_true) * 1e3, se3.rotation_error_deg(T, T_true)

    final = max(tfs, key=lambda t: (t.stamp_ns, t.received_s))
    e_mm, e_deg = error_at(final)
    print(f"final TF   {final.parent} -> {final.child} on {'/tf_static' if final.static else '/tf'}, "
          f"stamp {final.stamp_ns / 1e9:.3f}")
    print("  translation [m]     " + "  ".join(f"{v:+.5f}" for v in final.translation))
    print("  rotation [x y z w]  " + "  ".join(f"{v:+.6f}" for v in final.rotation))
    print(f"error vs ground truth  {e_mm:.2f} mm, {e_deg:.3f} deg")
    by_time = []
    for horizon in (1.0, 3.0, 10.0):
        upto = [t for t in tfs if t.stamp_ns <= info.start_ns + horizon * 1e9 + 1e6]
        if upto:
            mm, deg = error_at(max(upto, key=lambda t: t.stamp_ns))
            by_time.append(f"{horizon:g} s: {mm:.2f} mm / {deg:.3f} deg")
        else:
            by_time.append(f"{horizon:g} s: no TF yet")
    print("  fused, by bag time    " + ";  ".join(by_time))
    first_image_s = min(images.values()) if images else float("nan")
    first_tf_s = min(t.received_s for t in tfs)
    dyn = sorted(t.received_s for t in tfs if not t.static)
    rate = (len(dyn) - 1) / (dyn[-1] - dyn[0]) if len(dyn) > 2 else float("nan")
    n_static = sum(t.static for t in tfs)
    print(f"time to first TF  {first_tf_s - first_image_s:.2f} s after the first image")
    print(f"TF published      {len(dyn)} on /tf ({rate:.1f} Hz while converging), {n_static} on /tf_static; "
          f"converged: {kv.get('converged', '?')} ({kv.get('fused frames', '?')} frames fused)")
    print(frames_line)
    latencies = [t.received_s - images[t.stamp_ns] for t in tfs if not t.static and t.stamp_ns in images]
    if latencies:
        print(f"image -> TF latency  median {statistics.median(latencies) * 1e3:.0f} ms, "
              f"p95 {np.percentile(latencies, 95) * 1e3:.0f} ms (wall clock, /tf only)")
    print(f"diagnostics       {diag.message if diag else '(none)'}")
    if "outline refinement" in kv:
        print(f"outline fit       {kv['outline refinement']}")
    if saved is not None:
        print(f"~/save            {saved.message}")
    if exit_code != 0:
        print(f"ctrnet_node exited with status {exit_code}; log: {out / 'ctrnet_node.log'}")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
