"""The part tracker, rule by rule (DESIGN.md, "Who owns time"), on an injected clock.

Each case is a script of (time, event) fed to a `PartTracker`; the harness keeps the
audit rows the tracker asks for in a dict, answers its commands as told, and the case
asserts the rows, commands and alarms that must follow. No thread, port or database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from station.calibration import Deadlines
from station.judgement import FailSafe, Judgement
from station.link import messages as m
from station.link.endpoint import Answered, LinkState, MegaEvent
from station.link.limits import VISION_ID_BIT
from station.tracker import (
    CameraTrouble,
    Counted,
    Decided,
    Judged,
    JudgeFrame,
    NewRow,
    PartTracker,
    RaiseAlarm,
    SendCommand,
    TrackerSettings,
    UpdateRow,
)
from station.vision.sighting import FrameGap, VisionLag, VisionSighting

DEADLINES = Deadlines(
    trigger_delay_ms=160,
    frame_give_up_ms=1030,
    verdict_deadline_ms=1060,
    decision_point_ms=1135,
    gate_travel_ms=1285,
)
SETTINGS = TrackerSettings(DEADLINES, heartbeat_timeout_s=1.0, pulse_s=0.08)


@dataclass
class Harness:
    """Feeds a tracker and keeps what it asked for; commands are answered OK by default."""

    tracker: PartTracker = field(default_factory=lambda: PartTracker(SETTINGS, epoch_base=10))
    rows: dict[int, dict] = field(default_factory=dict)
    sent: list[SendCommand] = field(default_factory=list)
    alarms: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[JudgeFrame] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    counted: dict[str, int] = field(default_factory=dict)
    answer: str | None = "OK"
    """How the Mega answers the next commands: an Error name, None (not delivered), or
    "pending" (no answer yet)."""
    answers: list = field(default_factory=list)
    """Answers for the next commands, one each, before `answer` applies again."""
    now: float = 0.0

    def feed(self, at: float, event) -> None:
        self.now = at
        self._apply(self.tracker.handle(event, at))

    def tick(self, at: float) -> None:
        self.now = at
        self._apply(self.tracker.tick(at))

    def _apply(self, actions) -> None:
        for a in actions:
            if isinstance(a, NewRow):
                assert a.uid not in self.rows, "a uid is never reused"
                keys = {(r["epoch"], r["part_id"]) for r in self.rows.values()}
                assert (a.epoch, a.part_id) not in keys, "UNIQUE (link_epoch, part_id)"
                self.rows[a.uid] = {"epoch": a.epoch, "part_id": a.part_id, "source": a.source}
            elif isinstance(a, UpdateRow):
                self.rows[a.uid].update(a.fields)
            elif isinstance(a, RaiseAlarm):
                self.alarms.append((a.kind, a.detail))
            elif isinstance(a, JudgeFrame):
                self.jobs.append(a)
            elif isinstance(a, Decided):
                self.decided.append(a)
            elif isinstance(a, Counted):
                self.counted[a.name] = self.counted.get(a.name, 0) + a.n
            elif isinstance(a, SendCommand):
                self.sent.append(a)
                answer = self.answers.pop(0) if self.answers else self.answer
                if answer == "pending":
                    continue
                if answer is None:
                    reply = Answered(a.tag, None, "link_down")
                else:
                    reply = Answered(a.tag, m.Ack(1, m.Error[answer]))
                self._apply(self.tracker.handle(reply, self.now))

    # --- shorthands -----------------------------------------------------------------------

    def up(self, at: float, epoch: int = 1) -> None:
        self.feed(at, LinkState(True, epoch, "handshake done"))

    def down(self, at: float, epoch: int = 1, rebooted=False, heard=0.0) -> None:
        self.feed(at, LinkState(False, epoch, "gone", rebooted=rebooted, heard_by_mega_at=heard))

    def part(self, at: float, part_id: int, epoch: int = 1) -> int:
        self.feed(at, MegaEvent(epoch, m.Part(part_id, 0, int(at * 1000)), at, at))
        return max(self.rows)

    def judge(self, at: float, uid: int, score: float | None, failsafe=None) -> None:
        reject = failsafe is not None or score >= 0.5
        j = Judgement(reject, score, failsafe, "", None, None, 0.001)
        self.feed(at, Judged(uid, j))

    def gate(self, at: float, part_id: int, fired: bool, reason=m.GateReason.VERDICT, epoch=1):
        action = m.GateAction.FIRED if fired else m.GateAction.PASSED
        self.feed(at, MegaEvent(epoch, m.Gate(part_id, action, reason, 0), at, at))

    def alarm_kinds(self) -> list[str]:
        return [kind for kind, _ in self.alarms]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.up(0.0)
    return harness


# --- one part, every way it can end -------------------------------------------------------------


@pytest.mark.parametrize(
    "score, failsafe, answer, verdict, reason",
    [
        (0.1, None, "OK", "pass", None),
        (0.9, None, "OK", "reject", None),
        (None, FailSafe.NO_FRAME, "OK", "reject", "no_frame"),
        (None, FailSafe.PART_NOT_FOUND, "OK", "reject", "part_not_found"),
        (None, FailSafe.CLASSIFIER_ERROR, "OK", "reject", "classifier_error"),
        (0.1, None, "LATE", "reject", "late"),
        (0.1, None, "UNKNOWN_PART", "reject", "link_lost"),
        (0.1, None, None, "reject", "link_lost"),
    ],
)
def test_a_judged_part_gets_its_verdict_or_a_named_fail_safe(
    h, score, failsafe, answer, verdict, reason
):
    uid = h.part(1.0, part_id=1)
    (job,) = h.jobs
    assert job.wanted_at == pytest.approx(1.16) and job.give_up_at == pytest.approx(2.03)
    h.answer = answer
    h.judge(1.2, uid, score, failsafe)
    (cmd,) = h.sent
    assert cmd.message == m.Verdict(1, int(score is None or score >= 0.5))
    row = h.rows[uid]
    assert (row["verdict"], row["failsafe_reason"]) == (verdict, reason)
    assert row["verdict_time"] == 1.2 and row["score"] == score
    assert len(h.decided) == 1


def test_no_judgement_by_the_deadline_rejects_and_a_late_one_is_only_recorded(h):
    uid = h.part(1.0, part_id=1)
    h.tick(2.059)
    assert h.sent == []
    assert h.tracker.next_deadline() == pytest.approx(2.06)
    h.tick(2.06)
    assert h.sent[-1].message == m.Verdict(1, 1)
    assert h.rows[uid]["failsafe_reason"] == "classifier_timeout"
    h.judge(2.5, uid, 0.1)
    assert len(h.sent) == 1, "a late judgement is never sent"
    assert h.rows[uid]["verdict"] == "reject" and "late judgement (pass)" in h.rows[uid]["note"]


@pytest.mark.parametrize(
    "verdict_score, action, mismatch",
    [(0.9, "fired", False), (0.1, "passed", False), (0.1, "fired", True), (0.9, "passed", True)],
)
def test_the_gate_is_recorded_and_a_disagreement_alarmed(h, verdict_score, action, mismatch):
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, verdict_score)
    h.gate(2.285, 1, fired=action == "fired")
    assert (h.rows[uid]["gate_action"], h.rows[uid]["gate_reason"]) == (action, "verdict")
    assert ("gate_mismatch" in h.alarm_kinds()) == mismatch
    assert h.tracker.in_flight == 0


def test_a_gate_for_a_part_never_reported_gets_a_row(h):
    h.gate(5.0, 42, fired=True, reason=m.GateReason.NO_VERDICT)
    (row,) = h.rows.values()
    assert row["source"] == "gate_only" and row["part_id"] == 42
    assert (row["verdict"], row["failsafe_reason"], row["gate_action"]) == (
        "reject",
        "mega_no_verdict",
        "fired",
    )


def test_a_gate_before_the_verdict_was_settled_records_what_the_mega_did(h):
    uid = h.part(1.0, part_id=1)
    h.gate(2.285, 1, fired=True, reason=m.GateReason.NO_VERDICT)
    assert (h.rows[uid]["verdict"], h.rows[uid]["failsafe_reason"]) == ("reject", "mega_no_verdict")
    h.judge(2.3, uid, 0.1)
    assert h.sent == [] and "late judgement" in h.rows[uid]["note"]


def test_skipped_part_ids_are_counted_and_alarmed(h):
    h.part(1.0, part_id=1)
    h.part(1.2, part_id=4)
    assert h.counted["missed_triggers"] == 2
    assert any("2..3" in detail for kind, detail in h.alarms if kind == "missed_trigger")


def test_a_mega_fault_is_alarmed_and_cleared_while_the_link_is_up(h):
    h.feed(1.0, MegaEvent(1, m.FaultEvent(m.Fault.FIFO_OVERFLOW, 17), 1.0))
    assert "mega_fault" in h.alarm_kinds() and h.counted["fault:FIFO_OVERFLOW"] == 1
    assert h.sent[-1].message == m.ResetFault()


def test_beam_breaks_the_mega_could_not_latch_are_alarmed_with_their_count(h):
    h.feed(1.0, MegaEvent(1, m.FaultEvent(m.Fault.PHOTO_EYE_OVERFLOW, 3), 1.0))
    assert h.counted["fault:PHOTO_EYE_OVERFLOW"] == 1
    assert any("3 beam break(s)" in detail for kind, detail in h.alarms if kind == "mega_fault")


# --- the link goes away --------------------------------------------------------------------------


def test_link_loss_rejects_what_the_mega_may_fire_and_keeps_a_pass_that_is_clear(h):
    early = h.part(1.0, part_id=1)  # gate due 2.285
    late = h.part(1.2, part_id=2)  # gate due 2.485
    pending = h.part(1.4, part_id=3)
    h.judge(1.2, early, 0.1)
    h.judge(1.4, late, 0.1)
    # The Mega heard us at 1.4, so it cannot time out before 2.4: the first pass stands.
    h.down(1.5, heard=1.4)
    assert "link lost; the part reaches the gate" in h.rows[early]["note"]
    assert h.rows[early]["verdict"] == "pass"
    assert (h.rows[late]["verdict"], h.rows[late]["failsafe_reason"]) == ("reject", "link_lost")
    assert h.counted["pass_revoked"] == 1
    assert h.rows[pending]["failsafe_reason"] == "link_lost"
    h.judge(1.6, pending, 0.1)
    assert len(h.sent) == 2, "nothing is sent into a dead link"


def test_after_a_reboot_forgotten_parts_are_re_armed_to_fire_at_their_gate(h):
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    kept = h.part(1.1, part_id=2)
    h.judge(1.3, kept, 0.1)
    h.down(1.5, rebooted=True)
    assert "forgot this part: it passes" in h.rows[kept]["note"], "a forgotten pass passes"
    h.up(1.52, epoch=2)
    rearm = h.sent[-1]
    assert isinstance(rearm.message, m.VisionReject) and rearm.due_at == pytest.approx(2.285)
    assert rearm.message.delay_ms == 765
    h.gate(2.285, rearm.message.part_id | 0x8000_0000, True, m.GateReason.VISION, epoch=2)
    assert h.rows[uid]["gate_action"] == "fired" and h.tracker.in_flight == 0


def test_a_reboot_during_a_pulse_re_arms_the_part_it_was_pushing(h):
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    h.gate(2.285, 1, fired=True)
    h.down(2.30, rebooted=True)  # 15 ms into an 80 ms pulse: cut short
    h.up(2.31, epoch=2)
    rearm = h.sent[-1]
    assert isinstance(rearm.message, m.VisionReject) and rearm.message.delay_ms == 0
    assert "cut its pulse short" in h.rows[uid]["note"]


def test_a_forgotten_part_past_its_pulse_is_noted_not_re_armed(h):
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    h.down(2.0, rebooted=True)
    h.up(2.37, epoch=2)  # its 80 ms pulse would have ended at 2.365
    assert not any(isinstance(c.message, m.VisionReject) for c in h.sent)
    assert h.rows[uid]["note"] == "gate outcome unknown: link down at gate time"
    (detail,) = [d for k, d in h.alarms if k == "gate_unknown"]
    assert f"part {uid} (reject)" in detail and "check the pass bin" in detail


def test_a_forgotten_part_whose_centre_passed_is_fired_late_and_its_outcome_left_unknown(h):
    """Past half its pulse a re-arm may miss the part; not sending one would let it pass for
    sure. The Mega's GATE then says "fired", which the row must not repeat."""
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    h.down(2.0, rebooted=True)
    h.up(2.33, epoch=2)  # centre reached the pusher at 2.325; its pulse would end at 2.365
    (rearm,) = [c for c in h.sent if isinstance(c.message, m.VisionReject)]
    assert rearm.message.delay_ms == 0 and rearm.due_at == pytest.approx(2.33)
    assert not [d for k, d in h.alarms if k == "gate_unknown"], "not before its GATE"
    h.gate(2.332, rearm.message.part_id | VISION_ID_BIT, True, m.GateReason.VISION, epoch=2)
    row = h.rows[uid]
    assert row["gate_action"] is None and row["gate_reason"] is None
    assert row["note"] == (
        "gate outcome unknown: link down at gate time; re-armed with a pulse due about 7 ms "
        "after its centre passed the pusher, within its own pulse"
    )
    (detail,) = [d for k, d in h.alarms if k == "gate_unknown"]
    assert f"part {uid} (reject)" in detail and "pulse due about 7 ms after" in detail
    assert h.tracker.in_flight == 0


