"""Judge a source's parts as the line would, and send each verdict to a simulated Mega.

The path is the line's: `Judge.judge` (locate, crop, preprocess, LiteRT,
threshold, fail-safe rules), the host's verdict deadline, and the Mega's
own decision from PART/VERDICT/GATE on the wire (`SteppedMega`, on a
virtual clock). What is not the line's: parts arrive at a fixed spacing
(`rate`), and time does not wait for the belt, so a replay runs as fast
as the frames can be judged.

With `against`, a second model judges the same frames through its own
Judge and its own simulated Mega; the report lists the parts whose verdict
flips.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tqdm import tqdm

from station.calibration import Calibration, TimingMode
from station.classifier.litert_classifier import Classifier
from station.judge import Judge
from station.judgement import FailSafe, Judgement
from station.link import messages as m
from station.replay.inputs import BadInput, ReplayPart, ReplaySource
from station.sim.stepped_mega import JUDGE_MS, SteppedMega

if TYPE_CHECKING:
    from station.replay.page import ReplayTrail

log = logging.getLogger(__name__)


@dataclass
class PartResult:
    """One part as one model saw it, and what the simulated Mega did with the verdict."""

    index: int
    name: str
    label: str | None
    score: float | None
    verdict: str
    failsafe_reason: str | None
    detail: str
    latency_ms: float
    """Frame to verdict: locating and classifying, as on the line."""
    gate_action: str | None = None
    gate_reason: str | None = None
    recorded_verdict: str | None = None
    recorded_score: float | None = None

    @property
    def missed_defect(self) -> bool:
        return self.label == "defective" and self.verdict == "pass"

    @property
    def false_reject(self) -> bool:
        return self.label == "ok" and self.verdict == "reject"


@dataclass
class ModelRun:
    """One model's pass over the source: its judge, its simulated Mega, its results."""

    classifier: Classifier
    judge: Judge
    calibration: Calibration
    spacing_ms: int
    results: list[PartResult] = field(default_factory=list)
    mega: SteppedMega = field(init=False)
    _pending: dict[int, PartResult] = field(default_factory=dict)
    _verdicts: list = field(default_factory=list)
    """(due ms, part ID, result): verdicts waiting for their time on the stepped clock."""

    def __post_init__(self) -> None:
        self.mega = SteppedMega(replay_configure(self.calibration))

    def judge_part(self, index: int, part: ReplayPart) -> tuple[PartResult, Judgement]:
        j = self.judge.judge(part.frame, photo=part.photo)
        result = PartResult(
            index=index,
            name=part.name,
            label=part.label,
            score=j.score,
            verdict=j.verdict,
            failsafe_reason=j.failsafe.value if j.failsafe else None,
            detail=j.detail,
            latency_ms=j.seconds * 1000,
            recorded_verdict=(part.recorded or {}).get("verdict"),
            recorded_score=(part.recorded or {}).get("score"),
        )
        self._to_gate(result)
        self.results.append(result)
        return result, j

    def _to_gate(self, result: PartResult) -> None:
        """The line's timing on the replay's stepped clock: PART at the eye, VERDICT once
        the camera delay and the modelled judging time have passed.

        The clock never reads the wall clock, so a replay is the same every run. The
        measured judging time is still held against the line's budget: a part whose
        judgement took longer than the verdict deadline allows is reported as the line
        would fail it (classifier_timeout).
        """
        cal = self.calibration
        deadlines = cal.deadlines()
        eye_ms = len(self.results) * self.spacing_ms
        if (
            deadlines.trigger_delay_ms + result.latency_ms > deadlines.verdict_deadline_ms
            and result.failsafe_reason is None
        ):
            result.verdict, result.failsafe_reason = "reject", FailSafe.CLASSIFIER_TIMEOUT.value
        self._send_due_verdicts(until_ms=eye_ms)
        part_id = self.mega.photo_eye(eye_ms)
        verdict_ms = eye_ms + math.ceil(deadlines.trigger_delay_ms) + JUDGE_MS
        heapq.heappush(self._verdicts, (verdict_ms, part_id, result))

    def _send_due_verdicts(self, until_ms: float) -> None:
        """Send, in time order, every queued verdict due by `until_ms`."""
        while self._verdicts and self._verdicts[0][0] <= until_ms:
            at_ms, part_id, result = heapq.heappop(self._verdicts)
            answer = self.mega.verdict(at_ms, part_id, result.verdict == "reject")
            if answer == m.Error.LATE.name:
                result.verdict, result.failsafe_reason = "reject", FailSafe.LATE.value
            self._pending[part_id] = result
            self._collect_gates()

    def finish(self) -> None:
        self._send_due_verdicts(until_ms=float("inf"))
        self.mega.settle()
        self._collect_gates()
        for result in self._pending.values():
            result.detail = (result.detail + "; " if result.detail else "") + "no GATE event"

    def _collect_gates(self) -> None:
        for part_id in [p for p in self._pending if p in self.mega.gates]:
            result = self._pending.pop(part_id)
            gate = self.mega.gates.pop(part_id)
            result.gate_action, result.gate_reason = gate.action, gate.reason


