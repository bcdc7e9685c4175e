"""CPU latency of the registry networks: torch eager vs ONNX Runtime, image -> keypoints.

Measures the whole :class:`~ctrnet_ros.net.keypoint_net.KeypointNet` (network + normalisation +
decoding), batch 1, untrained weights (latency does not depend on them), median of ``--runs``
timed runs after ``--warmup`` untimed ones, with torch and ONNX Runtime each limited to
``--threads`` intra-op threads. Prints a Markdown table:

    .venv/bin/python bench/bench_models.py [--models ctrnet_resnet18 ctrnet_slim belief_heindl]
                                           [--size 320x240] [--runs 20] [--warmup 3] [--threads 2]

GMAC counts multiply-accumulates of the convolutions (the bulk of the work) at that input size.
The parity column is ORT vs torch on the untrained heatmaps (probabilities); keypoint parity needs
a trained model and is covered by test/test_net.py.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ctrnet_ros.net import KeypointNet, build_model
from ctrnet_ros.net.export import export_onnx

logger = logging.getLogger("bench_models")

DEFAULT_MODELS = ("ctrnet_resnet18", "ctrnet_slim", "belief_heindl")


def conv_gmacs(model: nn.Module, image: torch.Tensor) -> float:
    """Multiply-accumulates (1e9) of all Conv2d / ConvTranspose2d layers for one forward pass."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):  # every input element meets the whole kernel
            per_sample = args[0].numel() // args[0].shape[0]
            total += per_sample * module.out_channels // module.groups * kernel
        else:  # every output element sums in_channels / groups * kernel products
            per_sample = out.numel() // out.shape[0]
            total += per_sample * module.in_channels // module.groups * kernel

    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(hook) for m in convs]
    with torch.inference_mode():
        model(image)
    for h in handles:
        h.remove()
    return total / 1e9


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(name: str, size: tuple[int, int], runs: int, warmup: int, threads: int, workdir: Path) -> dict:
    import onnxruntime as ort

    w, h = size
    model, config = build_model(name, input_size=(w, h))
    net = KeypointNet(model).eval()
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    params = sum(p.numel() for p in model.parameters())
    gmacs = conv_gmacs(model, image)

    def run_torch():
        with torch.inference_mode():
            net(image)

    torch_ms = median_ms(run_torch, runs, warmup)

    report = export_onnx(net, workdir / f"{name}.onnx", (w, h), atol=None)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(report["path"], options, providers=["CPUExecutionProvider"])
    feed = {"image": image.numpy()}
    ort_ms = median_ms(lambda: session.run(None, feed), runs, warmup)
    return {"name": name, "k": config.num_keypoints, "params": params, "gmacs": gmacs, "torch_ms": torch_ms,
            "ort_ms": ort_ms, "onnx_mb": report["file_bytes"] / 1e6,
            "parity": report["parity_max_abs_by_output"]["heatmaps"], "has_mask": report["has_mask"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--size", default="320x240", help="input W x H")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        for name in args.models:
            logger.info("benchmarking %s", name)
            rows.append(bench(name, (w, h), args.runs, args.warmup, args.threads, Path(tmp)))

    print(f"CPU latency, batch 1, {w}x{h} input, {args.threads} threads, median of {args.runs} runs "
          f"after {args.warmup} warm-up (torch {torch.__version__}, image -> keypoints incl. decoding)")
    print()
    print("| model | K | params | conv GMAC | torch eager ms | ONNX Runtime ms | .onnx MB | mask | heatmap parity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['k']} | {r['params'] / 1e6:.2f} M | {r['gmacs']:.1f} | {r['torch_ms']:.1f} | "
              f"{r['ort_ms']:.1f} | {r['onnx_mb']:.1f} | {'yes' if r['has_mask'] else 'no'} | {r['parity']:.1e} |")


if __name__ == "__main__":
    main()