def test_a_pulse_a_reboot_cut_is_not_left_on_record_as_fired(h):
    """The 10^6-part vision soak of 2026-12-05: the Mega fired, rebooted 15 ms into the
    pulse, and the handshake took 21 ms, too late for a re-arm to meet the part. The row
    said "fired" though the part passed; nothing said to look for it."""
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    h.gate(2.285, 1, fired=True)
    h.down(2.30, rebooted=True)
    h.up(2.37, epoch=2)  # past the part's whole pulse (2.285 to 2.365)
    assert not any(isinstance(c.message, m.VisionReject) for c in h.sent)
    row = h.rows[uid]
    assert row["gate_action"] is None and row["gate_reason"] is None
    assert row["note"] == (
        "gate outcome unknown: the Mega rebooted within its pulse, and a re-arm came too late"
    )
    (detail,) = [d for k, d in h.alarms if k == "gate_unknown"]
    assert f"part {uid} (reject)" in detail


def test_a_pulse_a_reboot_cut_before_the_part_came_is_fired_again_late(h):
    """The 10^6-part soak of 2026-12-05, seed 18: the reboot cut the pulse 22 ms in,
    before the part reached the pusher, and the link was back 17 ms later, 1 ms before
    the part's centre reached it: too late to meet the centre, so no pulse was tried,
    and the defective part passed."""
    uid = h.part(1.0, part_id=1)
    h.judge(1.2, uid, 0.9)
    h.gate(2.285, 1, fired=True)
    h.down(2.307, rebooted=True)
    h.up(2.324, epoch=2)
    (rearm,) = [c for c in h.sent if isinstance(c.message, m.VisionReject)]
    assert rearm.message.delay_ms == 0
    h.gate(2.326, rearm.message.part_id | VISION_ID_BIT, True, m.GateReason.VISION, epoch=2)
    row = h.rows[uid]
    assert row["gate_action"] is None
    assert row["note"].startswith(
        "gate outcome unknown: the Mega rebooted within its pulse; re-armed with a pulse due "
        "about 1 ms after"
    )


