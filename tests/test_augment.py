"""Training augmentation keeps a frame as sharp as the line sees it, and is reproducible."""

import cv2
import numpy as np
import pytest

from station.classifier.flange import Circle
from station.classifier.preprocess import preprocess
from station.dataset import load_grey

pytestmark = pytest.mark.training
pytest.importorskip("tensorflow", reason="training needs the [train] extra (tensorflow-cpu)")

from station.training import augment  # noqa: E402
from station.training.augment import (  # noqa: E402  (after the skip: it imports keras)
    Augmentation,
    AugmentedBatches,
    augmented_tensor,
    wedge_mix,
)


def sharpness(tensor: np.ndarray) -> float:
    return float(cv2.Laplacian(tensor[..., 0], cv2.CV_32F).var())


@pytest.fixture
def greys(sample_images):
    return np.stack([load_grey(p) for p in sample_images])


@pytest.mark.parametrize("input_size", [192, 300])
def test_turning_keeps_the_frame_as_sharp_as_an_unturned_one(greys, input_size):
    """The bug this module exists for: turning the 192 px tensor smoothed every
    training image by about 30%, and the network learned 'sharp means defective'.
    At 300 px (the shipped input since 2026-12-06) no resize follows the turn, so
    the cubic turn alone must keep the detail."""
    no_light_no_blur = Augmentation(brightness=0.0, contrast=0.0, blur_probability=0.0)
    rng = np.random.default_rng(7)
    for grey in greys:
        plain = sharpness(preprocess(grey, input_size))
        turned = [
            sharpness(augmented_tensor(grey, input_size, rng, no_light_no_blur)) for _ in range(4)
        ]
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


def disc(centre: tuple[int, int], radius: int, seed: int) -> np.ndarray:
    """A bright textured face on a dark belt: a part seen from above, drawn."""
    frame = np.full((300, 300), 40, np.uint8)
    cv2.circle(frame, centre, radius, 180, -1)
    noise = np.random.default_rng(seed).normal(0, 10, frame.shape)
    face = frame == 180
    frame[face] = np.clip(180 + noise[face], 0, 255).astype(np.uint8)
    return frame


def test_a_wedge_of_another_part_is_laid_with_its_rim_on_the_frames():
    """Half the face (a 180-degree wedge) comes from the donor, scaled and moved so that
    its smaller, off-centre rim lies on the frame's; the other half is the frame as it was."""
    frame, donor = disc((150, 150), 110, seed=1), disc((140, 160), 90, seed=2)
    half = Augmentation(wedge_deg=(180.0, 180.0), wedge_brightness=0.0)
    mixed = wedge_mix(
        frame, Circle(150, 150, 110), donor, Circle(140, 160, 90), np.random.default_rng(5), half
    )
    ys, xs = np.mgrid[0:300, 0:300]
    r = np.hypot(xs - 150, ys - 150)
    face = r < 100
    kept = np.mean(mixed[face] == frame[face])
    assert 0.4 < kept < 0.6, f"{kept:.0%} of the face kept, expected about half"
    # The rim is where the frame's was, all the way round, wedge and all: had the donor been
    # laid unscaled, the ring from 90 to 104 px would be belt in the wedge.
    assert mixed[(r > 96) & (r < 104)].min() > 120
    assert mixed[(r > 116) & (r < 124)].max() < 100


def test_good_frames_take_wedges_of_good_frames_and_defective_frames_of_themselves(
    greys, sample_images, mocker
):
    """A good frame mixed with a defective one would be a defect labelled good; a defective
    frame gets its seams from itself, turned a little, so that its defect stays in view."""
    labels = np.array([int("def_front" in str(p)) for p in sample_images])
    assert 0 < labels.sum() < len(labels)
    every = Augmentation(casting_mix=1.0)
    batches = AugmentedBatches(greys, labels, {0: 1.0, 1: 1.0}, 64, 4, 3, every, workers=1)
    spy = mocker.spy(augment, "wedge_mix")
    for epoch in range(3):
        for index in range(len(batches)):
            batches[index]
        batches.on_epoch_end()
    assert spy.call_count == 3 * len(labels), "every frame mixed at casting_mix 1"
    row_of = {g.tobytes(): i for i, g in enumerate(greys)}
    assert len(row_of) == len(greys)
    for call in spy.call_args_list:
        frame, _, donor, *_ = call.args
        i, j = row_of[frame.tobytes()], row_of[donor.tobytes()]
        turn = call.kwargs.get("turn")
        if labels[i] == 0:
            assert labels[j] == 0 and turn is None
        else:
            assert j == i and 5.0 <= abs(turn) <= 25.0
