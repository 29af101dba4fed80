"""The link on a real serial port: `HostEndpoint` behind two threads.

All protocol decisions are the endpoint's (`endpoint.py`); this shell only
moves bytes and time. A reader thread feeds what the port gives to the
endpoint; a supervisor thread ticks it (heartbeats, retransmissions,
silence) and reopens a vanished port. Both hold one lock while they call
the endpoint, then write what it produced. Notices go to `events` in
order (`MegaEvent`, `LinkState`), except the answers to `command()`, which
wake the caller blocked in it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import serial

from station.link import messages as m
from station.link.endpoint import (
    BOOT_QUIET_S,
    MAX_RETRIES,
    RETRANSMIT_S,
    Answered,
    HostEndpoint,
    LinkPhase,
    LinkState,
    LinkStats,
    MegaEvent,
)
from station.link.transport import PortError, open_port

__all__ = [
    "HandshakeError",
    "LinkDown",
    "LinkError",
    "LinkState",
    "LinkStats",
    "MegaEvent",
    "MegaSession",
]

log = logging.getLogger(__name__)

SUPERVISE_S = 0.05


class LinkError(RuntimeError):
    """The Mega did not answer, or the port is gone."""


class LinkDown(LinkError):
    """A command was asked for while the link is down; the Mega is failing safe on its own."""


class HandshakeError(LinkError):
    """The device answered but is not a Mega this station can run with."""


class _Waiter:
    """A `command()` caller blocked until its Answered notice arrives."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Answered | None = None


