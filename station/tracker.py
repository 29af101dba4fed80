"""The part tracker: every rule that decides what happens to a part, with no I/O.

Events in (what the Mega, the judge, the camera and the clock said), actions
out (what to write, send, judge and count). No threads, no port, no
database, no clock of its own: every call takes `now` (host seconds), so a
unit test replays any interleaving exactly, and the line service
(`service/line_station.py`), the stepped virtual line and the soak
(`sim/stepped_line.py`) run the very same rules.

The rules that keep a defective part from passing (DESIGN.md, "Who owns time"):
- every part that broke the beam gets an audit row before anything else;
- a part with no judgement by its verdict deadline is sent a reject
  (`classifier_timeout`); a judgement that comes later is recorded, never sent;
- a verdict the Mega refuses as LATE, or that cannot be delivered, is a
  fail-safe reject: the Mega rejects it on its own;
- when the link drops, every part not yet gated becomes a fail-safe reject
  (`link_lost`), unless a pass certainly stands (it leaves the gate before
  the Mega can time out, or the Mega rebooted and forgot it); after the
  link is back on a new boot, every such part still short of the gate is
  re-armed with a timed VISION_REJECT; one whose centre has already passed the
  pusher is still fired while its own pulse would have lasted (`_rearm`), and
  its outcome is audited as unknown;
- the camera is a second witness of every part: one it sees that the Mega
  cannot report (the link down, or gone with the PARTs still queued in the
  Mega) is recorded and re-armed the same way; a late PART for a part the
  camera saw is that part, not a new one;
- a GATE that disagrees with the verdict, or comes for a part never
  reported, is recorded and alarmed.

Link epochs: every Mega event carries the epoch (boot) it came from. A
rebooted Mega numbers its parts from 1 again, so parts are keyed by
(epoch, part ID); a PART of a new boot that arrives before the link-up
notice is filed under its own boot, never under the previous one. The audit
epoch is the link epoch offset by the epochs already in the database, so
keys never collide across restarts of the service either.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from station.calibration import Deadlines
from station.judgement import FailSafe, Judgement
from station.link import messages as m
from station.link.endpoint import Answered, LinkState, MegaEvent
from station.link.limits import VISION_ID_BIT
from station.vision.sighting import FrameGap, VisionLag, VisionSighting

REARM_MIN_MS = 2
"""A re-arm takes this long to reach the Mega and start its pulse (one round trip on the
link): a forgotten part whose deadline is nearer than this is not re-armed."""
BACKUP_MATCH_S = 0.05
"""A camera sighting within this of a known part's trigger is that part."""
WITNESS_OFFSET_ALARM_S = 0.025
"""The median of the last WITNESS_OFFSET_PARTS sightings' offsets from their PARTs past this,
and `witness_offset` is alarmed: at BACKUP_MATCH_S the witness stops recognising the parts
the Mega reports, and rejects every one `not_reported`."""
WITNESS_OFFSET_PARTS = 50
BACKUP_GRACE_S = 0.1
"""After a link-up, a part the camera sees up to the camera's trigger delay and this much
later may have broken the beam while no Mega was running: one with no PART is rejected at
once, as if the link were still down."""


# --- events the tracker is given (besides the link's MegaEvent, LinkState,
# Answered and the vision trigger's VisionSighting and VisionLag) ---------


@dataclass(frozen=True)
class Judged:
    """The judge's answer for one part."""

    uid: int
    judgement: Judgement


@dataclass(frozen=True)
class CameraTrouble:
    kind: str
    detail: str


@dataclass(frozen=True)
class OperatorAck:
    """Someone acknowledged the alarms on the operator's page."""

    name: str


# --- actions the tracker asks for -----------------------------------------------------------


@dataclass(frozen=True)
class NewRow:
    uid: int
    epoch: int
    part_id: int
    source: str
    mcu_trigger_ms: int | None
    trigger_time: float | None
    note: str | None = None


@dataclass(frozen=True)
class UpdateRow:
    uid: int
    fields: dict
    """Audit columns; *_time values are on the tracker's clock (the shell converts)."""


@dataclass(frozen=True)
class RaiseAlarm:
    kind: str
    detail: str


@dataclass(frozen=True)
class JudgeFrame:
    """Find the first frame exposed at or after `wanted_at` (or use `frame`) and judge it."""

    uid: int
    wanted_at: float
    give_up_at: float
    frame: object = None


@dataclass(frozen=True)
class SendCommand:
    """Send to the Mega; feed the link's `Answered(tag, ...)` back in."""

    tag: tuple
    message: m.Message
    due_at: float | None = None
    """VISION_REJECT: the host time to fire at (the link recomputes the delay per copy)."""


@dataclass(frozen=True)
class Decided:
    """A verdict is final for the record: count it, keep its image."""

    uid: int
    verdict: str
    failsafe: str | None
    judgement: Judgement | None
    frame_to_verdict_s: float | None
    trigger_to_verdict_s: float | None


@dataclass(frozen=True)
class Gated:
    uid: int
    action: str
    reason: str
    mega_failsafe: str | None


@dataclass(frozen=True)
class Counted:
    """A counter that is not a verdict or a gate: parts, missed_triggers, pass_revoked,
    fault:<NAME>, camera:<kind>."""

    name: str
    n: int = 1


Action = NewRow | UpdateRow | RaiseAlarm | JudgeFrame | SendCommand | Decided | Gated | Counted


# --- the tracker --------------------------------------------------------------------------


