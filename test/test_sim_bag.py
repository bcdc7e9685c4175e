"""Synthetic rosbag2 writer, ground-truth YAML and the rosbags-based reader (no ROS needed).

Renderers. MuJoCo costs ~50 ms a frame here whatever the image size (the Panda's 134k faces on
llvmpipe), so a 10 s bag at 30 Hz alone would take 15 s. Hence:

* the bulk of the tests (counts, stamps, content, determinism, storage) render with
  :class:`KeypointSketchRenderer`, a *test fixture* that draws the projected keypoints with OpenCV;
  the writer treats every :class:`~ctrnet_ros.sim.frame.Renderer` alike;
* ``test_mujoco_*`` write short bags with the real ``MujocoRenderer`` and the real
  ``smooth_joint_trajectory`` (skipped, with the reason, where MuJoCo cannot render).

``CTRNET_TEST_BAG_RENDERER=mujoco`` runs the bulk tests with MuJoCo as well (about 45 s).
Either way each image is compared with a re-render at the stamp's exact joint positions.
"""

from __future__ import annotations

import dataclasses
import math
import os

import cv2
import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.eval.bagio import (BagReadError, ImageEncodingError, bag_topics, camera_info_msg_to_camera,
                                   image_msg_to_rgb, joint_state_msg_to_positions, read_bag_messages, stamp_to_ns)
from ctrnet_ros.sim.bag import (DEFAULT_CAMERA_FRAME, DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC,
                                DEFAULT_JOINT_STATES_TOPIC, DEFAULT_START_TIME_NS, GROUNDTRUTH_FILENAME,
                                kilted_typestore, rgb_to_image_msg, write_sim_bag)
from ctrnet_ros.sim.frame import RenderedFrame
from ctrnet_ros.sim.groundtruth import GroundTruth, GroundTruthError, GroundTruthSegment

IMG, INFO, JOINTS = DEFAULT_IMAGE_TOPIC, DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_JOINT_STATES_TOPIC
WIDTH, HEIGHT = 64, 48


# --------------------------------------------------------------------------------------------
# Fixtures: camera, trajectory, renderer
# --------------------------------------------------------------------------------------------
class KeypointSketchRenderer:
    """TEST FIXTURE, not a renderer of the robot: draws keypoints and the chain between them with cv2.

    Deterministic and ~1 ms a frame, it implements the ``Renderer`` protocol so that the bag writer can
    be tested while (or where) the MuJoCo renderer is unavailable.
    """

    def __init__(self, robot, spec):
        self.robot, self.spec = robot, spec

    def render(self, joint_positions, T_camera_base, camera: PinholeCamera) -> RenderedFrame:
        kp_base = self.robot.keypoints_base(self.spec, joint_positions)
        kp_cam = se3.transform_points(T_camera_base, kp_base)
        uv = camera.project(kp_cam)
        in_image = camera.in_image(uv) & (kp_cam[:, 2] > 0)
        rgb = np.zeros((camera.height, camera.width, 3), np.uint8)
        pts = [None if not ok else (int(round(p[0] * 16)), int(round(p[1] * 16))) for p, ok in zip(uv, in_image)]
        for a, b in zip(pts, pts[1:]):
            if a is not None and b is not None:
                cv2.line(rgb, a, b, (200, 120, 40), 1, cv2.LINE_AA, shift=4)
        for i, p in enumerate(pts):
            if p is not None:
                cv2.circle(rgb, p, 16, (60 + 25 * i, 255 - 30 * i, 90), -1, cv2.LINE_AA, shift=4)
        mask = rgb.any(axis=2)
        return RenderedFrame(rgb=rgb, mask=mask, link_labels=np.where(mask, 0, -1).astype(np.int16),
                             link_names=[self.spec.base_link], camera=camera, T_camera_base=np.asarray(T_camera_base),
                             joint_positions=dict(joint_positions), keypoints_base=kp_base, keypoints_camera=kp_cam,
                             keypoints_uv=uv, in_image=in_image, visible=in_image.copy())


