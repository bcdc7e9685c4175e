"""Geometric core of ctrnet_ros: pure numpy/OpenCV, never rclpy or ROS message types (a test enforces it)."""
