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


def test_the_shipped_review_keeps_all_16_confident_misses_as_real_defects(full_dataset):
    review = load_review(REVIEW_FILE, full_dataset)
    assert len(review.reviews) == 16 and review.excluded() == {}
    assert {r.decision for r in review.reviews} == {"real_defect"}
    assert all(r.pit_at_px and r.reason for r in review.reviews)
    assert review.card_entry()["label_review_real_defects"] == 16


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


def test_a_review_of_another_folder_applies_to_nothing_here(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, data)
    assert load_review(REVIEW_FILE, data).reviews == ()
