import math
from pathlib import Path

import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.robot import (InvalidJointValueError, KeypointSpec, MissingJointError, RobotModel,
                                   RobotModelError, UnknownLinkError)


def test_panda_spec_is_the_dream_ctrnet_keypoints(panda_spec):
    assert panda_spec.links == ["panda_link0", "panda_link2", "panda_link3", "panda_link4", "panda_link6",
                                "panda_link7", "panda_hand"]
    assert panda_spec.base_link == "panda_link0"


def test_panda_fk_invariants(panda, panda_spec, rng):
    # Panda link lengths (Franka's published kinematics): d1 = 0.333, d3 = 0.316, a4 = 0.0825, d5 = 0.384, a7 = 0.088.
    for _ in range(20):
        q = panda.sample_configuration(rng)
        kp = panda.keypoints_base(panda_spec, q)
        np.testing.assert_allclose(kp[0], 0.0, atol=1e-12)
        np.testing.assert_allclose(kp[1], [0.0, 0.0, 0.333], atol=1e-9)  # link2 never moves
        assert np.linalg.norm(kp[2] - kp[1]) == pytest.approx(0.316, abs=1e-9)
        assert np.linalg.norm(kp[3] - kp[2]) == pytest.approx(0.0825, abs=1e-9)
        assert np.linalg.norm(kp[4] - kp[3]) == pytest.approx(math.hypot(0.0825, 0.384), abs=1e-9)
        assert np.linalg.norm(kp[5] - kp[4]) == pytest.approx(0.088, abs=1e-9)


def test_panda_joint1_rotates_about_base_z(panda, panda_spec):
    q = {f"panda_joint{i}": 0.0 for i in range(1, 8)} | {"panda_joint4": -1.5, "panda_joint6": 1.5}
    kp0 = panda.keypoints_base(panda_spec, q)
    kp1 = panda.keypoints_base(panda_spec, q | {"panda_joint1": 0.5})
    Rz = se3.rvec_to_matrix([0.0, 0.0, 0.5])
    np.testing.assert_allclose(kp1, kp0 @ Rz.T, atol=1e-12)


def test_load_from_string_and_file_agree(panda_spec, rng):
    path = RobotModel.from_spec(panda_spec).resolver.resolve(panda_spec.urdf)
    from_file = RobotModel.from_file(path, base_link="panda_link0")
    from_string = RobotModel.from_urdf_string(Path(path).read_text(), base_link="panda_link0")
    q = from_file.sample_configuration(rng)
    a, b = from_file.link_poses(q), from_string.link_poses(q)
    for link in a:
        np.testing.assert_allclose(a[link], b[link], atol=1e-12)


def _yourdfpy_link_poses(model, q, base):
    """The reference: yourdfpy's own scene-graph forward kinematics."""
    urdf = model._urdf
    cfg = model.default_positions() | {k: v for k, v in q.items() if k in model.joint_names}
    urdf.update_cfg(cfg)
    T_base_root = se3.invert_transform(urdf.get_transform(base, urdf.base_link))
    return {l: T_base_root @ urdf.get_transform(l, urdf.base_link) for l in model.link_names}


def test_fk_matches_yourdfpy_on_panda(panda, rng):
    for _ in range(10):
        q = panda.sample_configuration(rng)
        ours, ref = panda.link_poses(q), _yourdfpy_link_poses(panda, q, panda.base_link)
        assert set(ours) == set(ref)
        for link in ref:
            np.testing.assert_allclose(ours[link], ref[link], atol=1e-12, err_msg=link)


_MIXED_URDF = """<robot name="mixed">
  <link name="world"/><link name="a"/><link name="b"/><link name="c"/><link name="d"/><link name="e"/>
  <joint name="fix" type="fixed"><parent link="world"/><child link="a"/>
    <origin xyz="0.1 -0.2 0.3" rpy="0.3 -0.2 0.1"/></joint>
  <joint name="rev" type="revolute"><parent link="a"/><child link="b"/><origin xyz="0 0 0.4" rpy="0 0.5 0"/>
    <axis xyz="1 2 2"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="slide" type="prismatic"><parent link="b"/><child link="c"/><origin xyz="0.2 0 0"/>
    <axis xyz="0 0.6 0.8"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
  <joint name="follow" type="revolute"><parent link="c"/><child link="d"/><origin rpy="0.1 0.2 0.3"/>
    <axis xyz="0 0 1"/><limit lower="-3" upper="3" effort="1" velocity="1"/>
    <mimic joint="rev" multiplier="-0.5" offset="0.25"/></joint>
  <joint name="spin" type="continuous"><parent link="a"/><child link="e"/><axis xyz="0 1 0"/></joint>
</robot>"""


def test_fk_matches_yourdfpy_on_mixed_joints():
    # fixed, revolute about a non-unit axis, prismatic (unit axis: yourdfpy scales by a non-unit one, the
    # URDF spec and KDL normalise it, as we do), mimic (multiplier and offset), continuous,
    # poses expressed in a base link that is not the URDF root
    model = RobotModel.from_urdf_string(_MIXED_URDF, base_link="b")
    rng = np.random.default_rng(7)
    for _ in range(10):
        q = {"rev": rng.uniform(-3, 3), "slide": rng.uniform(-1, 1), "spin": rng.uniform(-6, 6)}
        ours, ref = model.link_poses(q), _yourdfpy_link_poses(model, q, "b")
        for link in ref:
            np.testing.assert_allclose(ours[link], ref[link], atol=1e-12, err_msg=link)
    assert model.chain_joints("d") == ["rev", "slide", "rev"]