def _make_mujoco_renderer(robot, spec, camera):
    """``(MujocoRenderer, None)`` if it builds and renders here, else ``(None, reason)``."""
    try:
        from ctrnet_ros.sim.render import MujocoRenderer
    except ImportError as exc:
        return None, f"ctrnet_ros.sim.render does not import: {exc}"
    try:
        renderer = MujocoRenderer(robot, spec, max_width=camera.width, max_height=camera.height)
    except Exception as exc:  # noqa: BLE001 - no GL here (RenderError), or mujoco missing pieces
        return None, f"MujocoRenderer cannot start: {type(exc).__name__}: {exc}"
    try:
        renderer.render(robot.default_positions(), se3.invert_transform(_T_BASE_CAMERA), camera)
    except Exception as exc:  # noqa: BLE001
        renderer.close()
        return None, f"MujocoRenderer cannot render: {type(exc).__name__}: {exc}"
    return renderer, None


@pytest.fixture(scope="module")
def camera():
    return PinholeCamera.from_fov(width=WIDTH, height=HEIGHT, fovy_deg=55.0)


_T_BASE_CAMERA = se3.look_at_optical([1.5, 0.5, 0.9], [0.0, 0.0, 0.45])


@pytest.fixture(scope="module")
def T_camera_base():
    return se3.invert_transform(_T_BASE_CAMERA)


@pytest.fixture(scope="module")
def mujoco_renderer(panda, panda_spec, camera):
    renderer, reason = _make_mujoco_renderer(panda, panda_spec, camera)
    if renderer is None:
        pytest.skip(reason)
    yield renderer
    renderer.close()


@pytest.fixture(scope="module")
def renderer(request, panda, panda_spec):
    """The renderer of the bulk tests: the sketch fixture, or MuJoCo if CTRNET_TEST_BAG_RENDERER=mujoco."""
    choice = os.environ.get("CTRNET_TEST_BAG_RENDERER", "sketch")
    if choice == "mujoco":
        return request.getfixturevalue("mujoco_renderer")
    if choice != "sketch":
        raise ValueError(f"CTRNET_TEST_BAG_RENDERER must be 'sketch' or 'mujoco', got {choice!r}")
    return KeypointSketchRenderer(panda, panda_spec)


class SinusoidTrajectory:
    """Test trajectory: each joint swings sinusoidally inside its limits; analytic velocity for checks."""

    def __init__(self, robot, rng: np.random.Generator):
        lim = robot.joint_limits()
        self.names = list(robot.joint_names)
        self.mid = lim.mean(axis=1)
        self.amp = 0.3 * (lim[:, 1] - lim[:, 0]) / 2.0
        self.omega = 2 * np.pi * rng.uniform(0.05, 0.3, len(self.names))
        self.phase = rng.uniform(0, 2 * np.pi, len(self.names))

    def __call__(self, t: float) -> dict[str, float]:
        return dict(zip(self.names, (self.mid + self.amp * np.sin(self.omega * t + self.phase)).tolist()))

    def velocity(self, t: float) -> dict[str, float]:
        return dict(zip(self.names, (self.amp * self.omega * np.cos(self.omega * t + self.phase)).tolist()))


@pytest.fixture(scope="module")
def trajectory(panda):
    return SinusoidTrajectory(panda, np.random.default_rng(7))


@pytest.fixture(scope="module")
def bag10(tmp_path_factory, renderer, panda, camera, T_camera_base, trajectory):
    """A 10 s mcap bag and all its messages, written once for the module."""
    out = tmp_path_factory.mktemp("bags") / "sim10"
    summary = write_sim_bag(out, renderer=renderer, robot=panda, camera=camera, T_camera_base=T_camera_base,
                            q_of_t=trajectory, duration_s=10.0, seed=3, progress=False)
    messages = list(read_bag_messages(out, [IMG, INFO, JOINTS]))
    return summary, messages


