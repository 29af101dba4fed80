"""The host side of the link: handshake, reliable commands, heartbeat, reconnect.

Threads: a reader (bytes -> frames -> replies and events) and a supervisor
(heartbeats out, silence detection, reopening a vanished port). Commands are
stop-and-wait: one in flight, retransmitted with the same seq until
acknowledged (PROTOCOL.md, "Sequence numbers, acks and retransmission").
Events from the Mega are acknowledged, de-duplicated and put on `events`,
together with `LinkState` notices, for the station to consume in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import serial

from station.link import messages as m
from station.link.clocksync import ClockSync
from station.link.framing import Frame, FrameError, FrameReader, encode_frame
from station.link.transport import PortError, open_port

log = logging.getLogger(__name__)

RETRANSMIT_S = 0.1
MAX_RETRIES = 10
HEARTBEAT_S = 0.25
HELLO_INTERVAL_S = 0.25


class LinkError(RuntimeError):
    """The Mega did not answer, or the port is gone."""


class LinkDown(LinkError):
    """A command was asked for while the link is down; the Mega is failing safe on its own."""


class HandshakeError(LinkError):
    """The device answered but is not a Mega this station can run with."""


@dataclass(frozen=True)
class LinkState:
    """Put on the event queue when the link comes up or goes down."""

    up: bool
    reason: str
    identify: m.Identify | None = None
    rebooted: bool = False
    """Down because the Mega rebooted: it forgot every part it held, and fires none of them."""
    heard_by_mega_at: float = 0.0
    """Host monotonic time by which the Mega had certainly heard us (it answered a command
    sent then). Its heartbeat deadline is no earlier than this plus heartbeat_timeout_ms."""


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
        ms = np.array(self.rtt_s) * 1000
        return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


class MegaSession:
    def __init__(
        self,
        port: str,
        configure: m.Configure,
        host_timeout_s: float = 1.0,
        boot_timeout_s: float = 3.0,
        reconnect_interval_s: float = 0.5,
        events: queue.Queue | None = None,
    ):
        self.port = port
        self.configure = configure
        self.host_timeout_s = host_timeout_s
        self.boot_timeout_s = boot_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self.events: queue.Queue = queue.Queue() if events is None else events
        """Mega events and LinkState notices, in order; the station may share it with others."""
        self.clock = ClockSync()
        self.stats = LinkStats()
        self.identify: m.Identify | None = None
        self.connected = threading.Event()
        self._serial: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._reply_ready = threading.Event()
        self._awaited_seq = 0
        self._reply: m.Message | None = None
        self._seq = 0
        self._last_event_seq = 0
        self._last_heard = 0.0
        self._heard_by_mega_at = 0.0
        self._last_mcu_ms: int | None = None
        self._needs_handshake = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- life cycle -----------------------------------------------------------

    def start(self) -> m.Identify:
        """Open the port and handshake; raises PortError or HandshakeError (nothing retried)."""
        identify = self._connect()
        supervisor = threading.Thread(target=self._supervise, name="link-supervisor", daemon=True)
        supervisor.start()
        self._threads.append(supervisor)
        return identify

    def close(self) -> None:
        self._stop.set()
        self.connected.clear()
        self._close_port()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> "MegaSession":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- commands -------------------------------------------------------------

    def send_verdict(self, part_id: int, reject: bool) -> m.Error:
        reply = self.command(m.Verdict(part_id, int(reject)))
        return m.Error(reply.error)

    def status(self) -> m.Status:
        reply = self.command(m.GetStatus())
        assert isinstance(reply, m.Status)
        return reply

    def command(
        self,
        msg: m.Message,
        _handshake: bool = False,
        retries: int = MAX_RETRIES,
        interval_s: float = RETRANSMIT_S,
    ) -> m.Message:
        """Send a reliable command and wait for its reply; retransmit the same frame until then."""
        with self._command_lock:
            if not (self.connected.is_set() or _handshake):
                raise LinkDown(f"{self.port}: link down, {type(msg).__name__} not sent")
            self._seq = self._seq % 255 + 1
            seq = self._seq
            wire = encode_frame(seq, msg)
            self._reply_ready.clear()
            self._awaited_seq = seq
            started = time.monotonic()
            for attempt in range(retries + 1):
                if attempt:
                    self.stats.retransmits += 1
                self._write(wire)
                if self._reply_ready.wait(interval_s):
                    self._heard_by_mega_at = started  # it heard one of the sends, all after this
                    self.stats.rtt_s.append(time.monotonic() - started)
                    self._awaited_seq = 0
                    assert self._reply is not None
                    return self._reply
                if self._stop.is_set():
                    break
            self._awaited_seq = 0
        raise LinkError(f"{self.port}: no answer to {type(msg).__name__} after {retries + 1} tries")

    # --- connect and handshake -------------------------------------------------

    def _connect(self) -> m.Identify:
        self._serial = open_port(self.port)
        reader = threading.Thread(
            target=self._read_loop, args=(self._serial,), name="link-reader", daemon=True
        )
        reader.start()
        try:
            return self._handshake_and_go()
        except LinkError:
            self._close_port()
            raise

    def _handshake_and_go(self) -> m.Identify:
        self._last_heard = time.monotonic()
        self._last_event_seq = 0
        self._last_mcu_ms = None
        self._needs_handshake = False
        self.clock.reset()
        identify = self._handshake()
        self.identify = identify
        self.connected.set()
        self.events.put(LinkState(True, "handshake done", identify))
        log.info(
            "link up on %s: %s %d.%d.%d, reset cause %s",
            self.port,
            identify.firmware.decode(errors="replace"),
            identify.version_major,
            identify.version_minor,
            identify.version_patch,
            m.ResetCause(identify.reset_cause).name,
        )
        return identify

    def _handshake(self) -> m.Identify:
        tries = max(1, int(self.boot_timeout_s / HELLO_INTERVAL_S))
        identify = self.command(
            m.Hello(m.PROTOCOL_VERSION), _handshake=True, retries=tries, interval_s=HELLO_INTERVAL_S
        )
        if not isinstance(identify, m.Identify):
            raise HandshakeError(f"{self.port}: HELLO answered with {identify}, not IDENTIFY")
        if identify.firmware != m.FIRMWARE_NAME or identify.protocol != m.PROTOCOL_VERSION:
            raise HandshakeError(
                f"{self.port}: firmware {identify.firmware!r} protocol {identify.protocol}; this "
                f"station needs {m.FIRMWARE_NAME!r} protocol {m.PROTOCOL_VERSION}"
            )
        ack = self.command(self.configure, _handshake=True)
        if getattr(ack, "error", None) != m.Error.OK:
            name = m.Error(ack.error).name if isinstance(ack, m.Ack) else type(ack).__name__
            raise HandshakeError(f"{self.port}: the Mega refused the calibration ({name})")
        check = self.command(m.Hello(m.PROTOCOL_VERSION), _handshake=True)
        if (
            not isinstance(check, m.Identify)
            or check.calibration_crc != self.configure.calibration_crc
        ):
            raise HandshakeError(
                f"{self.port}: the Mega reports calibration "
                f"{getattr(check, 'calibration_crc', None)}, "
                f"sent {self.configure.calibration_crc}"
            )
        self.command(m.ResetFault(), _handshake=True)
        return identify

    # --- threads ------------------------------------------------------------------

    def _read_loop(self, port: serial.SerialBase) -> None:
        reader = FrameReader()
        while not self._stop.is_set() and port is self._serial:
            try:
                # Whatever is waiting, or block (up to the read timeout) for one byte:
                # read(256) would sit out the whole timeout on every short frame.
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                self._lost(port, f"read failed: {exc}")
                return
            for item in reader.feed(data):
                if isinstance(item, FrameError):
                    self.stats.frame_errors[item.kind] = (
                        self.stats.frame_errors.get(item.kind, 0) + 1
                    )
                    log.warning("%s: dropped frame (%s)", self.port, item)
                else:
                    self._dispatch(item)

    def _dispatch(self, frame: Frame) -> None:
        self.stats.frames_received += 1
        self._last_heard = time.monotonic()
        msg = frame.message
        if isinstance(msg, (m.MegaHeartbeat, m.Part, m.Gate)):
            self.clock.observe(msg.mcu_time_ms, self._last_heard)
        if isinstance(msg, m.Identify) and msg.acked_seq == 0:
            self._rebooted(f"boot announcement, reset cause {m.ResetCause(msg.reset_cause).name}")
            return
        if msg.IS_REPLY:
            if msg.acked_seq == self._awaited_seq and self._awaited_seq:
                self._reply = msg
                self._reply_ready.set()
            return
        if msg.RELIABLE:
            self._write(encode_frame(0, m.AckEvent(frame.seq)))
            if frame.seq == self._last_event_seq:
                self.stats.duplicate_events += 1
                return
            self._last_event_seq = frame.seq
            self.events.put(msg)
        elif isinstance(msg, m.MegaHeartbeat):
            self._check_reboot(msg.mcu_time_ms)

    def _check_reboot(self, mcu_ms: int) -> None:
        """The Mega's millis() went backwards (and did not just wrap at 2^32): it rebooted."""
        last, self._last_mcu_ms = self._last_mcu_ms, mcu_ms
        if last is not None and mcu_ms < last and last - mcu_ms < 2**31:
            self._rebooted(f"clock went back from {last} to {mcu_ms} ms")

    def _rebooted(self, why: str) -> None:
        if not self.connected.is_set():
            return  # during a handshake a boot is expected
        self.connected.clear()
        self._needs_handshake = True
        log.error("%s: the Mega rebooted (%s); handshaking again", self.port, why)
        self.events.put(
            LinkState(
                False,
                f"Mega rebooted: {why}",
                rebooted=True,
                heard_by_mega_at=self._heard_by_mega_at,
            )
        )

    def _supervise(self) -> None:
        last_beat = 0.0
        while not self._stop.wait(0.05):
            now = time.monotonic()
            if self.connected.is_set():
                if now - last_beat >= HEARTBEAT_S:
                    last_beat = now
                    self._write(encode_frame(0, m.HostHeartbeat(int(now * 1000) & 0xFFFFFFFF)))
                if now - self._last_heard > self.host_timeout_s:
                    self._lost(self._serial, f"silent for {now - self._last_heard:.1f} s")
            elif self._serial is None:
                self._reconnect()
            elif self._needs_handshake:
                self._rehandshake()

    def _reconnect(self) -> None:
        try:
            self._connect()
            self.stats.reconnects += 1
        except (PortError, LinkError) as exc:
            log.debug("reconnect failed: %s", exc)
            self._stop.wait(self.reconnect_interval_s)

    def _rehandshake(self) -> None:
        """Same port, fresh Mega: no reopen, which would pulse DTR and lose the reset cause."""
        try:
            self._handshake_and_go()
            self.stats.reconnects += 1
        except LinkError as exc:
            self._lost(self._serial, f"handshake after reboot failed: {exc}")

    def _lost(self, port: serial.SerialBase | None, reason: str) -> None:
        if port is None or port is not self._serial:
            return
        was_up = self.connected.is_set()
        self.connected.clear()
        self._close_port()
        if was_up:
            log.error(
                "link down on %s: %s; the Mega fails safe until it is back", self.port, reason
            )
            self.events.put(LinkState(False, reason, heard_by_mega_at=self._heard_by_mega_at))

    # --- port helpers -----------------------------------------------------------------

    def _write(self, wire: bytes) -> None:
        port = self._serial
        if port is None:
            return
        try:
            with self._write_lock:
                port.write(wire)
            self.stats.frames_sent += 1
        except (serial.SerialException, OSError) as exc:
            self._lost(port, f"write failed: {exc}")

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
