"""``ctrnet-sim``: synthetic datasets, contact sheets (and rosbags) from the command line.

Examples::

    ctrnet-sim dataset --domain train --num 10000 --out data/sim_train --seed 0 --width 320 --height 240
    ctrnet-sim contact-sheet --domain shifted --out docs/contact_sheet_shifted.png --num 12 --seed 0 --colors 256
    ctrnet-sim bag --domain train --out build/bags/train_static --duration 10 --seed 1 --bump-at 5
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .frame import RenderedFrame

__all__ = ["main", "build_parser", "draw_ground_truth", "contact_sheet", "write_png"]

_LOG = logging.getLogger("ctrnet_sim")

# BGR colours of the overlay.
_VISIBLE_BGR = (60, 220, 60)
_OCCLUDED_BGR = (0, 140, 255)
_OUTLINE_BGR = (255, 220, 0)


def draw_ground_truth(frame: RenderedFrame, *, radius: int = 3, outline: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of ``frame.rgb`` with the ground truth drawn on it.

    Keypoints inside the image are small circles, green when visible and orange when occluded;
    the robot mask's outline is drawn in cyan.
    """
    img = np.ascontiguousarray(frame.rgb[..., ::-1])  # OpenCV draws in BGR
    if outline:
        contours, _ = cv2.findContours(frame.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, _OUTLINE_BGR, 1, lineType=cv2.LINE_AA)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    for (u, v), inside, vis in zip(frame.keypoints_uv, frame.in_image, frame.visible):
        if not inside:
            continue
        centre = (int(round(u * (1 << shift))), int(round(v * (1 << shift))))
        cv2.circle(img, centre, radius << shift, _VISIBLE_BGR if vis else _OCCLUDED_BGR, 1,
                   lineType=cv2.LINE_AA, shift=shift)
    return np.ascontiguousarray(img[..., ::-1])


def contact_sheet(*, domain: str, num: int, seed: int, robot: str = "panda", width: int = 320, height: int = 240,
                  columns: int = 4, cache_dir: str | None = None) -> np.ndarray:
    """A grid of ``num`` randomised frames of ``domain`` with ground truth drawn; (H', W', 3) uint8 RGB.

    Frame ``i`` is frame ``i`` of the dataset with the same ``seed`` (see :func:`generate_frame`).
    """
    from .dataset import generate_frame
    from .randomize import load_domain
    from .render import MujocoRenderer

    config = load_domain(domain)
    tiles = []
    with MujocoRenderer.for_robot(robot, cache_dir=cache_dir, max_width=width, max_height=height) as renderer:
        for i in range(num):
            frame, _ = generate_frame(renderer, config, seed=seed, index=i, width=width, height=height)
            tile = draw_ground_truth(frame)
            cv2.putText(tile, f"{config.name} #{i}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(tile)
    rows = (num + columns - 1) // columns
    gap = 2
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (height + gap): r * (height + gap) + height, c * (width + gap): c * (width + gap) + width] = tile
    return sheet