def _by_topic(messages, topic):
    return [(stamp, msg) for t, stamp, msg in messages if t == topic]


def _t_of(stamp_ns: int) -> float:
    """Trajectory time of a stamp (these bags start at DEFAULT_START_TIME_NS)."""
    return (stamp_ns - DEFAULT_START_TIME_NS) / 1e9


# --------------------------------------------------------------------------------------------
# The 10 s bag
# --------------------------------------------------------------------------------------------
def test_message_counts_per_topic(bag10):
    summary, messages = bag10
    counts = {t: len(_by_topic(messages, t)) for t in (IMG, INFO, JOINTS)}
    assert counts[IMG] == 300 and counts[INFO] == 300
    assert 990 <= counts[JOINTS] <= 1000
    assert summary.message_counts == counts
    assert bag_topics(summary.bag_path) == {IMG: "sensor_msgs/msg/Image", INFO: "sensor_msgs/msg/CameraInfo",
                                            JOINTS: "sensor_msgs/msg/JointState"}
    assert summary.storage == "mcap" and any(summary.bag_path.glob("*.mcap"))


def test_stamps_are_ordered_and_headers_equal_log_time(bag10):
    summary, messages = bag10
    stamps = [s for _, s, _ in messages]
    assert stamps == sorted(stamps)
    assert stamps[0] == summary.first_stamp_ns == DEFAULT_START_TIME_NS
    assert stamps[-1] == summary.last_stamp_ns
    assert messages[0][0] in (IMG, INFO)  # the first image is the bag's first message
    for _, stamp, msg in messages:
        assert stamp_to_ns(msg.header.stamp) == stamp
    for topic in (IMG, INFO, JOINTS):
        assert np.all(np.diff([s for s, _ in _by_topic(messages, topic)]) > 0), topic
    img_stamps = np.array([s for s, _ in _by_topic(messages, IMG)])
    np.testing.assert_array_equal(img_stamps, DEFAULT_START_TIME_NS + np.round(np.arange(300) * 1e9 / 30))


def test_joint_stamps_are_not_aligned_with_images(bag10):
    _, messages = bag10
    img = np.array([s for s, _ in _by_topic(messages, IMG)], dtype=np.int64)
    joints = np.array([s for s, _ in _by_topic(messages, JOINTS)], dtype=np.int64)
    assert not set(joints.tolist()) & set(img.tolist())
    nearest = np.abs(joints[:, None] - img[None, :]).min(axis=1)
    assert nearest.min() > 0
    # 3.7 ms behind a 100 Hz grid, with jitter (not a perfect grid).
    lag = (joints - DEFAULT_START_TIME_NS) % 10_000_000
    assert abs(np.median(lag) / 1e6 - 3.7) < 0.5
    assert np.std(np.diff(joints)) > 1e4  # > 10 us spread between intervals


def test_joint_states_are_exact_trajectory_samples(bag10, panda, trajectory):
    _, messages = bag10
    joint_msgs = _by_topic(messages, JOINTS)
    for stamp, msg in joint_msgs[:: 37] + joint_msgs[-1:]:
        assert list(msg.name) == panda.joint_names
        assert "panda_finger_joint1" in msg.name
        assert msg.header.frame_id == ""
        t = _t_of(stamp)
        q = trajectory(t)
        positions = joint_state_msg_to_positions(msg)
        for name in panda.joint_names:
            assert positions[name] == pytest.approx(q[name], abs=1e-12)
        v_true = np.array([trajectory.velocity(t)[n] for n in msg.name])
        np.testing.assert_allclose(msg.velocity, v_true, atol=1e-6)
        assert len(msg.effort) == len(msg.name) and not np.any(msg.effort)


