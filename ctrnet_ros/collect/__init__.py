"""Collecting unlabeled real camera frames for the self-supervised refresh (``ctrnet-train refresh``).

* :mod:`.dataset`: the on-disk format (``collection.yaml``, ``manifest.jsonl``, ``samples/*.png``), the
  crash- and disk-full-safe :class:`~.dataset.CollectionWriter` and the tolerant :func:`~.dataset.load_collection`.
* :mod:`.selection`: whether a frame adds information (joint-space novelty, sharpness, robot in view, rate).
* :mod:`.collector`: :class:`~.collector.Collector`, the per-frame logic shared by ``collector_node`` and
  ``ctrnet-collect``.
* :mod:`.replay` and :mod:`.cli`: ``ctrnet-collect --bag BAG --out DIR``.

Nothing here imports rclpy or message packages, and nothing is imported by this ``__init__``.
"""
