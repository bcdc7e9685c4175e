"""Synthetic training datasets: deterministic, resumable, sharded writing and a reader.

Layout of a dataset directory::

    index.json            metadata (robot, keypoint/link/joint names, domain config, seed, size) and shard list
    shard_00000.npz       frames [0, shard_size)
    shard_00001.npz       ...

Each shard is an uncompressed ``.npz`` (readable with ``numpy.load``) holding, for its N frames:

=====================  ==================  ==================================================
key                    shape, dtype        meaning
=====================  ==================  ==================================================
frame_index            (N,) int64          global frame number
rgb_png, rgb_offsets   (B,) uint8, (N+1,)  PNG-encoded RGB images, concatenated; image i is
                                           ``rgb_png[rgb_offsets[i]:rgb_offsets[i+1]]``
labels_png,            (B,) uint8, (N+1,)  PNG-encoded uint8 ``link label + 1`` (0 = not the robot)
labels_offsets
K                      (N, 3, 3) float64   intrinsics, pixels
T_camera_base          (N, 4, 4) float64   base -> camera optical frame, metres
joint_positions        (N, J) float64      in ``index.json`` ``joint_names`` order
keypoints_uv           (N, K, 2) float64   pixels, OpenCV convention (NaN behind the camera)
keypoints_camera       (N, K, 3) float64   metres, camera optical frame
keypoints_base         (N, K, 3) float64   metres, base frame
in_image, visible      (N, K) bool         see :class:`~ctrnet_ros.sim.frame.RenderedFrame`
=====================  ==================  ==================================================

Frame ``i`` is generated from ``numpy.random.default_rng([seed, i])`` alone, so any subset of
frames (a resumed run, another shard size) comes out byte-identical. Shards are written to a
temporary file and renamed, so a killed run leaves only complete shards; re-running skips them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from .frame import RenderedFrame
from .randomize import DomainConfig, SceneSample, load_domain, render_scene_sample, sample_scene

__all__ = ["DATASET_FORMAT_VERSION", "DatasetError", "DatasetSpec", "frame_rng", "generate_frame",
           "write_dataset", "SimDataset"]

_LOG = logging.getLogger(__name__)

#: Bump when the shard layout changes; readers refuse other versions.
DATASET_FORMAT_VERSION = 1
_INDEX = "index.json"


class DatasetError(RuntimeError):
    """A dataset directory that cannot be written into or read."""


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of frame ``index`` in a dataset with ``seed`` (independent of every other frame)."""
    return np.random.default_rng([int(seed), int(index)])