def test_the_reboot_race_files_the_new_boots_part_under_its_own_epoch(h):
    """A rebooted Mega's first PART can reach the station before the link-up notice: its
    ID (1 again) must not collide with the previous boot's part 1."""
    first = h.part(1.0, part_id=1)
    h.down(1.5, rebooted=True)
    second = h.part(1.51, part_id=1, epoch=2)  # before LinkState(up, 2)
    h.up(1.52, epoch=2)
    assert h.rows[first]["epoch"] == 11 and h.rows[second]["epoch"] == 12
    h.judge(1.7, second, 0.9)
    assert h.sent[-1].message == m.Verdict(1, 1)
    h.gate(2.795, 1, fired=True, epoch=2)
    assert h.rows[second]["gate_action"] == "fired" and "gate_action" not in h.rows[first]


def test_part_ids_going_back_within_a_boot_mean_an_unnoticed_restart(h):
    old = h.part(1.0, part_id=5)
    h.judge(1.2, old, 0.9)
    new = h.part(1.3, part_id=1)
    assert "mega_restarted" in h.alarm_kinds()
    assert h.rows[new]["epoch"] != h.rows[old]["epoch"]
    assert isinstance(h.sent[-1].message, m.VisionReject), "the forgotten reject is re-armed"


def test_the_camera_reports_parts_nobody_else_can_while_the_link_is_down(h):
    known = h.part(1.0, part_id=1)
    h.down(1.1)
    h.feed(1.16, VisionSighting(1.16, 1.16, backup=True))  # the known part, at the camera
    assert len(h.rows) == 1
    h.feed(1.5, VisionSighting(1.5, 1.5, backup=True))
    seen = max(h.rows)
    assert seen != known and h.rows[seen]["source"] == "vision_backup"
    assert (h.rows[seen]["verdict"], h.rows[seen]["failsafe_reason"]) == ("reject", "link_lost")
    h.up(1.8, epoch=2)
    targets = sorted(c.due_at for c in h.sent if isinstance(c.message, m.VisionReject))
    assert targets == pytest.approx([2.285, 1.5 - 0.16 + 1.285])
    # Seen just after the link-up: it broke the beam before that Mega ran. Not so later.
    h.feed(2.0, VisionSighting(2.0, 2.0, backup=True))
    assert h.rows[max(h.rows)]["source"] == "vision_backup" and len(h.rows) == 3
    h.feed(2.1, VisionSighting(2.1, 2.1, backup=True))
    assert len(h.rows) == 3, "with the link up its PART may still come"


