"""PnP accuracy against pixel noise: single-frame vs 50-frame multi-frame, Panda, cameras 1-2 m away.

Prints a table of median (and 90th percentile) rotation and translation errors.
Run: .venv/bin/python bench/bench_pnp.py [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from ctrnet_ros.core import pnp, se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.robot import KeypointSpec, RobotModel
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_visible_view


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100, help="camera poses per noise level")
    ap.add_argument("--frames", type=int, default=50, help="frames per multi-frame solve")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    spec = KeypointSpec.builtin("panda")
    robot = RobotModel.from_spec(spec)
    cam = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)
    shell = ShellConfig(distance_m=(1.0, 2.0))
    rows = []
    for sigma in (0.0, 0.5, 1.0, 2.0):
        rng = np.random.default_rng(args.seed)
        single_t, single_r, multi_t, multi_r = [], [], [], []
        for _ in tqdm(range(args.trials), desc=f"noise {sigma} px", leave=False):
            _, T, kp, uv = sample_visible_view(rng, robot, spec, cam, shell)
            res = pnp.solve_pnp(kp, uv + rng.normal(0, sigma, uv.shape), cam)
            single_t.append(se3.translation_error(res.T_camera_base, T))
            single_r.append(se3.rotation_error_deg(res.T_camera_base, T))
            frames = []
            while len(frames) < args.frames:  # same camera, robot moves
                kp_i = robot.keypoints_base(spec, robot.sample_configuration(rng))
                uv_i = cam.project_from(T, kp_i)
                if cam.in_image(uv_i, margin=5).all():
                    frames.append(pnp.FrameCorrespondences(kp_i, uv_i + rng.normal(0, sigma, uv_i.shape)))
            mres = pnp.solve_pnp_multiframe(frames, cam)
            multi_t.append(se3.translation_error(mres.pose.T_camera_base, T))
            multi_r.append(se3.rotation_error_deg(mres.pose.T_camera_base, T))
        rows.append((sigma, single_t, single_r, multi_t, multi_r))

    print(f"PnP error vs pixel noise: Panda (7 keypoints), 640x480 fovy 45 deg, cameras 1-2 m, "
          f"{args.trials} poses per row, multi-frame = {args.frames} frames. median (p90)")
    print(f"| noise px | single: trans mm | single: rot deg | {args.frames}-frame: trans mm | {args.frames}-frame: rot deg |")
    print("|---:|---:|---:|---:|---:|")
    for sigma, st, sr, mt, mr in rows:
        def f(x, scale, prec):
            return f"{np.median(x) * scale:.{prec}f} ({np.percentile(x, 90) * scale:.{prec}f})"
        print(f"| {sigma:.1f} | {f(st, 1e3, 2)} | {f(sr, 1, 3)} | {f(mt, 1e3, 2)} | {f(mr, 1, 3)} |")


if __name__ == "__main__":
    main()
