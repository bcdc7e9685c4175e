"""The on-disk format of a collection of unlabeled real images, its writer and its reader.

Layout of a collection directory ``DIR``::

    DIR/collection.yaml        format name and version, created time, robot and base frame if known
    DIR/manifest.jsonl         one JSON object per saved sample, one per line, appended in save order
    DIR/samples/000000.png     lossless RGB images (PNG of the BGR array, as cv2.imwrite writes it)
    DIR/.lock                  held (flock) while a writer has the collection open

File names come from a counter, never from message content. A manifest line (see :data:`MANIFEST_FIELDS`)::

    {"index": 12, "file": "samples/000012.png", "sha256": "<hex of the PNG bytes>", "bytes": 412345,
     "stamp_ns": 1700000000400000000, "frame_id": "camera_color_optical_frame",
     "camera": {"width": 640, "height": 480, "K": [9 numbers, row-major], "D": [...],
                "distortion_model": "plumb_bob"},
     "joints": {"panda_joint1": 0.12, ...}, "base_frame": "panda_link0",
     "sharpness": 153.2, "confidence": 0.81, "mask_fraction": 0.12}

``joints`` holds every joint position known at the image stamp (interpolated), radians or metres;
``confidence`` (median keypoint confidence) and ``mask_fraction`` are null when no model was used.

**Crash and disk-full safety.** A sample is saved in this order: the PNG goes to a temporary file in
``samples/`` (written, flushed, fsynced), is renamed into place (atomic), and only then is its
manifest line appended (flushed, fsynced). So a crash leaves at worst a PNG that no manifest line
names (an *orphan*: reported by the reader, ignored) or a temporary file (removed when a writer
next opens the collection); never a manifest line naming a partial image. When a write fails (disk
full or any other ``OSError``) the writer removes what this sample had written, truncates the
manifest back to its previous length, and raises :class:`CollectionWriteError`: nothing is lost and
the manifest stays consistent.

**Reading.** :func:`load_collection` reports every problem (a corrupt or truncated manifest line, a
missing PNG, a PNG whose SHA-256 differs or that does not decode, an orphan) in
``Collection.problems`` and in the log, skips that sample, and goes on: nothing corrupt is fatal.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import cv2
import numpy as np
import yaml

from ..core.camera import CameraModelError, PinholeCamera

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "COLLECTION_FILENAME",
    "MANIFEST_FILENAME",
    "SAMPLES_DIRNAME",
    "MANIFEST_FIELDS",
    "CHECKS",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_QUOTA_BYTES",
    "CollectionError",
    "CollectionFormatError",
    "CollectionLockedError",
    "CollectionLimitError",
    "CollectionWriteError",
    "CollectedSample",
    "Collection",
    "CollectionWriter",
    "load_collection",
    "sample_filename",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "ctrnet_ros.collection"
FORMAT_VERSION = 1
COLLECTION_FILENAME = "collection.yaml"
MANIFEST_FILENAME = "manifest.jsonl"
SAMPLES_DIRNAME = "samples"
LOCK_FILENAME = ".lock"
#: Fields every manifest line has (``mask_fraction`` may be absent in hand-made files: read as null).
MANIFEST_FIELDS = ("index", "file", "sha256", "bytes", "stamp_ns", "frame_id", "camera", "joints", "base_frame",
                   "sharpness", "confidence")
#: How thoroughly :func:`load_collection` checks each PNG: ``size`` (exists, with the recorded size),
#: ``hash`` (+ SHA-256 and a PNG header of the recorded image size), ``full`` (+ decodes every image).
CHECKS = ("size", "hash", "full")
DEFAULT_MAX_SAMPLES = 5000
DEFAULT_QUOTA_BYTES = 4 * 1024 ** 3
_MIB = 1024 ** 2

_SAMPLE_RE = re.compile(r"^(\d{6,})\.png$")
_TMP_SUFFIX = ".tmp"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COMPRESSION = 3  # zlib level: 1 is ~30 % larger, 9 several times slower for a few % less


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class CollectionError(RuntimeError):
    """Base of the collection errors."""


class CollectionFormatError(CollectionError):
    """Not a collection, or one written in a newer format than this code reads."""


class CollectionLockedError(CollectionError):
    """Another writer (process) has the collection open."""


class CollectionLimitError(CollectionError):
    """The collection is full: ``reason`` is ``"max_samples"`` or ``"quota"``. Nothing was written."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class CollectionWriteError(CollectionError):
    """Writing a sample failed (``disk_full``: ENOSPC or EDQUOT). Nothing of it remains on disk."""

    def __init__(self, message: str, *, disk_full: bool):
        super().__init__(message)
        self.disk_full = disk_full