def test_a_part_whose_report_was_still_queued_when_the_link_went_is_rejected(h):
    """The dense-unplug soak, seed 6 (2026-12-05): an ACK of the Mega's event lost twice
    held the PART of the next part in the Mega's queue; the cable went 220 ms later, and the
    reopened port rebooted the Mega, queue and all. The part had no audit row."""
    h.feed(1.36, VisionSighting(1.36, 1.36, backup=True))  # broke the beam at 1.2
    assert not h.rows, "its PART may still come"
    h.down(1.5)
    (seen,) = h.rows
    row = h.rows[seen]
    assert (row["source"], row["verdict"], row["failsafe_reason"]) == (
        "vision_backup",
        "reject",
        "link_lost",
    )
    assert "the link went before the Mega reported it" in row["note"]
    h.up(1.6, epoch=2)
    (rearm,) = [c for c in h.sent if isinstance(c.message, m.VisionReject)]
    assert rearm.due_at == pytest.approx(1.2 + 1.285)


def test_a_part_report_that_comes_after_the_camera_saw_the_part_settles_it(h):
    h.feed(1.36, VisionSighting(1.36, 1.36, backup=True))
    assert h.tracker.next_deadline() == pytest.approx(1.2 + 1.06), "its PART is awaited"
    uid = h.part(1.2, part_id=1)  # came late, stamped with the Mega's time of the beam
    h.feed(1.45, MegaEvent(1, m.Part(2, 0, 1450), 1.45, 1.45))  # the next part
    h.down(1.5)
    assert {r["source"] for r in h.rows.values()} == {"photo_eye"} and uid in h.rows
    h.tick(12.0)
    assert "unreported_part" not in h.alarm_kinds()


