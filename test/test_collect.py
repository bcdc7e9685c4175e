"""The image collector without ROS: selection checks, the on-disk format, limits, restarts, corrupt files,
a full disk, and ``ctrnet-collect`` on a small simulated bag.

Images are synthetic and seeded: blocky random textures (sharp), their Gaussian blur (not sharp),
and MuJoCo renders from ``ctrnet_ros.sim`` for the sharpness default and the CLI.
"""

from __future__ import annotations

import errno
import json
import logging

import cv2
import numpy as np
import pytest
import yaml

from ctrnet_ros.collect import cli, dataset
from ctrnet_ros.collect.collector import Collector, DetectorMismatchError
from ctrnet_ros.collect.dataset import (CollectionFormatError, CollectionLimitError, CollectionLockedError,
                                        CollectionWriteError, CollectionWriter, load_collection)
from ctrnet_ros.collect.replay import collect_bag
from ctrnet_ros.collect.selection import (CollectorConfig, JointNovelty, StampRateLimiter, mask_fraction,
                                          sharpness)
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.estimator import Detection
from ctrnet_ros.core.timesync import JointStateHistory
from ctrnet_ros.eval.bagio import (camera_info_msg_to_camera, image_msg_to_rgb, joint_state_msg_to_positions,
                                   read_bag_messages, stamp_to_ns)
from ctrnet_ros.sim.bag import DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_JOINT_STATES_TOPIC
from ctrnet_ros.sim.recording import record_sim_bag

CAM = PinholeCamera.from_fov(width=160, height=120, fovy_deg=50.0)
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FRAME = "test_camera_optical_frame"
T0 = 1_700_000_000_000_000_000
DT = 100_000_000  # 10 Hz images


def textured(i: int, w: int = 160, h: int = 120) -> np.ndarray:
    """A sharp, seeded image: 8x8-pixel blocks of random colour."""
    blocks = np.random.default_rng(1000 + i).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)


def q_of(x: float) -> dict[str, float]:
    """An arm configuration that moves by |x| radians (L2) from the origin along joint 1."""
    return dict(zip(ARM, [x, 0.1, 0.0, -1.9, 0.0, 1.9, 0.8])) | {"panda_finger_joint1": 0.02}


def writer_at(path, **kw) -> CollectionWriter:
    return CollectionWriter(path, robot="panda", base_frame="panda_link0", **kw)


def save(writer: CollectionWriter, i: int, *, x: float | None = None):
    return writer.save(textured(i), stamp_ns=T0 + i * DT, frame_id=FRAME, camera=CAM,
                       joints=q_of(i if x is None else x), sharpness=50.0)


def feed(collector: Collector, i: int, x: float, *, image=None, before_ms=4, after_ms=6):
    """Joint states bracketing frame i's stamp (both at configuration x), then the image."""
    stamp = T0 + i * DT
    for dt_ms in (-before_ms, after_ms):
        q = q_of(x)
        collector.add_joint_state(stamp + dt_ms * 1_000_000, list(q), list(q.values()))
    return collector.offer(textured(i) if image is None else image, stamp_ns=stamp, frame_id=FRAME)


class FakeDetector:
    """Test double: fixed keypoint confidences and an optional mask, for the robot-in-view check."""

    def __init__(self, names, *, confidence=0.9, mask=None, input_size=(80, 80)):
        self.keypoint_names = list(names)
        self.input_size = input_size
        self.confidence, self.mask = confidence, mask
        self.calls = 0

    def detect(self, image_rgb):
        assert image_rgb.shape == (self.input_size[1], self.input_size[0], 3)
        self.calls += 1
        k = len(self.keypoint_names)
        return Detection(keypoints_uv=np.zeros((k, 2)), confidence=np.full(k, self.confidence), mask=self.mask)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------