def replay_configure(calibration: Calibration) -> m.Configure:
    """The calibration's CONFIGURE in milliseconds: replay time is a clock, not a belt."""
    configure = calibration.configure_message()
    if calibration.timing.mode == TimingMode.MILLISECONDS:
        return configure
    return replace(
        configure,
        mode=m.TimingMode.MILLISECONDS,
        gate_offset=int(round(calibration.gate_travel_ms)),
        decision_lead=int(round(calibration.decision_lead_ms)),
    )


@dataclass
class ReplayRun:
    source: ReplaySource
    runs: list[ModelRun]
    bad_inputs: list[BadInput]
    wall_s: float
    examples: dict[int, tuple[ReplayPart, list[Judgement]]]
    """Frames worth saving (a disagreement with the label, or a flip), by part index."""


def replay(
    source: ReplaySource,
    models: list[tuple[Classifier, float | None]],
    calibration: Calibration,
    rate_parts_s: float = 5.0,
    progress: bool = True,
    trail: ReplayTrail | None = None,
) -> ReplayRun:
    """Judge every part of `source` with each (classifier, threshold); the first is "A".

    `trail` (`--serve`): model A's results also go to an audit database and image
    store for the operator's page, which is answered between parts."""
    spacing_ms = int(round(1000 / rate_parts_s))
    runs = [
        ModelRun(
            classifier,
            Judge(
                classifier,
                calibration.camera.crop_px,
                calibration.camera.min_part_area_px,
                threshold=classifier.threshold if threshold is None else threshold,
            ),
            calibration,
            spacing_ms,
        )
        for classifier, threshold in models
    ]
    bad: list[BadInput] = []
    examples: dict[int, tuple[ReplayPart, list[Judgement]]] = {}
    started = time.perf_counter()
    unit = "frame" if source.kind == "video" else "part"
    bar = tqdm(total=source.total, desc="replaying", unit=unit, mininterval=1, disable=not progress)
    with bar:
        for item in source:
            bar.update(1)
            if item is None:
                continue
            if isinstance(item, BadInput):
                log.warning("%s: %s", item.name, item.reason)
                bad.append(item)
                if trail:
                    trail.bad_input(item)
                continue
            index = len(runs[0].results)
            judged = [run.judge_part(index, item) for run in runs]
            if trail:
                trail.judged(*judged[0])
            if _worth_keeping([r for r, _ in judged]):
                examples[index] = (item, [j for _, j in judged])
    for run in runs:
        run.finish()
    if trail:
        trail.gated(runs[0].results)
    return ReplayRun(source, runs, bad, time.perf_counter() - started, examples)


def _worth_keeping(results: list[PartResult]) -> bool:
    disagrees = any(r.missed_defect or r.false_reject for r in results)
    flips = len({r.verdict for r in results}) > 1
    return disagrees or flips