@dataclass
class TrackedPart:
    uid: int
    epoch: int
    """The audit epoch of the Mega boot that holds it (re-armed: the boot it was sent to)."""
    part_id: int
    source: str
    trigger_time: float
    deadline: float
    gate_due: float
    verdict: str | None = None
    failsafe: str | None = None
    judgement: Judgement | None = None
    recorded: bool = False
    """The verdict is in the audit row and counted."""
    orphan: bool = False
    """Its Mega forgot it (link lost, reboot): it must be re-armed on the next boot."""
    armed_epoch: int | None = None
    why_orphan: str = "link lost"
    told_mega: bool = False
    """Vision parts: a VISION_REJECT for it was sent to some Mega (it may have heard it)."""
    pulse_cut: bool = False
    """Fired, then the Mega rebooted within the pulse: the push may have been cut short."""
    late_rearm_ms: int | None = None
    """Re-armed with a pulse due this long after its centre passed the pusher (`_rearm`): the
    pulse may or may not have met it, so its GATE says nothing about where it went."""


GATE_UNKNOWN = "link down at gate time"
PULSE_CUT = "the Mega rebooted within its pulse"
"""Why a reject's gate outcome is unknown; an audit note starts "gate outcome unknown: "
and one of these."""
CAMERA_DOWN = ("camera_stall", "camera_error", "camera_reopen")
"""Camera troubles during which no frame comes."""
UNSEEN_PASS = (
    "with no photo-eye, parts that cross while no frame comes are not seen: they pass "
    "unjudged and have no audit row"
)
"""Said with those troubles on a vision-trigger line, where the camera is the only witness
(a 1.5 s stall at 5 parts/s: 8 parts, README "Lines with no photo-eye")."""


@dataclass(frozen=True)
class TrackerSettings:
    deadlines: Deadlines
    heartbeat_timeout_s: float
    vision_to_gate_s: float | None = None
    """Vision-trigger lines: from the trigger line to the gate. None: photo-eye line."""
    auto_reset_faults: bool = True
    pulse_s: float = 0.0
    """The servo's pulse; the gate fires pulse_s/2 before the part's centre reaches it."""


@dataclass
class _Epochs:
    """Link epochs (the endpoint's boots) mapped to audit epochs (unique in the database)."""

    base: int
    audit_of_link: dict[int, int] = field(default_factory=dict)
    latest_audit: int = 0

    def audit(self, link_epoch: int) -> int:
        if link_epoch not in self.audit_of_link:
            self.latest_audit = max(self.latest_audit, self.base) + 1
            self.audit_of_link[link_epoch] = self.latest_audit
        return self.audit_of_link[link_epoch]

    def renew(self, link_epoch: int) -> int:
        """The Mega restarted within one link epoch (IDs went back): a fresh audit epoch."""
        self.audit_of_link.pop(link_epoch, None)
        return self.audit(link_epoch)


