"""ctrnet-eval: a generated sim bag (with a camera bump) replayed through the node's pipeline, metrics, report, errors.

The detector is a test-local oracle that "sees" the true keypoints of each bag image: before the run, the
test computes for every image the ground-truth projection of the robot keypoints (joint states
interpolated at the image stamp, camera pose from the ground-truth segment) and files it under a hash of
the image as the estimator will hand it to the detector (letterboxed to the detector input).
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.estimator import Detection
from ctrnet_ros.core.timesync import JointStateHistory
from ctrnet_ros.eval import cli
from ctrnet_ros.eval.bagio import (bag_info, camera_info_msg_to_camera, compressed_image_msg_to_rgb, image_msg_to_rgb,
                                   joint_state_msg_to_positions, read_bag_messages, stamp_to_ns)
from ctrnet_ros.eval.replay import (BagError, EvalError, GroundTruthInputError, GroundTruthMismatchError, ModelError,
                                    evaluate_bag)
from ctrnet_ros.eval.report import REQUIRED_KEYS, compute_metrics, write_report
from ctrnet_ros.sim.bag import DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC, kilted_typestore
from ctrnet_ros.sim.groundtruth import GroundTruth
from ctrnet_ros.sim.recording import BumpSpec, record_sim_bag

INPUT_SIZE = (128, 96)  # detector input; the bag is 160x120, so the letterbox scales by 0.8
BUMP = BumpSpec(at_s=0.6, translation_m=0.1, rotation_deg=8.0)  # large enough to exceed the 10 px bump threshold
COMPRESSED_TOPIC = DEFAULT_IMAGE_TOPIC + "/compressed"


# --------------------------------------------------------------------------------------------
# Fixtures: a tiny bag, an oracle detector, bag rewriting
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    """1.5 s, 160x120, 30 Hz images and 100 Hz joint states; camera bumped at 0.6 s (two ground-truth segments)."""
    out = tmp_path_factory.mktemp("eval") / "bump_bag"
    record_sim_bag(out, domain="train", duration_s=1.5, seed=3, width=160, height=120, bump=BUMP, progress=False)
    return out


class BagOracle:
    """Test double: returns the true keypoints of the image it is given (looked up by content hash)."""

    def __init__(self, names, truth, *, noise_px=0.0, seed=0):
        self.keypoint_names = list(names)
        self.input_size = INPUT_SIZE
        self.truth = truth  # sha1 of the letterboxed image -> (K, 2) true keypoints, detector-input px
        self.noise_px = noise_px
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def detect(self, image_rgb):
        assert image_rgb.shape == (INPUT_SIZE[1], INPUT_SIZE[0], 3)
        self.calls += 1
        uv = self.truth.get(hashlib.sha1(image_rgb.tobytes()).hexdigest())
        k = len(self.keypoint_names)
        if uv is None:  # an image the test did not prepare: "robot not visible"
            return Detection(keypoints_uv=np.full((k, 2), np.nan), confidence=np.zeros(k))
        return Detection(keypoints_uv=uv + self.rng.normal(0.0, self.noise_px, uv.shape), confidence=np.ones(k))


def true_keypoints_by_image(bag, robot, spec, image_topic=DEFAULT_IMAGE_TOPIC):
    """{sha1 of the detector-input image: (K, 2) true keypoints in detector-input px} for every image of ``bag``."""
    gt = GroundTruth.load(Path(bag) / "groundtruth.yaml")
    start_ns = bag_info(bag).start_ns
    history, camera, images = JointStateHistory(), None, []
    for topic, log_ns, msg in read_bag_messages(bag):
        if topic == DEFAULT_CAMERA_INFO_TOPIC:
            camera = camera_info_msg_to_camera(msg)
        elif topic == "/joint_states":
            q = joint_state_msg_to_positions(msg)
            history.add(stamp_to_ns(msg.header.stamp), list(q), list(q.values()))
        elif topic == image_topic:
            decode = compressed_image_msg_to_rgb if topic.endswith("compressed") else image_msg_to_rgb
            images.append((stamp_to_ns(msg.header.stamp), log_ns, decode(msg)))
    tf = camera.letterbox_transform(*INPUT_SIZE)
    required = robot.required_joints(spec.links)
    truth = {}
    for stamp, log_ns, rgb in images:
        query = history.at(stamp, required)
        if query.problems:
            continue
        T_camera_base = se3.invert_transform(gt.segment_at((log_ns - start_ns) / 1e9).T_parent_child)
        uv = camera.project_from(T_camera_base, robot.keypoints_base(spec, query.positions))
        truth[hashlib.sha1(tf.apply_image(rgb).tobytes()).hexdigest()] = tf.apply_coords(uv)
    return truth


def rewrite_bag(src, dst, *, storage="mcap", drop=(), compress_images=False):
    """Copy a bag with rosbags: other storage, topics dropped, or images re-encoded as CompressedImage (jpeg)."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = kilted_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with AnyReader([Path(src)], default_typestore=ts) as reader, \
            Writer(dst, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic in drop:
                continue
            if compress_images and c.topic == DEFAULT_IMAGE_TOPIC:
                conns[c.id] = writer.add_connection(COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage", typestore=ts)
            else:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=ts)
        CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
        for c, t, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
            if compress_images and c.topic == DEFAULT_IMAGE_TOPIC:
                msg = reader.deserialize(raw, c.msgtype)
                ok, buf = cv2.imencode(".jpg", image_msg_to_rgb(msg)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                assert ok
                raw = ts.serialize_cdr(CompressedImage(header=msg.header, format="rgb8; jpeg compressed bgr8",
                                                       data=buf.reshape(-1)), "sensor_msgs/msg/CompressedImage")
            writer.write(conns[c.id], t, raw)
    shutil.copy(Path(src) / "groundtruth.yaml", Path(dst) / "groundtruth.yaml")
    return Path(dst)


def oracle_eval(bag, panda, panda_spec, *, noise_px=0.0, **kwargs):
    truth = true_keypoints_by_image(bag, panda, panda_spec, kwargs.get("image_topic", DEFAULT_IMAGE_TOPIC))
    det = BagOracle(panda_spec.names, truth, noise_px=noise_px, seed=1)
    return evaluate_bag(bag, None, detector=det, robot_model=panda, progress=False, **kwargs), det


# --------------------------------------------------------------------------------------------
# Accuracy with an exact detector: two segments, each against its own ground truth
# --------------------------------------------------------------------------------------------
def test_exact_detector_gives_exact_metrics_in_both_segments(sim_bag, panda, panda_spec, tmp_path):
    result, det = oracle_eval(sim_bag, panda, panda_spec)
    frames = result.frames
    assert len(frames) == 45 and [f.index for f in frames] == list(range(45))
    # The first image precedes every joint state (recorded 3.7 ms later): the pipeline refuses it, as the node does.
    assert not frames[0].ok and frames[0].reason == "joint_states" and frames[0].add_m == np.inf
    assert all(f.ok for f in frames[1:])
    assert det.calls == 44  # the detector ran once per frame that had joint states: no second implementation
    assert [f.segment for f in frames] == [0 if f.t_rel < BUMP.at_s else 1 for f in frames]

    m = write_report(result, tmp_path)
    assert m["frames"] == 45 and m["frames_with_estimate"] == 44
    assert m["add_auc"] == pytest.approx(100.0 * 44 / 45, abs=1e-6)  # the one failure counts as a miss
    assert m["add_median_m"] < 1e-9 and m["trans_err_median_m"] < 1e-9 and m["rot_err_median_deg"] < 1e-6
    seg0, seg1 = m["segments"]
    for seg in (seg0, seg1):
        assert seg["fused_trans_err_m"] < 1e-9 and seg["fused_rot_err_deg"] < 1e-6
        assert seg["trans_err_median_m"] < 1e-9  # each frame is compared with *its* segment
    assert m["fused"]["trans_err_m"] < 1e-9 and m["fused"]["rot_err_deg"] < 1e-6
    # After the bump the old fused pose is off by exactly the bump until the fusion notices and re-converges.
    assert seg0["bumps_detected_at_s"] == [] and len(seg1["bumps_detected_at_s"]) == 1
    bump_t = seg1["bumps_detected_at_s"][0]
    stale = [f for f in frames if f.segment == 1 and f.t_rel < bump_t]
    assert stale and all(f.fused_trans_err_m == pytest.approx(BUMP.translation_m, abs=1e-6) for f in stale)
    assert all(f.fused_rot_err_deg == pytest.approx(BUMP.rotation_deg, abs=1e-4) for f in stale)
    assert frames[-1].fusion_segment == 1 and frames[-1].source == "fused"
    # Exact from the first fused pose on, which needs min_frames (3) distinct joint configurations.
    first_fused = next(f.t_rel for f in frames if f.segment == 0 and f.fusion_num_frames >= 3)
    assert seg0["seconds_to_2mm"] == pytest.approx(first_fused) and 0.0 < first_fused < 0.5
    # The streak that confirmed the bump restarts the fusion: exact again at the bump frame itself.
    assert seg1["seconds_to_2mm"] == pytest.approx(bump_t - BUMP.at_s) and seg1["seconds_to_2mm"] < 0.9
    assert m["fused"]["seconds_to_2mm"] == seg1["seconds_to_2mm"]
    assert m["latency_ms"]["median"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["median"]
    assert m["reprojection_px"]["median"] < 1e-6

    # metrics.json: exactly the required keys (first, in order) with the required types, strict JSON.
    on_disk = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert list(on_disk)[:len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert isinstance(on_disk["frames"], int) and isinstance(on_disk["frames_with_estimate"], int)
    for key in ("add_auc", "add_mean_m", "add_median_m", "trans_err_median_m", "rot_err_median_deg"):
        assert isinstance(on_disk[key], float), key
    assert set(on_disk["fused"]) == {"trans_err_m", "rot_err_deg", "seconds_to_2mm"}
    assert all(isinstance(v, float) for v in on_disk["fused"].values())
    assert set(on_disk["latency_ms"]) == {"median", "p95"}
    assert all(isinstance(v, float) for v in on_disk["latency_ms"].values())

    for name in ("report.md", "frames.csv", "add_auc.png", "error_over_time.png", "reprojection_error_hist.png",
                 "overlay_samples.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = (tmp_path / "report.md").read_text()
    for link in ("(add_auc.png)", "(error_over_time.png)", "(reprojection_error_hist.png)", "(overlay_samples.png)",
                 "(metrics.json)", "T_base_camera"):
        assert link in report
    assert cv2.imread(str(tmp_path / "overlay_samples.png")) is not None


def test_pixel_noise_gives_finite_plausible_metrics(sim_bag, panda, panda_spec, tmp_path):
    result, _ = oracle_eval(sim_bag, panda, panda_spec, noise_px=0.3)
    m = write_report(result, tmp_path, plots=False)
    assert m["frames_with_estimate"] >= 40
    assert 0.0 < m["add_auc"] < 100.0
    for key in ("add_mean_m", "add_median_m", "trans_err_median_m", "rot_err_median_deg"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    assert m["trans_err_median_m"] < 0.5 and m["rot_err_median_deg"] < 10.0  # 0.3 px on a 160x120 image
    assert 0.05 < m["reprojection_px"]["median"] < 1.0  # 0.3 input px = 0.375 camera px per axis
    assert np.isfinite(m["fused"]["trans_err_m"]) and np.isfinite(m["fused"]["rot_err_deg"])
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "report.md").is_file()


def test_sqlite3_storage_and_compressed_images(sim_bag, panda, panda_spec, tmp_path):
    sqlite_bag = rewrite_bag(sim_bag, tmp_path / "sqlite_bag", storage="sqlite3")
    assert list(sqlite_bag.glob("*.db3"))
    result, _ = oracle_eval(sqlite_bag, panda, panda_spec)
    assert len(result.frames) == 45 and sum(f.ok for f in result.frames) == 44
    assert max(f.trans_err_m for f in result.frames if f.ok) < 1e-9

    jpeg_bag = rewrite_bag(sim_bag, tmp_path / "jpeg_bag", compress_images=True)
    result, _ = oracle_eval(jpeg_bag, panda, panda_spec, image_topic=COMPRESSED_TOPIC)
    assert result.image_msgtype == "sensor_msgs/msg/CompressedImage"
    assert len(result.frames) == 45 and sum(f.ok for f in result.frames) == 44
    assert max(f.trans_err_m for f in result.frames if f.ok) < 1e-9


# --------------------------------------------------------------------------------------------
# Bad input: a clear message naming the problem, from the library and from the CLI (exit 2)
# --------------------------------------------------------------------------------------------
def _corrupt(sim_bag, dst, how):
    shutil.copytree(sim_bag, dst)
    mcap = next(dst.glob("*.mcap"))
    data = mcap.read_bytes()
    if how == "truncated":
        mcap.write_bytes(data[: len(data) // 2])
    else:  # garbled: the first records after the magic overwritten
        mcap.write_bytes(data[:8] + bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)) + data[72:])
    return dst


def _gt_with(sim_bag, path, **frames):
    gt = GroundTruth.load(sim_bag / "groundtruth.yaml")
    return GroundTruth(parent_frame=frames.get("parent_frame", gt.parent_frame),
                       child_frame=frames.get("child_frame", gt.child_frame), segments=gt.segments).save(path)


BAD_INPUTS = {
    # case: (make(sim_bag, tmp_path) -> (bag, extra CLI args, evaluate_bag kwargs), error type, message regex)
    "missing image topic": (lambda b, d: (b, ["--image-topic", "/camera/nope"], {"image_topic": "/camera/nope"}),
                            BagError, r"no image topic '/camera/nope'.*The bag has: .*/joint_states"),
    "missing joint topic": (lambda b, d: (b, ["--joint-states-topic", "/arm/js"], {"joint_states_topic": "/arm/js"}),
                            BagError, r"no joint states topic '/arm/js'.*sensor_msgs/msg/JointState"),
    "wrong image type": (lambda b, d: (b, ["--image-topic", "/joint_states"], {"image_topic": "/joint_states"}),
                         BagError, r"carries sensor_msgs/msg/JointState, expected sensor_msgs/msg/CompressedImage or "
                                   r"sensor_msgs/msg/Image"),
    "no camera_info": (lambda b, d: (rewrite_bag(b, d / "nocaminfo", drop=(DEFAULT_CAMERA_INFO_TOPIC,)), [], {}),
                       BagError, r"no camera_info topic '/camera/color/camera_info'.*intrinsics"),
    "truncated bag": (lambda b, d: (_corrupt(b, d / "trunc", "truncated"), [], {}), BagError, r"corrupt"),
    "garbled bag": (lambda b, d: (_corrupt(b, d / "garbled", "garbled"), [], {}), BagError, r"corrupt"),
    "no bag": (lambda b, d: (d / "nothing_here", ["--ground-truth", str(b / "groundtruth.yaml")],
                             {"groundtruth": b / "groundtruth.yaml"}), BagError, r"does not exist"),
    "other camera frame": (lambda b, d: (b, ["--ground-truth",
                                             str(_gt_with(b, d / "gt.yaml", child_frame="wrist_cam"))],
                                         {"groundtruth": d / "gt.yaml"}),
                           GroundTruthMismatchError, r"'wrist_cam'.*'camera_color_optical_frame'"),
    "other base frame": (lambda b, d: (b, ["--ground-truth", str(_gt_with(b, d / "gt.yaml", parent_frame="world"))],
                                       {"groundtruth": d / "gt.yaml"}),
                         GroundTruthMismatchError, r"'world'.*base link 'panda_link0'"),
    "malformed ground truth": (lambda b, d: ((d / "gt.yaml").write_text("segments: 3\n") and b,
                                             ["--ground-truth", str(d / "gt.yaml")], {"groundtruth": d / "gt.yaml"}),
                               GroundTruthInputError, r"bad ground truth.*missing \['parent_frame', 'child_frame'\]"),
    "missing model": (lambda b, d: (b, ["--model", str(d / "nope.onnx")], {"model": d / "nope.onnx"}),
                      ModelError, r"nope.onnx does not exist"),
    "corrupt model": (lambda b, d: ((d / "bad.onnx").write_bytes(b"\x08\x07garbage" * 50) and b,
                                    ["--model", str(d / "bad.onnx")], {"model": d / "bad.onnx"}),
                      ModelError, r"cannot load ONNX model .*bad.onnx"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_by_library_and_cli(case, sim_bag, panda, tmp_path, capsys):
    make, error, pattern = BAD_INPUTS[case]
    bag, cli_args, kwargs = make(sim_bag, tmp_path)
    if "model" not in kwargs:
        kwargs["detector"] = BagOracle(["panda_link0", "panda_link2", "panda_link3", "panda_link4", "panda_link6",
                                        "panda_link7", "panda_hand"], {})
    with pytest.raises(error, match=pattern) as info:
        evaluate_bag(bag, kwargs.pop("groundtruth", None), robot_model=panda, progress=False, **kwargs)
    assert isinstance(info.value, EvalError)
    capsys.readouterr()
    assert cli.main([str(bag), "--out", str(tmp_path / "out"), "--no-progress"] + cli_args) == cli.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ctrnet-eval: error: ") and "Traceback" not in captured.err
    assert re.search(pattern, captured.err), captured.err
    assert not (tmp_path / "out" / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# The CLI end to end with a real (random-weight) model file
# --------------------------------------------------------------------------------------------
def test_cli_with_random_model_counts_failures(sim_bag, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from ctrnet_ros.net.registry import build_model, save_checkpoint

    torch.manual_seed(0)
    model, config = build_model("ctrnet_slim", input_size=(64, 48), trunk_depth=18, trunk_width=8, head_channels=16,
                                mask_channels=8)
    names = ["panda_link0", "panda_link2", "panda_link3", "panda_link4", "panda_link6", "panda_link7", "panda_hand"]
    save_checkpoint(tmp_path / "random.pt", model.eval(), config, {"keypoint_names": names, "input_size": [64, 48]})
    out = tmp_path / "report"
    threads = torch.get_num_threads()
    try:  # one thread: the machine is shared, and oversubscribed torch threads are 3x slower here
        rc = cli.main([str(sim_bag), "--model", str(tmp_path / "random.pt"), "--out", str(out), "--no-progress",
                       "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == cli.EXIT_OK
    stdout = capsys.readouterr().out
    assert "ADD AUC" in stdout and "fused segment 1" in stdout and "latency" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 45 and m["model"].endswith("random.pt")
    assert m["frames_with_estimate"] + sum(m["failures"].values()) == m["frames"]
    assert m["latency_ms"]["median"] > 0
    for name in ("report.md", "add_auc.png", "error_over_time.png", "reprojection_error_hist.png",
                 "overlay_samples.png"):
        assert (out / name).is_file(), name


def test_moving_mode_reports_the_filtered_pose(sim_bag, panda, panda_spec):
    result, _ = oracle_eval(sim_bag, panda, panda_spec, mode="moving")
    assert result.mode == "moving"
    published = [f for f in result.frames if f.T_camera_base_fused is not None]
    assert published and all(f.source == "filtered" for f in published)
    assert all(f.fusion_num_frames == 0 for f in result.frames)  # no static fusion ran
    # The filter follows the bump once confirmed; by the end of each segment it is on the segment's pose.
    assert compute_metrics(result)["fused"]["trans_err_m"] < 1e-3
