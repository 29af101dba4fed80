"""What a judgement is, and why a part can be rejected without one.

Plain data, importable without OpenCV or LiteRT: the part tracker, the
audit and the reports read these; `judge.py` makes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from station.camera.frames import Frame
    from station.classifier.preprocess import Roi


class FailSafe(str, enum.Enum):
    """Why a part was rejected without a judgement (the audit's `failsafe_reason`)."""

    NO_FRAME = "no_frame"
    PART_NOT_FOUND = "part_not_found"
    BAD_FRAME = "bad_frame"
    CLASSIFIER_ERROR = "classifier_error"
    CLASSIFIER_TIMEOUT = "classifier_timeout"
    LINK_LOST = "link_lost"
    LATE = "late"
    INTERNAL_ERROR = "internal_error"
    """The station's own code failed while handling this part (an alarm says where)."""
    NOT_REPORTED = "not_reported"
    """Photo-eye lines: the camera saw a part the Mega did not report by its verdict deadline
    (a photo-eye that missed it, or its PART held in the Mega)."""


@dataclass(frozen=True)
class Judgement:
    reject: bool
    score: float | None
    failsafe: FailSafe | None
    detail: str
    frame: Frame | None
    roi: Roi | None
    seconds: float
    """Time spent locating and classifying."""

    @property
    def verdict(self) -> str:
        return "reject" if self.reject else "pass"
