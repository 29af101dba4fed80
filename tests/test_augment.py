"""Training augmentation keeps a frame as sharp as the line sees it, and is reproducible."""

import cv2
import numpy as np
import pytest

from station.classifier.preprocess import preprocess
from station.dataset import load_grey

pytestmark = pytest.mark.training
pytest.importorskip("tensorflow", reason="training needs the [train] extra (tensorflow-cpu)")

from station.training.augment import (  # noqa: E402  (after the skip: it imports keras)
    Augmentation,
    AugmentedBatches,
    augmented_tensor,
)


def sharpness(tensor: np.ndarray) -> float:
    return float(cv2.Laplacian(tensor[..., 0], cv2.CV_32F).var())


@pytest.fixture
def greys(sample_images):
    return np.stack([load_grey(p) for p in sample_images])


def test_turning_keeps_the_frame_as_sharp_as_an_unturned_one(greys):
    """The bug this module exists for: turning the 192 px tensor smoothed every
    training image by about 30%, and the network learned 'sharp means defective'."""
    no_light_no_blur = Augmentation(brightness=0.0, contrast=0.0, blur_probability=0.0)
    rng = np.random.default_rng(7)
    for grey in greys:
        plain = sharpness(preprocess(grey, 192))
        turned = [sharpness(augmented_tensor(grey, 192, rng, no_light_no_blur)) for _ in range(4)]
        assert np.mean(turned) > 0.9 * plain


def test_batches_are_shaped_weighted_and_reproducible(greys, sample_images):
    labels = np.array([int("def_front" in str(p)) for p in sample_images])
    weights = {0: 2.0, 1: 0.5}
    batches = AugmentedBatches(greys, labels, weights, 64, 5, seed=3, workers=1)
    assert len(batches) == -(-len(labels) // 5)
    images, y, w = batches[0]
    assert images.shape == (5, 64, 64, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert np.array_equal(w, np.where(y == 1, 0.5, 2.0))

    again = AugmentedBatches(greys, labels, weights, 64, 5, seed=3, workers=1)
    assert np.array_equal(again[0][0], images), "a batch depends only on seed, epoch and index"
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][0], images), "each epoch draws new views"
    seen = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(seen) == sorted(labels.astype(np.float32)), "every image once per epoch"