def test_a_part_the_camera_saw_and_the_mega_never_reported_is_rejected(h):
    """A photo-eye that misses a part (dust on its reflector, a part too close behind
    another) gives the Mega nothing to fire: the part would pass unjudged, with no row."""
    h.feed(1.36, VisionSighting(1.36, 1.36, backup=True))  # broke the beam at 1.2
    h.tick(2.25)
    assert not h.rows, "before its verdict deadline its PART may still come"
    h.tick(2.261)
    (seen,) = h.rows
    row = h.rows[seen]
    assert (row["source"], row["verdict"], row["failsafe_reason"]) == (
        "vision_backup",
        "reject",
        "not_reported",
    )
    (rearm,) = [c for c in h.sent if isinstance(c.message, m.VisionReject)]
    assert rearm.due_at == pytest.approx(1.2 + 1.285) and rearm.message.delay_ms == 224
    (detail,) = [d for k, d in h.alarms if k == "unreported_part"]
    assert f"part {seen}:" in detail and "check the photo-eye" in detail
    # Its PART was only held in the Mega: it comes now, and both entries fire one part.
    h.feed(2.3, MegaEvent(1, m.Part(1, 0, 1200), 2.3, 1.2))
    assert len(h.rows) == 1 and h.sent[-1].message == m.Verdict(1, 1)
    h.gate(2.485, 1, fired=True)
    h.gate(2.486, rearm.message.part_id | VISION_ID_BIT, True, m.GateReason.VISION)
    assert h.rows[seen]["gate_action"] == "fired" and h.tracker.in_flight == 0
    assert "gate_mismatch" not in h.alarm_kinds()