def test_mesh_paths_resolve(panda):
    meshes = panda.visual_meshes()
    assert len(meshes) >= 10
    assert all(m.path.is_file() for m in meshes)


def test_relative_mesh_paths_resolve_against_urdf_folder(tmp_path, panda):
    mesh = panda.visual_meshes()[0].path
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "base.dae").write_bytes(mesh.read_bytes())
    urdf = tmp_path / "one_link.urdf"
    urdf.write_text('<robot name="r"><link name="base"><visual><geometry><mesh filename="meshes/base.dae"/>'
                    '</geometry></visual></link></robot>')
    model = RobotModel.from_file(urdf)
    assert model.visual_meshes()[0].path == tmp_path / "meshes" / "base.dae"


def test_missing_joint_is_named(panda, panda_spec):
    q = {f"panda_joint{i}": 0.1 for i in range(1, 8)}
    del q["panda_joint5"]
    with pytest.raises(MissingJointError, match="panda_joint5") as info:
        panda.keypoints_base(panda_spec, q)
    assert info.value.missing == ("panda_joint5",)


def test_gripper_joint_is_optional_and_extra_joints_ignored(panda, panda_spec):
    q = {f"panda_joint{i}": 0.1 for i in range(1, 8)} | {"some_other_robot_joint": 3.0}
    assert panda.keypoints_base(panda_spec, q).shape == (7, 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_joint_rejected(panda, panda_spec, bad):
    q = {f"panda_joint{i}": 0.1 for i in range(1, 8)} | {"panda_joint3": bad}
    with pytest.raises(InvalidJointValueError, match="panda_joint3"):
        panda.keypoints_base(panda_spec, q)


def test_unknown_link_rejected(panda, panda_spec):
    with pytest.raises(UnknownLinkError, match="no_such_link"):
        panda.link_poses({}, links=["no_such_link"])
    spec = KeypointSpec.from_dict({"base_link": "panda_link0", "urdf": panda_spec.urdf, "keypoints": [
        {"link": "panda_link0"}, {"link": "panda_link2"}, {"link": "panda_link3"}, {"link": "not_a_link"}]})
    with pytest.raises(UnknownLinkError):
        RobotModel.from_spec(spec)


def test_bad_urdf_and_spec_rejected():
    with pytest.raises(RobotModelError, match="not URDF"):
        RobotModel.from_urdf_string("hello")
    with pytest.raises(RobotModelError, match="at least 4"):
        KeypointSpec.from_dict({"base_link": "a", "keypoints": [{"link": "a"}]})
    with pytest.raises(RobotModelError, match="missing field"):
        KeypointSpec.from_dict({"keypoints": []})
    with pytest.raises(RobotModelError, match="invalid robot config name"):
        KeypointSpec.builtin("../../etc/passwd")


def test_keypoint_offsets_apply_in_link_frame(panda, rng):
    spec = KeypointSpec.from_dict({"base_link": "panda_link0", "keypoints": [
        {"link": "panda_link0"}, {"link": "panda_link2"}, {"link": "panda_link4"},
        {"name": "tip", "link": "panda_hand", "offset": [0.0, 0.0, 0.1034]}]})
    q = panda.sample_configuration(rng)
    T_hand = panda.link_poses(q, ["panda_hand"])["panda_hand"]
    np.testing.assert_allclose(panda.keypoints_base(spec, q)[3], T_hand[:3, :3] @ [0, 0, 0.1034] + T_hand[:3, 3])


def test_second_robot_ur5(rng):
    spec = KeypointSpec.builtin("ur5")
    ur5 = RobotModel.from_spec(spec)
    assert ur5.base_link == "base_link" and ur5.root_link != ur5.base_link
    assert set(ur5.required_joints(spec.links)) == {"shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
                                                     "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"}
    q = ur5.sample_configuration(rng)
    kp = ur5.keypoints_base(spec, q)
    assert kp.shape == (8, 3)
    np.testing.assert_allclose(kp[0], 0.0, atol=1e-12)
    # UR5 upper arm and forearm lengths: 0.425 m and 0.39225 m between joint axes.
    P = ur5.link_poses(q, ["upper_arm_link", "forearm_link", "wrist_1_link"])
    d_ua = P["forearm_link"][:3, 3] - P["upper_arm_link"][:3, 3]
    assert abs(d_ua @ P["upper_arm_link"][:3, 2]) == pytest.approx(0.425, abs=1e-6)
    assert len(ur5.visual_meshes()) >= 6 and all(m.path.is_file() for m in ur5.visual_meshes())


def test_parent_link(panda):
    assert panda.parent_link("panda_link0") is None
    assert panda.parent_link("panda_link3") == "panda_link2"
    assert panda.parent_link("panda_hand") == "panda_link8"
