"""Same-casting matching on real sample photos, turned, mirrored and shifted by known amounts."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from conftest import ONE_CASTING

from station.classifier.flange import part_centre
from station.dataset import load_grey
from station.same_casting import (
    _ANGLES,
    SAME_CASTING_CORRELATION,
    SIZE,
    aligned_detail_correlation,
    lay_on,
    prepare,
    same_casting_groups,
)


def _copy(grey: np.ndarray, angle: float, mirror: bool, shift: tuple[float, float]) -> np.ndarray:
    """What the dataset's author did to make copies: turn, maybe mirror, shift."""
    h, w = grey.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(grey, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(moved[:, ::-1]) if mirror else moved


@pytest.fixture
def samples(sample_images):
    return [(p.name, load_grey(p)) for p in sample_images]


def test_turned_mirrored_and_shifted_copies_are_one_casting(samples):
    rng = np.random.default_rng(20261124)
    weak = []
    for name, grey in samples:
        original = prepare(grey)
        for _ in range(4):
            angle, mirror = rng.uniform(0, 360), bool(rng.integers(2))
            shift = tuple(rng.uniform(-6, 6, 2))
            correlation = aligned_detail_correlation(
                original, prepare(_copy(grey, angle, mirror, shift))
            )
            if correlation <= SAME_CASTING_CORRELATION:
                weak.append(f"{name} turned {angle:.0f}, mirror {mirror}: {correlation:.3f}")
    assert not weak, weak


def test_different_castings_are_told_apart(samples):
    prepared = {name: prepare(grey) for name, grey in samples}
    confused = []
    for a, b in itertools.combinations(prepared, 2):
        correlation = aligned_detail_correlation(prepared[a], prepared[b])
        same = {a, b} == ONE_CASTING
        if same != (correlation > SAME_CASTING_CORRELATION):
            confused.append(f"{a} / {b}: {correlation:.3f} (one casting: {same})")
    assert not confused, confused


def test_a_point_follows_the_turn_mirror_and_shift_found(samples):
    """`lay_on` finds where a mark of one photo lies on another photo of the casting:
    the label review maps the reviewed pinhole onto the OK photos this way."""
    rng = np.random.default_rng(7)
    off = []
    for name, grey in samples:
        h, w = grey.shape
        for _ in range(3):
            angle, mirror = rng.uniform(0, 360), bool(rng.integers(2))
            shift = tuple(rng.uniform(-6, 6, 2))
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
            matrix[:, 2] += shift
            point = (60.0 + rng.uniform(0, 30), 150.0 + rng.uniform(-30, 30))
            x, y = matrix @ np.array([*point, 1.0])
            expected = np.array([w - 1 - x if mirror else x, y])
            copy = prepare(_copy(grey, angle, mirror, shift))
            found = np.array(lay_on(copy, prepare(grey)).map_point(*point, photo_size=w))
            if np.hypot(*(found - expected)) > 3:
                off.append(f"{name} turned {angle:.0f}, mirror {mirror}: {found} vs {expected}")
    assert not off, off


def test_the_centre_follows_the_part(samples):
    for name, grey in samples:
        before = np.array(part_centre(grey))
        after = np.array(part_centre(_copy(grey, 0, False, (7, -5))))
        assert np.allclose(after - before, (7, -5), atol=0.5), f"{name}: moved by {after - before}"


def test_groups_join_chains_of_pairs_above_the_cut_only():
    pairs = {(0, 1): 0.95, (1, 2): 0.81, (3, 4): 0.79, (2, 5): 0.2}
    groups = same_casting_groups(pairs, 6, threshold=0.8)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[2], groups[3], groups[4], groups[5]}) == 4


def test_a_part_near_the_frame_edge_gives_the_same_texture_every_time(samples):
    """Where the flange ring runs past the photo's edge, the unrolled ring must read zeros
    there, not whatever memory held before (cv2.warpPolar without WARP_FILL_OUTLIERS)."""
    _, grey = samples[0]
    off_centre = _copy(grey, 0.0, False, (70.0, 50.0))
    spectra = []
    for k in range(6):
        for _ in range(20):  # leave other values in the memory the next unrolling gets
            np.full((_ANGLES, SIZE // 2), 1e4 * k, np.float32).sum()
        spectra.append(prepare(off_centre).spectrum)
    assert np.isfinite(spectra[0]).all()
    for spectrum in spectra[1:]:
        np.testing.assert_array_equal(spectrum, spectra[0])
