"""Test fixture: a keypoint 'detector' that returns the true keypoints of the scene it is told about.

It lets tests of the estimator, pipeline and node check geometry, timing and plumbing exactly,
independent of any trained network. It is a test double, never shipped as a backend.
"""

import numpy as np

from ctrnet_ros.core.estimator import Detection


class OracleDetector:
    """Test fixture: 'detects' the true keypoints of the scene it is told about, in its input frame."""

    def __init__(self, names, input_size=(320, 240), noise_px=0.0, seed=0):
        self.keypoint_names = list(names)
        self.input_size = input_size
        self.noise_px = noise_px
        self.rng = np.random.default_rng(seed)
        self.scene = None  # (camera, T_camera_base, keypoints_base) of the next image
        self.scenes = {}  # or: frame index -> scene, for images made by :func:`indexed_image`
        self.confidence = None

    def detect(self, image_rgb):
        assert image_rgb.shape == (self.input_size[1], self.input_size[0], 3)
        if self.scenes:
            r, g, _ = (int(c) for c in image_rgb[0, 0])
            cam, T, kp = self.scenes[r + 256 * g]
        else:
            cam, T, kp = self.scene
        tf = cam.letterbox_transform(*self.input_size)
        uv = tf.apply_coords(cam.project_from(T, kp)) + self.rng.normal(0, self.noise_px, (len(kp), 2))
        conf = np.ones(len(kp)) if self.confidence is None else self.confidence
        return Detection(keypoints_uv=uv, confidence=conf)



def indexed_image(index, width=640, height=480):
    """A uniform image whose colour encodes ``index`` (survives resizing), for ``OracleDetector.scenes``."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0], img[..., 1] = index % 256, index // 256
    return img
