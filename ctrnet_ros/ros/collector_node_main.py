"""Entry point of ``ros2 run ctrnet_ros collector_node`` (console script ``collector_node``).

Example::

    ros2 run ctrnet_ros collector_node --ros-args -p output_directory:=/data/collect_cam1 \\
        -p image_topic:=/camera/color/image_raw -p model:=models/panda_ctrnet.onnx

Exit status: 0 on a normal shutdown (Ctrl-C included), 2 when the parameters or the set-up are
invalid (the log says what to change).
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from .collector_node import CollectorNode, NodeSetupError
from .parameters import ParameterValidationError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        try:
            node = CollectorNode()
        except (ParameterValidationError, NodeSetupError) as exc:
            rclpy.logging.get_logger("collector_node").fatal(str(exc))
            return 2
        # Two threads: the input callback group keeps running while ~/pause, ~/resume or the diagnostics
        # timer run in the default group. Selection and PNG writing run on the node's own worker thread.
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
