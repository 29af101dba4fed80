import cv2
import numpy as np
import pytest

from station.classifier.preprocess import Roi, preprocess


def test_grey_bgr_and_bgra_give_the_same_tensor(sample_images):
    grey = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
    a, b, c = (preprocess(img, 64) for img in (grey, bgr, bgra))
    assert a.shape == (64, 64, 1) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1 / 255)
    np.testing.assert_allclose(a, c, atol=1 / 255)


def test_scales_to_unit_range():
    image = np.array([[0, 255], [128, 255]], dtype=np.uint8)
    out = preprocess(image, 2)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[1, 0, 0] == pytest.approx(128 / 255)


def test_roi_crops_before_resizing():
    frame = np.zeros((100, 200), np.uint8)
    frame[10:30, 50:70] = 200
    out = preprocess(frame, 20, Roi(x=50, y=10, width=20, height=20))
    assert np.all(out == pytest.approx(200 / 255))


def test_roi_outside_the_frame_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        preprocess(np.zeros((100, 100), np.uint8), 32, Roi(90, 90, 20, 20))


def test_non_uint8_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((10, 10), np.float32), 8)
