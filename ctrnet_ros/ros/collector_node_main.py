"""Entry point of ``ros2 run ctrnet_ros collector_node`` (console script ``collector_node``).

Example::

    ros2 run ctrnet_ros collector_node --ros-args -p output_directory:=/data/collect_cam1 \\
        -p image_topic:=/camera/color/image_raw -p model:=models/panda_ctrnet.onnx

Exit status: 0 on a normal shutdown (Ctrl-C included), 2 when the parameters or the set-up are
invalid (the log says what to change).
"""

from __future__ import annotations

import sys

from .collector_node import CollectorNode, NodeSetupError
from .entry_point import run_node
from .parameters import ParameterValidationError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    # One executor thread: its callbacks are all short (selection and PNG writing run on the node's own
    # worker thread). rclpy's MultiThreadedExecutor lost 17-25 % of a 10 Hz image stream on 2 cores and
    # delivered joint states late; the single-threaded one receives every frame.
    return run_node(CollectorNode, argv=argv, setup_errors=(ParameterValidationError, NodeSetupError),
                    logger_name="collector_node", num_threads=1)


if __name__ == "__main__":
    sys.exit(main())