def generate_frame(renderer, config: DomainConfig, *, seed: int, index: int, width: int,
                   height: int) -> tuple[RenderedFrame, SceneSample]:
    """Sample and render frame ``index`` of the ``(seed, config)`` dataset; image effects applied.

    Args:
        renderer: a :class:`~ctrnet_ros.sim.render.MujocoRenderer`.
        config: randomisation domain.
        seed, index: identify the frame (see :func:`frame_rng`).
        width, height: image size, pixels.
    """
    sample = sample_scene(renderer, config, frame_rng(seed, index), width=width, height=height)
    return render_scene_sample(renderer, sample), sample


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset directory contains; stored in ``index.json`` and checked on resume."""

    robot: str  # robot config name (config/robots/<robot>.yaml)
    domain: dict  # DomainConfig.to_dict() of the randomisation domain
    seed: int  # dataset seed; frame i uses default_rng([seed, i])
    num_frames: int  # total frames
    width: int  # image width, pixels
    height: int  # image height, pixels
    shard_size: int  # frames per shard (the last may hold fewer)

    @property
    def num_shards(self) -> int:
        return (self.num_frames + self.shard_size - 1) // self.shard_size


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DatasetError("PNG encoding failed")
    return buf.tobytes()


def _pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def _write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` with fixed zip timestamps (same arrays -> same bytes), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
                zf.writestr(info, buf.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json_atomic(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.npz"


def _shard_complete(path: Path, count: int) -> bool:
    try:
        with np.load(path) as z:
            return len(z["frame_index"]) == count
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def _frames_to_arrays(frames: list[tuple[int, RenderedFrame]], joint_names: list[str]) -> dict[str, np.ndarray]:
    rgb_png, rgb_off = _pack([_encode_png(np.ascontiguousarray(f.rgb[..., ::-1])) for _, f in frames])
    lab_png, lab_off = _pack([_encode_png((f.link_labels + 1).astype(np.uint8)) for _, f in frames])
    return {
        "frame_index": np.array([i for i, _ in frames], dtype=np.int64),
        "rgb_png": rgb_png, "rgb_offsets": rgb_off,
        "labels_png": lab_png, "labels_offsets": lab_off,
        "K": np.stack([f.camera.K for _, f in frames]),
        "T_camera_base": np.stack([f.T_camera_base for _, f in frames]),
        "joint_positions": np.array([[f.joint_positions[n] for n in joint_names] for _, f in frames]),
        "keypoints_uv": np.stack([f.keypoints_uv for _, f in frames]),
        "keypoints_camera": np.stack([f.keypoints_camera for _, f in frames]),
        "keypoints_base": np.stack([f.keypoints_base for _, f in frames]),
        "in_image": np.stack([f.in_image for _, f in frames]),
        "visible": np.stack([f.visible for _, f in frames]),
    }


def write_dataset(out_dir: str | os.PathLike, *, num_frames: int, seed: int = 0, domain: str | DomainConfig = "train",
                  robot: str = "panda", width: int = 320, height: int = 240, shard_size: int = 256,
                  renderer=None, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Render ``num_frames`` randomised frames into ``out_dir`` (resumable; see the module docstring).

    Args:
        out_dir: dataset directory (created).
        num_frames: total frames.
        seed: dataset seed.
        domain: preset name, YAML path, or a :class:`DomainConfig`.
        robot: built-in robot config name (``config/robots/<robot>.yaml``).
        width, height: image size, pixels.
        shard_size: frames per shard.
        renderer: an existing :class:`~ctrnet_ros.sim.render.MujocoRenderer` for ``robot`` (else one is made).
        cache_dir: mesh cache for a renderer made here.
        progress: show a tqdm bar.
    Returns:
        ``out_dir`` as a Path.
    Raises:
        DatasetError: ``out_dir`` holds a dataset with different parameters.
    """
    from .render import MujocoRenderer

    if num_frames <= 0 or shard_size <= 0:
        raise ValueError("num_frames and shard_size must be positive")
    config = domain if isinstance(domain, DomainConfig) else load_domain(domain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = DatasetSpec(robot=robot, domain=config.to_dict(), seed=int(seed), num_frames=int(num_frames),
                       width=int(width), height=int(height), shard_size=int(shard_size))
    own_renderer = renderer is None
    if own_renderer:
        renderer = MujocoRenderer.for_robot(robot, cache_dir=cache_dir, max_width=width, max_height=height)
    try:
        joint_names = list(renderer.robot.joint_names)
        index = {
            "format_version": DATASET_FORMAT_VERSION,
            "spec": {**spec.__dict__},
            "keypoint_names": renderer.spec.names,
            "link_names": renderer.link_names,
            "joint_names": joint_names,
            "shards": [],
            "complete": False,
        }
        index_path = out / _INDEX
        if index_path.is_file():
            old = json.loads(index_path.read_text(encoding="utf-8"))
            if old.get("spec") != index["spec"] or old.get("format_version") != DATASET_FORMAT_VERSION:
                raise DatasetError(f"{out} already holds a dataset with different parameters "
                                   f"({old.get('spec')}); choose another directory")
        _write_json_atomic(index_path, index)

        todo, done = [], 0
        for s in range(spec.num_shards):
            start = s * spec.shard_size
            count = min(spec.shard_size, spec.num_frames - start)
            if _shard_complete(out / _shard_name(s), count):
                done += count
            else:
                todo.append((s, start, count))
        if done:
            _LOG.info("resuming %s: %d of %d frames already written", out, done, spec.num_frames)
        with tqdm(total=spec.num_frames, initial=done, unit="frame", disable=not progress,
                  desc=f"{robot}/{config.name}") as bar:
            for s, start, count in todo:
                frames = []
                for i in range(start, start + count):
                    frame, _ = generate_frame(renderer, config, seed=spec.seed, index=i, width=spec.width,
                                              height=spec.height)
                    frames.append((i, frame))
                    bar.update(1)
                _write_npz_deterministic(out / _shard_name(s), _frames_to_arrays(frames, joint_names))
        index["shards"] = [{"file": _shard_name(s), "start": s * spec.shard_size,
                            "count": min(spec.shard_size, spec.num_frames - s * spec.shard_size)}
                           for s in range(spec.num_shards)]
        index["complete"] = True
        _write_json_atomic(index_path, index)
    finally:
        if own_renderer:
            renderer.close()
    return out


class SimDataset:
    """Reads a dataset written by :func:`write_dataset`; ``ds[i]`` is a dict of numpy arrays.

    Items: ``rgb`` (H, W, 3) uint8; ``mask`` (H, W) bool; ``link_labels`` (H, W) int16 (-1: not the
    robot); ``K`` (3, 3); ``T_camera_base`` (4, 4); ``joint_positions`` (J,); ``keypoints_uv`` (K, 2);
    ``keypoints_camera``, ``keypoints_base`` (K, 3); ``in_image``, ``visible`` (K,) bool;
    ``frame_index`` () int64. The most recently used shard is kept in memory.

    Args:
        root: dataset directory.
        allow_incomplete: read the finished shards of a dataset still being written.
    """

    def __init__(self, root: str | os.PathLike, *, allow_incomplete: bool = False):
        self.root = Path(root)
        path = self.root / _INDEX
        if not path.is_file():
            raise DatasetError(f"{self.root} is not a dataset (no {_INDEX})")
        self.index = json.loads(path.read_text(encoding="utf-8"))
        if self.index.get("format_version") != DATASET_FORMAT_VERSION:
            raise DatasetError(f"{self.root}: dataset format {self.index.get('format_version')}, "
                               f"this reader understands {DATASET_FORMAT_VERSION}")
        self.spec = DatasetSpec(**self.index["spec"])
        shards = self.index["shards"]
        if not self.index.get("complete"):
            if not allow_incomplete:
                raise DatasetError(f"{self.root} is incomplete (writing was interrupted); re-run the writer "
                                   f"or pass allow_incomplete=True")
            shards = []
            for s in range(self.spec.num_shards):
                start = s * self.spec.shard_size
                count = min(self.spec.shard_size, self.spec.num_frames - start)
                if _shard_complete(self.root / _shard_name(s), count):
                    shards.append({"file": _shard_name(s), "start": start, "count": count})
        self._shards = shards
        self._starts = np.cumsum([0] + [s["count"] for s in shards])
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def keypoint_names(self) -> list[str]:
        return list(self.index["keypoint_names"])

    @property
    def link_names(self) -> list[str]:
        return list(self.index["link_names"])

    @property
    def joint_names(self) -> list[str]:
        return list(self.index["joint_names"])

    @property
    def domain(self) -> DomainConfig:
        return DomainConfig.from_dict(self.spec.domain)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != s:
            with np.load(self.root / self._shards[s]["file"]) as z:
                self._cached = (s, {k: z[k] for k in z.files})
        return self._cached[1]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} frames")
        i %= n
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        z = self._shard(s)
        j = i - int(self._starts[s])
        rgb = cv2.imdecode(z["rgb_png"][z["rgb_offsets"][j]: z["rgb_offsets"][j + 1]], cv2.IMREAD_COLOR)
        lab = cv2.imdecode(z["labels_png"][z["labels_offsets"][j]: z["labels_offsets"][j + 1]], cv2.IMREAD_UNCHANGED)
        labels = lab.astype(np.int16) - 1
        return {
            "frame_index": z["frame_index"][j],
            "rgb": np.ascontiguousarray(rgb[..., ::-1]),
            "mask": labels >= 0,
            "link_labels": labels,
            "K": z["K"][j],
            "T_camera_base": z["T_camera_base"][j],
            "joint_positions": z["joint_positions"][j],
            "keypoints_uv": z["keypoints_uv"][j],
            "keypoints_camera": z["keypoints_camera"][j],
            "keypoints_base": z["keypoints_base"][j],
            "in_image": z["in_image"][j],
            "visible": z["visible"][j],
        }

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]
