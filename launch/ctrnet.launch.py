"""Start ctrnet_node: camera images + joint states -> camera-to-robot transform on TF.

    ros2 launch ctrnet_ros ctrnet.launch.py
    ros2 launch ctrnet_ros ctrnet.launch.py model:=/path/to/model.onnx image_topic:=/cam/color/image_raw \\
        camera_frame:=cam_color_optical_frame use_sim_time:=true

Parameters come from ``params_file`` (default: the package's config/ctrnet.yaml); the launch
arguments below override the matching parameters. See config/ctrnet.yaml for all of them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

#: (launch argument = node parameter, default, description); defaults equal config/ctrnet.yaml's
_STRING_ARGUMENTS = (
    ("image_topic", "/camera/color/image_raw", "sensor_msgs/Image topic (raw colour image)"),
    ("camera_info_topic", "", "sensor_msgs/CameraInfo topic; empty: camera_info beside the image topic"),
    ("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic"),
    ("base_frame", "", "TF parent frame (robot base); empty: the robot config's base link"),
    ("camera_frame", "", "TF child frame (camera optical frame); empty: the image's header.frame_id"),
)


def generate_launch_description():
    share = get_package_share_directory("ctrnet_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "ctrnet.yaml"),
                              description="Full path to the node's parameter file"),
        DeclareLaunchArgument("model", default_value=os.path.join(share, "models", "panda_ctrnet.onnx"),
                              description="Keypoint model: ONNX file or torch checkpoint"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value=default, description=description)
                  for name, default, description in _STRING_ARGUMENTS]
    arguments.append(DeclareLaunchArgument("use_sim_time", default_value="false",
                                           description="Use /clock (e.g. when replaying a bag with --clock)"))

    # value_type=str: keep topic and frame names (and empty strings) as strings instead of YAML-parsing them
    overrides = {name: ParameterValue(LaunchConfiguration(name), value_type=str)
                 for name in ["model"] + [a[0] for a in _STRING_ARGUMENTS]}
    overrides["use_sim_time"] = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    node = Node(
        package="ctrnet_ros",
        executable="ctrnet_node",
        name="ctrnet_node",
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
    )
    return LaunchDescription(arguments + [node])