def test_joint_novelty_is_l2_to_the_nearest_saved_sample():
    nov = JointNovelty(["a", "b"], 0.1)
    assert nov.nearest_distance([5.0, 5.0]) == np.inf and nov.check([0.0, 0.0])[1] is None
    nov.add([0.0, 0.0])
    nov.add([1.0, 0.0])
    dist, rej = nov.check([0.07, 0.07])  # max-abs 0.07, L2 0.099: too close
    assert rej is not None and rej.reason == "not_novel" and dist == pytest.approx(0.0990, abs=1e-4)
    dist, rej = nov.check([0.08, 0.08])  # L2 0.113: novel (max-abs 0.08 would not be)
    assert rej is None and dist == pytest.approx(0.1131, abs=1e-4)
    assert nov.check([0.97, 0.01])[0] == pytest.approx(np.hypot(0.03, 0.01))  # nearest of several
    for k in range(100):  # grows past its initial capacity
        nov.add([10.0 + k, 0.0])
    assert len(nov) == 102 and nov.nearest_distance([109.0, 0.0]) == 0.0
    assert nov.vector({"a": 1.0}) is None and nov.vector({"a": 1.0, "b": float("nan")}) is None


def test_rate_limit_uses_image_stamps():
    rate = StampRateLimiter(2.0)
    assert rate.check(T0) is None
    rate.record(T0)
    rej = rate.check(T0 + 400_000_000)
    assert rej is not None and rej.reason == "rate" and "500 ms" in rej.detail
    assert rate.check(T0 + 500_000_000) is None
    assert rate.check(T0 - 10**9) is None, "a stamp before the last save (clock restarted) is not refused"
    assert StampRateLimiter(0.0, last_saved_ns=T0).check(T0 + 1) is None, "0 Hz: unlimited"


def test_sharpness_separates_textured_from_blurred():
    img = textured(0)
    assert sharpness(img) > 100.0
    assert sharpness(cv2.GaussianBlur(img, (0, 0), 4)) < CollectorConfig().min_sharpness
    big = cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST)
    assert sharpness(big) == pytest.approx(sharpness(cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA)))
    with pytest.raises(ValueError):
        sharpness(img[..., 0])


def test_sharpness_default_passes_sim_frames_and_rejects_heavy_blur(tmp_path):
    """640x480 frames of the `shifted` preset (its strong blur, noise and JPEG included) pass the default."""
    record_sim_bag(tmp_path / "bag", domain="shifted", duration_s=0.1, seed=5, width=640, height=480, progress=False)
    threshold = CollectorConfig().min_sharpness
    frames = [image_msg_to_rgb(m) for _, _, m in read_bag_messages(tmp_path / "bag", [DEFAULT_IMAGE_TOPIC])]
    assert len(frames) == 3
    for rgb in frames:
        assert rgb.shape == (480, 640, 3)
        assert sharpness(rgb) > 2 * threshold
        assert sharpness(cv2.GaussianBlur(rgb, (0, 0), 4)) < threshold


def test_mask_fraction_ignores_the_letterbox_padding():
    tf = CAM.letterbox_transform(80, 80)  # 160x120 -> 80x60 centred: 10 padding rows above and below
    mask = np.zeros((40, 40), np.float32)  # a half-resolution mask: padding is rows 0-5 and 35-40
    mask[5:35, :] = 1.0
    assert mask_fraction(mask, tf, CAM) == pytest.approx(1.0)
    pad_only = np.zeros((40, 40), np.float32)
    pad_only[:5], pad_only[35:] = 1.0, 1.0
    assert mask_fraction(pad_only, tf, CAM) == 0.0
    half = np.zeros((40, 40), np.float32)
    half[:, :20] = 0.9
    assert mask_fraction(half, tf, CAM) == pytest.approx(0.5)


def test_collector_config_is_validated():
    with pytest.raises(ValueError, match="min_confidence"):
        CollectorConfig(min_confidence=1.5)
    with pytest.raises(ValueError, match="max_rate_hz"):
        CollectorConfig(max_rate_hz=-1.0)