def sample_filename(index: int) -> str:
    """``12`` -> ``"000012.png"`` (the name of sample ``index`` inside ``samples/``)."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return f"{index:06d}.png"


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CollectedSample:
    """One saved sample: an image, the camera that took it and the joint positions at its stamp."""

    index: int  # counter, unique in the collection
    file: str  # PNG path relative to the collection root, e.g. "samples/000012.png"
    path: Path  # absolute PNG path
    sha256: str  # hex digest of the PNG file's bytes
    bytes: int  # size of the PNG file
    stamp_ns: int  # image header stamp, ns
    frame_id: str  # image header frame_id (the camera optical frame)
    camera: PinholeCamera  # intrinsics of the raw image, as camera_info gave them
    joints: dict[str, float]  # joint -> position at stamp_ns (interpolated), rad or m
    base_frame: str | None  # the robot base frame the keypoints are expressed in, if known
    sharpness: float  # variance of the Laplacian (see ctrnet_ros.collect.selection.sharpness)
    confidence: float | None  # median keypoint confidence of the model, None without a model
    mask_fraction: float | None = None  # fraction of the image covered by the model's robot mask

    def image_rgb(self) -> np.ndarray:
        """The image, (H, W, 3) uint8 RGB.

        Raises:
            CollectionError: the file is missing or does not decode to the recorded size.
        """
        bgr = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CollectionError(f"sample {self.index}: {self.path} is missing or does not decode as an image")
        if (bgr.shape[1], bgr.shape[0]) != (self.camera.width, self.camera.height):
            raise CollectionError(f"sample {self.index}: {self.path} is {bgr.shape[1]}x{bgr.shape[0]}, the manifest "
                                  f"says {self.camera.width}x{self.camera.height}")
        return np.ascontiguousarray(bgr[..., ::-1])

    def joint_vector(self, names) -> np.ndarray:
        """(J,) positions of ``names`` in that order (raises KeyError naming a missing joint)."""
        return np.array([self.joints[n] for n in names], dtype=np.float64)

    def to_record(self) -> dict[str, Any]:
        """The manifest line's JSON object."""
        cam = self.camera
        return {
            "index": self.index, "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
            "stamp_ns": self.stamp_ns, "frame_id": self.frame_id,
            "camera": {"width": cam.width, "height": cam.height, "K": [float(v) for v in cam.K.reshape(-1)],
                       "D": [float(v) for v in cam.D], "distortion_model": cam.distortion_model},
            "joints": {k: float(v) for k, v in self.joints.items()}, "base_frame": self.base_frame,
            "sharpness": float(self.sharpness),
            "confidence": None if self.confidence is None else float(self.confidence),
            "mask_fraction": None if self.mask_fraction is None else float(self.mask_fraction),
        }


def _number(rec: Mapping, key: str, *, optional: bool = False) -> float | None:
    v = rec.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key!r} must be a finite number, got {v!r}")
    return float(v)


