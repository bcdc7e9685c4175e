"""Rosbag replay evaluation (``ctrnet-eval``): the node's pipeline on a recording, against ground truth.

* :mod:`.bagio`: reading rosbag2 (mcap/sqlite3) without ROS, and message decoding (shared with the node).
* :mod:`.replay`: :func:`~.replay.evaluate_bag`, the replay through ``core.pipeline`` and per-frame comparison.
* :mod:`.metrics`: ADD and its AUC.
* :mod:`.report`: ``metrics.json``, plots, ``report.md`` and the stdout summary.
* :mod:`.cli`: the ``ctrnet-eval`` command.
"""