class PartTracker:
    def __init__(self, settings: TrackerSettings, epoch_base: int = 0, first_uid: int = 1):
        self.settings = settings
        self.parts: dict[int, TrackedPart] = {}
        """Every part not yet through the gate (orphans included), by audit uid."""
        self._by_key: dict[tuple[int, int], int] = {}
        self._unreported: deque[VisionSighting] = deque()
        """Parts the camera saw with the link up and no PART for yet, earliest first: each
        waits for its PART until its verdict deadline (`_unreported_due`), or until the link
        goes (its PART went with the Mega's event queue)."""
        self._twins: dict[tuple[int, int], int] = {}
        """Re-arms of parts the Mega then reported by a late PART (`_adopt`), by key: the
        Mega holds such a part twice and fires both; the re-arm's GATE is not a new part."""
        self._epochs = _Epochs(epoch_base)
        self._next_uid = first_uid
        self._link_epoch = 0
        self._link_up = False
        self._link_up_at = float("-inf")
        self._last_part_id: dict[int, int] = {}
        self._vision_seq = 0
        self._witness_offsets: deque[float] = deque(maxlen=WITNESS_OFFSET_PARTS)
        """Recent sightings' times less their PARTs' (`_check_witness_offset`)."""
        self._witness_offset_alarmed = False
        self._recent_fires: deque[tuple[float, TrackedPart]] = deque()
        """Parts fired within the last pulse: a reboot cuts a pulse short (re-armed then)."""
        self._awaiting_slot: deque[int] = deque()
        """Vision rejects and re-arms the Mega's queue had no room for (BUSY), by uid, earliest
        first: each is sent when a fire frees a slot, which comes before its own gate time."""

    # --- queries ---------------------------------------------------------------------------

    @property
    def link_up(self) -> bool:
        return self._link_up

    @property
    def in_flight(self) -> int:
        return len(self.parts)

    def reset_is_safe(self, now: float, guard_s: float) -> bool:
        """Whether opening the port now (which reboots the Mega) costs no part.

        A reboot forgets every part the Mega holds; the host re-arms the ones it knows
        once the handshake is done. A part whose pulse falls between the reboot and
        then would pass unfired, so the shell waits for a gap of `guard_s` (the boot
        and handshake) with no known part at the gate. Called from the link's thread:
        it only reads a copy of the parts.
        """
        pulse = self.settings.pulse_s
        for part in list(self.parts.values()):
            last_chance = part.gate_due + pulse / 2 - REARM_MIN_MS / 1000
            if now <= part.gate_due + pulse and now + guard_s >= last_chance:
                return False  # its pulse would be cut, and a re-arm would come too late
        return True

    def next_deadline(self) -> float | None:
        pending = (p.deadline for p in self.parts.values() if p.verdict is None)
        waiting = (self._unreported_due(self._unreported[0]),) if self._unreported else ()
        return min((*pending, *waiting), default=None)

    # --- events ----------------------------------------------------------------------------

    def handle(self, event: object, now: float) -> list[Action]:
        out: list[Action] = []
        if isinstance(event, MegaEvent):
            self._on_mega_event(event, now, out)
        elif isinstance(event, Judged):
            self._on_judged(event, now, out)
        elif isinstance(event, Answered):
            self._on_answer(event, now, out)
        elif isinstance(event, LinkState):
            self._on_link_state(event, now, out)
        elif isinstance(event, VisionSighting):
            self._on_sighting(event, now, out)
        elif isinstance(event, CameraTrouble):
            detail = event.detail
            if self.settings.vision_to_gate_s is not None and event.kind in CAMERA_DOWN:
                detail += f"; {UNSEEN_PASS}"
            out += [Counted(f"camera:{event.kind}"), RaiseAlarm(event.kind, detail)]
        elif isinstance(event, VisionLag):
            detail = _lag_detail(event, self.settings.vision_to_gate_s is not None)
            out += [Counted("camera:vision_lag"), RaiseAlarm("vision_lag", detail)]
        elif isinstance(event, FrameGap):
            out += [Counted("camera:frame_gap"), RaiseAlarm("frame_gap", _gap_detail(event))]
        elif isinstance(event, OperatorAck):
            self._on_operator_ack(event, out)
        else:
            raise TypeError(f"the tracker has no rule for {type(event).__name__}")
        return out

    def tick(self, now: float) -> list[Action]:
        """Deadlines: a part with no judgement by now is rejected."""
        out: list[Action] = []
        for part in list(self.parts.values()):
            if part.verdict is None and now >= part.deadline:
                self._decide(part, True, FailSafe.CLASSIFIER_TIMEOUT.value, None, now, out)
        while self._unreported and now >= self._unreported_due(self._unreported[0]):
            self._never_reported(self._unreported.popleft(), now, out)
        return out

    def fail_safe(self, uid: int, reason: str, now: float) -> list[Action]:
        """Something broke while handling this part's event: reject it, whatever it was."""
        out: list[Action] = []
        part = self.parts.get(uid)
        if part is None:
            return out
        if part.verdict is None:
            self._decide(part, True, reason, None, now, out)
        elif part.verdict == "pass":
            out.append(Counted("pass_revoked"))
            part.verdict, part.failsafe, part.recorded = "reject", reason, False
            self._send_verdict(part, now, out)
        return out

    def uid_of(self, event: object) -> int | None:
        """The part an event is about, if the tracker knows it (for the shell's error path)."""
        if isinstance(event, Judged):
            return event.uid
        if isinstance(event, Answered) and len(event.tag) > 1:
            return event.tag[1]
        if isinstance(event, MegaEvent) and hasattr(event.message, "part_id"):
            epoch = self._epochs.audit_of_link.get(event.epoch)
            return self._by_key.get((epoch, event.message.part_id))
        return None

    # --- parts in ----------------------------------------------------------------------------

    def _on_mega_event(self, event: MegaEvent, now: float, out: list[Action]) -> None:
        msg = event.message
        if event.epoch > self._link_epoch:
            self._link_epoch = event.epoch  # a new boot's events can precede its link-up
        if isinstance(msg, m.Part):
            self._on_part(event, msg, now, out)
        elif isinstance(msg, m.Gate):
            self._on_gate(event, msg, now, out)
        elif isinstance(msg, m.FaultEvent):
            self._on_fault(msg, out)

    def _on_part(self, event: MegaEvent, msg: m.Part, now: float, out: list[Action]) -> None:
        epoch = self._epochs.audit(event.epoch)
        last = self._last_part_id.get(epoch)
        if last is not None and msg.part_id <= last:
            # IDs went back within one boot as the host saw it: the Mega restarted unnoticed.
            out.append(
                RaiseAlarm(
                    "mega_restarted",
                    f"part ID {msg.part_id} after {last} with no reboot seen: "
                    "treating the parts it held as forgotten",
                )
            )
            self._forget_epoch(epoch, now, rebooted=True, heard_by_mega_at=0.0, out=out)
            epoch = self._epochs.renew(event.epoch)
            last = None
            if self._link_up:
                self._rearm_orphans(now, out)
        if last is not None and msg.part_id > last + 1:
            out.append(Counted("missed_triggers", msg.part_id - last - 1))
            out.append(
                RaiseAlarm(
                    "missed_trigger",
                    f"part IDs {last + 1}..{msg.part_id - 1} were counted by the Mega "
                    "but never reported",
                )
            )
        self._last_part_id[epoch] = msg.part_id
        trigger = event.host_time if event.host_time is not None else event.received_at
        if self._unreported:  # the camera saw it first: its PART came late
            self._unreported = deque(
                v for v in self._unreported if abs(self._eye_time(v) - trigger) >= BACKUP_MATCH_S
            )
        seen = self._backup_sighting_of(trigger)
        if seen is not None:
            self._adopt(seen, epoch, msg.part_id, now, out)
            return
        part = self._new_part(epoch, msg.part_id, "photo_eye", trigger, msg.mcu_time_ms, None, out)
        d = self.settings.deadlines
        out.append(
            JudgeFrame(
                part.uid,
                trigger + d.trigger_delay_ms / 1000,
                trigger + d.frame_give_up_ms / 1000,
            )
        )

    def _on_sighting(self, sighting: VisionSighting, now: float, out: list[Action]) -> None:
        if sighting.backup:
            self._on_backup_sighting(sighting, now, out)
            return
        epoch = self._epochs.audit(max(self._link_epoch, 1))
        part = self._new_part(
            epoch, self._next_vision_id(), "vision", sighting.trigger_time, None, None, out
        )
        out.append(JudgeFrame(part.uid, sighting.frame_time, part.deadline, sighting.frame))

    def _on_backup_sighting(self, sighting: VisionSighting, now: float, out: list[Action]) -> None:
        """The camera, a second witness of every part on a photo-eye line, saw one cross.

        A part the Mega reported is recognised by time (`_eye_time`) and needs nothing.
        One it did not report is rejected and re-armed when its Mega cannot report it: the
        link is down, or came up too recently for that Mega to have seen the part. With the
        link up its PART may still be on its way, queued behind an event whose ACK was
        lost: it waits for it, and if the link goes first it is rejected then."""
        eye_time = self._eye_time(sighting)
        nearest = self._nearest_part(eye_time)
        if nearest is not None and abs(nearest.trigger_time - eye_time) < BACKUP_MATCH_S:
            if nearest.source == "photo_eye":
                self._check_witness_offset(eye_time - nearest.trigger_time, out)
            return
        grace = self.settings.deadlines.trigger_delay_ms / 1000 + BACKUP_GRACE_S
        if self._link_up and now - self._link_up_at >= grace:
            self._unreported.append(sighting)
            return
        note = "seen by the camera while the link was down"
        self._witnessed(sighting, note, FailSafe.LINK_LOST, now, out)

    def _nearest_part(self, eye_time: float) -> TrackedPart | None:
        return min(self.parts.values(), key=lambda p: abs(p.trigger_time - eye_time), default=None)

    def _check_witness_offset(self, offset_s: float, out: list[Action]) -> None:
        """Alarm, once until it is back, when the witness drifts from the photo-eye's timing
        (a camera.trigger_delay_ms that no longer fits, a belt running at another speed)."""
        self._witness_offsets.append(offset_s)
        if len(self._witness_offsets) < WITNESS_OFFSET_PARTS:
            return
        median = statistics.median(self._witness_offsets)
        off = abs(median) > WITNESS_OFFSET_ALARM_S
        if off and not self._witness_offset_alarmed:
            out.append(
                RaiseAlarm(
                    "witness_offset",
                    f"the camera sees parts {median * 1000:+.0f} ms from where "
                    "camera.trigger_delay_ms puts them (median of the last "
                    f"{WITNESS_OFFSET_PARTS}); past {BACKUP_MATCH_S * 1000:.0f} ms it no longer "
                    "recognises the parts the Mega reports and rejects them all: run "
                    "`station calibrate timing`",
                )
            )
        self._witness_offset_alarmed = off

    def _witnessed(
        self, sighting: VisionSighting, note: str, why: FailSafe, now: float, out: list[Action]
    ) -> TrackedPart:
        """A part only the camera knows of: a fail-safe reject, re-armed on the Mega."""
        epoch = self._epochs.audit(max(self._link_epoch, 1))
        part = self._new_part(
            epoch,
            self._next_vision_id(),
            "vision_backup",
            self._eye_time(sighting),
            None,
            note,
            out,
        )
        self._by_key.pop((part.epoch, part.part_id), None)
        part.orphan, part.why_orphan = True, note
        part.verdict, part.failsafe = "reject", why.value
        self._record(part, now, out, note, sighting.frame_time, sighting.frame)
        if self._link_up:
            self._rearm_orphans(now, out)
        return part

    def _eye_time(self, sighting: VisionSighting) -> float:
        """When the part the camera saw broke the photo-eye's beam."""
        return sighting.trigger_time - self.settings.deadlines.trigger_delay_ms / 1000

    def _unreported_due(self, sighting: VisionSighting) -> float:
        """When a part the camera saw must have its PART: its verdict deadline. A re-arm
        sent then still meets the part at the gate."""
        return self._eye_time(sighting) + self.settings.deadlines.verdict_deadline_ms / 1000

    def _never_reported(self, sighting: VisionSighting, now: float, out: list[Action]) -> None:
        """No PART by the verdict deadline of a part the camera saw, with the link up: the
        photo-eye missed it (dust, a part too close behind another), or its PART is held in
        the Mega. Either way nothing else rejects it if it is defective: it is rejected."""
        note = "seen by the camera; no PART came by its verdict deadline"
        part = self._witnessed(sighting, note, FailSafe.NOT_REPORTED, now, out)
        out.append(
            RaiseAlarm(
                "unreported_part",
                f"part {part.uid}: the camera saw it, and the Mega did not report it by its "
                "verdict deadline (a photo-eye that missed it, or its PART held in the Mega): "
                "rejected unjudged; check the photo-eye if this repeats, and if every part "
                "gets it, camera.trigger_delay_ms (the witness matches a sighting to a PART "
                f"within {BACKUP_MATCH_S * 1000:.0f} ms of it: `station calibrate timing`)",
            )
        )

    def _backup_sighting_of(self, eye_time: float) -> TrackedPart | None:
        """The camera's backup sighting of the part that broke the beam at `eye_time`, if any.

        A rebooted Mega's PART can reach the host after the camera saw the part: its frame
        was garbled and retransmitted, or queued behind the handshake. The two are one part."""
        for part in self.parts.values():
            near = abs(part.trigger_time - eye_time) < BACKUP_MATCH_S
            if near and part.source == "vision_backup":
                return part
        return None

    def _adopt(
        self, part: TrackedPart, epoch: int, part_id: int, now: float, out: list[Action]
    ) -> None:
        """A late PART for a part the camera saw and the tracker had to reject without one
        (the link was down, or no PART came by the verdict deadline): the same part.

        It keeps its audit row and its fail-safe reject (judging it again could pass a part
        a re-arm is about to fire, and the row would say "passed" of a part pushed off).
        From now on it is tracked by the Mega's own ID, as any part the Mega reported: the
        Mega fires it on our reject, or on its own if no verdict comes. A re-arm already
        sent to this boot holds it a second time; that entry's GATE is the same part's."""
        if part.armed_epoch == epoch:
            self._twins[(part.epoch, part.part_id)] = part.uid
        self._by_key.pop((part.epoch, part.part_id), None)
        part.epoch, part.part_id = epoch, part_id
        part.orphan, part.armed_epoch = False, None
        self._by_key[(epoch, part_id)] = part.uid
        out.append(
            UpdateRow(
                part.uid,
                {
                    "note": f"{part.why_orphan}; the Mega's PART {part_id} came late: "
                    "rejected as the camera's sighting"
                },
            )
        )
        if self._link_up and epoch == self._epochs.audit(self._link_epoch):
            out.append(SendCommand(("verdict", part.uid), m.Verdict(part_id, 1)))

    def _new_part(
        self,
        epoch: int,
        part_id: int,
        source: str,
        trigger: float,
        mcu_ms: int | None,
        note: str | None,
        out: list[Action],
    ) -> TrackedPart:
        uid = self._next_uid
        self._next_uid += 1
        s = self.settings
        vision = source == "vision" and s.vision_to_gate_s is not None
        part = TrackedPart(
            uid=uid,
            epoch=epoch,
            part_id=part_id,
            source=source,
            trigger_time=trigger,
            deadline=trigger
            + (s.vision_to_gate_s / 2 if vision else s.deadlines.verdict_deadline_ms / 1000),
            gate_due=trigger
            + (s.vision_to_gate_s if vision else s.deadlines.gate_travel_ms / 1000),
        )
        self.parts[uid] = part
        self._by_key[(epoch, part_id)] = uid
        out.append(NewRow(uid, epoch, part_id, source, mcu_ms, trigger, note))
        out.append(Counted("parts"))
        return part

    def _next_vision_id(self) -> int:
        self._vision_seq = self._vision_seq % 0x7FFF_FFFF + 1
        return VISION_ID_BIT | self._vision_seq

    # --- verdicts ----------------------------------------------------------------------------

    def _on_judged(self, event: Judged, now: float, out: list[Action]) -> None:
        part = self.parts.get(event.uid)
        j = event.judgement
        if part is None or part.verdict is not None:
            # Too late: the part was already failed safe. Keep the score for the record.
            out.append(
                UpdateRow(event.uid, {"score": j.score, "note": f"late judgement ({j.verdict})"})
            )
            return
        failsafe = j.failsafe.value if j.failsafe else None
        self._decide(part, j.reject, failsafe, j, now, out)

    def _decide(
        self,
        part: TrackedPart,
        reject: bool,
        failsafe: str | None,
        j: Judgement | None,
        now: float,
        out: list[Action],
    ) -> None:
        part.verdict = "reject" if reject else "pass"
        part.failsafe = failsafe
        part.judgement = j
        if part.orphan:
            self._record(part, now, out)  # its Mega is gone; re-arming covers it
            return
        if part.source == "vision":
            self._send_vision(part, now, out)
        else:
            self._send_verdict(part, now, out)

    def _send_verdict(self, part: TrackedPart, now: float, out: list[Action]) -> None:
        if not self._link_up or part.epoch != self._epochs.audit(self._link_epoch):
            # The Mega holding it cannot hear us: it rejects the part on its own.
            part.verdict = "reject"
            part.failsafe = part.failsafe or FailSafe.LINK_LOST.value
            self._record(part, now, out, note="link down: verdict not sent")
            return
        reject = int(part.verdict == "reject")
        out.append(SendCommand(("verdict", part.uid), m.Verdict(part.part_id, reject)))

    def _send_vision(self, part: TrackedPart, now: float, out: list[Action]) -> None:
        if part.verdict == "pass":
            # Nothing to tell the Mega: with no photo-eye it tracks only what it must fire.
            self._record(part, now, out)
            self._gated(part, "passed", "not_actuated", now, out)
            return
        delay_ms = int((part.gate_due - now) * 1000)
        if delay_ms < 0:
            # Nobody can fire it now, and no Mega knew it: it passed, and the audit says so.
            out.append(RaiseAlarm("vision_late", f"part {part.uid} judged after its gate time"))
            part.failsafe = FailSafe.LATE.value
            self._record(part, now, out, note="judged after its gate time: it passed unfired")
            self._gated(part, "passed", "not_actuated", now, out)
            return
        if not self._link_up:
            self._hold_for_reconnect(part, now, out)
            return
        part.told_mega = True
        vision_id = part.part_id & 0x7FFF_FFFF
        reject = m.VisionReject(vision_id, min(delay_ms, 65535))
        out.append(SendCommand(("verdict", part.uid), reject, due_at=part.gate_due))

    def _vision_refused(self, part: TrackedPart, error: str, now: float, out: list[Action]) -> None:
        """A VISION_REJECT that did not arm the Mega: nothing fires the part unless it is sent
        again, so it is never written off as a reject."""
        part.told_mega = False
        if error == "link_down":
            self._hold_for_reconnect(part, now, out)  # refused unsent: the Mega never heard
        elif error == m.Error.BUSY.name:
            # Its queue is full of earlier rejects (a long camera-to-gate run): the next fire
            # frees a slot, and the parts ahead of this one all fire before it is due.
            self._awaiting_slot.append(part.uid)
        else:
            note = f"the Mega refused to arm it ({error}): it passed unfired"
            self._record(part, now, out, note=note)
            self._gated(part, "passed", "not_actuated", now, out)

    def _send_awaiting(self, now: float, out: list[Action]) -> None:
        """A fire freed a slot in the Mega's queue: send the earliest reject waiting for one
        (a vision reject, or an orphan's re-arm)."""
        while self._awaiting_slot and self._link_up:
            part = self.parts.get(self._awaiting_slot.popleft())
            if part is None:
                continue
            if part.orphan:
                self._rearm(part, self._epochs.audit(self._link_epoch), now, out)
                return
            if not part.recorded:
                self._send_vision(part, now, out)
                return

    def _hold_for_reconnect(self, part: TrackedPart, now: float, out: list[Action]) -> None:
        """A vision reject the Mega cannot be told now: keep it, to arm on the next boot.

        With no photo-eye the Mega knows a part only when it is told to fire it, and it
        fails safe on nothing it does not know: unsent, the part passes. The reconnect
        re-arms it while its gate time is still ahead (`_rearm_orphans`)."""
        part.orphan = True
        part.why_orphan = "judged while the link was down"
        part.failsafe = part.failsafe or FailSafe.LINK_LOST.value
        self._by_key.pop((part.epoch, part.part_id), None)
        self._record(part, now, out, note="link down: the Mega is told to fire on reconnect")

    def _on_operator_ack(self, ack: OperatorAck, out: list[Action]) -> None:
        """Audited with the name typed; the Mega's fault lamp is cleared if it can be told."""
        if self._link_up:
            out.append(
                RaiseAlarm("acknowledged", f"alarms acknowledged by {ack.name}")
            )  # audit.ACK_ALARM_KIND
            out.append(SendCommand(("reset_fault",), m.ResetFault()))
        else:
            out.append(
                RaiseAlarm(
                    "acknowledged",  # audit.ACK_ALARM_KIND
                    f"alarms acknowledged by {ack.name}; the link is down, so the Mega's "
                    "fault lamp stays as it is until the link is back",
                )
            )

    def _on_answer(self, answer: Answered, now: float, out: list[Action]) -> None:
        kind = answer.tag[0]
        if kind == "reset_fault":
            if answer.error is None:
                out.append(RaiseAlarm("fault_cleared", "latched Mega fault cleared"))
            return
        part = self.parts.get(answer.tag[1])
        if part is None:
            return
        error = _answer_error(answer)
        if kind == "rearm":
            if not part.orphan:
                return  # its late PART came first: the Mega holds it by that (`_adopt`)
            if error is None:
                note = f"{part.why_orphan}: re-armed as {part.part_id:#x}"
                out.append(UpdateRow(part.uid, {"note": note}))
            elif error == m.Error.BUSY.name:  # more orphans than the Mega's queue holds
                self._by_key.pop((part.epoch, part.part_id), None)
                part.armed_epoch = None
                self._awaiting_slot.append(part.uid)
            else:
                self._drop(part, f"re-arm after link loss refused: {error}", out)
            return
        if part.recorded:
            return  # already settled by a link loss while the command was on its way
        if part.source == "vision" and error is not None:
            self._vision_refused(part, error, now, out)
            return
        if error == m.Error.LATE.name:
            part.verdict, part.failsafe = "reject", FailSafe.LATE.value
        elif error is not None:
            part.verdict = "reject"
            part.failsafe = part.failsafe or FailSafe.LINK_LOST.value
        self._record(part, now, out, note=f"mega: {error}" if error else None)

    def _record(
        self,
        part: TrackedPart,
        now: float,
        out: list[Action],
        note: str | None = None,
        frame_time: float | None = None,
        frame: object = None,
    ) -> None:
        """Write the verdict to the audit row and count it (once per part)."""
        if part.recorded:
            return
        part.recorded = True
        j = part.judgement
        judged = j is not None and j.failsafe is None and part.failsafe is None
        frame = frame if frame is not None else (j.frame if j else None)
        if frame_time is None and frame is not None:
            frame_time = getattr(frame, "timestamp", None)
        fields = {
            "frame_time": frame_time,
            "verdict_time": now,
            "score": j.score if j else None,
            "verdict": part.verdict,
            "failsafe_reason": part.failsafe,
            "note": note or ((j.detail or None) if j else None),
        }
        out.append(UpdateRow(part.uid, fields))
        out.append(
            Decided(
                part.uid,
                part.verdict,
                part.failsafe,
                j,
                now - frame_time if judged and frame_time is not None else None,
                now - part.trigger_time if judged else None,
            )
        )

    # --- the gate ------------------------------------------------------------------------------

    def _on_gate(self, event: MegaEvent, msg: m.Gate, now: float, out: list[Action]) -> None:
        if msg.part_id == 0:
            return  # a test fire
        action = "fired" if msg.action == m.GateAction.FIRED else "passed"
        reason = m.GateReason(msg.reason).name.lower()
        epoch = self._epochs.audit(event.epoch)
        key = (epoch, msg.part_id)
        if self._twins.pop(key, None) is not None:
            return  # the re-arm of a part the Mega also holds by its late PART: both fire it
        uid = self._by_key.get(key)
        part = self.parts.get(uid) if uid is not None else None
        if part is None:
            # A part the Mega saw but never reported (its PART was lost): record it now.
            part = self._new_part(
                epoch,
                msg.part_id,
                "gate_only",
                now,
                None,
                "PART never received; known from its GATE event",
                out,
            )
            part.verdict, part.failsafe = "reject", f"mega_{reason}"
            if action == "passed":
                part.verdict, part.failsafe = "pass", None
            self._record(part, now, out)
        elif not part.recorded:
            # The Mega decided before the host's verdict was settled (no or late verdict).
            part.verdict = "reject" if action == "fired" else "pass"
            if action == "fired" and reason != "verdict":
                part.failsafe = part.failsafe or f"mega_{reason}"
            self._record(part, now, out)
        self._gated(part, action, reason, now, out)
        if part.late_rearm_ms is not None:
            self._late_rearm_gated(part, out)
        if action == "fired":
            self._send_awaiting(now, out)

    def _gated(
        self, part: TrackedPart, action: str, reason: str, now: float, out: list[Action]
    ) -> None:
        self.parts.pop(part.uid, None)
        self._by_key.pop((part.epoch, part.part_id), None)
        mega_failsafe = reason if reason not in ("verdict", "vision", "not_actuated") else None
        if (part.verdict == "reject") != (action == "fired"):
            out.append(
                RaiseAlarm(
                    "gate_mismatch",
                    f"part {part.uid}: verdict {part.verdict} but the gate {action} ({reason})",
                )
            )
        out.append(
            UpdateRow(part.uid, {"gate_action": action, "gate_reason": reason, "gate_time": now})
        )
        out.append(Gated(part.uid, action, reason, mega_failsafe))
        if action == "fired" and self.settings.pulse_s:
            self._recent_fires.append((now, part))
            while self._recent_fires and now - self._recent_fires[0][0] > self.settings.pulse_s:
                self._recent_fires.popleft()

    def _on_fault(self, msg: m.FaultEvent, out: list[Action]) -> None:
        name = m.Fault(msg.code).name
        text = f"{name} (detail {msg.detail})"
        if msg.code == m.Fault.PHOTO_EYE_OVERFLOW:
            text = (
                f"{name}: {msg.detail} beam break(s) came while the Mega's trigger ring was full "
                "and got no part ID; such a part is rejected only if the camera sighted it "
                "(vision re-arm), so check the pass bin since this alarm"
            )
        out += [Counted(f"fault:{name}"), RaiseAlarm("mega_fault", text)]
        if self.settings.auto_reset_faults and self._link_up:
            out.append(SendCommand(("reset_fault",), m.ResetFault()))

    # --- the link ------------------------------------------------------------------------------

    def _on_link_state(self, state: LinkState, now: float, out: list[Action]) -> None:
        if state.up:
            self._link_epoch = max(self._link_epoch, state.epoch)
            self._link_up = True
            self._link_up_at = now
            out.append(RaiseAlarm("link_up", f"epoch {state.epoch}: {state.reason}"))
            self._rearm_orphans(now, out)
            return
        if state.epoch < self._link_epoch:
            return  # a notice about a boot already superseded
        was_up, self._link_up = self._link_up, False
        if was_up:
            out.append(RaiseAlarm("link_down", state.reason))
        epoch = self._epochs.audit(state.epoch)
        self._forget_epoch(epoch, now, state.rebooted, state.heard_by_mega_at, out)
        while self._unreported:  # their PARTs went with the Mega's event queue
            note = "seen by the camera; the link went before the Mega reported it"
            self._witnessed(self._unreported.popleft(), note, FailSafe.LINK_LOST, now, out)

    def _forget_epoch(
        self,
        epoch: int,
        now: float,
        rebooted: bool,
        heard_by_mega_at: float,
        out: list[Action],
    ) -> None:
        """The Mega of `epoch` can no longer be told anything: settle each part it held.

        After a reboot, a part fired within the last pulse may have had its pulse cut
        short (the servo returns to rest at reset): it is re-armed too. Vision rejects
        waiting for a slot become orphans with the rest, re-armed on the next boot.
        """
        self._awaiting_slot.clear()
        self._twins = {key: uid for key, uid in self._twins.items() if key[0] != epoch}
        if rebooted:
            for fired_at, part in self._recent_fires:
                if part.epoch == epoch and now - fired_at <= self.settings.pulse_s:
                    part.orphan = True
                    part.pulse_cut = True
                    part.why_orphan = "the reboot may have cut its pulse short"
                    self.parts[part.uid] = part
            self._recent_fires.clear()
        for part in list(self.parts.values()):
            if part.orphan or part.epoch != epoch:
                continue
            kept = self._pass_survives(part, rebooted, heard_by_mega_at)
            if kept:
                self._record(part, now, out)
                self.parts.pop(part.uid)
                out.append(UpdateRow(part.uid, {"note": kept}))
                continue
            if part.verdict == "pass" and part.recorded:
                out.append(Counted("pass_revoked"))
                part.recorded = False
            if part.verdict != "reject":
                part.verdict, part.failsafe = "reject", FailSafe.LINK_LOST.value
            self._record(part, now, out)  # nothing new if a reject is already on record
            part.orphan = True
            self._by_key.pop((part.epoch, part.part_id), None)

    def _pass_survives(self, part: TrackedPart, rebooted: bool, heard_by_mega_at: float):
        """Why a pass verdict still stands after the link went down, or None if it cannot.

        Lost contact means reject (PROTOCOL.md): once the Mega misses our heartbeat it
        fires every part it still holds, passes included. A pass stands only where the
        part certainly leaves the gate before that, or the Mega has forgotten it (a
        reboot) so that nothing will fire it. Anything else becomes a fail-safe reject,
        re-armed when the link is back.
        """
        if part.verdict != "pass" or part.source != "photo_eye" or part.failsafe:
            return None
        if rebooted:
            return "the Mega rebooted and forgot this part: it passes, as judged"
        if part.gate_due < heard_by_mega_at + self.settings.heartbeat_timeout_s:
            return "link lost; the part reaches the gate before the Mega can time out"
        return None

    def _rearm_orphans(self, now: float, out: list[Action]) -> None:
        """After a reconnect the Mega is freshly booted: fire for the parts it forgot."""
        epoch = self._epochs.audit(self._link_epoch)
        # Most urgent first: commands go one at a time, and a cut pulse has ms to spare.
        for part in sorted(self.parts.values(), key=lambda p: p.gate_due):
            if part.orphan and part.armed_epoch != epoch:
                self._rearm(part, epoch, now, out)

    def _rearm(self, part: TrackedPart, epoch: int, now: float, out: list[Action]) -> None:
        """Tell the new boot to fire a part its predecessor forgot, when its gate time comes.

        A pulse that starts up to half a pulse late still meets the part's centre. Later
        than that, until the part's own pulse would have ended, a pulse may still catch its
        trailing half: a pulse is sent all the same, because the only other outcome is a
        reject left to pass (a 10^6-part soak, seed 18: a reboot cut a pulse 22 ms in,
        before the part reached the pusher, and the link was back 1 ms before its centre
        did, too late to meet the centre; no pulse was tried, and the defective part
        passed). Such a part's GATE cannot say where it went
        (`_late_rearm_gated`). A pulse that late can reach the next part only when the parts
        are under two pulses apart: a good part pushed off, which is the safe side."""
        pulse_s = self.settings.pulse_s
        reachable_ms = (part.gate_due + pulse_s - now) * 1000
        if reachable_ms < REARM_MIN_MS:
            self._unreachable(part, now, out)
            return
        centre_passed_ms = (now - (part.gate_due + pulse_s / 2)) * 1000 + REARM_MIN_MS
        part.late_rearm_ms = math.ceil(centre_passed_ms) if centre_passed_ms > 0 else None
        remaining_ms = max(0.0, (part.gate_due - now) * 1000)
        rearm_id = self._next_vision_id()
        part.part_id, part.epoch, part.armed_epoch = rearm_id, epoch, epoch
        part.told_mega = True
        self._by_key[(epoch, rearm_id)] = part.uid
        delay = min(int(remaining_ms), 65535)
        rearm = m.VisionReject(rearm_id & 0x7FFF_FFFF, delay)
        out.append(SendCommand(("rearm", part.uid), rearm, due_at=max(now, part.gate_due)))

    def _late_rearm_gated(self, part: TrackedPart, out: list[Action]) -> None:
        """The GATE of a part re-armed after its centre passed the pusher: the Mega fired, but
        whether the pulse met the part nobody knows, so the row must not say "fired"."""
        why = PULSE_CUT if part.pulse_cut else GATE_UNKNOWN
        late = (
            f"re-armed with a pulse due about {part.late_rearm_ms} ms after its centre "
            "passed the pusher, within its own pulse"
        )
        self._outcome_unknown(part, f"{why}; {late}", out)

    def _unreachable(self, part: TrackedPart, now: float, out: list[Action]) -> None:
        """An orphan whose own pulse was over before a Mega could be told to fire it."""
        if part.source == "vision" and not part.told_mega:
            # No Mega ever held it, so none fired it: it passed, and the audit says so.
            note = "link down from its judgement to its gate time: the Mega was never told to fire"
            out.append(UpdateRow(part.uid, {"note": note}))
            self._gated(part, "passed", "not_actuated", now, out)
            return
        why = f"{PULSE_CUT}, and a re-arm came too late" if part.pulse_cut else GATE_UNKNOWN
        self._outcome_unknown(part, why, out)

    def _outcome_unknown(self, part: TrackedPart, why: str, out: list[Action]) -> None:
        """A part whose gate outcome nobody can know: sent as the link went, held by a Mega
        that then went away, pushed by a pulse a reboot cut, or fired at late. Its row must
        not say "fired" (the Mega's GATE, or the cut pulse's, may have said so), and a
        reject is alarmed by name."""
        out.append(UpdateRow(part.uid, {"gate_action": None, "gate_reason": None}))
        if part.verdict == "reject":
            detail = f"part {part.uid} (reject): {why}; check the pass bin"
            out.append(RaiseAlarm("gate_unknown", detail))
        self._drop(part, f"gate outcome unknown: {why}", out)

    def _drop(self, part: TrackedPart, note: str, out: list[Action]) -> None:
        """Stop tracking a part whose gate outcome nobody can report."""
        self.parts.pop(part.uid, None)
        self._by_key.pop((part.epoch, part.part_id), None)
        out.append(UpdateRow(part.uid, {"note": note}))

    def stop(self, now: float) -> list[Action]:
        """The service stops: what is still in flight is noted (the Mega gates it alone)."""
        out: list[Action] = []
        for part in list(self.parts.values()):
            self._drop(part, "gate outcome unknown: station stopped first", out)
        return out


def _answer_error(answer: Answered) -> str | None:
    if answer.error is not None:
        return answer.error
    error = getattr(answer.reply, "error", m.Error.OK)
    return None if error == m.Error.OK else m.Error(error).name


def _gap_detail(gap: FrameGap) -> str:
    return (
        f"the vision trigger got no frame for {gap.gap_s * 1000:.0f} ms (alarm above "
        f"{gap.limit_s * 1000:.0f} ms: three of the camera's usual intervals, at least 100 ms) "
        f"and did not read a crossing across it; {UNSEEN_PASS}"
    )


def _lag_detail(lag: VisionLag, vision_line: bool) -> str:
    said = (
        f"the vision trigger looked at a frame {lag.lag_s * 1000:.0f} ms after it was taken "
        f"(alarm above {lag.limit_s * 1000:.0f} ms): the line PC is not keeping up with its "
        "camera. "
    )
    if not vision_line:
        return said + (
            "On this photo-eye line the camera is the witness of the parts the Mega cannot "
            "report (the link down): it sees them that much later, and their re-arm comes later"
        )
    return said + (
        "Parts seen this late are failed safe; with no photo-eye, one seen a whole "
        "trigger-to-gate time late reaches the gate unjudged and passes"
    )