def _sample_from_record(rec: Any, root: Path) -> CollectedSample:
    """A manifest JSON object -> :class:`CollectedSample` (raises ValueError saying what is wrong)."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in MANIFEST_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    index, nbytes, stamp = rec["index"], rec["bytes"], rec["stamp_ns"]
    for key, v in (("index", index), ("bytes", nbytes), ("stamp_ns", stamp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{key!r} must be a non-negative integer, got {v!r}")
    file = rec["file"]
    if file != f"{SAMPLES_DIRNAME}/{sample_filename(index)}":
        # Only the counter-derived name is accepted: a manifest can never point outside samples/.
        raise ValueError(f"file {file!r} is not {SAMPLES_DIRNAME}/{sample_filename(index)} (index {index})")
    sha = rec["sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha!r}")
    for key in ("frame_id",):
        if not isinstance(rec[key], str):
            raise ValueError(f"{key!r} must be a string, got {rec[key]!r}")
    base = rec["base_frame"]
    if base is not None and not isinstance(base, str):
        raise ValueError(f"'base_frame' must be a string or null, got {base!r}")
    cam = rec["camera"]
    if not isinstance(cam, dict):
        raise ValueError(f"'camera' must be an object, got {cam!r}")
    try:
        camera = PinholeCamera.from_camera_info_fields(
            k=np.asarray(cam["K"], dtype=np.float64), d=np.asarray(cam.get("D", []), dtype=np.float64).reshape(-1),
            width=int(cam["width"]), height=int(cam["height"]),
            distortion_model=str(cam.get("distortion_model", "")))
    except (KeyError, TypeError, ValueError, CameraModelError) as exc:
        raise ValueError(f"unusable camera: {exc}") from exc
    joints = rec["joints"]
    if not isinstance(joints, dict) or not joints:
        raise ValueError(f"'joints' must be a non-empty object, got {joints!r}")
    joints = {str(k): _number(joints, k) for k in joints}
    return CollectedSample(
        index=index, file=file, path=root / file, sha256=sha, bytes=nbytes, stamp_ns=stamp, frame_id=rec["frame_id"],
        camera=camera, joints=joints, base_frame=base, sharpness=_number(rec, "sharpness"),
        confidence=_number(rec, "confidence", optional=True),
        mask_fraction=_number(rec, "mask_fraction", optional=True))


def _png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's first 24 bytes, or None if they are not a PNG header."""
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _check_file(sample: CollectedSample, check: str) -> str | None:
    """None if the sample's PNG passes ``check``, else what is wrong with it."""
    try:
        size = sample.path.stat().st_size
    except FileNotFoundError:
        return "the PNG is missing"
    except OSError as exc:
        return f"cannot stat the PNG: {exc}"
    if size != sample.bytes:
        return f"the PNG has {size} bytes, the manifest says {sample.bytes} (truncated or replaced)"
    if check == "size":
        return None
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        return f"cannot read the PNG: {exc}"
    if hashlib.sha256(data).hexdigest() != sample.sha256:
        return "the PNG's SHA-256 differs from the manifest's (corrupt or replaced)"
    if _png_size(data[:24]) != (sample.camera.width, sample.camera.height):
        return (f"not a PNG of {sample.camera.width}x{sample.camera.height} pixels (header "
                f"{_png_size(data[:24]) or 'missing'})")
    if check == "full":
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None or (img.shape[1], img.shape[0]) != (sample.camera.width, sample.camera.height):
            return "the PNG does not decode"
    return None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass
class Collection:
    """What :func:`load_collection` found."""

    root: Path
    info: dict[str, Any]  # collection.yaml (empty if it is missing or unreadable: see problems)
    samples: list[CollectedSample]  # the valid samples, in manifest order
    problems: list[str] = field(default_factory=list)  # every problem found, one sentence each
    orphans: list[Path] = field(default_factory=list)  # PNGs in samples/ that no manifest line names

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[CollectedSample]:
        return iter(self.samples)

    @property
    def base_frame(self) -> str | None:
        return self.info.get("base_frame")

    @property
    def bytes_used(self) -> int:
        """Bytes of the valid samples' PNGs."""
        return sum(s.bytes for s in self.samples)


