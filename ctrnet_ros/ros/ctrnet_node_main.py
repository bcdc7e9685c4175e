"""Entry point of ``ros2 run ctrnet_ros ctrnet_node`` (console script ``ctrnet_node``).

Example::

    ros2 run ctrnet_ros ctrnet_node --ros-args -p model:=models/panda_ctrnet.onnx \\
        -p image_topic:=/camera/color/image_raw -p save_directory:=$HOME/calibration

Exit status: 0 on a normal shutdown (Ctrl-C included), 2 when the parameters or the set-up are
invalid (the log says what to change).
"""

from __future__ import annotations

import sys

from .calibration_node import CalibrationNode, NodeSetupError
from .entry_point import run_node
from .parameters import ParameterValidationError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    # Executor threads: the node's executor_threads parameter (default 1, a SingleThreadedExecutor: the
    # fastest on a small CPU). With 2+, the input callback group keeps running while a slow service
    # (model reload, ~/save) runs in the default group. Inference runs on the node's own worker thread.
    return run_node(CalibrationNode, argv=argv, setup_errors=(ParameterValidationError, NodeSetupError),
                    logger_name="ctrnet_node", num_threads=1)


if __name__ == "__main__":
    sys.exit(main())
