"""``ctrnet-collect``: build an unlabeled-image collection from a rosbag, as ``collector_node`` would live.

Examples::

    ctrnet-collect --bag build/eval/shifted_static --out data/collect/shifted
    ctrnet-collect --bag my_recording --out data/collect/cam1 --model models/panda_ctrnet.onnx \\
        --image-topic /camera/color/image_raw/compressed --max-samples 2000 --quota-mb 1024

Running it again on the same ``--out`` continues the collection (novelty against what is there).
Exit codes: 0 collected (however many samples), 2 bad input (the message says what), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..eval.cli import add_topic_arguments
from .dataset import DEFAULT_MAX_SAMPLES, DEFAULT_QUOTA_BYTES
from .selection import CollectorConfig

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2

_D = CollectorConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctrnet-collect",
        description="Replay a rosbag2 (mcap or sqlite3) through the collector node's selection and save the frames "
                    "that add information (joint-space novelty, sharpness, robot in view) as a collection for "
                    "`ctrnet-train refresh`.")
    p.add_argument("--bag", type=Path, required=True, help="rosbag2 directory (or a single .mcap file)")
    p.add_argument("--out", type=Path, required=True, help="collection directory (created, or continued if it exists)")
    p.add_argument("--model", type=Path, default=None,
                   help="keypoint model (.onnx or .pt) for the robot-in-view check; default: none")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="inference backend (default: by file suffix)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (torch backend)")
    p.add_argument("--robot", default="panda", help="built-in keypoint config name, or a path to one (default panda)")
    add_topic_arguments(p)
    p.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                   help=f"stop once the collection holds this many samples (default {DEFAULT_MAX_SAMPLES})")
    p.add_argument("--quota-mb", type=float, default=DEFAULT_QUOTA_BYTES / 1024 ** 2,
                   help=f"disk quota of the images, MiB (default {DEFAULT_QUOTA_BYTES / 1024 ** 2:.0f})")
    p.add_argument("--min-joint-distance", type=float, default=_D.min_joint_distance,
                   help=f"rad, L2 over the keypoints' joints, to every saved sample (default {_D.min_joint_distance})")
    p.add_argument("--min-sharpness", type=float, default=_D.min_sharpness,
                   help=f"variance of the Laplacian at --sharpness-width (default {_D.min_sharpness})")
    p.add_argument("--sharpness-width", type=int, default=_D.sharpness_width,
                   help=f"measure sharpness at this image width, 0: native (default {_D.sharpness_width})")
    p.add_argument("--min-confidence", type=float, default=_D.min_confidence,
                   help=f"with --model: median keypoint confidence (default {_D.min_confidence})")
    p.add_argument("--min-mask-fraction", type=float, default=_D.min_mask_fraction,
                   help=f"with a mask model: robot mask image fraction (default {_D.min_mask_fraction})")
    p.add_argument("--max-rate-hz", type=float, default=_D.max_rate_hz,
                   help=f"saves per second of image-stamp time, 0: unlimited (default {_D.max_rate_hz})")
    p.add_argument("--joint-wait-s", type=float, default=0.05,
                   help="recorded time an image waits for joint states after its stamp (the node's joint_wait_s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        config = CollectorConfig(min_joint_distance=args.min_joint_distance, min_sharpness=args.min_sharpness,
                                 sharpness_width=args.sharpness_width, min_confidence=args.min_confidence,
                                 min_mask_fraction=args.min_mask_fraction, max_rate_hz=args.max_rate_hz)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_samples < 1 or not args.quota_mb > 0:
        parser.error("--max-samples must be >= 1 and --quota-mb > 0")
    # Imported here: torch/onnxruntime are slow to import and --help should be instant.
    from .replay import CollectInputError, collect_bag

    try:
        result = collect_bag(
            args.bag, args.out, config=config, model=args.model, backend=args.backend, device=args.device,
            robot=args.robot, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
            joint_states_topic=args.joint_states_topic, max_samples=args.max_samples,
            quota_bytes=int(args.quota_mb * 1024 ** 2), max_joint_wait_s=args.joint_wait_s,
            progress=not args.no_progress)
    except CollectInputError as exc:
        print(f"ctrnet-collect: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.summary())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
