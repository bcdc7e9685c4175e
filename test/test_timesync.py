import math

import pytest

from ctrnet_ros.core.timesync import JointHistoryConfig, JointStateHistory

MS = 1_000_000


def filled(rate_hz=100.0, seconds=1.0, offset_ms=3.7):
    h = JointStateHistory()
    period = int(1e9 / rate_hz)
    for i in range(int(seconds * rate_hz)):
        t = i * period + int(offset_ms * MS)
        h.add(t, ["a", "b"], [t * 1e-9, -2.0 * t * 1e-9])
    return h


def test_linear_interpolation_between_samples():
    h = filled()
    q = h.at(500 * MS)
    assert not q.problems
    assert q.positions["a"] == pytest.approx(0.5, abs=1e-12)
    assert q.positions["b"] == pytest.approx(-1.0, abs=1e-12)


def test_stale_joint_states_are_refused():
    h = filled(seconds=1.0)  # newest sample at 993.7 ms
    assert "a" in h.at(1010 * MS).positions  # 16 ms past: held
    q = h.at(1100 * MS)
    assert "a" not in q.positions and "stale" in q.problems["a"]


def test_image_older_than_history():
    h = filled()
    q = h.at(1 * MS)
    assert "older than the oldest" in q.problems["a"]


def test_dropout_is_not_interpolated():
    h = JointStateHistory(JointHistoryConfig(max_gap_s=0.1))
    h.add(0, ["a"], [0.0])
    h.add(300 * MS, ["a"], [1.0])
    assert "dropout" in h.at(150 * MS).problems["a"]


def test_missing_and_non_finite_joints():
    h = JointStateHistory()
    assert h.add(0, ["a", "b"], [0.0, math.nan]) == ["b"]
    h.add(10 * MS, ["a", "b"], [1.0, 1.0])
    q = h.at(5 * MS, ["a", "b", "c"])
    assert q.positions["a"] == pytest.approx(0.5)
    assert "b" not in q.positions  # only one finite sample of b, and it's after the stamp
    assert q.problems["c"] == "never received"
    assert "c: never received" in q.describe(["c"])
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        h.add(20 * MS, ["a", "b"], [0.0])


def test_out_of_order_and_separate_publishers():
    h = JointStateHistory()
    h.add(20 * MS, ["arm"], [2.0])
    h.add(0, ["arm"], [0.0])  # late arrival is inserted in order
    h.add(10 * MS, ["gripper"], [0.04])  # gripper on its own topic/rate
    h.add(12 * MS, ["gripper"], [0.04])
    q = h.at(10 * MS)
    assert q.positions["arm"] == pytest.approx(1.0)
    assert q.positions["gripper"] == pytest.approx(0.04)


def test_history_is_bounded():
    h = JointStateHistory(JointHistoryConfig(history_s=0.5))
    for i in range(1000):
        h.add(i * 10 * MS, ["a"], [float(i)])
    assert len(h._t["a"]) <= 52
    assert h.newest_stamp_ns() == 999 * 10 * MS


def test_covers_and_wait():
    import threading

    h = JointStateHistory()
    h.add(0, ["a", "b"], [0.0, 0.0])
    h.add(10 * MS, ["a"], [1.0])
    assert h.covers(5 * MS, ["a"]) and not h.covers(5 * MS, ["a", "b"])
    assert not h.wait_covered(5 * MS, ["b"], timeout_s=0.01)
    threading.Timer(0.05, lambda: h.add(12 * MS, ["b"], [1.0])).start()
    assert h.wait_covered(5 * MS, ["a", "b"], timeout_s=10.0)