def test_a_witness_drifting_from_the_photo_eyes_timing_is_alarmed_before_it_rejects(h):
    """A camera.trigger_delay_ms 30 ms off (the belt slowed, the camera moved): the witness
    still recognises each part (within BACKUP_MATCH_S) but says so, once, while it lasts."""
    for k in range(60):
        eye = 1.0 + 0.2 * k
        h.part(eye, part_id=k + 1)
        h.feed(eye + 0.16 + 0.03, VisionSighting(eye + 0.19, eye + 0.19, backup=True))
    assert {r["source"] for r in h.rows.values()} == {"photo_eye"} and len(h.rows) == 60
    (detail,) = [d for k, d in h.alarms if k == "witness_offset"]
    assert "+30 ms" in detail and "station calibrate timing" in detail
    for k in range(60, 120):  # recalibrated
        eye = 1.0 + 0.2 * k
        h.part(eye, part_id=k + 1)
        h.feed(eye + 0.16, VisionSighting(eye + 0.16, eye + 0.16, backup=True))
    assert h.alarm_kinds().count("witness_offset") == 1


# --- vision-trigger lines, and the shell's error path --------------------------------------


def test_a_vision_line_sends_only_rejects_timed_to_the_gate():
    h = Harness(tracker=PartTracker(TrackerSettings(DEADLINES, 1.0, vision_to_gate_s=1.0)))
    h.up(0.0)
    h.feed(1.0, VisionSighting(1.0, 1.01, frame="frame-1"))
    ok = max(h.rows)
    assert h.jobs[-1].frame == "frame-1" and h.jobs[-1].give_up_at == pytest.approx(1.5)
    h.judge(1.05, ok, 0.1)
    assert h.sent == [] and h.rows[ok]["gate_action"] == "passed"
    h.feed(2.0, VisionSighting(2.0, 2.01))
    bad = max(h.rows)
    h.judge(2.05, bad, 0.9)
    assert isinstance(h.sent[-1].message, m.VisionReject) and h.sent[-1].due_at == 3.0


VISION = TrackerSettings(DEADLINES, 1.0, vision_to_gate_s=1.0, pulse_s=0.08)


@pytest.mark.parametrize("answer", [None, "OK"], ids=["endpoint_refuses", "tracker_knows"])
def test_a_vision_reject_judged_while_the_link_is_down_is_armed_when_it_is_back(answer):
    """With no photo-eye the Mega knows only the parts it is told to fire: a reject that
    could not be sent is sent again after the reconnect, not written off as sent."""
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    if answer is None:  # the endpoint saw the link go before the tracker did
        h.answer = None
    else:
        h.down(1.05)
    h.feed(1.1, VisionSighting(1.1, 1.11))
    uid = max(h.rows)
    h.judge(1.15, uid, 0.9)
    if answer is not None:
        assert not [c for c in h.sent if c.tag == ("verdict", uid)], "sent into a down link"
    h.answer = "OK"
    h.up(1.5, epoch=2)
    sent = [c for c in h.sent if c.tag == ("rearm", uid)]
    assert len(sent) == 1 and isinstance(sent[0].message, m.VisionReject), h.sent
    assert sent[0].due_at == pytest.approx(2.1)
    assert sent[0].message.delay_ms == 600
    assert h.rows[uid]["verdict"] == "reject" and "re-armed" in h.rows[uid]["note"]
    mega_id = sent[0].message.part_id | VISION_ID_BIT  # as the Mega reports it
    h.gate(2.1, mega_id, fired=True, reason=m.GateReason.VISION, epoch=2)
    assert h.rows[uid]["gate_action"] == "fired" and "gate_mismatch" not in h.alarm_kinds()