# --------------------------------------------------------------------------------------------
# The collector: checks in order, interpolated joints, model
# --------------------------------------------------------------------------------------------
def test_collector_saves_novel_sharp_frames_with_interpolated_joints(tmp_path):
    writer = writer_at(tmp_path / "c")
    col = Collector(writer, required_joints=ARM, config=CollectorConfig(max_rate_hz=0.0, min_joint_distance=0.1))
    assert feed(col, 0, 0.0).reason == "no_camera_info"
    col.set_camera(CAM)
    d = feed(col, 1, 0.0)
    assert d.saved and d.joint_distance == np.inf and d.sample.index == 0
    assert feed(col, 2, 0.05).reason == "not_novel"
    blurred = feed(col, 3, 0.3, image=cv2.GaussianBlur(textured(3), (0, 0), 4))
    assert blurred.reason == "blurry" and blurred.sharpness < 10.0
    assert feed(col, 4, 0.3).saved
    assert feed(col, 5, 0.0).reason == "not_novel", "a configuration saved before is not new"
    assert feed(col, 6, 0.6, image=textured(6, w=80, h=60)).reason == "camera_mismatch"
    assert feed(col, 7, 0.6, image=textured(7)[..., 0]).reason == "bad_image"
    # joints interpolated at the image stamp: 4 ms after a sample at x = 1.0, 6 ms before one at x = 2.0
    stamp = T0 + 8 * DT
    for dt_ms, x in ((-4, 1.0), (6, 2.0)):
        q = q_of(x)
        col.add_joint_state(stamp + dt_ms * 1_000_000, list(q), list(q.values()))
    d = col.offer(lambda: textured(8), stamp_ns=stamp, frame_id=FRAME)
    assert d.saved
    assert d.sample.joints["panda_joint1"] == pytest.approx(1.4, abs=1e-12)
    assert d.sample.joints["panda_finger_joint1"] == pytest.approx(0.02), "non-keypoint joints are kept too"
    # stale joint states: the newest sample is 100 ms older than the image
    stamp = T0 + 20 * DT
    q = q_of(3.0)
    col.add_joint_state(stamp - 100_000_000, list(q), list(q.values()))
    d = col.offer(textured(20), stamp_ns=stamp, frame_id=FRAME)
    assert d.reason == "joint_states" and "stale" in d.detail
    assert col.stats.saved == 3 and col.stats.rejections["not_novel"] == 2
    coll = load_collection(tmp_path / "c", check="full")
    assert coll.problems == [] and [s.index for s in coll] == [0, 1, 2]
    np.testing.assert_array_equal(coll.samples[1].image_rgb(), textured(4))  # lossless
    s = coll.samples[2]
    assert s.stamp_ns == T0 + 8 * DT and s.frame_id == FRAME and s.base_frame == "panda_link0"
    np.testing.assert_array_equal(s.camera.K, CAM.K)
    assert s.camera.size == CAM.size and s.confidence is None and s.sharpness > 100
    writer.close()


def test_collector_decodes_only_frames_that_pass_the_cheap_checks(tmp_path):
    with writer_at(tmp_path / "c") as writer:
        col = Collector(writer, required_joints=ARM, config=CollectorConfig(max_rate_hz=0.0))
        col.set_camera(CAM)
        calls = []

        def decode():
            calls.append(1)
            return textured(1)

        assert feed(col, 0, 0.0).saved
        assert feed(col, 1, 0.0, image=decode).reason == "not_novel" and calls == []
        assert feed(col, 1, 1.0, image=decode).saved and calls == [1]

        def undecodable():
            from ctrnet_ros.core.msgfields import ImageEncodingError
            raise ImageEncodingError("unsupported image encoding '16UC1'")

        d = feed(col, 2, 2.0, image=undecodable)
        assert d.reason == "bad_image" and "16UC1" in d.detail


def test_robot_in_view_check_with_a_model(tmp_path, panda_spec):
    det = FakeDetector(panda_spec.names, confidence=0.2)
    with writer_at(tmp_path / "c") as writer:
        col = Collector(writer, required_joints=ARM, detector=det, config=CollectorConfig(max_rate_hz=0.0))
        col.set_camera(CAM)
        d = feed(col, 0, 0.0)
        assert d.reason == "low_confidence" and d.confidence == pytest.approx(0.2) and det.calls == 1
        det.confidence, det.mask = 0.9, np.zeros((40, 40), np.float32)
        assert feed(col, 1, 0.0).reason == "small_mask"
        det.mask[10:30, 10:30] = 1.0
        d = feed(col, 2, 0.0)
        assert d.saved and d.sample.confidence == pytest.approx(0.9)
        assert d.sample.mask_fraction == pytest.approx(400 / 1200)
    with pytest.raises(DetectorMismatchError, match="do not match"):
        Collector.check_detector(FakeDetector(["a", "b"]), panda_spec.names)


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------
def test_max_samples_stops_saving_with_a_warning(tmp_path, caplog):
    with writer_at(tmp_path / "c", max_samples=2) as writer:
        col = Collector(writer, required_joints=ARM, config=CollectorConfig(max_rate_hz=0.0))
        col.set_camera(CAM)
        with caplog.at_level(logging.WARNING, logger="ctrnet_ros.collect.dataset"):
            assert feed(col, 0, 0.0).saved and feed(col, 1, 1.0).saved
            d = feed(col, 2, 2.0)
            assert d.reason == "max_samples" and "max_samples is 2" in d.detail
            assert feed(col, 3, 3.0).reason == "max_samples"
        assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1, "warned once"
        assert "collection full (max_samples)" in caplog.records[0].getMessage()
        with pytest.raises(CollectionLimitError) as info:
            save(writer, 9)
        assert info.value.reason == "max_samples"
    assert len(load_collection(tmp_path / "c")) == 2


