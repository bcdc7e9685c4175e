"""ctrnet_node speed on a 30 Hz 640x480 sim stream: frames processed, image-to-TF latency, node overhead.

The bag (``build/demo/bag_static``, recorded once as ``make demo`` does) is replayed in real time into
a ``ctrnet_node`` subprocess. For every image the player records the wall time at which it published
that stamp; the listener records the wall time at which the TF with that stamp arrived. Their
difference is the end-to-end latency (transport, decode, letterbox, inference, PnP, publication,
transport back). ``static_when_converged`` is off so that every processed frame appears on ``/tf``.
Then the same detector runs alone on the same frames, in this process, with the node stopped: the
bare inference time. The node-overhead ratio is median end-to-end / median bare (goal <= 1.25).

Run: make bench (inside a private network namespace), or
     .venv/bin/python bench/bench_node.py [--model models/panda_ctrnet.onnx] [--frames 60]
Skips (exit 0, with a message) when the model file is missing or the network is not isolated.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def bare_inference_ms(model: str, bag: Path, frames: int) -> list[float]:
    """detect() alone on the bag's first ``frames`` images, letterboxed as the estimator does (ms each)."""
    from ctrnet_ros.core.msgfields import camera_info_msg_to_camera, image_msg_to_rgb
    from ctrnet_ros.eval.bagio import bag_topics, read_bag_messages
    from ctrnet_ros.inference import load_detector

    detector = load_detector(model)
    topics = bag_topics(bag)
    image_topic = next(t for t, ty in topics.items() if ty == "sensor_msgs/msg/Image")
    info_topic = next(t for t, ty in topics.items() if ty == "sensor_msgs/msg/CameraInfo")
    camera, inputs = None, []
    for topic, _, msg in read_bag_messages(bag, [image_topic, info_topic]):
        if topic == info_topic and camera is None:
            camera = camera_info_msg_to_camera(msg)
        elif topic == image_topic and camera is not None:
            inputs.append(camera.letterbox_transform(*detector.input_size).apply_image(image_msg_to_rgb(msg)))
            if len(inputs) >= frames:
                break
    for img in inputs[:3]:  # warm-up (allocations, kernel selection)
        detector.detect(img)
    times = []
    for img in inputs:
        t0 = time.perf_counter()
        detector.detect(img)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=None,
                    help="keypoint model(s), ONNX or torch checkpoint, each benchmarked in turn (default: the "
                         "shipped models/panda_ctrnet.onnx and, if present, its INT8 variant)")
    ap.add_argument("--bag", default="build/demo/bag_static", help="30 Hz 640x480 sim bag (recorded if missing)")
    ap.add_argument("--frames", type=int, default=100, help="frames for the bare-inference timing")
    ap.add_argument("--executor-threads", type=int, nargs="+", default=[1],
                    help="node parameter executor_threads, each value benchmarked in turn (e.g. 1 2)")
    ap.add_argument("--outline", nargs="+", choices=("on", "off"), default=["on"],
                    help="node parameter outline.enabled, each benchmarked in turn (on off: what the background "
                         "outline fit costs the frame rate)")
    ap.add_argument("--spin-wait", nargs="+", choices=("on", "off"), default=["off"],
                    help="node parameter inference_spin_wait (default off, as the node's), each benchmarked in "
                         "turn (the bare inference always runs with onnxruntime's own defaults: spinning, one "
                         "thread per core, its fastest alone)")
    ap.add_argument("--inference-threads", type=int, nargs="+", default=[0],
                    help="node parameter inference_threads, each benchmarked in turn (0: one per core)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    models = args.model or ["models/panda_ctrnet.onnx"] + [m for m in ["models/panda_ctrnet_int8.onnx"]
                                                           if Path(m).is_file()]
    missing = [m for m in models if not Path(m).is_file()]
    if missing:
        print(f"bench_node: skipped: model file(s) {missing} not found (train/export one, or pass --model)")
        return 0
    from ctrnet_ros.ros.replay_session import ensure_sim_bag, network_is_private

    if not network_is_private() or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        print("bench_node: skipped: run through `make bench` (private network namespace, loopback-only DDS)")
        return 0
    bag = ensure_sim_bag(args.bag, duration_s=10.0, seed=1, width=640, height=480, domain="train")
    rows = []
    for model, threads, outline, spin, inf_threads in itertools.product(
            models, args.executor_threads, args.outline, args.spin_wait, args.inference_threads):
        status, row = bench_model(model, bag, args.frames, threads, outline=outline == "on", spin_wait=spin == "on",
                                  inference_threads=inf_threads)
        if status:
            return status
        rows.append(row)
    if len(rows) > 1:
        print("\nSame run, against the first (= 1.00):")
        print("| model | executor threads | outline fit | spin wait | inference threads | frames processed | "
              "median latency | bare inference | overhead ratio |")
        print("|---|---:|---|---|---:|---:|---:|---:|---:|")
        base = rows[0]
        for r in rows:
            print(f"| {r['model']} | {r['threads']} | {'on' if r['outline'] else 'off'} | "
                  f"{'on' if r['spin_wait'] else 'off'} | {r['inference_threads'] or 'default'} | {r['processed']:.0%} | "
                  f"{r['e2e'] / base['e2e']:.2f} | {r['bare'] / base['bare']:.2f} | {r['e2e'] / r['bare']:.2f} |")
    return 0


