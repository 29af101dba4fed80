"""The firmware's C core (firmware/arduino_mega/station_core.c) in-process, through ctypes.

`CMegaCore` has the interface of the Python twin `station.sim.mega_core.MegaCore`
(receive, photo_eye, tick, take_output, encoder, servo_us), so one test can
drive both with the same inputs and compare every byte they send, every
servo move and their state (`state_of`). The library is built by
`make -C firmware/arduino_mega hostlib` (gcc, no AVR toolchain needed).
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from station.link import messages as m
from station.sim.mega_core import GateConfig, MegaCore, ServoPulse

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware" / "arduino_mega"
LIBRARY = FIRMWARE_DIR / "build" / "host" / "libstation_core.so"

STATE_FIELDS = (
    "fault",
    "fifo_count",
    "servo_out",
    "configured",
    "events_count",
    "events_dropped",
    "parts",
    "fired",
    "passed",
    "failsafe",
    "frame_errors",
    "test_fires_left",
    "next_part_id",
)


class _GateConfig(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_uint8),
        ("gate_offset", ctypes.c_uint32),
        ("decision_lead", ctypes.c_uint16),
        ("servo_rest_us", ctypes.c_uint16),
        ("servo_reject_us", ctypes.c_uint16),
        ("reject_pulse_ms", ctypes.c_uint16),
        ("heartbeat_timeout_ms", ctypes.c_uint16),
        ("calibration_crc", ctypes.c_uint32),
    ]


_WRITE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint8)
_SERVO = ctypes.CFUNCTYPE(None, ctypes.c_uint16)
_FAULT = ctypes.CFUNCTYPE(None, ctypes.c_bool)
_SAVE = ctypes.CFUNCTYPE(None, ctypes.POINTER(_GateConfig))


class _Hal(ctypes.Structure):
    _fields_ = [("write", _WRITE), ("servo_us", _SERVO), ("fault_output", _FAULT), ("save", _SAVE)]


def build_library() -> Path:
    """Build (or bring up to date) the host library; raises with the compiler's output."""
    result = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE_DIR), "hostlib"], capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"building {LIBRARY} failed:\n{result.stdout}\n{result.stderr}")
    return LIBRARY


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build_library()))
    lib.shim_core_size.restype = ctypes.c_size_t
    lib.shim_state_len.restype = ctypes.c_uint
    lib.core_init.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Hal),
        ctypes.c_uint32,
        ctypes.c_uint8,
        ctypes.POINTER(_GateConfig),
    ]
    lib.core_receive.argtypes = [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint32]
    lib.core_photo_eye.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.core_photo_eye.restype = ctypes.c_uint32
    lib.core_photo_eye_lost.argtypes = [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint32]
    lib.core_tick.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.shim_state.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.shim_config.argtypes = [ctypes.c_void_p, ctypes.POINTER(_GateConfig)]
    if lib.shim_state_len() != len(STATE_FIELDS):
        raise RuntimeError("test/host_shim.c and tests/c_core.py disagree on the state fields")
    return lib


class CMegaCore:
    """One boot of the C core, with MegaCore's interface. A reset is a new instance."""

    _lib: ctypes.CDLL | None = None

    def __init__(
        self,
        now_ms: int,
        reset_cause: int = m.ResetCause.POWER_ON,
        eeprom: GateConfig | None = None,
    ):
        if CMegaCore._lib is None:
            CMegaCore._lib = _load()
        self.lib = CMegaCore._lib
        self.encoder = 0
        self.boot_ms = now_ms
        self.servo_log: list[ServoPulse] = []
        """Each stretch away from the rest width, as MegaCore keeps it (for the pty target)."""
        self._now = now_ms
        self._last_tick = now_ms
        self.fault_output = False
        self.saved: list[GateConfig] = []
        self._out = bytearray()
        self._memory = ctypes.create_string_buffer(self.lib.shim_core_size())
        # The callbacks must outlive every call into the core: kept on the instance.
        self._hal = _Hal(
            _WRITE(lambda data, n: self._out.extend(ctypes.string_at(data, n))),
            _SERVO(self._servo),
            _FAULT(self._fault),
            _SAVE(self._save),
        )
        stored = None if eeprom is None else ctypes.pointer(_GateConfig(**eeprom.__dict__))
        self.servo_us = 0  # core_init sets the rest width through the HAL
        self._servo_out = False
        self.lib.core_init(self._memory, ctypes.byref(self._hal), now_ms, reset_cause, stored)

    def _servo(self, width_us: int) -> None:
        """The HAL's servo call: log each stretch away from rest as MegaCore does."""
        out = width_us != self.config.servo_rest_us
        if out and not self._servo_out:
            late = max(0, self._now - self._last_tick - 1)  # how late this tick came
            end = self._now + self.config.reject_pulse_ms
            self.servo_log.append(ServoPulse(self._now, end, width_us, late))
        elif not out and self._servo_out and self.servo_log:
            self.servo_log[-1].end_ms = self._now
        self._servo_out = out
        self.servo_us = width_us

    def _fault(self, on: bool) -> None:
        self.fault_output = bool(on)

    def _save(self, config) -> None:
        c = config.contents
        self.saved.append(
            GateConfig(**{name: getattr(c, name) for name, _ in _GateConfig._fields_})
        )

    @property
    def config(self) -> GateConfig:
        c = _GateConfig()
        self.lib.shim_config(self._memory, ctypes.byref(c))
        return GateConfig(**{name: getattr(c, name) for name, _ in _GateConfig._fields_})

    @property
    def configured(self) -> bool:
        return bool(self.state()["configured"])

    def millis(self, now_ms: int) -> int:
        return (now_ms - self.boot_ms) & 0xFFFFFFFF

    def receive(self, data: bytes, now_ms: int) -> None:
        self._now = now_ms
        for byte in data:
            self.lib.core_receive(self._memory, byte, now_ms & 0xFFFFFFFF)

    def photo_eye(self, now_ms: int) -> int:
        self._now = now_ms
        return self.lib.core_photo_eye(self._memory, now_ms & 0xFFFFFFFF, self.encoder & 0xFFFFFFFF)

    def photo_eye_lost(self, count: int, now_ms: int) -> None:
        self._now = now_ms
        self.lib.core_photo_eye_lost(self._memory, count, now_ms & 0xFFFFFFFF)

    def tick(self, now_ms: int) -> None:
        self._now = now_ms
        self.lib.core_tick(self._memory, now_ms & 0xFFFFFFFF, self.encoder & 0xFFFFFFFF)
        self._last_tick = now_ms

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def state(self) -> dict[str, int]:
        values = (ctypes.c_uint32 * len(STATE_FIELDS))()
        self.lib.shim_state(self._memory, values)
        return dict(zip(STATE_FIELDS, values))


def state_of(core: MegaCore) -> dict[str, int]:
    """The Python twin's state, in the C shim's terms."""
    c = core.counters
    values = (
        core.fault,
        len(core.fifo),
        core.servo_until is not None,
        core.configured,
        core.queued_events,
        core.events_dropped,
        c.parts,
        c.fired,
        c.passed,
        c.failsafe,
        min(c.frame_errors, 0xFFFF),
        core.test_fires_left,
        core.next_part_id,
    )
    return dict(zip(STATE_FIELDS, (int(v) for v in values)))
