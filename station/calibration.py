"""The calibration file: what a technician measured at this station.

`calibration/<station>.yaml` holds the numbers that tie the software to the
machine: where the camera looks, how far the gate is, how the servo moves.
It is validated against the protocol's safe limits when it is read, so a
mistake is caught at start-up with the file and field named, not on the
belt. Its checksum (CRC-32 of a canonical text, below) is sent to the Mega
in CONFIGURE and read back in the handshake, so the log proves which
calibration the gate ran with.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from station.link import limits
from station.link import messages as m

CALIBRATION_FORMAT = 1

JUDGE_MARGIN_MS = 30.0
"""The host stops waiting for a part's frame this long before the verdict deadline:
the time to locate, classify and send once the frame is there."""
FRAME_ARRIVAL_MS = 20.0
"""A frame reaches the host up to this long after its exposure (one period at 50 fps plus
transfer); the wanted frame must be able to arrive before the host gives up on it."""


@dataclass(frozen=True)
class Deadlines:
    """Every deadline of a part, in ms after its photo-eye trigger, derived in one place.

    Validation, `station calibrate timing` and `show`, the line service, replay
    and the virtual lines all read these, so a calibration that validates can
    never leave the host no time to judge.
    """

    trigger_delay_ms: float
    """The wanted frame: the one exposed this long after the trigger shows the part."""
    frame_give_up_ms: float
    """No frame by now: the part is failed safe (no_frame)."""
    verdict_deadline_ms: float
    """No judgement by now: the part is failed safe (classifier_timeout)."""
    decision_point_ms: float
    """The Mega decides (fires on no verdict) here; a verdict after it is LATE."""
    gate_travel_ms: float
    """The part reaches the gate."""

    @property
    def judge_slack_ms(self) -> float:
        """Spare time between the frame's latest arrival and the host giving up on it."""
        return self.frame_give_up_ms - self.trigger_delay_ms - FRAME_ARRIVAL_MS

    def problem(self) -> str | None:
        if self.judge_slack_ms < 0:
            return (
                f"camera.trigger_delay_ms {self.trigger_delay_ms:g} leaves no time to judge: "
                f"the frame may arrive {FRAME_ARRIVAL_MS:g} ms after it, and the host gives up "
                f"on it at {self.frame_give_up_ms:.0f} ms after the trigger (verdict deadline "
                f"{self.verdict_deadline_ms:.0f} ms less {JUDGE_MARGIN_MS:g} ms to judge), so "
                f"at most {self.frame_give_up_ms - FRAME_ARRIVAL_MS:.0f} ms"
            )
        return None

    def describe(self) -> str:
        return (
            f"after the photo-eye: frame at {self.trigger_delay_ms:g} ms, given up at "
            f"{self.frame_give_up_ms:.0f} ms, verdict deadline {self.verdict_deadline_ms:.0f} ms, "
            f"Mega decides at {self.decision_point_ms:.0f} ms, gate at "
            f"{self.gate_travel_ms:.0f} ms (slack {self.judge_slack_ms:.0f} ms)"
        )


class CalibrationError(ValueError):
    """A calibration file is missing, unreadable, or holds an unsafe value."""


class TimingMode(str, Enum):
    ENCODER = "encoder"
    MILLISECONDS = "milliseconds"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraCalibration(_Section):
    trigger_delay_ms: float = Field(
        ge=0,
        le=5000,
        description="photo-eye edge to the frame that shows the part centred (travel + latency)",
    )
    crop_px: int = Field(
        ge=32, le=4096, description="side of the square crop around the located part"
    )
    min_part_area_px: int = Field(
        default=2000, ge=1, description="smaller blobs are dirt, not a part"
    )


class TimingCalibration(_Section):
    mode: TimingMode = Field(
        description="encoder: positions in encoder counts; milliseconds: the Mega's clock"
    )
    gate_offset: int = Field(gt=0, description="photo-eye to gate, in counts or ms (see mode)")
    decision_lead: int = Field(ge=0, description="the Mega decides this long before the gate")
    counts_per_mm: float | None = Field(
        default=None, gt=0, description="encoder mode: counts per mm of belt travel"
    )
    belt_speed_mm_s: float = Field(
        gt=0, le=5000, description="nominal belt speed, for delays the host computes"
    )


class ServoCalibration(_Section):
    rest_us: int = Field(
        ge=limits.SERVO_US.low,
        le=limits.SERVO_US.high,
        description="pulse width with the pusher at rest",
    )
    reject_us: int = Field(
        ge=limits.SERVO_US.low,
        le=limits.SERVO_US.high,
        description="pulse width with the pusher out",
    )
    pulse_ms: int = Field(
        ge=limits.REJECT_PULSE_MS.low,
        le=limits.REJECT_PULSE_MS.high,
        description="the maximum servo on-time per reject",
    )


class LinkCalibration(_Section):
    heartbeat_timeout_ms: int = Field(
        ge=limits.HEARTBEAT_TIMEOUT_MS.low,
        le=limits.HEARTBEAT_TIMEOUT_MS.high,
        description="the Mega rejects everything after this long unheard",
    )