def test_a_vision_reject_the_mega_had_no_room_for_is_sent_when_a_fire_frees_one():
    """A long camera-to-gate run holds more rejects than the Mega's queue (BUSY): the
    reject waits for the next fire, and is then sent with the delay left to its gate."""
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    h.feed(1.0, VisionSighting(1.0, 1.01))
    first = max(h.rows)
    h.judge(1.05, first, 0.9)
    h.answer = "BUSY"
    h.feed(1.2, VisionSighting(1.2, 1.21))
    second = max(h.rows)
    h.judge(1.25, second, 0.9)
    assert "verdict" not in h.rows[second], "a refused reject is not written off as sent"
    h.answer = "OK"
    h.gate(2.0, h.sent[0].message.part_id | VISION_ID_BIT, True, m.GateReason.VISION)
    resent = [c for c in h.sent if c.tag == ("verdict", second)]
    assert len(resent) == 2 and resent[-1].due_at == pytest.approx(2.2)
    assert resent[-1].message.delay_ms == 200
    h.gate(2.2, resent[-1].message.part_id | VISION_ID_BIT, True, m.GateReason.VISION)
    assert (h.rows[second]["verdict"], h.rows[second]["gate_action"]) == ("reject", "fired")
    assert "gate_mismatch" not in h.alarm_kinds()


def test_a_re_arm_the_rebooted_megas_full_queue_refuses_waits_for_a_fire():
    """After a reboot every orphan is re-armed at once; those the Mega's queue has no room
    for (BUSY) are re-armed as the first ones fire, not dropped as unknown."""
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    uids = []
    for t in (1.0, 1.2):
        h.feed(t, VisionSighting(t, t + 0.01))
        uids.append(max(h.rows))
        h.judge(t + 0.05, uids[-1], 0.9)
    h.down(1.5, rebooted=True)
    h.answers = ["OK", "BUSY"]  # the first re-arm fits, the second finds the queue full
    h.up(1.6, epoch=2)
    first, second = ([c for c in h.sent if c.tag == ("rearm", uid)] for uid in uids)
    assert len(first) == 1 and len(second) == 1
    assert "re-arm after link loss refused" not in str(h.rows[uids[1]].get("note"))
    h.gate(2.0, first[0].message.part_id | VISION_ID_BIT, True, m.GateReason.VISION, epoch=2)
    second = [c for c in h.sent if c.tag == ("rearm", uids[1])]
    assert len(second) == 2 and second[-1].due_at == pytest.approx(2.2)
    h.gate(2.2, second[-1].message.part_id | VISION_ID_BIT, True, m.GateReason.VISION, epoch=2)
    assert h.rows[uids[1]]["gate_action"] == "fired" and "gate_mismatch" not in h.alarm_kinds()


def test_a_vision_reject_the_mega_never_heard_of_is_known_to_have_passed():
    """The link came back after the part's gate time: nobody fired it. That is not an
    unknown outcome: the audit says it passed, and the operator is told to pull it."""
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    h.down(1.0)
    h.feed(1.1, VisionSighting(1.1, 1.11))
    uid = max(h.rows)
    h.judge(1.15, uid, 0.9)
    h.up(2.5, epoch=2)
    row = h.rows[uid]
    assert (row["verdict"], row["gate_action"]) == ("reject", "passed"), row
    assert "never told to fire" in row["note"]
    (mismatch,) = [d for k, d in h.alarms if k == "gate_mismatch"]
    assert f"part {uid}" in mismatch and uid not in h.tracker.parts
    assert not [c for c in h.sent if c.tag[0] == "rearm"]