def test_images_render_the_exact_joint_positions(bag10, renderer, camera, T_camera_base, trajectory):
    _, messages = bag10
    images = _by_topic(messages, IMG)
    for stamp, msg in images[::50] + images[-1:]:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", WIDTH, HEIGHT, 3 * WIDTH)
        assert msg.header.frame_id == DEFAULT_CAMERA_FRAME
        expected = renderer.render(trajectory(_t_of(stamp)), T_camera_base, camera).rgb
        np.testing.assert_array_equal(image_msg_to_rgb(msg), expected)
    assert any(image_msg_to_rgb(m).any() for _, m in images[::30]), "the robot is never in view"


def test_camera_info_matches_the_camera(bag10, camera):
    _, messages = bag10
    infos = _by_topic(messages, INFO)
    for _, msg in infos[:1] + infos[-1:]:
        np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), camera.K)
        np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4), np.hstack([camera.K, np.zeros((3, 1))]))
        np.testing.assert_array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
        np.testing.assert_array_equal(msg.d, camera.D)
        assert (msg.width, msg.height, msg.distortion_model) == (WIDTH, HEIGHT, "plumb_bob")
        assert msg.header.frame_id == DEFAULT_CAMERA_FRAME
        back = camera_info_msg_to_camera(msg)
        np.testing.assert_array_equal(back.K, camera.K)
        np.testing.assert_array_equal(back.D, camera.D)
        assert (back.size, back.distortion_model) == (camera.size, camera.distortion_model)


def test_groundtruth_yaml_next_to_the_bag(bag10, T_camera_base, panda):
    summary, _ = bag10
    assert summary.groundtruth_path == summary.bag_path / GROUNDTRUTH_FILENAME
    gt = GroundTruth.load(summary.groundtruth_path)
    assert gt == summary.groundtruth
    assert (gt.parent_frame, gt.child_frame) == (panda.base_link, DEFAULT_CAMERA_FRAME)
    assert len(gt.segments) == 1 and gt.segments[0].start == 0.0 and gt.segments[0].end == math.inf
    np.testing.assert_allclose(gt.segments[0].T_parent_child, se3.invert_transform(T_camera_base), atol=1e-12)
    text = summary.groundtruth_path.read_text()
    assert "end: .inf" in text and "\n  - start: 0.0\n" in text


# --------------------------------------------------------------------------------------------
# Camera bump, storage, determinism, argument checks
# --------------------------------------------------------------------------------------------
def test_bump_bag_has_two_segments_with_the_right_boundary(tmp_path, renderer, panda, camera, T_camera_base,
                                                           trajectory):
    T_bumped = T_camera_base @ se3.make_transform(se3.rvec_to_matrix([0.0, 0.0, np.radians(4.0)]), [0.03, 0, 0])
    summary = write_sim_bag(tmp_path / "bump", renderer=renderer, robot=panda, camera=camera,
                            T_camera_base=[(0.0, T_camera_base), (1.25, T_bumped)], q_of_t=trajectory,
                            duration_s=2.0, progress=False)
    gt = GroundTruth.load(summary.groundtruth_path)
    assert [(s.start, s.end) for s in gt.segments] == [(0.0, 1.25), (1.25, math.inf)]
    np.testing.assert_allclose(gt.segments[1].T_parent_child, se3.invert_transform(T_bumped), atol=1e-12)
    # Every image is the render at the ground-truth pose looked up by its stamp (same clock, same boundary).
    n_before = 0
    for _, stamp, msg in read_bag_messages(summary.bag_path, [IMG]):
        t_rel = (stamp - summary.first_stamp_ns) / 1e9
        T_cb = se3.invert_transform(gt.segment_at(t_rel).T_parent_child)
        expected = renderer.render(trajectory(_t_of(stamp)), T_cb, camera).rgb
        np.testing.assert_array_equal(image_msg_to_rgb(msg), expected)
        n_before += t_rel < 1.25
    assert n_before == 38  # images at k / 30 s for k = 0..37 precede 1.25 s


