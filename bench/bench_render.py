"""Rendering throughput of the synthetic data engine on this machine.

For each image size, renders frames of a randomisation preset (default ``train``) with a fixed
seed and reports frames per second for

* ``render``: ``MujocoRenderer.render`` alone (RGB pass + segmentation/depth pass, link labels,
  mask, keypoints and visibility), and
* ``full``: everything a dataset frame costs (scene sampling incl. procedural textures,
  ``set_appearance``, render, image effects),

once with the URDF's meshes as they are and once decimated (``--reduction``, default 0.75).

Usage::

    python bench/bench_render.py [--frames 30] [--domain train] [--robot panda]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time


from ctrnet_ros.sim.dataset import frame_rng
from ctrnet_ros.sim.randomize import apply_image_effects, load_domain, sample_scene
from ctrnet_ros.sim.render import MujocoRenderer

_LOG = logging.getLogger("bench_render")
SIZES = ((320, 240), (640, 480))


def bench(renderer: MujocoRenderer, domain: str, width: int, height: int, frames: int, seed: int,
          warmup: int = 3) -> tuple[float, float]:
    """(render-only fps, full-pipeline fps) over ``frames`` frames after ``warmup`` untimed ones."""
    config = load_domain(domain)
    t_render = t_full = 0.0
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        sample = sample_scene(renderer, config, frame_rng(seed, i), width=width, height=height)
        renderer.set_appearance(sample.appearance)
        t1 = time.perf_counter()
        frame = renderer.render(sample.joint_positions, sample.T_camera_base, sample.camera)
        t2 = time.perf_counter()
        apply_image_effects(frame.rgb, sample.effects)
        t3 = time.perf_counter()
        if i >= warmup:
            t_render += t2 - t1
            t_full += t3 - t0
    return frames / t_render, frames / t_full


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30, help="timed frames per configuration")
    parser.add_argument("--domain", default="train")
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reduction", type=float, default=0.75, help="mesh decimation for the second row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)

    rows = []
    for reduction in (0.0, args.reduction):
        with MujocoRenderer.for_robot(args.robot, max_width=max(w for w, _ in SIZES),
                                      max_height=max(h for _, h in SIZES), mesh_reduction=reduction) as renderer:
            faces = int(sum(renderer._model.mesh_facenum))  # noqa: SLF001 - reporting only
            for width, height in SIZES:
                fps_render, fps_full = bench(renderer, args.domain, width, height, args.frames, args.seed)
                rows.append((f"{width}x{height}", reduction, faces, fps_render, fps_full))

    _LOG.info("robot=%s domain=%s seed=%d frames=%d MUJOCO_GL=%s cpus=%s %s", args.robot, args.domain, args.seed,
              args.frames, os.environ.get("MUJOCO_GL"), os.cpu_count(), platform.processor() or platform.machine())
    _LOG.info("| size    | mesh reduction | robot faces | render fps (ms) | full pipeline fps (ms) |")
    _LOG.info("|---------|----------------|-------------|-----------------|------------------------|")
    for size, reduction, faces, fr, ff in rows:
        _LOG.info("| %-7s | %14.2f | %11d | %6.1f (%5.1f)  | %6.1f (%5.1f)         |", size, reduction, faces, fr,
                  1e3 / fr, ff, 1e3 / ff)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