class MegaSession:
    def __init__(
        self,
        port: str,
        configure: m.Configure,
        host_timeout_s: float = 1.0,
        boot_timeout_s: float = 3.0,
        boot_quiet_s: float = BOOT_QUIET_S,
        reconnect_interval_s: float = 0.5,
        events: queue.Queue | None = None,
        reopen_ok: Callable[[], bool] | None = None,
        reopen_wait_s: float = 2.0,
    ):
        self.port = port
        self.endpoint = HostEndpoint(
            configure, host_timeout_s, boot_timeout_s, boot_quiet_s=boot_quiet_s, name=port
        )
        self.reconnect_interval_s = reconnect_interval_s
        self.reopen_ok = reopen_ok
        """Reopening reboots the Mega (DTR): asked before each reopen whether no part is
        due at the gate meanwhile; after `reopen_wait_s` of no, the port is opened anyway."""
        self.reopen_wait_s = reopen_wait_s
        self._reopen_asked_since: float | None = None
        self.events: queue.Queue = queue.Queue() if events is None else events
        """MegaEvent and LinkState notices, in order; the station may share it with others."""
        self.connected = threading.Event()
        self._serial: serial.SerialBase | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._handshake_done = threading.Event()
        self._reconnecting = False
        """Set once start() succeeded: from then on a lost port is reopened."""
        self._threads: list[threading.Thread] = []

    # --- what the endpoint knows ----------------------------------------------------

    @property
    def identify(self) -> m.Identify | None:
        return self.endpoint.identify

    @property
    def stats(self) -> LinkStats:
        return self.endpoint.stats

    @property
    def clock(self):
        return self.endpoint.clock

    @property
    def epoch(self) -> int:
        return self.endpoint.epoch

    # --- life cycle -----------------------------------------------------------

    def start(self) -> m.Identify:
        """Open the port and handshake; raises PortError or HandshakeError (nothing retried)."""
        self._open()
        supervisor = threading.Thread(target=self._supervise, name="link-supervisor", daemon=True)
        supervisor.start()
        self._threads.append(supervisor)
        retries_s = (MAX_RETRIES + 1) * RETRANSMIT_S * 4
        budget = self.endpoint.boot_quiet_s + self.endpoint.boot_timeout_s + retries_s + 1
        self._handshake_done.wait(budget)
        with self._lock:
            phase, failure, fatal = (
                self.endpoint.phase,
                self.endpoint.failure,
                self.endpoint.fatal,
            )
        if phase != LinkPhase.UP:
            self._close_port()
            error = HandshakeError if fatal else LinkError
            raise error(failure or f"{self.port}: no handshake within {budget:.1f} s")
        self._reconnecting = True
        assert self.identify is not None
        return self.identify

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
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
        retries: int = MAX_RETRIES,
        interval_s: float = RETRANSMIT_S,
        due_at: float | None = None,
    ) -> m.Message:
        """Send a reliable command and wait for its reply; raises LinkDown or LinkError.

        `due_at` (monotonic s): a timed command (see HostEndpoint.submit)."""
        waiter = _Waiter()
        with self._lock:
            self.endpoint.submit(msg, time.monotonic(), waiter, retries, interval_s, due_at)
            self._flush()
        self._wake.set()  # the supervisor's next retransmission time changed
        waiter.done.wait((retries + 1) * interval_s + 2.0)
        answer = waiter.answer
        name = type(msg).__name__
        if answer is None or answer.error == "no_answer":
            raise LinkError(f"{self.port}: no answer to {name} after {retries + 1} tries")
        if answer.error is not None:
            raise LinkDown(f"{self.port}: link down, {name} not sent")
        assert answer.reply is not None
        return answer.reply

    # --- the shell -------------------------------------------------------------------

    def _open(self) -> None:
        port = open_port(self.port)
        with self._lock:
            self._serial = port
            self._handshake_done.clear()
            self.endpoint.opened(time.monotonic())
            self._flush()
        threading.Thread(
            target=self._read_loop, args=(port,), name="link-reader", daemon=True
        ).start()
        self._wake.set()

    def _flush(self) -> None:
        """Write what the endpoint produced and hand out its notices (lock held)."""
        wire = self.endpoint.take_output()
        if wire:
            self._write(wire)
        for notice in self.endpoint.take_notices():
            if isinstance(notice, Answered) and isinstance(notice.tag, _Waiter):
                notice.tag.answer = notice
                notice.tag.done.set()
                continue
            if isinstance(notice, LinkState):
                self._on_link_state(notice)
            self.events.put(notice)

    def _on_link_state(self, state: LinkState) -> None:
        if state.up:
            self.connected.set()
            self._handshake_done.set()
            identify = state.identify
            log.info(
                "link up on %s (epoch %d): %s %d.%d.%d, reset cause %s",
                self.port,
                state.epoch,
                identify.firmware.decode(errors="replace"),
                identify.version_major,
                identify.version_minor,
                identify.version_patch,
                m.ResetCause(identify.reset_cause).name,
            )
            return
        self.connected.clear()
        log.error("link down on %s: %s; the Mega fails safe until it is back", self.port, state)
        if self.endpoint.phase == LinkPhase.FAILED:
            self._handshake_done.set()

    def _read_loop(self, port: serial.SerialBase) -> None:
        while not self._stop.is_set() and port is self._serial:
            try:
                # Whatever is waiting, or block (up to the read timeout) for one byte:
                # read(256) would sit out the whole timeout on every short frame.
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                self._lost(port, f"read failed: {exc}")
                return
            if data:
                with self._lock:
                    if port is self._serial:
                        self.endpoint.receive(data, time.monotonic())
                        self._flush()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                if self._serial is not None:
                    self.endpoint.tick(now)
                    self._flush()
                    if self.endpoint.phase == LinkPhase.FAILED:
                        self._close_port()
                due = self.endpoint.next_due()
            if self._serial is None:
                if self._reconnecting:
                    self._reconnect()
                else:
                    self._stop.wait(SUPERVISE_S)
                continue
            wait = SUPERVISE_S if due is None else min(SUPERVISE_S, max(0.0, due - now))
            self._wake.wait(wait)
            self._wake.clear()

    def _reconnect(self) -> None:
        now = time.monotonic()
        if self.reopen_ok is not None and not self.reopen_ok():
            since = self._reopen_asked_since = self._reopen_asked_since or now
            if now - since < self.reopen_wait_s:
                self._stop.wait(0.005)
                return
        self._reopen_asked_since = None
        try:
            self._open()
        except PortError as exc:
            log.debug("reconnect failed: %s", exc)
            self._stop.wait(self.reconnect_interval_s)

    def _lost(self, port: serial.SerialBase | None, reason: str) -> None:
        with self._lock:
            if port is None or port is not self._serial:
                return
            self.endpoint.closed(time.monotonic(), reason)
            self._close_port()
            self._flush()

    # --- port helpers -----------------------------------------------------------------

    def _write(self, wire: bytes) -> None:
        port = self._serial
        if port is None:
            return
        try:
            port.write(wire)
        except (serial.SerialException, OSError) as exc:
            self.endpoint.closed(time.monotonic(), f"write failed: {exc}")
            self._close_port()

    def _close_port(self) -> None:
        with self._lock:
            port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
