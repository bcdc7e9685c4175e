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


def replay_stream(pipeline, det, traj, scene_at, *, duration, t0=0.0, joints_until=None):
    """Interleave joint states (100 Hz, +3.7 ms) and images (30 Hz) in stamp order, like a bag, through
    the same ReplayScheduler that ctrnet-eval uses. ``scene_at(t, q)`` gives the scene ``det`` is told
    for the image at ``t`` (stored under the image's index); returns every FrameResult."""
    from ctrnet_ros.core.pipeline import ReplayScheduler

    ns = 1_000_000_000
    joint_t = np.arange(0.0037 + t0, t0 + duration, 0.01)
    if joints_until is not None:
        joint_t = joint_t[joint_t < joints_until]
    image_t = np.arange(t0, t0 + duration, 1 / 30)
    events = sorted([(t, "j") for t in joint_t] + [(t, "i") for t in image_t])
    replay = ReplayScheduler(pipeline)
    results = []
    for t, kind in events:
        q = traj(t)
        if kind == "j":
            results += replay.joint_state(int(t * ns), list(q), list(q.values()))
        else:
            index = len(det.scenes)
            det.scenes[index] = scene_at(t, q)
            results += replay.image(indexed_image(index), int(t * ns))
    return results + replay.flush()
