"""Field decoders work on any object with sensor_msgs fields (rclpy and rosbags messages alike)."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ctrnet_ros.core.camera import CameraModelError
from ctrnet_ros.core.msgfields import (ImageEncodingError, camera_info_msg_to_camera, compressed_image_msg_to_rgb,
                                       image_msg_to_rgb, stamp_to_ns)


def image(encoding, arr, pad=0):
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=rows.shape[1], data=rows.tobytes())


def test_bgra_and_padding():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    bgra = np.concatenate([rgb[..., ::-1], np.full((5, 7, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_msg_to_rgb(image("bgra8", bgra, pad=4)), rgb)


@pytest.mark.parametrize("pad", [0, 3])
def test_every_encoding_reaches_the_same_rgb(pad):
    rgb = np.random.default_rng(1).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    alpha = np.full((6, 9, 1), 7, np.uint8)
    grey = rgb[..., 1]
    cases = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], axis=2),
             "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2), "mono8": grey}
    for encoding, arr in cases.items():
        out = image_msg_to_rgb(image(encoding, np.ascontiguousarray(arr), pad=pad))
        want = np.repeat(grey[..., None], 3, axis=2) if encoding == "mono8" else rgb
        assert out.flags.c_contiguous and out.flags.writeable, encoding
        np.testing.assert_array_equal(out, want, err_msg=encoding)


def test_array_typed_data_like_rclpy():
    import array

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = SimpleNamespace(encoding="rgb8", height=2, width=3, step=9, data=array.array("B", rgb.tobytes()))
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_errors():
    with pytest.raises(ImageEncodingError, match="16UC1"):
        image_msg_to_rgb(SimpleNamespace(encoding="16UC1", height=2, width=2, step=4, data=b"\0" * 8))
    with pytest.raises(ImageEncodingError, match="expected step"):
        image_msg_to_rgb(SimpleNamespace(encoding="rgb8", height=2, width=2, step=6, data=b"\0" * 5))
    with pytest.raises(ImageEncodingError, match="cannot decode"):
        compressed_image_msg_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))
    with pytest.raises(CameraModelError, match="uncalibrated"):
        camera_info_msg_to_camera(SimpleNamespace(k=[0.0] * 9, d=[], width=640, height=480,
                                                  distortion_model="plumb_bob"))


def test_compressed_round_trip():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:8, 4:8] = (255, 0, 0)
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    np.testing.assert_array_equal(compressed_image_msg_to_rgb(SimpleNamespace(format="png", data=buf.tobytes())), rgb)


def test_stamp():
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=5)) == 3_000_000_005
