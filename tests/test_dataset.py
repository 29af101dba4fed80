import shutil

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_DIR

from station.dataset import (
    BadImage,
    DatasetError,
    grouped_stratified_split,
    load_grey,
    near_duplicate_groups,
    rotation_invariant_signature,
    scan_labelled_folder,
)


def test_scan_finds_both_classes():
    folder = scan_labelled_folder(SAMPLE_DIR)
    assert len(folder.samples) == 12
    assert folder.labels.sum() == 6
    assert all(s.label == 1 for s in folder.samples if s.path.parent.name == "def_front")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        scan_labelled_folder(tmp_path / "nowhere")


def test_missing_class_folder_is_named(tmp_path):
    shutil.copytree(SAMPLE_DIR / "def_front", tmp_path / "def_front")
    with pytest.raises(DatasetError, match="missing: ok_front"):
        scan_labelled_folder(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    shutil.copytree(SAMPLE_DIR / "def_front", tmp_path / "def_front")
    (tmp_path / "ok_front").mkdir()
    with pytest.raises(DatasetError, match="ok_front: no images"):
        scan_labelled_folder(tmp_path)


def test_non_image_files_are_skipped_with_a_reason(damaged_folder):
    folder = scan_labelled_folder(damaged_folder)
    assert [s.path.name for s in folder.skipped] == ["readme.txt"]
    assert "not an image file" in folder.skipped[0].reason


@pytest.mark.parametrize(
    "name, message",
    [
        ("ok_front/truncated.jpeg", "truncated.jpeg: JPEG cut short"),
        ("def_front/empty.jpeg", "empty.jpeg: empty file"),
        ("ok_front/small.png", "small.png: 200x200 pixels, expected 300x300"),
        ("def_front/colour.png", "colour.png: colour image"),
    ],
)
def test_bad_images_are_refused_by_name(damaged_folder, name, message):
    with pytest.raises(BadImage, match=message):
        load_grey(damaged_folder / name, (300, 300))


def test_real_images_decode_as_300x300_grey(sample_images):
    for path in sample_images:
        image = load_grey(path, (300, 300))
        assert image.shape == (300, 300) and image.dtype == np.uint8


def _turned_copies(images):
    """Copies turned by right angles and flipped, as the dataset's own copies are."""
    copies = []
    for i, image in enumerate(images):
        h, w = image.shape
        turned = np.rot90(image, k=1 + i % 3)
        copies.append(np.ascontiguousarray(cv2.flip(turned, i % 2) if i % 4 else turned))
    return copies


def test_signature_barely_changes_when_the_part_turns_or_flips(sample_images):
    originals = [load_grey(p) for p in sample_images]
    for path, image, copy in zip(sample_images, originals, _turned_copies(originals)):
        similarity = rotation_invariant_signature(image) @ rotation_invariant_signature(copy)
        assert similarity > 0.985, f"{path.name}: signature moved by turning ({similarity:.4f})"


def test_copies_join_their_original_in_the_full_dataset(full_dataset):
    """Grouping is judged against the whole dataset, whose spread sets the standardisation."""
    folder = scan_labelled_folder(full_dataset)
    picks = folder.samples[::300]
    originals = [load_grey(s.path) for s in picks]
    signatures = np.stack(
        [rotation_invariant_signature(load_grey(s.path)) for s in folder.samples]
        + [rotation_invariant_signature(c) for c in _turned_copies(originals)]
    )
    groups = near_duplicate_groups(signatures)
    n = len(folder.samples)
    lost = [s.path.name for k, s in enumerate(picks) if groups[k * 300] != groups[n + k]]
    assert not lost, f"turned copies not grouped with their original: {lost}"
    sizes = np.bincount(groups[:n])
    assert sizes.max() < 0.1 * n, "one group swallowed a tenth of the dataset"


def test_split_never_cuts_a_group_and_is_stratified():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, 2000)
    labels = (groups % 3 == 0).astype(int)  # whole groups share a label
    train, val = grouped_stratified_split(labels, groups, 0.2, seed=7)
    assert not set(groups[train]) & set(groups[val])
    assert len(train) + len(val) == 2000
    for c in (0, 1):
        fraction = np.sum(labels[val] == c) / np.sum(labels == c)
        assert 0.15 < fraction <= 0.21
    again = grouped_stratified_split(labels, groups, 0.2, seed=7)
    assert np.array_equal(again[1], val), "the split must be reproducible from its seed"


def test_a_small_folder_still_validates_on_both_classes():
    """Two OK photos and a validation fraction of a third: 0.68 of a photo is wanted,
    no group fits, and the threshold would be chosen blind to good parts. One OK group
    goes to validation; training keeps the other."""
    labels = np.array([1, 1, 1, 0, 0])
    groups = np.array([0, 1, 2, 3, 4])
    train, val = grouped_stratified_split(labels, groups, 0.34, seed=3)
    assert set(labels[val]) == {0, 1}
    assert 0 in labels[train]
    lone = grouped_stratified_split(np.array([1, 1, 1, 0]), np.array([0, 1, 2, 3]), 0.34, 3)
    assert 3 in lone[0], "a class with one group keeps it for training"