class Calibration(_Section):
    format: int = Field(default=CALIBRATION_FORMAT, description="version of this file's layout")
    station: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="the station this file is for"
    )
    camera: CameraCalibration
    timing: TimingCalibration
    servo: ServoCalibration
    link: LinkCalibration
    threshold: float | None = Field(
        default=None, gt=0, lt=1, description="overrides the model card's threshold"
    )

    @model_validator(mode="after")
    def _within_protocol_limits(self) -> "Calibration":
        problem = self._gate_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _gate_problem(self) -> str | None:
        t = self.timing
        if self.format != CALIBRATION_FORMAT:
            return f"format {self.format} unknown; this station reads {CALIBRATION_FORMAT}"
        if t.mode == TimingMode.MILLISECONDS and t.gate_offset not in limits.GATE_OFFSET_MS:
            return f"timing.gate_offset {t.gate_offset} ms is outside {limits.GATE_OFFSET_MS}"
        if t.mode == TimingMode.ENCODER:
            if t.gate_offset not in limits.GATE_OFFSET_COUNTS:
                return (
                    f"timing.gate_offset {t.gate_offset} counts is outside "
                    f"{limits.GATE_OFFSET_COUNTS}"
                )
            if t.counts_per_mm is None:
                return "timing.counts_per_mm is required in encoder mode"
        if t.decision_lead >= t.gate_offset:
            return (
                f"timing.decision_lead {t.decision_lead} must be below "
                f"timing.gate_offset {t.gate_offset}"
            )
        if self.servo.rest_us == self.servo.reject_us:
            return "servo.rest_us equals servo.reject_us: the gate would never move"
        return self.deadlines().problem()

    # --- derived figures ------------------------------------------------------

    def _ms(self, amount: int) -> float:
        if self.timing.mode == TimingMode.MILLISECONDS:
            return float(amount)
        assert self.timing.counts_per_mm is not None
        return amount / self.timing.counts_per_mm / self.timing.belt_speed_mm_s * 1000

    @property
    def gate_travel_ms(self) -> float:
        """Photo-eye to gate at the nominal belt speed."""
        return self._ms(self.timing.gate_offset)

    @property
    def decision_lead_ms(self) -> float:
        return self._ms(self.timing.decision_lead)

    def deadlines(self) -> Deadlines:
        """Every deadline of a part after its trigger (the one place they are derived).

        The verdict deadline keeps half the decision lead before the Mega's
        decision point as margin for the round trip and a retransmission.
        """
        decision = self.gate_travel_ms - self.decision_lead_ms
        verdict = decision - self.decision_lead_ms / 2
        return Deadlines(
            trigger_delay_ms=self.camera.trigger_delay_ms,
            frame_give_up_ms=verdict - JUDGE_MARGIN_MS,
            verdict_deadline_ms=verdict,
            decision_point_ms=decision,
            gate_travel_ms=self.gate_travel_ms,
        )

    def checksum(self) -> int:
        """CRC-32 of the canonical text: the values only, keys sorted, no comments."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return zlib.crc32(canonical.encode())

    def configure_message(self) -> m.Configure:
        return m.Configure(
            mode=(
                m.TimingMode.ENCODER_COUNTS
                if self.timing.mode == TimingMode.ENCODER
                else m.TimingMode.MILLISECONDS
            ),
            gate_offset=self.timing.gate_offset,
            decision_lead=self.timing.decision_lead,
            servo_rest_us=self.servo.rest_us,
            servo_reject_us=self.servo.reject_us,
            reject_pulse_ms=self.servo.pulse_ms,
            heartbeat_timeout_ms=self.link.heartbeat_timeout_ms,
            calibration_crc=self.checksum(),
        )

    # --- files ------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        path = Path(path)
        data = load_yaml_mapping(path, CalibrationError)
        stored = data.pop("checksum", None)
        try:
            calibration = cls.model_validate(data)
        except ValidationError as exc:
            raise CalibrationError(f"{path}: {describe_validation_error(exc)}") from None
        if stored is not None and _parse_checksum(stored) != calibration.checksum():
            raise CalibrationError(
                f"{path}: checksum {stored} does not match the values "
                f"({calibration.checksum():#010x}); the file was edited by hand or damaged. "
                "Re-run `station calibrate` or delete the checksum line after checking it."
            )
        return calibration

    def to_yaml(self, header: str = "") -> str:
        """The file a technician reads and diffs: one value per line, each with its meaning."""
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        lines += [
            "# Calibration of a reject station, written by `station calibrate`.",
            "# The checksum covers every value below; the Mega reports it back at each",
            "# handshake. Edit with `station calibrate`, which keeps a .bak of this file.",
            f"checksum: {self.checksum():#010x}",
        ]
        lines += _yaml_fields(self, indent="")
        return "\n".join(lines) + "\n"

    def save(self, path: Path, header: str = "") -> None:
        """Write atomically, keeping the previous file as <name>.bak."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_yaml(header))
        if path.exists():
            path.replace(path.with_suffix(path.suffix + ".bak"))
        tmp.replace(path)


def _yaml_fields(section: BaseModel, indent: str) -> list[str]:
    lines = []
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines += _yaml_fields(value, indent + "  ")
            continue
        if isinstance(value, Enum):
            value = value.value
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        comment = f"  # {info.description}" if info.description else ""
        lines.append(f"{indent}{name}: {text}{comment}")
    return lines


def _parse_checksum(value: object) -> int | None:
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def load_yaml_mapping(path: Path, error: type[Exception]) -> dict:
    """Read a YAML file that must hold a mapping; `error` names the file on any problem."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as `field.sub: message; ...`, the form a technician can act on."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
