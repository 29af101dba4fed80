"""The host's half of the protocol, with no threads, no port and no clock of its own.

Everything the host decides about the link lives here, once: sequence
numbers, stop-and-wait commands retransmitted with the same seq, events
acknowledged and de-duplicated, heartbeats out, silence and reboot
detection, the handshake (firmware, protocol, calibration read back), and
the link epoch. Every call takes the time (`now`, host seconds), every
output is bytes to write (`take_output`) or a notice (`take_notices`), so
the same code runs behind a real serial port (`session.MegaSession`, a thin
shell of two threads) and on the stepped virtual line (`sim.stepped_line`),
where a soak of 10^5 parts exercises every branch with faults injected.

The epoch counts boots of the Mega as this host saw them: it moves on when
the port is (re)opened and when a reboot is detected, *before* any event of
the new boot is passed on. Every `MegaEvent` carries the epoch it belongs
to, so a PART from a freshly rebooted Mega can never be filed under the
previous boot, whatever order the consumer reads its queue in.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

from station.link import messages as m
from station.link.clocksync import ClockSync
from station.link.framing import Frame, FrameError, FrameReader, encode_frame

RETRANSMIT_S = 0.01
"""A round trip takes 1 to 4 ms: a lost frame should cost a part little of its time (a
re-armed part may have 30 ms left). Copies that cross an answer are harmless: the Mega
acts once per seq."""
MAX_RETRIES = 100
HEARTBEAT_S = 0.25
HELLO_INTERVAL_S = 0.25
BOOT_QUIET_S = 3.0
"""After opening the port (which resets a Mega), say nothing this long unless the sketch
announces itself sooner (its boot announcement, or the heartbeat it sends right after).
A Mega 2560 runs the stk500v2 bootloader after a reset and waits for a programmer; any
byte it receives then keeps it in programming mode until the line has been silent for
seconds, so a HELLO sent into it stops the sketch from starting. With Debian's
stk500boot_v2_mega2560.hex in simavr the sketch announced itself 0.83 s after the open,
in simulated time (tests/test_firmware.py); 3 s leaves margin (PROTOCOL.md, "Connect
handshake"). If the HELLOs after it go unanswered, the handshake fails and the port is
reopened, which resets the board into a fresh, quiet boot."""


BOOT_CLOCK_SLACK_MS = 50
"""How far the Mega's millis() may run ahead of the host's time since the port was opened
(the reset comes with the open; the two clocks start a wire's latency apart)."""


class LinkPhase(str, enum.Enum):
    CLOSED = "closed"
    """No port: nothing is sent; the shell reopens it."""
    HANDSHAKE = "handshake"
    UP = "up"
    FAILED = "failed"
    """The device answered wrongly or went silent: the shell closes the port."""


# --- notices: what the endpoint tells its owner -------------------------------------------


@dataclass(frozen=True)
class MegaEvent:
    """A reliable event from the Mega (PART, GATE, FAULT), once, with the boot it came from."""

    epoch: int
    message: m.Message
    received_at: float
    host_time: float | None = None
    """For a message carrying the Mega's clock: that instant on the host's clock."""


@dataclass(frozen=True)
class LinkState:
    """The link came up (handshake done) or went down."""

    up: bool
    epoch: int
    reason: str
    identify: m.Identify | None = None
    rebooted: bool = False
    """Down because the Mega rebooted: it forgot every part it held, and fires none of them."""
    heard_by_mega_at: float = 0.0
    """Host time by which the Mega had certainly heard us (it answered a command sent then).
    Its heartbeat deadline is no earlier than this plus heartbeat_timeout_ms."""
    fatal: bool = False
    """The handshake proved this is not a Mega the station can run with: do not retry."""


@dataclass(frozen=True)
class Answered:
    """The end of a command: the Mega's reply, or why there is none."""

    tag: object
    reply: m.Message | None
    error: str | None = None
    """None when `reply` is set; else `link_down` (not sent) or `no_answer` (retries spent)."""
    rtt_s: float | None = None


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0
    duplicate_events: int = 0
    frame_errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    rtt_s: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def rtt_ms_percentiles(self) -> tuple[float, float]:
        if not self.rtt_s:
            return (float("nan"), float("nan"))
        ordered = sorted(self.rtt_s)
        return _percentile(ordered, 50) * 1000, _percentile(ordered, 99) * 1000


def _percentile(ordered: list[float], q: float) -> float:
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class _Command:
    message: m.Message
    tag: object
    retries: int
    interval_s: float
    internal: bool = False
    due_at: float | None = None
    """A timed command (VISION_REJECT): fire at this host time, whenever the copy lands."""
    seq: int = 0
    wire: bytes = b""
    first_sent: float | None = None
    next_send: float = 0.0
    tries: int = 0
    not_before: float = 0.0
    """Host time before which the first copy must not go (HELLO into a bootloader)."""


class HostEndpoint:
    """The host side of one serial link to one Mega, driven by its owner's calls."""

    def __init__(
        self,
        configure: m.Configure,
        host_timeout_s: float = 1.0,
        boot_timeout_s: float = 3.0,
        boot_quiet_s: float = BOOT_QUIET_S,
        name: str = "mega",
    ):
        self.configure = configure
        self.host_timeout_s = host_timeout_s
        self.boot_timeout_s = boot_timeout_s
        self.boot_quiet_s = boot_quiet_s
        """BOOT_QUIET_S; a simulated board that runs slower than real time needs longer."""
        self.name = name
        self.phase = LinkPhase.CLOSED
        self.epoch = 0
        self.identify: m.Identify | None = None
        self.clock = ClockSync()
        self.stats = LinkStats()
        self.failure: str | None = None
        """Why the phase is FAILED."""
        self._fatal = False
        self._reader = FrameReader()
        self._out = bytearray()
        self._notices: deque = deque()
        self._queue: deque[_Command] = deque()
        self._in_flight: _Command | None = None
        self._seq = 0
        self._last_event_seq = 0
        self._last_heard = 0.0
        self._last_beat = 0.0
        self._heard_by_mega_at = 0.0
        self._last_mcu_ms: int | None = None
        self._step = 0
        self._boot_identify: m.Identify | None = None
        self._handshake_began = 0.0

    # --- the owner's calls ------------------------------------------------------------

    def opened(self, now: float) -> None:
        """The port was opened (which resets a real Mega): a new boot, a fresh handshake."""
        self._reader = FrameReader()
        self._out.clear()
        self.failure = None
        self._fatal = False
        self._begin_handshake(now)

    def closed(self, now: float, reason: str) -> None:
        """The port is gone (unplugged, write failed) or the owner closed it."""
        if self.phase == LinkPhase.UP:
            self._notices.append(
                LinkState(False, self.epoch, reason, heard_by_mega_at=self._heard_by_mega_at)
            )
        self.phase = LinkPhase.CLOSED
        self._drop_commands("link_down")

    @property
    def up(self) -> bool:
        return self.phase == LinkPhase.UP

    def submit(
        self,
        message: m.Message,
        now: float,
        tag: object = None,
        retries: int = MAX_RETRIES,
        interval_s: float = RETRANSMIT_S,
        due_at: float | None = None,
    ) -> None:
        """Queue a reliable command; its `Answered(tag, ...)` notice says how it ended.

        `due_at` (host time) makes a command with a `delay_ms` field timed: each copy
        sent, the first and every retransmission, carries the delay left until then.
        The Mega acts on the first copy it receives and only answers the others
        (same seq), so the fire time is right whichever copy got through; a fixed
        delay would fire one retransmission interval late per lost copy.

        Refused at once (`link_down`) unless the link is up: while it is down the
        Mega is failing safe on its own, and a command sent into a handshake
        could reach a Mega that has not been configured yet.
        """
        if self.phase != LinkPhase.UP:
            self._notices.append(Answered(tag, None, "link_down"))
            return
        self._queue.append(_Command(message, tag, retries, interval_s, due_at=due_at))
        self._pump(now)

    def receive(self, data: bytes, now: float) -> None:
        if self.phase in (LinkPhase.CLOSED, LinkPhase.FAILED):
            return
        for item in self._reader.feed(data):
            if isinstance(item, FrameError):
                self.stats.frame_errors[item.kind] = self.stats.frame_errors.get(item.kind, 0) + 1
            else:
                self._dispatch(item, now)
        self._pump(now)

    def tick(self, now: float) -> None:
        """Retransmit, send a heartbeat, notice silence; call at `next_due()` or sooner."""
        if self.phase == LinkPhase.UP:
            if now - self._last_beat >= HEARTBEAT_S:
                self._last_beat = now
                self._write(m.HostHeartbeat(int(now * 1000) & 0xFFFFFFFF))
            if now - self._last_heard > self.host_timeout_s:
                self._fail(now, f"silent for {now - self._last_heard:.2f} s")
                return
        self._pump(now)

    def next_due(self) -> float | None:
        """The next host time at which `tick` has something to do (None: nothing pending)."""
        moments = []
        if self.phase == LinkPhase.UP:
            moments += [self._last_beat + HEARTBEAT_S, self._last_heard + self.host_timeout_s]
        if self.phase in (LinkPhase.UP, LinkPhase.HANDSHAKE):
            if self._in_flight is not None:
                moments.append(self._in_flight.next_send)
            elif self._queue:
                moments.append(0.0)
        return min(moments) if moments else None

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_notices(self) -> list:
        notices = list(self._notices)
        self._notices.clear()
        return notices

    # --- handshake -------------------------------------------------------------------------

    def _begin_handshake(self, now: float, sketch_running: bool = False) -> None:
        """A new boot of the Mega: everything known about the last one is void.

        After a port open the Mega may still be in its bootloader, which HELLO must not
        disturb: the host waits for the sketch's announcement (then HELLO goes at once),
        or BOOT_QUIET_S if none comes (a board that did not reset, or an announcement
        lost on the wire), then sends HELLO every 250 ms. After a reboot seen on the wire
        the sketch is running: HELLO is retried as fast as any command.
        """
        self.epoch += 1
        self.phase = LinkPhase.HANDSHAKE
        self._handshake_began = now
        self._drop_commands("link_down")
        self._last_event_seq = 0
        self._last_mcu_ms = None
        self._last_heard = now
        self.clock.reset()
        self._step = 0
        interval = RETRANSMIT_S if sketch_running else HELLO_INTERVAL_S
        tries = max(1, int(self.boot_timeout_s / interval))
        hello = _Command(m.Hello(m.PROTOCOL_VERSION), "hello", tries, interval, internal=True)
        hello.not_before = now if sketch_running else now + self.boot_quiet_s
        self._queue.append(hello)
        self._pump(now)

    def _handshake_reply(self, command: _Command, reply: m.Message, now: float) -> None:
        step = command.tag
        if step == "hello":
            if not isinstance(reply, m.Identify):
                return self._fail(now, f"HELLO answered with {reply}, not IDENTIFY", fatal=True)
            if reply.firmware != m.FIRMWARE_NAME or reply.protocol != m.PROTOCOL_VERSION:
                return self._fail(
                    now,
                    f"firmware {reply.firmware!r} protocol {reply.protocol}; this station needs "
                    f"{m.FIRMWARE_NAME!r} protocol {m.PROTOCOL_VERSION}",
                    fatal=True,
                )
            self._boot_identify = reply
            # Events start flowing now: take a clock sample first (STATUS carries the
            # Mega's uptime and comes back within a round trip), so that a PART queued
            # behind a retransmitted event is not timed by its own late arrival.
            self._internal(m.GetStatus(), "status", now)
        elif step == "status":
            if self._runs_our_calibration(self._boot_identify):
                self._internal(m.ResetFault(), "reset_fault", now)
            else:
                self._internal(self.configure, "configure", now)
        elif step == "configure":
            if getattr(reply, "error", None) != m.Error.OK:
                name = m.Error(reply.error).name if isinstance(reply, m.Ack) else type(reply)
                return self._fail(now, f"the Mega refused the calibration ({name})", fatal=True)
            self._internal(m.Hello(m.PROTOCOL_VERSION), "check", now)
        elif step == "check":
            crc = getattr(reply, "calibration_crc", None)
            if not isinstance(reply, m.Identify) or crc != self.configure.calibration_crc:
                return self._fail(
                    now,
                    f"the Mega reports calibration {crc}, sent {self.configure.calibration_crc}",
                    fatal=True,
                )
            self._internal(m.ResetFault(), "reset_fault", now)
        elif step == "reset_fault":
            self.identify = self._boot_identify
            self.phase = LinkPhase.UP
            self._last_beat = now
            if self.epoch > 1:
                self.stats.reconnects += 1
            self._notices.append(LinkState(True, self.epoch, "handshake done", self.identify))

    def _runs_our_calibration(self, identify: m.Identify) -> bool:
        """Whether this boot already runs the calibration we would send.

        The sketch keeps the last CONFIGURE in EEPROM under a CRC of its own and reloads
        it at boot (a half-written record fails that CRC: `configured` is then 0). Its
        IDENTIFY reporting our calibration CRC means CONFIGURE and the HELLO that checks
        it would change nothing, and they cost two round trips after every reboot, in
        which the rebooted Mega holds none of the parts the host must re-arm."""
        return bool(identify.configured) and (
            identify.calibration_crc == self.configure.calibration_crc
        )

    def _internal(self, message: m.Message, step: str, now: float) -> None:
        self._queue.appendleft(_Command(message, step, MAX_RETRIES, RETRANSMIT_S, internal=True))

    # --- frames in -------------------------------------------------------------------------

    def _dispatch(self, frame: Frame, now: float) -> None:
        self.stats.frames_received += 1
        self._last_heard = now
        msg = frame.message
        mcu_ms = getattr(msg, "mcu_time_ms", None)
        if mcu_ms is not None:
            self.clock.observe(mcu_ms, now)
        elif isinstance(msg, m.Status):
            self.clock.observe(msg.uptime_ms, now)
        if msg.FROM_HOST:
            self.stats.frame_errors["from_host"] = self.stats.frame_errors.get("from_host", 0) + 1
            return  # our own bytes echoed back: not a Mega
        if isinstance(msg, m.Identify) and msg.acked_seq == 0:
            if self.phase == LinkPhase.UP:
                cause = m.ResetCause(msg.reset_cause).name
                self._rebooted(now, f"boot announcement, reset cause {cause}")
            else:
                self._sketch_started(now)  # during a handshake a boot is expected
            return
        if msg.IS_REPLY:
            self._on_reply(msg, now)
            return
        if msg.RELIABLE:
            self._write(m.AckEvent(frame.seq), seq=0)
            if frame.seq == self._last_event_seq:
                self.stats.duplicate_events += 1
                return
            self._last_event_seq = frame.seq
            host_time = None
            if mcu_ms is not None:
                synced = self.clock.to_host(mcu_ms)
                host_time = now if synced is None else min(synced, now)
            self._notices.append(MegaEvent(self.epoch, msg, now, host_time))
        elif isinstance(msg, m.MegaHeartbeat):
            if self.phase == LinkPhase.HANDSHAKE and self._booted_since_handshake(msg, now):
                self._sketch_started(now)
            self._check_reboot(msg.mcu_time_ms, now)

    def _booted_since_handshake(self, beat: m.MegaHeartbeat, now: float) -> bool:
        """Whether a heartbeat comes from a sketch that started after this handshake began:
        its millis() are no older than the handshake, so it is not a stale frame of the last
        boot. Why it counts as the announcement: the sketch sends its first heartbeat right
        after announcing itself, and with the announcement lost on the wire the host would
        otherwise wait out BOOT_QUIET_S, 3 s in which the rebooted Mega holds none of the
        parts it held and the host cannot re-arm them (the 10^6-part soak of 2026-12-05:
        19 defective parts passed that way, after 6 of its 601 unplugs)."""
        return beat.mcu_time_ms <= (now - self._handshake_began) * 1000 + BOOT_CLOCK_SLACK_MS

    def _sketch_started(self, now: float) -> None:
        """The sketch announced itself: a HELLO waiting out the bootloader goes now."""
        command = self._in_flight
        if command is not None and command.tag == "hello" and command.internal:
            command.interval_s = RETRANSMIT_S
            command.retries = max(command.retries, int(self.boot_timeout_s / RETRANSMIT_S))
            command.next_send = now

    def _on_reply(self, reply: m.Message, now: float) -> None:
        command = self._in_flight
        if command is None or reply.acked_seq != command.seq:
            return  # a late answer to a command already given up on
        self._in_flight = None
        self._heard_by_mega_at = command.first_sent or now
        rtt = now - (command.first_sent or now)
        self.stats.rtt_s.append(rtt)
        if command.internal:
            self._handshake_reply(command, reply, now)
        else:
            self._notices.append(Answered(command.tag, reply, None, rtt))

    def _check_reboot(self, mcu_ms: int, now: float) -> None:
        """The Mega's millis() went backwards (and did not just wrap at 2^32): it rebooted."""
        last, self._last_mcu_ms = self._last_mcu_ms, mcu_ms
        if last is not None and mcu_ms < last and last - mcu_ms < 2**31 and self.up:
            self._rebooted(now, f"clock went back from {last} to {mcu_ms} ms")

    def _rebooted(self, now: float, why: str) -> None:
        self._notices.append(
            LinkState(
                False,
                self.epoch,
                f"Mega rebooted: {why}",
                rebooted=True,
                heard_by_mega_at=self._heard_by_mega_at,
            )
        )
        self._begin_handshake(now, sketch_running=True)  # same port: no reopen (DTR)

    # --- frames out -------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Send the next command, or retransmit the one in flight, when it is time."""
        command = self._in_flight
        if command is None:
            if not self._queue or self.phase not in (LinkPhase.UP, LinkPhase.HANDSHAKE):
                return
            command = self._in_flight = self._queue.popleft()
            self._seq = self._seq % 255 + 1
            command.seq = self._seq
            command.next_send = max(now, command.not_before)
        if now < command.next_send:
            return
        if command.first_sent is None:
            command.first_sent = now
        if command.tries > command.retries:
            self._in_flight = None
            what = type(command.message).__name__
            if command.internal:
                self._fail(now, f"no answer to {what} after {command.tries} tries")
            else:
                self._notices.append(Answered(command.tag, None, "no_answer"))
                self._pump(now)
            return
        if command.tries:
            self.stats.retransmits += 1
        if command.due_at is not None:
            left_ms = round((command.due_at - now) * 1000)
            command.message = replace(command.message, delay_ms=min(max(left_ms, 0), 0xFFFF))
            command.wire = b""
        if not command.wire:
            command.wire = encode_frame(command.seq, command.message)
        command.tries += 1
        command.next_send = now + command.interval_s
        self._out += command.wire
        self.stats.frames_sent += 1

    def _write(self, message: m.Message, seq: int = 0) -> None:
        self._out += encode_frame(seq, message)
        self.stats.frames_sent += 1

    def _drop_commands(self, why: str) -> None:
        pending = ([self._in_flight] if self._in_flight else []) + list(self._queue)
        self._in_flight = None
        self._queue.clear()
        for command in pending:
            if not command.internal:
                self._notices.append(Answered(command.tag, None, why))

    def _fail(self, now: float, reason: str, fatal: bool = False) -> None:
        """Give up on this port: the owner closes it (and reopens it unless `fatal`)."""
        self.phase = LinkPhase.FAILED
        self.failure = f"{self.name}: {reason}"
        self._fatal = fatal
        self._drop_commands("link_down")
        self._notices.append(
            LinkState(
                False, self.epoch, reason, heard_by_mega_at=self._heard_by_mega_at, fatal=fatal
            )
        )

    @property
    def fatal(self) -> bool:
        return self._fatal
