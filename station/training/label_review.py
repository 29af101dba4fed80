"""Decisions on individual training images, made by a person and read by `station train`.

The review file (`label_review.yaml` beside this module, or `--label-review`)
says, image by image, whether a label stands (`real_defect`: kept, the model
must learn it) or is doubted (`doubtful_label`: left out of training and
validation), always with the reason. It is the only place an image is set
aside on purpose: training names every excluded file in its log and counts
them in the model card, so nothing is dropped or relabelled silently.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.dataset import LabelledFolder, Skipped, scan_labelled_folder

REVIEW_FILE = Path(__file__).resolve().parent / "label_review.yaml"
log = logging.getLogger(__name__)


class LabelReviewError(ValueError):
    """The review file cannot be used; the message names the file, entry and field."""


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1, description="path under the training folder")
    decision: Literal["real_defect", "doubtful_label"]
    reason: str = Field(min_length=1)
    pit_at_px: tuple[int, int] | None = Field(
        default=None, description="where the defect is, in the 300 px frame"
    )


@dataclass(frozen=True)
class LabelReview:
    path: Path
    sha256: str
    reviews: tuple[Review, ...]

    def excluded(self) -> dict[str, str]:
        """Files training leaves out, with why."""
        return {r.file: r.reason for r in self.reviews if r.decision == "doubtful_label"}

    def card_entry(self) -> dict[str, str | int]:
        return {
            "label_review_sha256": self.sha256,
            "label_review_real_defects": sum(r.decision == "real_defect" for r in self.reviews),
            "label_review_excluded": len(self.excluded()),
        }


def load_review(path: Path, data_root: Path) -> LabelReview:
    """Read and check the review file: every entry valid and naming a file in `data_root`.

    A review that names no file of `data_root` at all is of another folder and applies
    to nothing here; one that names some but not all has a typo, and is refused.
    """
    path = Path(path)
    try:
        text = path.read_bytes()
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise LabelReviewError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise LabelReviewError(f"{path}: not valid YAML ({exc})") from None
    entries = (data or {}).get("reviews") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LabelReviewError(f"{path}: expected a `reviews:` list")
    reviews = []
    for k, entry in enumerate(entries):
        try:
            reviews.append(Review.model_validate(entry))
        except ValidationError as exc:
            where = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise LabelReviewError(f"{path}: reviews[{k}]: {where}") from None
    present = [(Path(data_root) / r.file).is_file() for r in reviews]
    if reviews and not any(present):
        # A review of another folder (the shipped one is of the casting dataset).
        return LabelReview(path, hashlib.sha256(text).hexdigest(), ())
    for k, (review, found) in enumerate(zip(reviews, present)):
        if not found:
            raise LabelReviewError(
                f"{path}: reviews[{k}]: {review.file} is not in {data_root} (a review names "
                "files of one folder; to train on part of it without the review: "
                "--label-review '')"
            )
    files = [r.file for r in reviews]
    if len(set(files)) != len(files):
        twice = sorted({f for f in files if files.count(f) > 1})
        raise LabelReviewError(f"{path}: reviewed more than once: {', '.join(twice)}")
    return LabelReview(path, hashlib.sha256(text).hexdigest(), tuple(reviews))


def scan_reviewed_folder(
    data_dir: Path, review_file: str | Path
) -> tuple[LabelledFolder, LabelReview | None]:
    """The labelled folder less the images the review doubts (each named in the log),
    and the review ('' for none). Training, cross-validation and the check of the
    shipped model's split all see the same images through this."""
    folder = scan_labelled_folder(data_dir)
    if not str(review_file):
        return folder, None
    review = load_review(Path(review_file), folder.root)
    return _without_doubted(folder, review), review


def _without_doubted(folder: LabelledFolder, review: LabelReview) -> LabelledFolder:
    """Leave out the images the review doubts, naming each (never silently)."""
    excluded = review.excluded()
    kept, skipped = [], list(folder.skipped)
    for sample in folder.samples:
        name = sample.path.relative_to(folder.root).as_posix()
        if name in excluded:
            log.warning("left out by %s: %s (%s)", review.path.name, name, excluded[name])
            skipped.append(Skipped(sample.path, f"label doubted in review: {excluded[name]}"))
        else:
            kept.append(sample)
    log.info(
        "label review %s: %d real defects kept, %d images left out",
        review.path,
        sum(r.decision == "real_defect" for r in review.reviews),
        len(excluded),
    )
    return replace(folder, samples=kept, skipped=skipped)