@pytest.mark.parametrize("storage, compress, suffix", [("sqlite3", False, "*.db3"), ("mcap", True, "*.mcap")])
def test_other_storage_options_round_trip(tmp_path, renderer, panda, camera, T_camera_base, trajectory, storage,
                                          compress, suffix):
    summary = write_sim_bag(tmp_path / "bag", renderer=renderer, robot=panda, camera=camera,
                            T_camera_base=T_camera_base, q_of_t=trajectory, duration_s=0.5, storage=storage,
                            compress=compress, progress=False)
    assert any(summary.bag_path.glob(suffix))
    counts = {}
    for topic, _, _ in read_bag_messages(summary.bag_path):
        counts[topic] = counts.get(topic, 0) + 1
    assert counts == summary.message_counts == {IMG: 15, INFO: 15, JOINTS: 50}


def _plain(value):
    """A message as nested builtins (arrays as dtype, shape and bytes) for exact comparison."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _noise(rgb, rng):
    return np.clip(rgb.astype(np.int16) + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)


def test_same_seed_gives_an_identical_bag(tmp_path, renderer, panda, camera, T_camera_base, trajectory):
    def write(name, seed):
        summary = write_sim_bag(tmp_path / name, renderer=renderer, robot=panda, camera=camera,
                                T_camera_base=T_camera_base, q_of_t=trajectory, duration_s=1.0, seed=seed,
                                image_effects=_noise, progress=False)
        return [(t, s, _plain(m)) for t, s, m in read_bag_messages(summary.bag_path)]

    a, b, c = write("a", 11), write("b", 11), write("c", 12)
    assert a == b
    assert [s for t, s, _ in a if t == JOINTS] != [s for t, s, _ in c if t == JOINTS]
    assert [m for t, _, m in a if t == IMG] != [m for t, _, m in c if t == IMG]  # noise follows the seed


def test_mujoco_bump_bag_images_are_the_render_at_the_groundtruth_pose(tmp_path, mujoco_renderer, panda, camera,
                                                                         T_camera_base):
    from ctrnet_ros.sim.randomize import smooth_joint_trajectory

    traj = smooth_joint_trajectory(panda, np.random.default_rng(5), 1.0)
    T_bumped = T_camera_base @ se3.make_transform(se3.rvec_to_matrix([0.0, np.radians(3.0), 0.0]), [0.0, 0.02, 0])
    summary = write_sim_bag(tmp_path / "mujoco", renderer=mujoco_renderer, robot=panda, camera=camera,
                            T_camera_base=[(0.0, T_camera_base), (0.5, T_bumped)], q_of_t=traj,
                            qd_of_t=traj.velocity, duration_s=1.0, progress=False)
    gt = GroundTruth.load(summary.groundtruth_path)
    assert [(s.start, s.end) for s in gt.segments] == [(0.0, 0.5), (0.5, math.inf)]
    images = list(read_bag_messages(summary.bag_path, [IMG]))
    assert len(images) == 30
    for k in (0, 14, 15, 29):  # both ends, and the last image before / first after the bump
        _, stamp, msg = images[k]
        t_rel = (stamp - summary.first_stamp_ns) / 1e9
        T_cb = se3.invert_transform(gt.segment_at(t_rel).T_parent_child)
        frame = mujoco_renderer.render(traj(t_rel), T_cb, camera)
        np.testing.assert_array_equal(image_msg_to_rgb(msg), frame.rgb)
        assert frame.mask.any(), f"the robot is not in view at t = {t_rel}"
    q = traj(images[14][1] / 1e9 - DEFAULT_START_TIME_NS / 1e9)
    assert not np.array_equal(mujoco_renderer.render(q, T_camera_base, camera).rgb,
                              mujoco_renderer.render(q, T_bumped, camera).rgb)
    for _, stamp, msg in list(read_bag_messages(summary.bag_path, [JOINTS]))[::10]:
        v = traj.velocity(_t_of(stamp))
        np.testing.assert_array_equal(msg.velocity, [v[n] for n in msg.name])  # the analytic velocity


def test_mujoco_same_seed_gives_an_identical_bag(tmp_path, mujoco_renderer, panda, camera, T_camera_base,
                                                 trajectory):
    def write(name):
        summary = write_sim_bag(tmp_path / name, renderer=mujoco_renderer, robot=panda, camera=camera,
                                T_camera_base=T_camera_base, q_of_t=trajectory, duration_s=0.2, seed=4,
                                image_effects=_noise, progress=False)
        return [(t, s, _plain(m)) for t, s, m in read_bag_messages(summary.bag_path)]

    assert write("a") == write("b")


def test_missing_trajectory_joints_take_defaults(tmp_path, renderer, panda, camera, T_camera_base, caplog):
    arm_only = lambda t: {f"panda_joint{i}": 0.1 * t for i in range(1, 8)} | {"panda_joint4": -1.5}  # noqa: E731
    summary = write_sim_bag(tmp_path / "arm", renderer=renderer, robot=panda, camera=camera,
                            T_camera_base=T_camera_base, q_of_t=arm_only, duration_s=0.1, progress=False)
    msg = next(m for _, _, m in read_bag_messages(summary.bag_path, [JOINTS]))
    assert joint_state_msg_to_positions(msg)["panda_finger_joint1"] == panda.default_positions()["panda_finger_joint1"]
    assert "panda_finger_joint1" in caplog.text


def test_write_sim_bag_rejects_bad_arguments(tmp_path, renderer, panda, camera, T_camera_base, trajectory):
    kw = dict(renderer=renderer, robot=panda, camera=camera, q_of_t=trajectory, duration_s=0.2, progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        write_sim_bag(tmp_path / "exists", T_camera_base=T_camera_base, **kw)
    with pytest.raises(ValueError, match="start at 0"):
        write_sim_bag(tmp_path / "a", T_camera_base=[(0.1, T_camera_base)], **kw)
    with pytest.raises(ValueError, match="increase"):
        write_sim_bag(tmp_path / "b", T_camera_base=[(0.0, T_camera_base), (0.0, T_camera_base)], **kw)
    with pytest.raises(ValueError, match="rigid"):
        write_sim_bag(tmp_path / "c", T_camera_base=2 * T_camera_base, **kw)
    with pytest.raises(ValueError, match="storage"):
        write_sim_bag(tmp_path / "d", T_camera_base=T_camera_base, storage="rosbag1", **kw)
    with pytest.raises(ValueError, match="mcap"):
        write_sim_bag(tmp_path / "d", T_camera_base=T_camera_base, storage="sqlite3", compress=True, **kw)
    with pytest.raises(ValueError, match="uint8"):
        write_sim_bag(tmp_path / "e", T_camera_base=T_camera_base, image_effects=lambda rgb, rng: rgb / 2.0, **kw)


def test_read_bag_messages_rejects_unknown_topics(bag10):
    summary, _ = bag10
    with pytest.raises(BagReadError, match="/tf"):
        next(read_bag_messages(summary.bag_path, ["/tf"]))


# --------------------------------------------------------------------------------------------
# Ground-truth file
# --------------------------------------------------------------------------------------------
def _segment(start, end, yaw_deg=0.0):
    T = se3.make_transform(se3.rvec_to_matrix([0, 0, np.radians(yaw_deg)]), [1.0, -0.2, 0.7])
    return GroundTruthSegment.from_transform(start, end, T)


def test_groundtruth_round_trip_and_lookup(tmp_path):
    gt = GroundTruth(parent_frame="panda_link0", child_frame="cam_optical",
                     segments=(_segment(0.0, 2.5), _segment(3.0, math.inf, 10.0)))
    loaded = GroundTruth.load(gt.save(tmp_path / "gt.yaml"))
    assert loaded == gt and loaded.segments[1].end == math.inf
    assert loaded.segment_at(0.0) is loaded.segments[0]
    assert loaded.segment_at(2.5) is None  # end is exclusive; [2.5, 3.0) is a gap
    assert loaded.segment_at(3.0) is loaded.segments[1] and loaded.segment_at(1e9) is loaded.segments[1]
    assert loaded.segment_at(-0.1) is None and loaded.segment_at(float("nan")) is None
    np.testing.assert_allclose(loaded.T_parent_child_at(4.0)[:3, 3], [1.0, -0.2, 0.7])


def test_groundtruth_reads_hand_written_yaml(tmp_path):
    path = tmp_path / "gt.yaml"
    path.write_text("parent_frame: base\nchild_frame: cam\nsegments:\n"
                    "  - {start: 0, end: .inf, translation: [1, 2, 3], rotation: [0, 0, 0.7071, 0.7071]}\n")
    seg = GroundTruth.load(path).segments[0]
    assert seg.end == math.inf and np.linalg.norm(seg.rotation) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("segments, match", [
    ("  - {start: 0, end: .inf, translation: [0, 0, 0], rotation: [0, 0, 0, 2]}", "unit quaternion"),
    ("  - {start: 0, end: 2, translation: [0, 0, 0], rotation: [0, 0, 0, 1]}\n"
     "  - {start: 1, end: .inf, translation: [0, 0, 0], rotation: [0, 0, 0, 1]}", "overlap"),
    ("  - {start: 2, end: 1, translation: [0, 0, 0], rotation: [0, 0, 0, 1]}", "greater than its start"),
    ("  - {start: 0, end: .inf, translation: [0, 0], rotation: [0, 0, 0, 1]}", "3 entries"),
    ("  - {start: 0, end: .inf, rotation: [0, 0, 0, 1]}", "missing \\['translation'\\]"),
    ("  - {start: .nan, end: .inf, translation: [0, 0, 0], rotation: [0, 0, 0, 1]}", "NaN"),
    ("  []", "at least one segment"),
])
def test_groundtruth_rejects_malformed_files(tmp_path, segments, match):
    path = tmp_path / "gt.yaml"
    path.write_text(f"parent_frame: base\nchild_frame: cam\nsegments:\n{segments}\n" if segments != "  []"
                    else "parent_frame: base\nchild_frame: cam\nsegments: []\n")
    with pytest.raises(GroundTruthError, match=match):
        GroundTruth.load(path)


def test_groundtruth_rejects_unknown_keys_and_missing_file(tmp_path):
    path = tmp_path / "gt.yaml"
    path.write_text("parent_frame: base\nchild_frame: cam\nsegment: []\n")
    with pytest.raises(GroundTruthError, match="unknown \\['segment'\\]"):
        GroundTruth.load(path)
    with pytest.raises(GroundTruthError, match="cannot read"):
        GroundTruth.load(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------------------------
# Image decoding
# --------------------------------------------------------------------------------------------
def test_image_msg_to_rgb_encodings():
    ts = kilted_typestore()
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(ts, rgb, 123, "cam")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    bgr = dataclasses.replace(msg, encoding="bgr8", data=np.ascontiguousarray(rgb[..., ::-1]).reshape(-1))
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), rgb)
    gray = rgb[..., 0]
    padded = np.zeros((5, 9), np.uint8)  # step 9 > width 7: row padding is skipped
    padded[:, :7] = gray
    mono = dataclasses.replace(msg, encoding="mono8", step=9, data=padded.reshape(-1))
    np.testing.assert_array_equal(image_msg_to_rgb(mono), np.repeat(gray[..., None], 3, axis=2))
    for encoding in ("bayer_rggb8", "16UC1", "bayer_rggb8"):
        with pytest.raises(ImageEncodingError, match="unsupported image encoding"):
            image_msg_to_rgb(dataclasses.replace(msg, encoding=encoding))
    with pytest.raises(ImageEncodingError, match="bytes"):
        image_msg_to_rgb(dataclasses.replace(msg, data=msg.data[:-1]))
