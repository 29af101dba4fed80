"""Frame in, verdict out: locate the part, classify it, apply the fail-safe rules.

`station run` and `station replay` both judge through `Judge.judge`, so a
replay reproduces exactly what the line would have decided. Anything that
stops a sound judgement (no frame, a frame that does not decode, no whole
part in view, a classifier error) gives a reject with the reason named:
a defective part must never pass because something broke.
"""

from __future__ import annotations

import time

from station.camera.frames import Frame
from station.classifier.litert_classifier import Classifier, Inspection
from station.classifier.preprocess import Roi
from station.judgement import FailSafe, Judgement
from station.vision.locate import PartNotFound, frame_photo, locate_part


class Judge:
    def __init__(
        self,
        classifier: Classifier,
        crop_px: int,
        min_part_area_px: int,
        threshold: float | None = None,
    ):
        self.classifier = classifier
        self.crop_px = crop_px
        self.min_part_area_px = min_part_area_px
        self.threshold = classifier.threshold if threshold is None else threshold

    def judge(self, frame: Frame | None, photo: bool = False) -> Judgement:
        """Locate the part in `frame`, classify it, decide.

        `photo`: the frame is a photo that need not come from this line's camera
        (replaying a folder of images): it is framed by `frame_photo`, exactly as
        `station evaluate` frames it, so both give the same score for the same file.
        On the line (False) the calibrated crop is taken around the part.
        """
        started = time.perf_counter()
        if frame is None:
            return self._failsafe(FailSafe.NO_FRAME, "no frame shows the part", None, started)
        try:
            if photo:
                roi = frame_photo(frame.image, self.crop_px, self.min_part_area_px)
            else:
                roi = locate_part(frame.image, self.crop_px, self.min_part_area_px).roi
        except PartNotFound as exc:
            return self._failsafe(FailSafe.PART_NOT_FOUND, str(exc), frame, started)
        except ValueError as exc:
            return self._failsafe(FailSafe.BAD_FRAME, str(exc), frame, started)
        try:
            seen = self.classifier.inspect(frame.image, roi)
        except Exception as exc:  # noqa: BLE001 - any model failure must fail safe
            return self._failsafe(
                FailSafe.CLASSIFIER_ERROR, f"{type(exc).__name__}: {exc}", frame, started
            )
        reject = seen.score >= self.threshold
        by_pit_check = reject and seen.network_score < self.threshold
        return Judgement(
            reject=reject,
            score=seen.score,
            failsafe=None,
            detail=self._pit_detail(seen, roi) if by_pit_check else "",
            frame=frame,
            roi=roi,
            seconds=time.perf_counter() - started,
        )

    def _pit_detail(self, seen: Inspection, roi: Roi | None) -> str:
        """Why the pit check rejected a part the network passed, and where (frame pixels)."""
        settings = self.classifier.card.pit_check
        spot = seen.pit.shifted(*((roi.x, roi.y) if roi else (0, 0))).decisive(settings)
        return (
            f"pit check: spot at x={spot.x}, y={spot.y}; {seen.pit.describe(settings)}; "
            f"network {seen.network_score:.3f}"
        )

    @staticmethod
    def _failsafe(reason: FailSafe, detail: str, frame: Frame | None, started: float) -> Judgement:
        return Judgement(True, None, reason, detail, frame, None, time.perf_counter() - started)
