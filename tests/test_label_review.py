"""The label review file: every decision named and reasoned, nothing set aside silently."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLE_DIR

from station.training.label_review import REVIEW_FILE, LabelReviewError, load_review


def _write(tmp_path: Path, reviews: list[dict]) -> Path:
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump({"reviews": reviews}))
    return path


def test_the_shipped_review_keeps_the_16_pinholes_and_doubts_their_castings_ok_photos(
    full_dataset,
):
    """The 16 confident misses stand as real defects; the 111 OK photos of the same
    casting (tools/pinhole_casting.py) are doubted, each with its reason."""
    review = load_review(REVIEW_FILE, full_dataset)
    kept = [r for r in review.reviews if r.decision == "real_defect"]
    doubted = [r for r in review.reviews if r.decision == "doubtful_label"]
    assert len(kept) == 16 and all(r.file.startswith("def_front/") for r in kept)
    assert all(r.pit_at_px and r.reason for r in kept)
    assert len(doubted) == 111 and all(r.file.startswith("ok_front/") for r in doubted)
    assert sum(r.pit_at_px is not None for r in doubted) == 73
    assert all("same casting as the reviewed pinhole photos" in r.reason for r in doubted)
    assert review.card_entry()["label_review_excluded"] == 111


def test_a_doubted_label_is_excluded_with_its_reason(tmp_path):
    path = _write(
        tmp_path,
        [
            {
                "file": "ok_front/cast_ok_0_1.jpeg",
                "decision": "doubtful_label",
                "reason": "a pit at (120, 40): probably defective",
            },
            {
                "file": "def_front/cast_def_0_0.jpeg",
                "decision": "real_defect",
                "reason": "pinhole",
                "pit_at_px": [10, 20],
            },
        ],
    )
    review = load_review(path, SAMPLE_DIR)
    assert review.excluded() == {
        "ok_front/cast_ok_0_1.jpeg": "a pit at (120, 40): probably defective"
    }
    assert review.card_entry()["label_review_excluded"] == 1


@pytest.mark.parametrize(
    "entry, named",
    [
        (
            {"file": "def_front/cast_def_0_0.jpeg", "decision": "relabel", "reason": "x"},
            "reviews[1]: decision",
        ),
        ({"file": "def_front/cast_def_0_0.jpeg", "decision": "real_defect"}, "reviews[1]: reason"),
        (
            {"file": "def_front/typo.jpeg", "decision": "real_defect", "reason": "x"},
            "reviews[1]: def_front/typo.jpeg is not in",
        ),
        (
            {"file": "ok_front/cast_ok_0_1.jpeg", "decision": "real_defect", "reason": "again"},
            "reviewed more than once: ok_front/cast_ok_0_1.jpeg",
        ),
    ],
)
def test_a_bad_entry_is_named(tmp_path, entry, named):
    first = {"file": "ok_front/cast_ok_0_1.jpeg", "decision": "real_defect", "reason": "pit"}
    with pytest.raises(LabelReviewError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_review(_write(tmp_path, [first, entry]), SAMPLE_DIR)


def test_a_review_of_another_folder_applies_to_nothing_here():
    """The samples hold none of the reviewed photos (the one they held, `cast_ok_0_1009`,
    was swapped out when the review doubted it)."""
    assert load_review(REVIEW_FILE, SAMPLE_DIR).reviews == ()


def test_a_folder_holding_only_some_reviewed_files_is_refused_with_the_way_out(tmp_path):
    """A folder holding one photo the review names but not the others (a partial copy of
    the training folder) is refused, and the message says how to train without the review."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, data)
    named = yaml.safe_load(REVIEW_FILE.read_text())["reviews"][0]["file"]
    shutil.copyfile(SAMPLE_DIR / "ok_front" / "cast_ok_0_1.jpeg", data / named)
    with pytest.raises(LabelReviewError, match=r"reviews\[1\]: .* is not in .*--label-review ''"):
        load_review(REVIEW_FILE, data)
