"""Speed and accuracy of the differentiable soft silhouette renderer (``ctrnet_ros.train.silhouette``).

For each image size and batch size, renders the Panda (decimated to ``--max-faces``) from seeded
random viewpoints and joint configurations, and reports the median over ``--runs`` timed runs
(after ``--warmup`` untimed ones) of

* ``forward``: the silhouette under ``torch.no_grad()``, and
* ``forward+backward``: the silhouette, then the gradient of a silhouette MSE w.r.t. ``T_camera_base``,

as wall-clock time and as this process's CPU time (which a busy machine inflates less), with torch
limited to ``--threads`` intra-op threads; and the IoU of the silhouette (threshold 0.5) with
MuJoCo's exact robot mask for the same frames. Prints a Markdown table:

    .venv/bin/python bench/bench_silhouette.py [--sizes 320x240 640x480] [--batches 1 4] [--runs 10]
                                              [--threads 2] [--max-faces 5000] [--sigma 0.3]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time

import numpy as np
import torch

from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.sim.render import MujocoRenderer
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_visible_view
from ctrnet_ros.train.metrics import mask_iou
from ctrnet_ros.train.silhouette import RobotMeshSet, SilhouetteRenderer, link_pose_tensor

_LOG = logging.getLogger("bench_silhouette")


def _views(renderer: MujocoRenderer, camera: PinholeCamera, count: int, seed: int):
    """``count`` seeded (joint positions, T_camera_base (4, 4)) with the robot's keypoints in view."""
    rng = np.random.default_rng(seed)
    shell = ShellConfig(distance_m=(1.2, 2.0))
    return [sample_visible_view(rng, renderer.robot, renderer.spec, camera, shell)[:2] for _ in range(count)]


def _median_ms(fn, runs: int, warmup: int) -> tuple[float, float]:
    """(median wall ms, median process CPU ms) of ``fn()``."""
    wall, cpu = [], []
    for i in range(warmup + runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if i >= warmup:
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def bench(mujoco: MujocoRenderer, renderer: SilhouetteRenderer, size: tuple[int, int], batch: int, runs: int,
          warmup: int, seed: int) -> dict:
    width, height = size
    camera = PinholeCamera.from_fov(width=width, height=height, fovy_deg=50.0)
    views = _views(mujoco, camera, batch, seed)
    T = torch.tensor(np.stack([T for _, T in views]), dtype=torch.float32)
    poses = link_pose_tensor(mujoco.robot, [q for q, _ in views], renderer.links)
    K = torch.tensor(camera.K, dtype=torch.float32)
    with torch.no_grad():
        sil = renderer(T, poses, K, size)
    ious = [mask_iou(sil[i].numpy(), mujoco.render(q, Tq, camera).mask) for i, (q, Tq) in enumerate(views)]
    target = (sil > 0.5).float()

    def forward():
        with torch.no_grad():
            renderer(T, poses, K, size)

    def forward_backward():
        Tg = T.clone().requires_grad_(True)
        ((renderer(Tg, poses, K, size) - target) ** 2).mean().backward()

    fwd = _median_ms(forward, runs, warmup)
    fb = _median_ms(forward_backward, runs, warmup)
    return {"size": f"{width}x{height}", "batch": batch, "fwd": fwd, "fb": fb, "iou": ious}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"], help="image W x H")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-faces", type=int, default=5000)
    parser.add_argument("--sigma", type=float, default=0.3, help="edge softness, pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]

    rows = []
    with MujocoRenderer.for_robot("panda", max_width=max(w for w, _ in sizes),
                                  max_height=max(h for _, h in sizes)) as mujoco:
        meshset = RobotMeshSet.from_robot(mujoco.robot, max_faces=args.max_faces)
        renderer = SilhouetteRenderer(meshset, sigma=args.sigma)
        for size in sizes:
            for batch in args.batches:
                rows.append(bench(mujoco, renderer, size, batch, args.runs, args.warmup, args.seed))

    _LOG.info("Panda, %d faces, sigma %.2f px, %d torch threads (cpus=%s, %s, torch %s, load avg %.1f), median of "
              "%d runs after %d warm-up; IoU with MuJoCo's mask at threshold 0.5, one frame per batch item",
              meshset.num_faces, args.sigma, args.threads, os.cpu_count(),
              platform.processor() or platform.machine(), torch.__version__, os.getloadavg()[0], args.runs,
              args.warmup)
    _LOG.info("| size | batch | forward ms wall (CPU) | forward+backward ms wall (CPU) | IoU min / mean |")
    _LOG.info("|---|---:|---:|---:|---:|")
    for r in rows:
        _LOG.info("| %s | %d | %.1f (%.1f) | %.1f (%.1f) | %.3f / %.3f |", r["size"], r["batch"], *r["fwd"], *r["fb"],
                  min(r["iou"]), float(np.mean(r["iou"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
