"""`ctrnet-sim bag`: a randomised, bumped recording end to end (small and short, real MuJoCo)."""

import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.sim.cli import main as sim_main
from ctrnet_ros.sim.groundtruth import GroundTruth

pytest.importorskip("mujoco")


def test_bag_cli_with_bump(tmp_path, capsys):
    out = tmp_path / "bag"
    rc = sim_main(["--log-level", "WARNING", "bag", "--out", str(out), "--duration", "1.0", "--width", "96",
                   "--height", "72", "--seed", "3", "--bump-at", "0.5", "--bump-translation", "0.05",
                   "--bump-rotation", "3", "--domain", "shifted"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "/camera/color/image_raw: 30 messages" in printed and "/joint_states: 100 messages" in printed
    gt = GroundTruth.load(out / "groundtruth.yaml")
    assert [s.start for s in gt.segments] == [0.0, 0.5]
    A, B = (s.T_parent_child for s in gt.segments)
    assert se3.translation_error(A, B) == pytest.approx(0.05, abs=1e-9)
    assert se3.rotation_error_deg(A, B) == pytest.approx(3.0, abs=1e-6)


def test_bag_robot_stays_in_view(tmp_path):
    from ctrnet_ros.eval.bagio import read_bag_messages
    from ctrnet_ros.sim.recording import record_sim_bag

    summary = record_sim_bag(tmp_path / "bag", duration_s=1.0, width=96, height=72, seed=5, progress=False)
    images = [m for _, _, m in read_bag_messages(summary.bag_path, ["/camera/color/image_raw"])]
    assert len(images) == 30
    # Images differ over time (the robot moves and per-frame effects vary) and are not blank.
    a, b = (np.frombuffer(bytes(images[i].data), np.uint8) for i in (0, -1))
    assert a.std() > 5 and np.mean(a != b) > 0.1


def test_windows_of_one_cell_share_the_camera_not_the_images(tmp_path):
    """``scene_seed``: one cell (camera, room, robot trajectory); each recording plays its own window."""
    from ctrnet_ros.eval.bagio import read_bag_messages
    from ctrnet_ros.sim.recording import record_sim_bag

    kw = dict(domain="shifted", width=96, height=72, camera_hz=10.0, joint_hz=20.0, progress=False,
              scene_seed=11, scene_duration_s=2.0)
    first = record_sim_bag(tmp_path / "first", duration_s=0.5, seed=11, **kw)
    later = record_sim_bag(tmp_path / "later", duration_s=1.0, seed=12, start_s=1.0, **kw)
    other = record_sim_bag(tmp_path / "other", duration_s=0.5, seed=12, domain="shifted", width=96, height=72,
                           camera_hz=10.0, joint_hz=20.0, progress=False)

    def camera_and_joints(summary):
        first_of = {}
        for topic, _, msg in read_bag_messages(summary.bag_path, ["/camera/color/camera_info", "/joint_states"]):
            first_of.setdefault(topic, msg)
        T = GroundTruth.load(summary.groundtruth_path).segments[0].T_parent_child
        return T, np.array(first_of["/camera/color/camera_info"].k), np.array(first_of["/joint_states"].position)

    T1, K1, q1 = camera_and_joints(first)
    T2, K2, q2 = camera_and_joints(later)
    T3, _, _ = camera_and_joints(other)
    np.testing.assert_array_equal(T1, T2)
    np.testing.assert_array_equal(K1, K2)
    assert not np.allclose(q1, q2)  # a later part of the cell's trajectory
    assert se3.translation_error(T1, T3) > 0.05  # without scene_seed: a different cell
    with pytest.raises(ValueError, match="outside"):
        record_sim_bag(tmp_path / "bad", duration_s=1.5, seed=1, start_s=1.0, **kw)


def test_ensure_sim_bag_reuses_only_a_bag_with_the_same_settings(tmp_path):
    from ctrnet_ros.ros.replay_session import RECIPE_FILENAME, ensure_sim_bag

    kw = dict(duration_s=0.2, width=64, height=48, camera_hz=10.0, progress=False)
    bag = ensure_sim_bag(tmp_path / "bag", seed=2, **kw)
    stamp = (bag / "metadata.yaml").stat().st_mtime_ns
    assert ensure_sim_bag(bag, seed=2, **kw) == bag and (bag / "metadata.yaml").stat().st_mtime_ns == stamp
    ensure_sim_bag(bag, seed=3, **kw)  # other settings: recorded again
    assert '"seed": 3' in (bag / RECIPE_FILENAME).read_text()
    (bag / RECIPE_FILENAME).unlink()  # no recipe (older version, or interrupted before it): not trusted
    ensure_sim_bag(bag, seed=3, **kw)
    assert (bag / RECIPE_FILENAME).is_file()