def test_a_vision_reject_sent_as_the_link_went_is_an_alarmed_unknown():
    """Sent, then the cable went before any answer: the Mega may or may not have it. If the
    link is back only after the gate time, the station cannot know, and says so aloud."""
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    h.feed(1.0, VisionSighting(1.0, 1.01))
    uid = max(h.rows)
    h.answer = "pending"  # the link goes with the command on the wire
    h.judge(1.05, uid, 0.9)
    h.down(1.06)
    h.answer = "OK"
    h.up(2.5, epoch=2)
    row = h.rows[uid]
    assert row["verdict"] == "reject" and row.get("gate_action") is None
    assert row["note"] == "gate outcome unknown: link down at gate time"
    (detail,) = [d for k, d in h.alarms if k == "gate_unknown"]
    assert f"part {uid} (reject)" in detail and "pass bin" in detail


def test_a_vision_reject_judged_after_its_gate_time_is_audited_as_passed():
    h = Harness(tracker=PartTracker(VISION))
    h.up(0.0)
    h.feed(1.0, VisionSighting(1.0, 1.01))
    uid = max(h.rows)
    h.judge(2.05, uid, 0.9)  # a starved PC: the gate time was 2.0
    row = h.rows[uid]
    assert (row["verdict"], row["failsafe_reason"], row["gate_action"]) == (
        "reject",
        "late",
        "passed",
    ), row
    assert "vision_late" in h.alarm_kinds() and "gate_mismatch" in h.alarm_kinds()
    assert h.sent == [] and uid not in h.tracker.parts


def test_a_vision_trigger_behind_its_camera_is_counted_and_alarmed(h):
    h.feed(1.0, VisionLag(lag_s=0.412, limit_s=0.25, frame_time=0.588))
    assert h.counted["camera:vision_lag"] == 1
    (detail,) = [detail for kind, detail in h.alarms if kind == "vision_lag"]
    assert "412 ms" in detail and "above 250 ms" in detail
    assert "photo-eye line the camera is the witness" in detail, "h is a photo-eye line"


def test_a_frame_gap_on_a_vision_line_is_counted_and_says_parts_pass_unseen(h):
    h.feed(1.0, FrameGap(gap_s=0.2, limit_s=0.05, frame_time=0.99))
    assert h.counted["camera:frame_gap"] == 1
    (detail,) = [detail for kind, detail in h.alarms if kind == "frame_gap"]
    assert "200 ms" in detail and "above 50 ms" in detail and "pass unjudged" in detail


def test_a_stalled_camera_on_a_vision_line_says_parts_pass_unseen(h):
    vision = Harness(tracker=PartTracker(TrackerSettings(DEADLINES, 1.0, vision_to_gate_s=1.0)))
    for harness in (h, vision):
        harness.feed(1.0, CameraTrouble("camera_stall", "no frame for 1.2 s"))
        harness.feed(1.1, CameraTrouble("bad_frame", "truncated JPEG"))
    said = {kind: detail for kind, detail in vision.alarms}
    assert said["camera_stall"].startswith("no frame for 1.2 s; ")
    assert "pass unjudged" in said["camera_stall"] and "pass" not in said["bad_frame"]
    assert dict(h.alarms)["camera_stall"] == "no frame for 1.2 s"  # the Mega has the photo-eye
    assert vision.counted["camera:camera_stall"] == h.counted["camera:camera_stall"] == 1


def test_fail_safe_rejects_a_pending_part_and_revokes_a_pass(h):
    pending = h.part(1.0, part_id=1)
    passed = h.part(1.2, part_id=2)
    h.judge(1.3, passed, 0.1)
    for uid in (pending, passed):
        h._apply(h.tracker.fail_safe(uid, FailSafe.INTERNAL_ERROR.value, 1.4))
    assert [c.message for c in h.sent[-2:]] == [m.Verdict(1, 1), m.Verdict(2, 1)]
    for uid in (pending, passed):
        assert (h.rows[uid]["verdict"], h.rows[uid]["failsafe_reason"]) == (
            "reject",
            "internal_error",
        )
    assert h.counted["pass_revoked"] == 1


def test_an_event_the_tracker_has_no_rule_for_is_an_error():
    with pytest.raises(TypeError, match="no rule for str"):
        PartTracker(SETTINGS).handle("PART 1", 0.0)
