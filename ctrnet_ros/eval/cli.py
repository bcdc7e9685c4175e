"""``ctrnet-eval``: replay a rosbag through the calibration pipeline and report against ground truth.

Examples::

    ctrnet-eval build/bags/train_static                      # ground truth and model by default
    ctrnet-eval my_recording --ground-truth gt.yaml --model models/panda_ctrnet.onnx \\
        --image-topic /camera/color/image_raw/compressed --out eval/my_recording

Exit codes: 0 evaluated (whatever the accuracy), 2 bad input (the message says what), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..core.pipeline import MODES
from ..sim.bag import DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_JOINT_STATES_TOPIC

__all__ = ["main", "build_parser", "add_topic_arguments", "EXIT_OK", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2

_LOG = logging.getLogger("ctrnet_eval")


def add_topic_arguments(p: argparse.ArgumentParser) -> None:
    """``--image-topic``, ``--camera-info-topic`` and ``--joint-states-topic``: the bag's inputs, as the node
    subscribes to them (also ``ctrnet-collect``'s)."""
    p.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC,
                   help=f"sensor_msgs/Image or CompressedImage topic (default {DEFAULT_IMAGE_TOPIC})")
    p.add_argument("--camera-info-topic", default=DEFAULT_CAMERA_INFO_TOPIC,
                   help=f"default {DEFAULT_CAMERA_INFO_TOPIC}")
    p.add_argument("--joint-states-topic", default=DEFAULT_JOINT_STATES_TOPIC,
                   help=f"default {DEFAULT_JOINT_STATES_TOPIC}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctrnet-eval",
        description="Replay a rosbag2 (mcap or sqlite3) through the calibration node's pipeline and compare with "
                    "ground truth: metrics.json, frames.csv, plots and report.md in --out.")
    p.add_argument("bag", type=Path, help="rosbag2 directory (or a single .mcap file)")
    p.add_argument("--ground-truth", type=Path, default=None,
                   help="ground-truth YAML (ctrnet_ros.sim format); default: BAG/groundtruth.yaml")
    p.add_argument("--model", type=Path, default=None,
                   help="keypoint model, .onnx or .pt; default: the shipped models/<robot>_ctrnet.onnx")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="inference backend (default: by file suffix)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (torch backend)")
    p.add_argument("--threads", type=int, default=0,
                   help="inference threads (default 0: the backend's default, all cores)")
    add_topic_arguments(p)
    p.add_argument("--robot", default="panda", help="built-in keypoint config name, or a path to one (default panda)")
    p.add_argument("--mode", choices=MODES, default="static",
                   help="static: fused calibration of a fixed camera; moving: filtered per-frame poses")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ./ctrnet_eval/<bag name>)")
    p.add_argument("--no-plots", action="store_true", help="write metrics.json, frames.csv and report.md only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Imported here: torch/onnxruntime/matplotlib are slow to import and --help should be instant.
    from .replay import EvalError, evaluate_bag
    from .report import format_summary, write_report

    out = args.out if args.out is not None else Path("ctrnet_eval") / (args.bag.resolve().name or "bag")
    try:
        result = evaluate_bag(
            args.bag, args.ground_truth, model=args.model, backend=args.backend, device=args.device,
            threads=args.threads, robot=args.robot, image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic, joint_states_topic=args.joint_states_topic, mode=args.mode,
            progress=not args.no_progress)
    except EvalError as exc:
        print(f"ctrnet-eval: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        metrics = write_report(result, out, plots=not args.no_plots)
    except OSError as exc:
        print(f"ctrnet-eval: error: cannot write the report to {out}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_summary(metrics, report_path=out / "report.md"))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
