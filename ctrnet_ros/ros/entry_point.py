"""The rclpy part every entry point shares: init, one node, run it, and shut down cleanly.

``ctrnet_node``, ``collector_node`` and ``ctrnet-play`` differ only in the node they build and in what
they do with it; :func:`run_node` does the rest, as the ROS 2 demos do: Ctrl-C and an external
shutdown are a normal exit (status 0), and the node is destroyed and the context shut down however
the run ends.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

__all__ = ["run_node", "EXIT_OK", "EXIT_SETUP_ERROR"]

EXIT_OK = 0
EXIT_SETUP_ERROR = 2


def run_node(make_node: Callable[[], Node], *, argv: Sequence[str] | None = None,
             setup_errors: tuple[type[BaseException], ...] = (), logger_name: str = "",
             num_threads: int = 2, run: Callable[[Node], int | None] | None = None) -> int:
    """``rclpy.init(argv)``, ``make_node()``, then ``run(node)``; returns the exit status.

    Args:
        make_node: builds the node (after ``rclpy.init``).
        argv: command line with ROS arguments (None: ``sys.argv``).
        setup_errors: exceptions of ``make_node`` that mean invalid parameters or set-up: logged as
            FATAL on the ``logger_name`` logger, exit status :data:`EXIT_SETUP_ERROR`.
        logger_name: the rclpy logger for those errors (the node's name).
        num_threads: threads of the ``MultiThreadedExecutor`` that spins the node when ``run`` is None
            (1: a ``SingleThreadedExecutor``), unless the node has an ``executor_threads`` attribute.
        run: what to do with the node instead of spinning it until shutdown; returns the exit status
            (None: :data:`EXIT_OK`).
    Returns:
        ``run``'s status, :data:`EXIT_SETUP_ERROR`, or :data:`EXIT_OK` (Ctrl-C and external shutdown included).
    """
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        try:
            node = make_node()
        except setup_errors as exc:
            rclpy.logging.get_logger(logger_name).fatal(str(exc))
            return EXIT_SETUP_ERROR
        if run is not None:
            status = run(node)
            return EXIT_OK if status is None else status
        threads = int(getattr(node, "executor_threads", num_threads))  # a node may choose by parameter
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return EXIT_OK
