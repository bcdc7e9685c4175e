"""The ROS 2 side of ctrnet_ros: the only package that imports rclpy and message types.

* :mod:`.calibration_node` -- ``CalibrationNode`` (``ros2 run ctrnet_ros ctrnet_node``, entry point
  :mod:`.ctrnet_node_main`), with its parameters (:mod:`.parameters`), diagnostics
  (:mod:`.diagnostics`), debug overlay (:mod:`.overlay`) and saved calibrations (:mod:`.calibration_file`);
* :mod:`.collector_node` -- ``CollectorNode`` (``ros2 run ctrnet_ros collector_node``, entry point
  :mod:`.collector_node_main`, parameters in :mod:`.collector_parameters`): saves unlabeled frames for
  the self-supervised refresh through :mod:`ctrnet_ros.collect`;
* :mod:`.input_subscriptions` -- the camera and joint-state subscriptions both nodes make;
* :mod:`.entry_point` -- the rclpy init, spin and shutdown every entry point shares;
* :mod:`.tf_broadcast` -- tf2_ros broadcasters, or equivalents with tf2's topics and QoS;
* :mod:`.conversions` -- transforms and covariances <-> geometry_msgs;
* :mod:`.bag_player` -- ``ctrnet-play``, rosbag2 replay through rclpy;
* :mod:`.replay_session` -- bag -> node subprocess -> recorded outputs (demo, bench, tests).

Nothing is imported here, so ``import ctrnet_ros.ros`` stays cheap.
"""
