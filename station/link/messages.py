"""Every message of the protocol, declared once.

Each message is a frozen dataclass whose field annotations carry the wire
type (`U8`, `U16`, `U32`, `Name8`) and, where a value needs it, a note
(`Note("0 pass, 1 reject")`); the struct layout, the length check and the
type-code registry are derived from that one declaration. The firmware's
`protocol.h` and PROTOCOL.md's message table are generated from it by
`python tools/gen_protocol_header.py`, and a test fails when either is stale.
"""

from __future__ import annotations

import enum
import struct
import typing
from dataclasses import dataclass, fields
from typing import Annotated, ClassVar

PROTOCOL_VERSION = 1
FIRMWARE_NAME = b"REJECTST"
MAX_PAYLOAD = 32

U8 = Annotated[int, "B"]
U16 = Annotated[int, "H"]
U32 = Annotated[int, "I"]
Name8 = Annotated[bytes, "8s"]


@dataclass(frozen=True)
class Note:
    """What a field's values mean, for PROTOCOL.md's table: `Annotated[U8, Note("...")]`."""

    text: str


class Error(enum.IntEnum):
    OK = 0
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    UNKNOWN_PART = 4
    LATE = 5
    FAULTED = 6
    NOT_CONFIGURED = 7
    BUSY = 8


class GateReason(enum.IntEnum):
    VERDICT = 0
    LATE_VERDICT = 1
    NO_VERDICT = 2
    LINK_LOST = 3
    VISION = 4
    FIFO_FULL = 5
    TEST = 6


class GateAction(enum.IntEnum):
    PASSED = 0
    FIRED = 1


class Fault(enum.IntEnum):
    NONE = 0
    HEARTBEAT_LOST = 1
    FIFO_OVERFLOW = 2
    WATCHDOG_RESET = 3
    EVENT_QUEUE_OVERFLOW = 4
    PHOTO_EYE_OVERFLOW = 5


class ResetCause(enum.IntEnum):
    POWER_ON = 0
    EXTERNAL = 1
    BROWN_OUT = 2
    WATCHDOG = 3
    UNKNOWN = 4


class TimingMode(enum.IntEnum):
    ENCODER_COUNTS = 0
    MILLISECONDS = 1


class Message:
    """Base of all messages; the class attributes are filled in by `@message`."""

    TYPE: ClassVar[int]
    RELIABLE: ClassVar[bool]
    FROM_HOST: ClassVar[bool]
    STRUCT: ClassVar[struct.Struct]
    IS_REPLY: ClassVar[bool]
    FIELDS: ClassVar[tuple[str, ...]]
    WIRE_NAME: ClassVar[str]
    """The name PROTOCOL.md gives it (both heartbeats are HEARTBEAT there)."""

    def payload(self) -> bytes:
        return self.STRUCT.pack(*[getattr(self, name) for name in self.FIELDS])


REGISTRY: dict[int, type[Message]] = {}


def message(type_code: int, reliable: bool = False, wire_name: str | None = None):
    """Register a message class: derive its struct layout from its annotations."""

    def register(cls):
        cls.WIRE_NAME = wire_name or snake_case(cls.__name__).upper()
        cls = dataclass(frozen=True)(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        layout = "".join(hints[f.name].__metadata__[0] for f in fields(cls))
        cls.TYPE = type_code
        cls.RELIABLE = reliable
        cls.FROM_HOST = type_code < 0x80
        cls.STRUCT = struct.Struct("<" + layout)
        cls.FIELDS = tuple(f.name for f in fields(cls))
        cls.IS_REPLY = (
            bool(fields(cls)) and fields(cls)[0].name == "acked_seq" and not cls.FROM_HOST
        )
        assert cls.STRUCT.size <= MAX_PAYLOAD, cls.__name__
        assert type_code not in REGISTRY, hex(type_code)
        REGISTRY[type_code] = cls
        return cls

    return register


def snake_case(name: str) -> str:
    """VisionReject -> vision_reject."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def field_notes(cls: type[Message]) -> dict[str, str]:
    """The Note of each field that has one."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        f.name: meta.text
        for f in fields(cls)
        for meta in hints[f.name].__metadata__
        if isinstance(meta, Note)
    }


# --- host -> Mega ----------------------------------------------------------


@message(0x01, reliable=True)
class Hello(Message):
    protocol: U8


@message(0x02, reliable=True)
class Configure(Message):
    mode: Annotated[U8, Note("0 encoder counts, 1 milliseconds")]
    gate_offset: U32
    decision_lead: U16
    servo_rest_us: U16
    servo_reject_us: U16
    reject_pulse_ms: U16
    heartbeat_timeout_ms: U16
    calibration_crc: U32


@message(0x03, reliable=True)
class Verdict(Message):
    part_id: U32
    verdict: Annotated[U8, Note("0 pass, 1 reject")]


@message(0x04, reliable=True)
class VisionReject(Message):
    part_id: Annotated[U32, Note("host-assigned, bit 31 set")]
    delay_ms: U16


@message(0x05, reliable=True)
class TestFire(Message):
    count: U8
    pulse_us: Annotated[U16, Note("0 = configured reject width")]


@message(0x06, reliable=True)
class GetStatus(Message):
    pass


@message(0x07, reliable=True)
class ResetFault(Message):
    pass


@message(0x08, wire_name="HEARTBEAT")
class HostHeartbeat(Message):
    host_time_ms: U32


@message(0x09)
class AckEvent(Message):
    acked_seq: U8


# --- Mega -> host ----------------------------------------------------------


@message(0x81)
class Ack(Message):
    acked_seq: U8
    error: Annotated[U8, Note("0 = done")]


@message(0x82)
class Identify(Message):
    acked_seq: U8
    firmware: Name8
    version_major: U8
    version_minor: U8
    version_patch: U8
    protocol: U8
    calibration_crc: U32
    reset_cause: U8
    configured: U8


@message(0x83)
class Status(Message):
    acked_seq: U8
    uptime_ms: U32
    encoder: U32
    parts: U32
    fired: U32
    passed: U32
    failsafe: U32
    frame_errors: U16
    pending: U8
    fault: U8


@message(0x90, reliable=True)
class Part(Message):
    part_id: U32
    encoder: U32
    mcu_time_ms: U32


@message(0x91, reliable=True)
class Gate(Message):
    part_id: U32
    action: Annotated[U8, Note("0 passed, 1 fired")]
    reason: U8
    mcu_time_ms: U32


@message(0x92, reliable=True, wire_name="FAULT")
class FaultEvent(Message):
    code: U8
    detail: U32


@message(0x93, wire_name="HEARTBEAT")
class MegaHeartbeat(Message):
    mcu_time_ms: U32
    fault: U8
    pending: U8