def test_disk_quota_refuses_the_sample_that_would_exceed_it(tmp_path, caplog):
    with writer_at(tmp_path / "c") as writer:
        save(writer, 0)
        save(writer, 1)
        used = writer.bytes_used
    assert used == sum(p.stat().st_size for p in (tmp_path / "c" / "samples").glob("*.png"))
    with writer_at(tmp_path / "c", quota_bytes=used + 100) as writer:
        assert writer.full_reason is None
        with caplog.at_level(logging.WARNING, logger="ctrnet_ros.collect.dataset"):
            with pytest.raises(CollectionLimitError, match="over the quota") as info:
                save(writer, 2)
            assert info.value.reason == "quota" and writer.full_reason == "quota"
            with pytest.raises(CollectionLimitError):  # refused from now on, without a second warning
                save(writer, 3)
        assert len([r for r in caplog.records if "collection full (quota)" in r.getMessage()]) == 1
    assert not (tmp_path / "c" / "samples" / "000002.png").exists()
    assert len(load_collection(tmp_path / "c")) == 2
    with writer_at(tmp_path / "c", quota_bytes=used // 2) as writer:  # already over at open
        assert writer.full_reason == "quota"


# --------------------------------------------------------------------------------------------
# Restart continuation
# --------------------------------------------------------------------------------------------
def test_restart_continues_the_manifest_and_the_novelty_filter(tmp_path):
    with writer_at(tmp_path / "c") as writer:
        for i in range(3):
            save(writer, i)
    with writer_at(tmp_path / "c") as writer:
        assert writer.num_samples == 3 and writer.next_index == 3 and writer.problems == []
        col = Collector(writer, required_joints=ARM, config=CollectorConfig(max_rate_hz=2.0))
        col.set_camera(CAM)
        assert len(col.novelty) == 3
        assert feed(col, 12, 1.0).reason == "not_novel", "sample 1 (x = 1.0) is on disk"
        assert feed(col, 2, 7.0).reason == "rate", "sample 2 was saved at this stamp"
        d = feed(col, 13, 7.0)
        assert d.saved and d.sample.index == 3 and d.sample.file == "samples/000003.png"
    coll = load_collection(tmp_path / "c", check="full")
    assert coll.problems == [] and [s.index for s in coll] == [0, 1, 2, 3]
    lines = (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3]
    info = yaml.safe_load((tmp_path / "c" / "collection.yaml").read_text())
    assert info["format_version"] == dataset.FORMAT_VERSION and info["base_frame"] == "panda_link0"


def test_a_second_writer_is_refused_and_a_newer_format_is_not_read(tmp_path):
    with writer_at(tmp_path / "c"):
        with pytest.raises(CollectionLockedError, match="another process"):
            writer_at(tmp_path / "c")
    with writer_at(tmp_path / "c"):  # released on close
        pass
    (tmp_path / "c" / "collection.yaml").write_text("format: ctrnet_ros.collection\nformat_version: 99\n")
    with pytest.raises(CollectionFormatError, match="newer"):
        load_collection(tmp_path / "c")
    with pytest.raises(CollectionFormatError, match="newer"):
        writer_at(tmp_path / "c")
    with pytest.raises(CollectionFormatError, match="not a directory"):
        load_collection(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# Corrupt files
# --------------------------------------------------------------------------------------------
def _rewrite_record(root, index, **fields):
    path = root / "manifest.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    for k, line in enumerate(lines):
        rec = json.loads(line)
        if rec["index"] == index:
            lines[k] = json.dumps(rec | fields) + "\n"
    path.write_text("".join(lines))


def test_corrupt_files_are_reported_and_skipped_never_fatal(tmp_path):
    root = tmp_path / "c"
    with writer_at(root) as writer:
        for i in range(6):
            save(writer, i)
    png = {i: root / "samples" / dataset.sample_filename(i) for i in range(6)}
    # 1: truncated PNG
    png[1].write_bytes(png[1].read_bytes()[: png[1].stat().st_size // 2])
    # 2: one byte changed, same size (bad SHA-256)
    data = bytearray(png[2].read_bytes())
    data[len(data) // 2] ^= 0xFF
    png[2].write_bytes(bytes(data))
    # 3: a valid header but garbage image data, with a manifest that matches it (does not decode)
    data = png[3].read_bytes()
    bad = data[:33] + bytes(len(data) - 33)
    png[3].write_bytes(bad)
    _rewrite_record(root, 3, sha256=dataset.hashlib.sha256(bad).hexdigest())
    # 4: missing PNG
    png[4].unlink()
    # manifest garbage: broken JSON, a record without fields, a path outside samples/, an interrupted append
    with open(root / "manifest.jsonl", "ab") as f:
        f.write(b"{not json at all\n")
        f.write(b'{"index": 99}\n')
        rec = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
        f.write((json.dumps(rec | {"index": 7, "file": "../../etc/passwd"}) + "\n").encode())
        f.write(b'{"index": 6, "file": "samp')
    # an orphan PNG (crash between rename and manifest append) and a leftover temporary file
    (root / "samples" / "000050.png").write_bytes(png[0].read_bytes())
    (root / "samples" / ".000051.png.tmp").write_bytes(b"partial")

    coll = load_collection(root)  # default check: size + SHA-256 + PNG header
    assert [s.index for s in coll] == [0, 3, 5]
    text = "\n".join(coll.problems)
    for expected in ("sample 1 (samples/000001.png): the PNG has", "sample 2 (samples/000002.png): the PNG's SHA-256",
                     "sample 4 (samples/000004.png): the PNG is missing", "not valid JSON", "missing field(s) file",
                     "'../../etc/passwd' is not samples/000007.png", "incomplete last line",
                     "samples/000050.png: not in the manifest (orphan", ".000051.png.tmp: temporary file"):
        assert expected in text, expected
    assert coll.orphans == [root / "samples" / "000050.png"]
    full = load_collection(root, check="full")
    assert [s.index for s in full] == [0, 5] and "sample 3 (samples/000003.png): the PNG does not decode" in \
        "\n".join(full.problems)
    with pytest.raises(dataset.CollectionError, match="does not decode"):
        coll.samples[1].image_rgb()

    # a writer continues after all that: temp file removed, incomplete line cut, no file name reused
    with writer_at(root) as writer:
        assert not (root / "samples" / ".000051.png.tmp").exists()
        assert any("incomplete line" in p for p in writer.problems)
        assert writer.next_index == 100, "index 99 of a broken line and orphan 50 are never overwritten"
        assert save(writer, 9).index == 100
    coll = load_collection(root, check="full")
    assert [s.index for s in coll] == [0, 5, 100]
    assert (root / "manifest.jsonl").read_bytes().endswith(b"\n")


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------
def _failing_write(fail_on: str, real):
    """A ``_write_all`` that raises ENOSPC, after writing a third of the data as a real full disk does, when
    it writes a PNG (``fail_on="png"``) or a manifest line (``"manifest"``)."""

    def write_all(fd, data):
        is_png = bytes(data[:8]) == b"\x89PNG\r\n\x1a\n"
        if is_png == (fail_on == "png") and (is_png or bytes(data[:1]) == b"{"):
            real(fd, bytes(data)[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    return write_all


@pytest.mark.parametrize("fail_on", ["png", "manifest"])
def test_disk_full_leaves_no_half_sample_and_a_consistent_manifest(tmp_path, monkeypatch, fail_on):
    root = tmp_path / "c"
    writer = writer_at(root)
    col = Collector(writer, required_joints=ARM, config=CollectorConfig(max_rate_hz=0.0))
    col.set_camera(CAM)
    assert feed(col, 0, 0.0).saved
    manifest_before = (root / "manifest.jsonl").read_bytes()
    real = dataset._write_all
    monkeypatch.setattr(dataset, "_write_all", _failing_write(fail_on, real))
    with pytest.raises(CollectionWriteError, match="the disk is full") as info:
        save(writer, 1, x=5.0)
    assert info.value.disk_full
    d = feed(col, 2, 1.0)
    assert d.reason == "write_error" and "disk is full" in d.detail and col.stats.write_failing
    assert (root / "manifest.jsonl").read_bytes() == manifest_before
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["000000.png"], "no PNG, no temporary file"
    assert writer.num_samples == 1 and writer.next_index == 1
    # space again: the collector goes on where it was
    monkeypatch.setattr(dataset, "_write_all", real)
    d = feed(col, 3, 1.0)
    assert d.saved and d.sample.index == 1 and not col.stats.write_failing
    writer.close()
    coll = load_collection(root, check="full")
    assert coll.problems == [] and [s.index for s in coll] == [0, 1]


# --------------------------------------------------------------------------------------------
# ctrnet-collect on a simulated bag
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    """1 s, 160x120, 30 Hz images and 100 Hz joint states (MuJoCo, train preset)."""
    out = tmp_path_factory.mktemp("collect") / "bag"
    record_sim_bag(out, domain="train", duration_s=1.0, seed=3, width=160, height=120, progress=False)
    return out


def _bag_truth(bag):
    """{image stamp: (rgb, frame_id)}, the camera, and a joint history built from the bag's joint states."""
    images, history, camera = {}, JointStateHistory(), None
    for topic, _, msg in read_bag_messages(bag):
        if topic == DEFAULT_IMAGE_TOPIC:
            images[stamp_to_ns(msg.header.stamp)] = (image_msg_to_rgb(msg), msg.header.frame_id)
        elif topic == DEFAULT_CAMERA_INFO_TOPIC:
            camera = camera_info_msg_to_camera(msg)
        elif topic == DEFAULT_JOINT_STATES_TOPIC:
            q = joint_state_msg_to_positions(msg)
            history.add(stamp_to_ns(msg.header.stamp), list(q), list(q.values()))
    return images, camera, history


def test_cli_builds_the_dataset_from_a_bag_and_continues_it(sim_bag, tmp_path, capsys):
    out = tmp_path / "collection"
    args = ["--bag", str(sim_bag), "--out", str(out), "--no-progress", "--max-rate-hz", "0",
            "--min-joint-distance", "0.03"]
    assert cli.main(args) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert "saved:" in text and "rejected:" in text and "not_novel" in text
    coll = load_collection(out, check="full")
    assert coll.problems == [] and 5 <= len(coll) < 30
    images, camera, history = _bag_truth(sim_bag)
    for s in coll:
        rgb, frame_id = images[s.stamp_ns]
        np.testing.assert_array_equal(s.image_rgb(), rgb)
        assert s.frame_id == frame_id and s.base_frame == "panda_link0"
        np.testing.assert_array_equal(s.camera.K, camera.K)
        truth = history.at(s.stamp_ns)
        assert truth.positions == pytest.approx(s.joints, abs=1e-12) and set(s.joints) == set(truth.positions)
    q = np.array([[s.joints[j] for j in ARM] for s in coll])
    dists = np.linalg.norm(q[:, None] - q[None], axis=2) + np.eye(len(q)) * 1e9
    assert dists.min() >= 0.03, "every pair of samples is novel"
    # the same bag again: continued, nothing new (every frame is at a saved configuration or near one)
    assert cli.main(args) == cli.EXIT_OK
    assert "0 new samples" in capsys.readouterr().out
    assert [s.index for s in load_collection(out)] == [s.index for s in coll]


def test_cli_reports_bad_input(sim_bag, tmp_path, capsys):
    assert cli.main(["--bag", str(sim_bag), "--out", str(tmp_path / "c"), "--image-topic", "/nope",
                     "--no-progress"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no image topic '/nope'" in err and DEFAULT_IMAGE_TOPIC in err
    assert cli.main(["--bag", str(tmp_path / "missing"), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["--bag", str(sim_bag), "--out", str(tmp_path / "c"), "--min-confidence", "2"])


def test_collect_bag_with_a_model(sim_bag, tmp_path, panda, panda_spec):
    det = FakeDetector(panda_spec.names, confidence=0.1)
    res = collect_bag(sim_bag, tmp_path / "c", detector=det, robot_model=panda, progress=False,
                      config=CollectorConfig(max_rate_hz=0.0))
    assert res.saved == [] and res.rejections.get("low_confidence", 0) > 0 and det.calls > 0
    assert "low_confidence" in res.summary()