def write_png(path: str | Path, rgb: np.ndarray, *, colors: int = 0) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG; ``colors`` in 2..256 makes a palette PNG (via Pillow)."""
    if colors:
        if not 2 <= colors <= 256:
            raise ValueError(f"colors must be in 2..256, got {colors}")
        from PIL import Image  # Pillow comes with matplotlib

        img = Image.fromarray(rgb).quantize(colors=colors, method=Image.Quantize.FASTOCTREE,
                                            dither=Image.Dither.NONE)
        img.save(str(path), optimize=True)
    elif not cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctrnet-sim", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--cache-dir", default=None, help="mesh conversion cache (default: build/sim_cache)")
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("dataset", help="render a sharded training dataset (resumable)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ds.add_argument("--domain", default="train", help="randomisation preset (config/sim/<name>.yaml) or YAML path")
    ds.add_argument("--num", type=int, required=True, help="number of frames")
    ds.add_argument("--out", required=True, help="output directory")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--width", type=int, default=320)
    ds.add_argument("--height", type=int, default=240)
    ds.add_argument("--robot", default="panda", help="robot config (config/robots/<name>.yaml)")
    ds.add_argument("--shard-size", type=int, default=256, help="frames per shard file")

    cs = sub.add_parser("contact-sheet", help="grid of randomised frames with ground truth drawn",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cs.add_argument("--domain", default="train")
    cs.add_argument("--out", required=True, help="output image (.png)")
    cs.add_argument("--num", type=int, default=12)
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--robot", default="panda")
    cs.add_argument("--width", type=int, default=320, help="tile width")
    cs.add_argument("--height", type=int, default=240, help="tile height")
    cs.add_argument("--columns", type=int, default=4)
    cs.add_argument("--colors", type=int, default=0,
                    help="write a palette PNG with this many colours (2-256; smaller files), 0 for full colour")

    bg = sub.add_parser("bag", help="record a rosbag2 (static camera, moving robot) with ground-truth YAML",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bg.add_argument("--out", required=True, help="rosbag2 directory to create (must not exist)")
    bg.add_argument("--domain", default="train", help="randomisation preset (config/sim/<name>.yaml) or YAML path")
    bg.add_argument("--duration", type=float, default=10.0, help="seconds")
    bg.add_argument("--seed", type=int, default=0)
    bg.add_argument("--width", type=int, default=640)
    bg.add_argument("--height", type=int, default=480)
    bg.add_argument("--robot", default="panda")
    bg.add_argument("--camera-hz", type=float, default=30.0)
    bg.add_argument("--joint-hz", type=float, default=100.0)
    bg.add_argument("--bump-at", type=float, default=None, help="knock the camera at this time (s): two segments")
    bg.add_argument("--bump-translation", type=float, default=0.03, help="bump displacement, metres")
    bg.add_argument("--bump-rotation", type=float, default=2.0, help="bump rotation, degrees")
    bg.add_argument("--distance", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                    help="camera distance range in metres (overrides the preset's)")
    bg.add_argument("--scene-seed", type=int, default=None,
                    help="record one window of a cell: scene (camera, room, lights) and robot trajectory from this "
                         "seed; --seed then seeds only the image noise and stamp jitter")
    bg.add_argument("--scene-duration", type=float, default=None,
                    help="span of the cell's trajectory, framed by its camera (default: --start + --duration)")
    bg.add_argument("--start", type=float, default=0.0,
                    help="start of this recording's window on the cell's trajectory, seconds (with --scene-seed)")
    bg.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    bg.add_argument("--compress", action="store_true", help="zstd chunk compression (mcap only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ctrnet-sim``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "dataset":
        from .dataset import write_dataset

        out = write_dataset(args.out, num_frames=args.num, seed=args.seed, domain=args.domain, robot=args.robot,
                            width=args.width, height=args.height, shard_size=args.shard_size,
                            cache_dir=args.cache_dir)
        _LOG.info("dataset written to %s", out)
        return 0
    if args.command == "contact-sheet":
        sheet = contact_sheet(domain=args.domain, num=args.num, seed=args.seed, robot=args.robot, width=args.width,
                              height=args.height, columns=args.columns, cache_dir=args.cache_dir)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_png(out, sheet, colors=args.colors)
        _LOG.info("contact sheet written to %s", out)
        return 0
    if args.command == "bag":
        from .recording import BumpSpec, record_sim_bag

        bump = None
        if args.bump_at is not None:
            bump = BumpSpec(at_s=args.bump_at, translation_m=args.bump_translation, rotation_deg=args.bump_rotation)
        summary = record_sim_bag(args.out, domain=args.domain, duration_s=args.duration, seed=args.seed,
                                 width=args.width, height=args.height, robot=args.robot, camera_hz=args.camera_hz,
                                 joint_hz=args.joint_hz, bump=bump, storage=args.storage, compress=args.compress,
                                 cache_dir=args.cache_dir,
                                 domain_overrides={"distance_m": tuple(args.distance)} if args.distance else None,
                                 scene_seed=args.scene_seed, scene_duration_s=args.scene_duration,
                                 start_s=args.start)
        print(f"bag: {summary.bag_path}")
        print(f"ground truth: {summary.groundtruth_path} ({len(summary.groundtruth.segments)} segment(s))")
        for topic, n in summary.message_counts.items():
            print(f"  {topic}: {n} messages")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