def bench_model(model: str, bag: Path, frames: int, executor_threads: int = 1, *,
                outline: bool = True, spin_wait: bool = True, inference_threads: int = 0) -> tuple[int, dict]:
    """One model through the node on the bag; prints its table. Returns (exit status, summary row)."""
    from ctrnet_ros.ros.replay_session import NodeProcessError, ReplaySession

    params = {"model": model, "static_when_converged": False, "executor_threads": executor_threads,
              "outline.enabled": outline, "inference_spin_wait": spin_wait, "inference_threads": inference_threads}
    with ReplaySession(bag, params, log_path=ROOT / "build" / "bench" / "ctrnet_node.log") as session:
        try:
            session.wait_until_ready()
        except NodeProcessError as exc:
            print(f"bench_node: {exc}", file=sys.stderr)
            return 1, {}
        played = session.play()
        session.wait_until_idle()
        kv = session.diagnostic_values()
        session.stop_node()
        published = dict(session.rec.image_published_s)
        tf = [t for t in session.rec.tf if not t.static]
    n_images = len(published)
    processed = int(kv.get("processed frames", 0) or 0)
    latency_ms = [(t.received_s - published[t.stamp_ns]) * 1e3 for t in tf if t.stamp_ns in published]
    bare = bare_inference_ms(model, bag, frames)

    def pct(x, q):
        return float(np.percentile(x, q)) if x else float("nan")

    e2e, inf = statistics.median(latency_ms) if latency_ms else float("nan"), statistics.median(bare)
    ratio = e2e / inf
    print(f"\nctrnet_node on {bag} (640x480 at 30 Hz, {n_images} images, {os.cpu_count()} CPUs), model {model}, "
          f"executor_threads {executor_threads}, outline fit {'on' if outline else 'off'}, "
          f"spin wait {'on' if spin_wait else 'off'}, inference threads {inference_threads or 'default'}")
    print("| metric | value |")
    print("|---|---:|")
    print(f"| frames processed | {processed} / {n_images} ({processed / max(n_images, 1):.0%}) |")
    print(f"| frames dropped (latest frame wins) | {kv.get('dropped frames', '?')} |")
    print(f"| frames rejected | {kv.get('rejected frames', '?')} ({kv.get('error counts', '')}) |")
    print(f"| TF messages with a known image stamp | {len(latency_ms)} |")
    print(f"| image -> TF latency, median | {e2e:.1f} ms |")
    print(f"| image -> TF latency, p95 | {pct(latency_ms, 95):.1f} ms |")
    print(f"| bare inference (same frames, node stopped), median | {inf:.1f} ms (p95 {pct(bare, 95):.1f}) |")
    print(f"| node overhead ratio, end-to-end / bare (goal <= 1.25) | {ratio:.2f} |")
    stages = [k for k in kv if k.endswith(" median [ms]")]
    if stages:  # the node's own view of the last diagnostics period (medians)
        print("| inside the node (last period): " + ", ".join(f"{k.replace(' median [ms]', '')} {kv[k]}"
                                                             for k in stages) + " ms |  |")
    print(f"| player lag behind schedule, worst | {played.max_lag_s * 1e3:.0f} ms |")
    if not latency_ms:
        print(f"bench_node: no TF was published, so no latency: {kv.get('last error', '?')}")
    return 0, {"model": model, "threads": executor_threads, "outline": outline, "spin_wait": spin_wait,
               "inference_threads": inference_threads,
               "processed": processed / max(n_images, 1), "e2e": e2e, "bare": inf}


if __name__ == "__main__":
    sys.exit(main())
