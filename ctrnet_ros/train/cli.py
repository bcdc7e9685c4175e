"""``ctrnet-train``: supervised pretraining and validation from the command line.

Examples::

    # CPU, in slices of at most 60 minutes; re-run the same command to continue
    ctrnet-train pretrain --config cpu_small --data data/sim_train_320 --val data/sim_val_640 \\
        --out runs/cpu_small --resume --time-limit 60

    # GPU (AMP, batch 64)
    ctrnet-train pretrain --config gpu --data data/sim_train_320 --val data/sim_val_640 --out runs/gpu

    # the node's pipeline (load_detector + CameraToRobotEstimator) on a dataset
    ctrnet-train validate --model models/panda_ctrnet.onnx --data data/sim_val_640 --out runs/val

    # self-supervised refresh on images collected from the target camera (ctrnet-collect / collector_node)
    ctrnet-train refresh --data data/collected --init runs/cpu_small/best.pt --out runs/refresh \\
        --export models/panda_ctrnet_refreshed.onnx
    # ... on several GPUs (one process per GPU, DistributedDataParallel)
    torchrun --nproc_per_node 4 -m ctrnet_ros.train.cli refresh --data ... --init ... --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Sequence

from .config import PRESETS, config_to_dict, get_preset

__all__ = ["main", "build_parser"]

logger = logging.getLogger("ctrnet_train")

# CLI option -> TrainConfig field, for options that override the preset.
_OVERRIDES = {
    "data": "data", "val": "val", "out": "out_dir", "steps": "steps", "epochs": "epochs", "arch": "arch",
    "batch_size": "batch_size", "lr": "lr", "seed": "seed", "device": "device", "threads": "threads",
    "workers": "num_workers", "time_limit": "time_limit_min", "val_every": "val_every",
    "val_frames": "val_max_frames", "checkpoint_every": "checkpoint_every", "allow_incomplete": "allow_incomplete",
    "amp": "amp", "cpu_bf16": "cpu_bf16", "input_size": "input_size", "sigma": "heatmap_sigma",
    "log_every": "log_every", "init": "init",
}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 320x240, got {text!r}") from exc


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctrnet-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="supervised training on ctrnet-sim datasets")
    p.add_argument("--config", default="cpu_small", choices=sorted(PRESETS), help="preset (default: cpu_small)")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR", help="training dataset directories")
    p.add_argument("--val", default=None, metavar="DIR", help="validation dataset directory")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: the preset's runs/<name>)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps of the whole run")
    p.add_argument("--epochs", type=float, default=None, help="run length in epochs instead of steps")
    p.add_argument("--init", default=None, metavar="PT",
                   help="warm start from this checkpoint's weights (same arch/model config): new optimizer and LR "
                        "schedule, e.g. a cpu_finetune run after cpu_small")
    p.add_argument("--resume", action="store_true",
                   help="continue <out>/last.pt if it exists, with its stored config (only where/how long it runs "
                        "may change: data/val paths, --steps, --time-limit, threads, workers, intervals)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N", help="end this slice after N steps")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="end this slice cleanly after MIN minutes (last.pt written)")
    p.add_argument("--arch", default=None, help="registry architecture (overrides the preset)")
    p.add_argument("--model", type=_override, nargs="+", default=None, metavar="FIELD=VALUE",
                   help="model config overrides, e.g. trunk_width=24 head_channels=48")
    p.add_argument("--set", dest="set_fields", type=_override, nargs="+", default=None, metavar="FIELD=VALUE",
                   help="any other TrainConfig field, e.g. coord_start_step=200 w_coord=0.05 (JSON values)")
    p.add_argument("--input-size", type=_size, default=None, metavar="WxH")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--sigma", type=float, default=None, help="heatmap target sigma, heatmap cells")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--val-every", type=int, default=None, metavar="N", help="validate every N steps (0: per epoch)")
    p.add_argument("--val-frames", type=int, default=None, metavar="N", help="validate on the first N frames")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N")
    p.add_argument("--log-every", type=int, default=None, metavar="N")
    p.add_argument("--allow-incomplete", action="store_true", default=None,
                   help="train on the finished shards of a dataset still being written")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on CUDA")
    p.add_argument("--cpu-bf16", dest="cpu_bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CPU (default: the preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    v = sub.add_parser("validate", help="metrics of a model file through load_detector + CameraToRobotEstimator")
    v.add_argument("--model", required=True, metavar="PATH", help=".onnx or .pt model file")
    v.add_argument("--data", required=True, metavar="DIR", help="ctrnet-sim dataset (any camera resolution)")
    v.add_argument("--out", default=None, metavar="DIR", help="write metrics.json and frames.csv here")
    v.add_argument("--max-frames", type=int, default=0, metavar="N", help="first N frames only (0: all)")
    v.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch"))
    v.add_argument("--device", default="cpu", help="torch device for .pt models")
    v.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op / torch threads (0: default)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser("refresh", help="self-supervised refresh on unlabeled collected images (CtRNet stage 2)")
    r.add_argument("--data", required=True, metavar="DIR", help="collection written by ctrnet-collect / collector_node")
    r.add_argument("--init", required=True, metavar="PT", help="pretrained checkpoint (ctrnet-train best.pt)")
    r.add_argument("--out", default="runs/refresh", metavar="DIR", help="run directory (default: runs/refresh)")
    r.add_argument("--export", default=None, metavar="ONNX",
                   help="export the refreshed model here (ONNX + model card), ready for the node's ~/reload")
    r.add_argument("--steps", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--robot", default=None, help="keypoint spec (default: the checkpoint's robot)")
    r.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (under torchrun: one GPU per process)")
    r.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    r.add_argument("--workers", type=int, default=None, help="image-loading worker processes")
    r.add_argument("--val", default=None, metavar="DIR",
                   help="labelled ctrnet-sim dataset, logged for monitoring only (never used for training)")
    r.add_argument("--val-every", type=int, default=None, metavar="N")
    r.add_argument("--val-frames", type=int, default=None, metavar="N")
    r.add_argument("--time-limit", type=float, default=None, metavar="MIN")
    r.add_argument("--resume", action="store_true", help="continue <out>/last.pt")
    r.add_argument("--set", dest="set_fields", type=_override, nargs="+", default=None, metavar="FIELD=VALUE",
                   help="any other RefreshConfig field, e.g. w_mask_refine=0.2 render_scale=0.5")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("presets", help="print the training presets as JSON")
    return parser


def _pretrain(args) -> int:
    from ..net.registry import ModelFileError
    from ..sim.dataset import DatasetError
    from .pretrain import TrainingError, pretrain

    config = get_preset(args.config)
    changes, explicit = {}, set()
    for option, fieldname in _OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            changes[fieldname] = value
            explicit.add(fieldname)
    for fieldname, value in args.set_fields or []:
        if fieldname == "augment" and isinstance(value, dict):
            value = dataclasses.replace(config.augment, **value)
        changes[fieldname] = value
        explicit.add(fieldname)
    # The preset's model overrides belong to the preset's architecture.
    preset_model = config.model if changes.get("arch", config.arch) == config.arch else {}
    if args.model or preset_model is not config.model:
        changes["model"] = {**preset_model, **dict(args.model or [])}
        explicit.add("model")
    try:
        config = config.replace(**changes)
    except (TypeError, ValueError) as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    if not config.data:
        logger.error("no training data: pass --data DIR [DIR ...] (datasets written by ctrnet-sim dataset)")
        return 2
    try:
        summary = pretrain(config, resume=args.resume, stop_after=args.stop_after, explicit_fields=explicit,
                           progress=not args.quiet)
    except (TrainingError, DatasetError, ModelFileError) as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    m = summary["best_metrics"]
    logger.info("step %d/%d (%.1f min of training); best: %s", summary["step"], summary["total_steps"],
                summary["train_seconds"] / 60, ", ".join(f"{k} {v:.3g}" for k, v in m.items()) or "no validation")
    if summary["stopped_early"]:
        logger.info("not finished: re-run with --resume to continue")
    keys = ("step", "total_steps", "stopped_early", "last", "best", "log", "curves")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0


def _validate(args) -> int:
    from ..inference import ModelLoadError
    from ..sim.dataset import DatasetError
    from .validate import format_metrics_table, validate_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        metrics = validate_model(args.model, args.data, out_dir=args.out, max_frames=args.max_frames,
                                 backend=args.backend, device=args.device, intra_op_threads=args.threads,
                                 progress=not args.quiet)
    except (ModelLoadError, DatasetError) as exc:
        logger.error("%s", exc)
        return 1
    print(format_metrics_table(metrics))
    return 0


_REFRESH_OPTIONS = {"data": "data", "init": "init", "out": "out_dir", "steps": "steps", "batch_size": "batch_size",
                    "lr": "lr", "robot": "robot", "device": "device", "threads": "threads", "workers": "num_workers",
                    "val": "val", "val_every": "val_every", "val_frames": "val_max_frames",
                    "time_limit": "time_limit_min"}


def _refresh(args) -> int:
    from .refresh import RefreshConfig, RefreshError, refresh

    changes = {f: getattr(args, o) for o, f in _REFRESH_OPTIONS.items() if getattr(args, o) is not None}
    changes.update(dict(args.set_fields or []))
    try:
        config = RefreshConfig().replace(**changes)
    except TypeError as exc:
        logger.error("invalid refresh configuration: %s", exc)
        return 2
    try:
        summary = refresh(config, resume=args.resume, progress=not args.quiet)
    except RefreshError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    if summary.get("rank", 0) != 0:
        return 0
    logger.info("refresh: %d/%d steps in %.1f min -> %s; loss curves %s", summary["step"], summary["steps"],
                summary["train_seconds"] / 60, summary["refreshed"], summary["curves"])
    if args.export and not summary["stopped_early"]:
        from .export_cli import ExportError, export_checkpoint

        try:
            card = export_checkpoint(summary["refreshed"], args.export, progress=not args.quiet)
        except ExportError as exc:
            logger.error("export: %s", exc)
            return 1
        summary["export"] = args.export
        summary["export_mb"] = card["model"]["file_mb"]
    elif args.export:
        logger.info("not finished (time limit): re-run with --resume to finish before exporting")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("val_metrics", "problems")}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "refresh":
        return _refresh(args)
    print(json.dumps({name: config_to_dict(c) for name, c in PRESETS.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
