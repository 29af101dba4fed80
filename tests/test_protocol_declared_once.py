"""The protocol is declared once in Python; the firmware header and PROTOCOL.md's tables follow.

`tools/gen_protocol_header.py` writes firmware/arduino_mega/protocol.h and the
generated tables of PROTOCOL.md from station/link/messages.py and
station/link/limits.py. These tests fail while a committed file is stale, and
check that the hand-written side reads the generated names instead of its own.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from station.calibration import Calibration
from station.link import limits
from station.link import messages as m
from station.sim.mega_core import GateConfig

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware" / "arduino_mega"


def _generator():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_protocol_header.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_header_and_protocol_tables_are_fresh():
    stale = _generator().stale()
    assert not stale, f"stale: {stale}; run: python tools/gen_protocol_header.py"


def test_a_changed_declaration_makes_the_header_stale(monkeypatch):
    """The check can fail: a limit changed in Python without regenerating is caught."""
    gen = _generator()
    monkeypatch.setattr(gen.limits, "FIFO_SIZE", limits.FIFO_SIZE + 1)
    assert gen.HEADER in gen.stale()


def test_the_firmware_writes_no_protocol_number_of_its_own():
    """Type codes, sizes and limits come from protocol.h, not from literals in the core."""
    header = (FIRMWARE / "station_core.h").read_text()
    core = (FIRMWARE / "station_core.c").read_text()
    assert '#include "protocol.h"' in header
    for name in ("PROTOCOL_VERSION", "FIFO_SIZE", "EVENT_QUEUE_SIZE", "RETRANSMIT_MS"):
        assert not re.search(rf"#define {name}\b", header + core), name
    assert not re.search(r"\bMSG_\w+ = 0x", header + core)
    for literal in ("2500", "10000", "60000", "1000000"):
        assert literal not in core, f"limit {literal} written by hand in station_core.c"


@pytest.mark.parametrize(
    "twin_field, section, key, value",
    [
        ("servo_rest_us", "servo", "rest_us", limits.SERVO_US.high + 1),
        ("reject_pulse_ms", "servo", "pulse_ms", limits.REJECT_PULSE_MS.low - 1),
        (
            "heartbeat_timeout_ms",
            "link",
            "heartbeat_timeout_ms",
            limits.HEARTBEAT_TIMEOUT_MS.high + 1,
        ),
    ],
)
def test_the_twin_and_the_calibration_refuse_the_same_limits(twin_field, section, key, value):
    assert GateConfig(**{twin_field: value}).problem()
    assert not GateConfig(**{twin_field: value - 1 if value > 500 else value + 1}).problem()
    data = yaml.safe_load((ROOT / "calibration" / "virtual-line.yaml").read_text())
    data.pop("checksum")
    data[section][key] = value
    with pytest.raises(ValidationError, match=key):
        Calibration.model_validate(data)


def test_every_message_has_a_c_name_and_size():
    text = (FIRMWARE / "protocol.h").read_text()
    for code, cls in m.REGISTRY.items():
        name = m.snake_case(cls.__name__).upper()
        assert f"MSG_{name} = 0x{code:02X}," in text
        assert f"#define PAYLOAD_{name} {cls.STRUCT.size}\n" in text
