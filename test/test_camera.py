import cv2
import numpy as np
import pytest

from ctrnet_ros.core.camera import CameraModelError, PinholeCamera


@pytest.fixture
def cam():
    return PinholeCamera.from_camera_info_fields(
        k=[615.0, 0.0, 321.3, 0.0, 614.0, 238.7, 0.0, 0.0, 1.0],
        d=[0.05, -0.1, 0.001, -0.002, 0.02], width=640, height=480, distortion_model="plumb_bob")


def points(rng, n=50):
    return np.column_stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-0.4, 0.4, n), rng.uniform(0.8, 2.5, n)])


def test_project_matches_opencv(cam):
    P = points(np.random.default_rng(0))
    ref, _ = cv2.projectPoints(P, np.zeros(3), np.zeros(3), cam.K, cam.D)
    np.testing.assert_allclose(cam.project(P), ref.reshape(-1, 2), atol=1e-9)


def test_points_behind_camera_are_nan(cam):
    uv = cam.project([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    assert np.all(np.isnan(uv[0])) and np.all(np.isfinite(uv[1]))


def test_undistort_inverts_distortion(cam):
    P = points(np.random.default_rng(1))
    ideal = PinholeCamera(K=cam.K, width=640, height=480).project(P)
    np.testing.assert_allclose(cam.undistort_pixels(cam.project(P)), ideal, atol=1e-3)


def test_equidistant_model():
    fish = PinholeCamera(K=np.array([[300.0, 0, 319.5], [0, 300.0, 239.5], [0, 0, 1]]), D=[0.1, -0.02, 0.003, 0.0],
                         width=640, height=480, distortion_model="equidistant")
    P = points(np.random.default_rng(2))
    ideal = PinholeCamera(K=fish.K, width=640, height=480).project(P)
    np.testing.assert_allclose(fish.undistort_pixels(fish.project(P)), ideal, atol=1e-3)


@pytest.mark.parametrize("size", [(320, 240), (1280, 960), (300, 200)])
def test_resize_keeps_projection_consistent(cam, size):
    P = points(np.random.default_rng(3))
    small, tf = cam.resized(*size)
    np.testing.assert_allclose(small.project(P), tf.apply_coords(cam.project(P)), atol=1e-9)
    np.testing.assert_allclose(tf.invert_coords(tf.apply_coords(cam.project(P))), cam.project(P), atol=1e-9)


def test_crop_then_resize_composes(cam):
    P = points(np.random.default_rng(4))
    c1, t1 = cam.cropped(100, 50, 400, 300)
    c2, t2 = c1.resized(200, 150)
    np.testing.assert_allclose(c2.project(P), t1.then(t2).apply_coords(cam.project(P)), atol=1e-9)


def test_pixel_centre_convention_on_images():
    img = np.zeros((48, 64), np.float32)
    img[10, 20] = 1.0  # pixel centre (u, v) = (20, 10)
    cam = PinholeCamera.from_fov(width=64, height=48, fovy_deg=60.0)
    # Upscaling by 2: the source pixel covers output pixels 40..41 x 20..21; its centre maps to (40.5, 20.5).
    _, up = cam.resized(128, 96)
    out = up.apply_image(img, interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(out)
    assert (xs.mean(), ys.mean()) == pytest.approx(tuple(up.apply_coords([20.0, 10.0])))
    # Cropping moves coordinates by the crop origin, exactly.
    _, crop = cam.cropped(5, 3, 30, 20)
    out = crop.apply_image(img)
    ys, xs = np.nonzero(out)
    assert (xs[0], ys[0]) == tuple(crop.apply_coords([20.0, 10.0]).astype(int))
    # Downscaling by 2 with area averaging: the 2x2 block (20..21, 10..11) maps to pixel (10, 5).
    img2 = np.zeros((48, 64), np.float32)
    img2[10:12, 20:22] = 1.0
    _, down = cam.resized(32, 24)
    out = down.apply_image(img2)
    ys, xs = np.nonzero(out)
    assert (xs.mean(), ys.mean()) == pytest.approx(tuple(down.apply_coords([20.5, 10.5])))


def test_from_fov_matches_opencv_centre():
    cam = PinholeCamera.from_fov(width=640, height=480, fovy_deg=60.0)
    assert cam.K[0, 2] == 319.5 and cam.K[1, 2] == 239.5
    assert cam.fovy_deg == pytest.approx(60.0)
    assert cam.project([[0.0, 0.0, 1.0]])[0] == pytest.approx([319.5, 239.5])


@pytest.mark.parametrize("kwargs, msg", [
    (dict(k=[0.0] * 9, d=[], width=640, height=480), "uncalibrated"),
    (dict(k=[1.0] * 8, d=[], width=640, height=480), "9 entries"),
    (dict(k=[500, 0, 320, 0, 500, 240, 0, 0, 1], d=[], width=0, height=480), "size"),
    (dict(k=[500, 0, 320, 0, 500, 240, 0, 0, 1], d=[np.nan], width=640, height=480), "NaN"),
    (dict(k=[500, 0, 320, 0, 500, 240, 0, 0, 1], d=[], width=640, height=480, distortion_model="kannala"),
     "unsupported"),
])
def test_invalid_camera_info(kwargs, msg):
    with pytest.raises(CameraModelError, match=msg):
        PinholeCamera.from_camera_info_fields(**kwargs)


def test_letterbox_keeps_aspect_and_projection(cam):
    P = points(np.random.default_rng(5))
    tf = cam.letterbox_transform(320, 320)  # 640x480 into a square: scale 0.5, 40 px bars top and bottom
    assert tf.a_x == tf.a_y == 0.5
    boxed = cam.transformed(tf)
    np.testing.assert_allclose(boxed.project(P), tf.apply_coords(cam.project(P)), atol=1e-9)
    assert tf.apply_coords([[-0.5, -0.5]])[0] == pytest.approx([-0.5, 39.5])
    same = cam.letterbox_transform(320, 240)
    assert same == cam.resize_transform(320, 240)
    img = np.full((480, 640, 3), 255, np.uint8)
    out = tf.apply_image(img)
    assert out.shape == (320, 320, 3) and out[:38].max() == 0 and out[42:278].min() == 255
