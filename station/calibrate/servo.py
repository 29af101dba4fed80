"""`calibrate servo`: try pulse widths on the real gate, through the protocol's TEST_FIRE.

The Mega is configured with the proposed calibration first (its handshake
reports the checksum back, proving it runs these widths), then fires N
times; each fire comes back as a GATE event with reason TEST, stamped by
the Mega's clock, so the spacing of the pulses is measured, not assumed.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass

from station.calibration import Calibration
from station.link import messages as m
from station.link.session import LinkError, MegaEvent, MegaSession


@dataclass(frozen=True)
class FireReport:
    fired: int
    asked: int
    spacing_ms: list[int]
    """Between consecutive fires, by the Mega's clock (2 x pulse_ms when all is well)."""
    calibration_crc: int
    """What the Mega reported in the handshake."""


def fire_test_pulses(calibration: Calibration, port: str, count: int, timeout_s: float = 5.0):
    """Configure the Mega with `calibration`, fire `count` times, report what it did."""
    events: queue.Queue = queue.Queue()
    link = MegaSession(port, calibration.configure_message(), events=events)
    try:
        link.start()
        # The handshake configured it; ask again for what it now runs.
        identify = link.command(m.Hello(m.PROTOCOL_VERSION))
        reply = link.command(m.TestFire(count, calibration.servo.reject_us))
        error = m.Error(getattr(reply, "error", m.Error.OK))
        if error != m.Error.OK:
            raise LinkError(f"{port}: TEST_FIRE refused by the Mega ({error.name})")
        times = _test_gates(events, count, timeout_s)
    finally:
        link.close()
    spacing = [b - a for a, b in zip(times, times[1:])]
    return FireReport(len(times), count, spacing, identify.calibration_crc)


def _test_gates(events: queue.Queue, count: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    times: list[int] = []
    while len(times) < count and time.monotonic() < deadline:
        try:
            notice = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if not isinstance(notice, MegaEvent):
            continue  # link up/down notices
        event = notice.message
        if isinstance(event, m.Gate) and event.reason == m.GateReason.TEST:
            times.append(event.mcu_time_ms)
    return times
