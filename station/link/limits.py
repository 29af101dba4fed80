"""The Mega's safe limits and fixed sizes, declared once.

The firmware's `protocol.h` is generated from this module and from
`messages.py` (`python tools/gen_protocol_header.py`); the Python twin,
the calibration checks and PROTOCOL.md's limits table read the same
numbers, so a limit changed here changes everywhere or a test fails.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of one value."""

    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low}..{self.high}"


SERVO_US = Range(500, 2500)
"""servo_rest_us, servo_reject_us and a TEST_FIRE pulse_us: what a hobby servo takes."""
REJECT_PULSE_MS = Range(20, 1000)
"""The maximum servo on-time per reject."""
HEARTBEAT_TIMEOUT_MS = Range(100, 10_000)
GATE_OFFSET_COUNTS = Range(1, 1_000_000)
GATE_OFFSET_MS = Range(20, 60_000)
TEST_FIRE_COUNT = Range(1, 10)

FIRMWARE_VERSION = (1, 0, 0)
"""The sketch's version (IDENTIFY); the twin reports the same."""
FIFO_SIZE = 16
"""Parts the Mega tracks between the photo-eye and the gate."""
EVENT_QUEUE_SIZE = 32
"""Reliable events the Mega holds for the host: a full FIFO of PART events plus alarms."""
MEGA_RETRANSMIT_MS = 100
"""The Mega resends its oldest unacknowledged event this often."""
HEARTBEAT_PERIOD_MS = 250
"""Both sides send HEARTBEAT this often."""
VISION_ID_BIT = 0x8000_0000
"""Set in the part ID of a VISION_REJECT: host-assigned IDs never meet the Mega's."""