def _read_info(root: Path, problems: list[str]) -> dict[str, Any]:
    path = root / COLLECTION_FILENAME
    if not path.is_file():
        if (root / MANIFEST_FILENAME).is_file():
            problems.append(f"{path} is missing (the manifest is read anyway)")
        return {}
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path} is unreadable ({type(exc).__name__}: {exc}); the manifest is read anyway")
        return {}
    if not isinstance(info, dict):
        problems.append(f"{path} is not a YAML mapping; the manifest is read anyway")
        return {}
    if info.get("format") not in (None, FORMAT_NAME):
        raise CollectionFormatError(f"{path}: format {info.get('format')!r} is not {FORMAT_NAME!r}")
    version = info.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CollectionFormatError(f"{path}: format version {version!r} is newer than this ctrnet_ros reads "
                                    f"({FORMAT_VERSION}); update ctrnet_ros")
    return info


def _manifest_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line including its newline) of the manifest; an incomplete last line has none."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            yield number, raw


def load_collection(root: str | os.PathLike, *, check: str = "hash") -> Collection:
    """Read a collection directory, reporting and skipping whatever is corrupt.

    Args:
        root: the collection directory (``collection.yaml``, ``manifest.jsonl``, ``samples/``).
        check: how each sample's PNG is verified, one of :data:`CHECKS`: ``"size"`` (it exists with the
            recorded size: cheap), ``"hash"`` (default: + SHA-256 and PNG header), ``"full"`` (+ decode).
    Returns:
        :class:`Collection`; ``problems`` lists each corrupt/truncated manifest line, missing, corrupt or
        undecodable PNG, duplicate index and orphan PNG (each also logged as a warning).
    Raises:
        CollectionFormatError: ``root`` is not a directory, or its ``collection.yaml`` names another format
            or a newer version.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    root = Path(root)
    if not root.is_dir():
        raise CollectionFormatError(f"{root} is not a directory (no collection there)")
    problems: list[str] = []
    info = _read_info(root, problems)
    samples: list[CollectedSample] = []
    named: set[str] = set()  # PNG names that some manifest line refers to (valid or not)
    seen: set[int] = set()
    manifest = root / MANIFEST_FILENAME
    if manifest.is_file():
        try:
            lines = list(_manifest_lines(manifest))
        except OSError as exc:
            problems.append(f"{manifest} is unreadable: {exc}")
            lines = []
        for number, raw in lines:
            where = f"{manifest.name} line {number}"
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                problems.append(f"{where}: incomplete last line ({len(raw)} bytes, an interrupted append); skipped")
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(f"{where}: not valid JSON ({exc}); skipped")
                continue
            if isinstance(rec, dict) and isinstance(rec.get("file"), str):
                named.add(rec["file"])
            try:
                sample = _sample_from_record(rec, root)
            except ValueError as exc:
                problems.append(f"{where}: {exc}; skipped")
                continue
            if sample.index in seen:
                problems.append(f"{where}: index {sample.index} appears more than once; skipped")
                continue
            bad = _check_file(sample, check)
            if bad:
                problems.append(f"{where}: sample {sample.index} ({sample.file}): {bad}; skipped")
                continue
            seen.add(sample.index)
            samples.append(sample)
    orphans = []
    samples_dir = root / SAMPLES_DIRNAME
    if samples_dir.is_dir():
        for p in sorted(samples_dir.iterdir()):
            rel = f"{SAMPLES_DIRNAME}/{p.name}"
            if p.name.endswith(_TMP_SUFFIX):
                problems.append(f"{rel}: temporary file of an interrupted write; ignored")
            elif p.suffix == ".png" and rel not in named:
                orphans.append(p)
                problems.append(f"{rel}: not in the manifest (orphan, e.g. a crash before its manifest line); "
                                f"ignored")
    for p in problems:
        logger.warning("collection %s: %s", root, p)
    return Collection(root=root, info=info, samples=samples, problems=problems, orphans=orphans)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the one place sample bytes reach the disk; tests patch it)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_os_error(exc: OSError) -> tuple[str, bool]:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    what = "the disk is full" if exc.errno == errno.ENOSPC else \
        "the disk quota of this user is exhausted" if exc.errno == errno.EDQUOT else \
        f"{exc.strerror or type(exc).__name__}"
    return what, full


class CollectionWriter:
    """Appends samples to a collection directory, safely; continues an existing one.

    Opening an existing collection reads its manifest (:func:`load_collection` with ``check``): the next
    index follows the largest one used by a manifest line or a PNG file, the valid samples count
    against the limits, and :attr:`samples` lists them (the collector seeds its novelty filter with
    them). Temporary files left by an interrupted write are removed, and an incomplete last manifest
    line (an interrupted append) is cut off.

    Args:
        out_dir: the collection directory; created if missing. Never derived from message content.
        max_samples: refuse saves once the collection holds this many samples.
        quota_bytes: refuse a save that would take the samples' PNG bytes beyond this.
        robot: robot name for ``collection.yaml`` (a new collection only).
        base_frame: the robot base frame, written into ``collection.yaml`` (new collection) and each sample.
        check: verification of existing samples on open (see :data:`CHECKS`; ``size`` is cheap).
    Raises:
        CollectionFormatError: ``out_dir`` exists and is not a directory, or holds a newer format.
        CollectionLockedError: another process is writing to it.
        CollectionWriteError: the directory or ``collection.yaml`` cannot be created.
    """

    def __init__(self, out_dir: str | os.PathLike, *, max_samples: int = DEFAULT_MAX_SAMPLES,
                 quota_bytes: int = DEFAULT_QUOTA_BYTES, robot: str | None = None, base_frame: str | None = None,
                 check: str = "size"):
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if quota_bytes < 1:
            raise ValueError(f"quota_bytes must be >= 1, got {quota_bytes}")
        if check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
        self._check = check
        self.root = Path(out_dir)
        self.max_samples = int(max_samples)
        self.quota_bytes = int(quota_bytes)
        self.base_frame = base_frame or None
        self.problems: list[str] = []
        self._lock_fd: int | None = None
        self._manifest_fd: int | None = None
        if self.root.exists() and not self.root.is_dir():
            raise CollectionFormatError(f"output directory {self.root} exists and is not a directory")
        self.samples_dir = self.root / SAMPLES_DIRNAME
        try:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CollectionWriteError(f"cannot create the collection directory {self.samples_dir}: {exc}",
                                       disk_full=_describe_os_error(exc)[1]) from exc
        self._lock()
        try:
            self._open(robot)
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    def _lock(self) -> None:
        fd = os.open(self.root / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise CollectionLockedError(f"collection {self.root} is being written by another process (its "
                                        f"{LOCK_FILENAME} is locked); use another output directory") from exc
        self._lock_fd = fd

    def _open(self, robot: str | None) -> None:
        info_path = self.root / COLLECTION_FILENAME
        if not info_path.exists():
            info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "robot": robot or None, "base_frame": self.base_frame}
            try:
                self._write_file_atomically(info_path, yaml.safe_dump(info, sort_keys=False).encode("utf-8"))
            except OSError as exc:
                what, full = _describe_os_error(exc)
                raise CollectionWriteError(f"cannot create {info_path}: {what}", disk_full=full) from exc
        for p in self.samples_dir.glob("*" + _TMP_SUFFIX):
            logger.warning("collection %s: removing %s, left by an interrupted write", self.root, p.name)
            p.unlink(missing_ok=True)
        manifest = self.root / MANIFEST_FILENAME
        self._repair_manifest_tail(manifest)
        existing = load_collection(self.root, check=self._check)
        self.problems += existing.problems
        self.info = existing.info
        info_base = existing.info.get("base_frame")
        if self.base_frame and info_base and info_base != self.base_frame:
            msg = (f"collection {self.root} was started with base_frame {info_base!r}, now {self.base_frame!r}; "
                   f"each sample records its own")
            logger.warning(msg)
            self.problems.append(msg)
        self.samples: list[CollectedSample] = list(existing.samples)
        self.bytes_used = existing.bytes_used
        used = [s.index for s in existing.samples]
        used += [int(m.group(1)) for p in self.samples_dir.iterdir() if (m := _SAMPLE_RE.match(p.name))]
        used += self._manifest_indices(manifest)
        self.next_index = max(used, default=-1) + 1
        self._manifest_fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._manifest_size = os.fstat(self._manifest_fd).st_size
        self.full_reason: str | None = None  # "max_samples" or "quota" once further saves are refused
        self.full_detail = ""
        self._check_count()
        if self.bytes_used >= self.quota_bytes:
            self._set_full("quota", f"the collection's images use {self.bytes_used / _MIB:.1f} MiB, the quota is "
                                    f"{self.quota_bytes / _MIB:.1f} MiB")
        if self.samples:
            logger.info("collection %s: continuing after %d samples (%.1f MiB), next index %d", self.root,
                        len(self.samples), self.bytes_used / _MIB, self.next_index)

    @staticmethod
    def _manifest_indices(manifest: Path) -> list[int]:
        """Indices named by any parseable manifest line, valid or not (their files must not be reused)."""
        out = []
        if manifest.is_file():
            for _, raw in _manifest_lines(manifest):
                try:
                    rec = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("index"), int) and rec["index"] >= 0:
                    out.append(rec["index"])
        return out

    def _repair_manifest_tail(self, manifest: Path) -> None:
        """Cut off an incomplete last line: an append interrupted before its newline was fsynced."""
        if not manifest.is_file():
            return
        size = manifest.stat().st_size
        if size == 0:
            return
        with open(manifest, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        msg = (f"{MANIFEST_FILENAME} ended in an incomplete line ({size - keep} bytes of an interrupted append); "
               f"removed it")
        logger.warning("collection %s: %s", self.root, msg)
        self.problems.append(msg)

    def _write_file_atomically(self, path: Path, data: bytes) -> None:
        tmp = path.with_name("." + path.name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                logger.error("could not remove %s after a failed write", tmp)
            raise

    # -- limits ------------------------------------------------------------------------------------
    def _set_full(self, reason: str, detail: str) -> None:
        if self.full_reason is None:
            self.full_reason = reason
            self.full_detail = f"{detail}; no further samples are saved to {self.root}"
            logger.warning("collection full (%s): %s", reason, self.full_detail)

    def _check_count(self) -> None:
        if len(self.samples) >= self.max_samples:
            self._set_full("max_samples", f"the collection holds {len(self.samples)} samples, max_samples is "
                                          f"{self.max_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    # -- saving ------------------------------------------------------------------------------------
    def save(self, image_rgb: np.ndarray, *, stamp_ns: int, frame_id: str, camera: PinholeCamera,
             joints: Mapping[str, float], sharpness: float, confidence: float | None = None,
             mask_fraction: float | None = None) -> CollectedSample:
        """Save one sample (PNG, then its manifest line) and return it.

        Args:
            image_rgb: (H, W, 3) uint8 RGB, the size ``camera`` describes.
            stamp_ns: image header stamp, ns.
            frame_id: image header frame_id.
            camera: the camera_info the image goes with.
            joints: joint -> position at ``stamp_ns`` (finite), rad or m.
            sharpness, confidence, mask_fraction: the selection measurements (see the manifest fields).
        Raises:
            CollectionLimitError: max_samples or the quota is reached (nothing written).
            CollectionWriteError: the disk refused a write; everything of this sample was removed again.
            ValueError: an image or joint value that cannot be saved.
        """
        if self._manifest_fd is None:
            raise CollectionError(f"the writer of {self.root} is closed")
        if self.full_reason is not None:
            raise CollectionLimitError(self.full_reason, self.full_detail)
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        if (img.shape[1], img.shape[0]) != (camera.width, camera.height):
            raise ValueError(f"image is {img.shape[1]}x{img.shape[0]}, the camera {camera.width}x{camera.height}")
        joints = {str(k): float(v) for k, v in joints.items()}
        if not joints or not all(math.isfinite(v) for v in joints.values()):
            raise ValueError(f"joint positions must be finite and not empty, got {joints}")
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]),
                               [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])
        if not ok:
            raise ValueError("OpenCV could not encode the image as PNG")
        data = buf.tobytes()
        if self.bytes_used + len(data) > self.quota_bytes:
            self._set_full("quota", f"saving {len(data) / _MIB:.2f} MiB more would take the images to "
                                    f"{(self.bytes_used + len(data)) / _MIB:.1f} MiB, over the quota of "
                                    f"{self.quota_bytes / _MIB:.1f} MiB")
            raise CollectionLimitError(self.full_reason, self.full_detail)
        index = self.next_index
        name = sample_filename(index)
        sample = CollectedSample(
            index=index, file=f"{SAMPLES_DIRNAME}/{name}", path=self.samples_dir / name,
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), stamp_ns=int(stamp_ns), frame_id=str(frame_id),
            camera=camera, joints=joints, base_frame=self.base_frame, sharpness=float(sharpness),
            confidence=None if confidence is None else float(confidence),
            mask_fraction=None if mask_fraction is None else float(mask_fraction))
        line = (json.dumps(sample.to_record(), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")

        # 1. the PNG: temporary file, fsync, atomic rename
        try:
            self._write_file_atomically(sample.path, data)
        except OSError as exc:
            try:  # a failure after the rename (fsync of the folder) must not leave an orphan either
                sample.path.unlink(missing_ok=True)
            except OSError:
                logger.error("could not remove %s after a failed write", sample.path)
            what, full = _describe_os_error(exc)
            raise CollectionWriteError(f"cannot write sample {index} to {self.samples_dir}: {what} ({exc}); "
                                       f"nothing was saved for this frame and the collection is intact",
                                       disk_full=full) from exc
        # 2. its manifest line: appended, fsync; on failure undo both
        try:
            _write_all(self._manifest_fd, line)
            os.fsync(self._manifest_fd)
        except OSError as exc:
            self._undo(sample)
            what, full = _describe_os_error(exc)
            raise CollectionWriteError(f"cannot append sample {index} to {self.root / MANIFEST_FILENAME}: {what} "
                                       f"({exc}); the sample was removed again and the manifest is intact",
                                       disk_full=full) from exc
        self._manifest_size += len(line)
        self.samples.append(sample)
        self.bytes_used += len(data)
        self.next_index = index + 1
        self._check_count()
        return sample

    def _undo(self, sample: CollectedSample) -> None:
        """After a failed manifest append: cut the manifest back, remove the PNG (best effort, logged)."""
        try:
            os.ftruncate(self._manifest_fd, self._manifest_size)
            os.fsync(self._manifest_fd)
        except OSError as exc:
            logger.error("could not truncate %s back to %d bytes after a failed append: %s (the reader will "
                         "skip the partial line)", self.root / MANIFEST_FILENAME, self._manifest_size, exc)
        try:
            sample.path.unlink(missing_ok=True)
            _fsync_dir(self.samples_dir)
        except OSError as exc:
            logger.error("could not remove %s after a failed append: %s (the reader will report it as an "
                         "orphan)", sample.path, exc)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the manifest and the lock (idempotent)."""
        if self._manifest_fd is not None:
            os.close(self._manifest_fd)
            self._manifest_fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def closed(self) -> bool:
        return self._manifest_fd is None

    def __enter__(self) -> "CollectionWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
