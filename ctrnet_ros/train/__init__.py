"""Training of the keypoint networks.

* :mod:`.config`: ``TrainConfig`` / ``AugmentConfig`` dataclasses and the ``cpu_small`` / ``gpu`` presets.
* :mod:`.data`: samples from ``ctrnet-sim`` datasets (letterbox, seeded augmentation, heatmap/mask targets).
* :mod:`.losses`: heatmap BCE/MSE (all belief stages), mask BCE + Dice, sub-pixel coordinate L1.
* :mod:`.metrics`: PCK, keypoint error, mask IoU, single-frame pose through the core PnP.
* :mod:`.pretrain`: the supervised training loop (resumable, CSV log, learning curves, checkpoints).
* :mod:`.validate`: a model file through ``load_detector`` + ``CameraToRobotEstimator`` on a dataset.
* :mod:`.cli` (``ctrnet-train``) and :mod:`.export_cli` (``ctrnet-export``: ONNX + model card).

Nothing is imported here, so that ``import ctrnet_ros.train.config`` stays light.
"""
