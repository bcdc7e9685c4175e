"""Start collector_node: save unlabeled camera frames that add information, for the self-supervised refresh.

    ros2 launch ctrnet_ros collect.launch.py output_directory:=/data/collect_cam1
    ros2 launch ctrnet_ros collect.launch.py output_directory:=/data/collect_cam1 \\
        model:=$(ros2 pkg prefix ctrnet_ros)/share/ctrnet_ros/models/panda_ctrnet.onnx \\
        image_topic:=/cam/color/image_raw use_sim_time:=true

Parameters come from ``params_file`` (default: the package's config/collect.yaml); the launch
arguments below override the matching parameters. See config/collect.yaml for all of them.
Pause and resume with ``ros2 service call /collector_node/pause std_srvs/srv/Trigger`` (``resume``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

#: (launch argument = node parameter, default, description); defaults equal config/collect.yaml's
_STRING_ARGUMENTS = (
    ("output_directory", "", "Collection folder (required; an existing collection is continued)"),
    ("model", "", "Keypoint model for the robot-in-view check (ONNX or torch checkpoint); empty: none"),
    ("image_topic", "/camera/color/image_raw", "sensor_msgs/Image topic (raw colour image)"),
    ("camera_info_topic", "", "sensor_msgs/CameraInfo topic; empty: camera_info beside the image topic"),
    ("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic"),
)


def generate_launch_description():
    share = get_package_share_directory("ctrnet_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "collect.yaml"),
                              description="Full path to the node's parameter file"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value=default, description=description)
                  for name, default, description in _STRING_ARGUMENTS]
    arguments.append(DeclareLaunchArgument("use_sim_time", default_value="false",
                                           description="Use /clock (e.g. when replaying a bag with --clock)"))

    # value_type=str: keep paths and topic names (and empty strings) as strings instead of YAML-parsing them
    overrides = {name: ParameterValue(LaunchConfiguration(name), value_type=str) for name, _, _ in _STRING_ARGUMENTS}
    overrides["use_sim_time"] = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)

    node = Node(
        package="ctrnet_ros",
        executable="collector_node",
        name="collector_node",
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
    )
    return LaunchDescription(arguments + [node])
