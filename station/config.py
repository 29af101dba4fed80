"""The station configuration: one YAML file that says what this line PC runs with.

It names the calibration file, the model, the camera, the Mega's port, where
the audit goes and where metrics are served. Everything is checked when
`station run` starts; a wrong field stops the start with the file and field
named (Klipper's rule: config mistakes are caught before anything moves).
Relative paths are taken relative to the configuration file.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from station.calibration import (
    Calibration,
    CalibrationError,
    describe_validation_error,
    load_yaml_mapping,
)
from station.models import DEFAULT_MODEL_DIR


class ConfigError(ValueError):
    """The station configuration cannot be used; the message names the file and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraKind(str, Enum):
    OPENCV = "opencv"
    VIDEO = "video"
    FOLDER = "folder"
    VIRTUAL = "virtual"


class CameraConfig(_Section):
    kind: CameraKind
    device: str | int | None = Field(
        default=None, description="opencv: index, /dev/videoN or URL; video/folder: a path"
    )
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0, le=1000)
    exposure: float | None = None
    stall_timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="no frame for this long: the camera is stalled"
    )
    reopen_interval_s: float = Field(default=1.0, gt=0, le=60)
    max_frame_lag_s: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="a frame later than this after the wanted instant shows another part",
    )
    buffer_s: float = Field(
        default=3.0, gt=0, le=60, description="how far back frames are kept to find a part"
    )


class LinkConfig(_Section):
    port: str = Field(description="the Mega's device, e.g. /dev/reject-mega (udev rule)")
    host_timeout_s: float = Field(default=1.0, ge=0.3, le=30)
    reset_guard_s: float = Field(
        default=0.06,
        ge=0,
        le=5,
        description="reopening the port reboots the Mega: wait (up to 2 s) for a gap this long "
        "with no part due at the gate (a Mega whose bootloader runs at reset needs its boot time)",
    )


class TriggerMode(str, Enum):
    PHOTO_EYE = "photo_eye"
    VISION = "vision"


class VisionTriggerConfig(_Section):
    line_x_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="a part is counted when its centre crosses this"
    )
    direction: Literal["left_to_right", "right_to_left"] = "left_to_right"
    camera_to_gate_ms: float = Field(
        default=1000, ge=20, le=60000, description="from the trigger line to the gate"
    )


class AuditConfig(_Section):
    database: Path
    images_dir: Path
    images_quota_mb: float = Field(default=2000, gt=0)
    pass_sample_every: int = Field(
        default=100, ge=0, description="keep 1 pass image in N (0: none); every reject is kept"
    )


class MetricsConfig(_Section):
    listen: str | None = Field(
        default="127.0.0.1:9105", description="host:port of the Prometheus endpoint, or null"
    )
    summary_every_s: float = Field(default=60, gt=0)


def parse_shift_starts(starts: list[str]) -> list[dt.time]:
    """'06:00' -> time(6, 0), sorted; raises ValueError naming the bad entry."""
    times = []
    for text in starts:
        try:
            times.append(dt.time.fromisoformat(text))
        except ValueError:
            raise ValueError(f"shift start {text!r}: expected HH:MM") from None
    if not times:
        raise ValueError("at least one shift start is needed")
    return sorted(times)


class WebConfig(_Section):
    listen: str | None = Field(
        default="127.0.0.1:8090",
        description="host:port of the operator's page, or null; 127.0.0.1 unless the page "
        "must be seen from other machines",
    )
    token_file: Path | None = Field(
        default=None,
        description="file with the token every action needs (acknowledge, review); readable "
        "by the service user only; without it the page is read-only",
    )
    shifts: list[str] = Field(
        default=["06:00", "14:00", "22:00"], description="local times at which shifts start"
    )

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: list[str]) -> list[str]:
        parse_shift_starts(value)
        return value


class RecordConfig(_Section):
    directory: Path
    quota_mb: float = Field(default=5000, gt=0)


class VirtualLineConfig(_Section):
    """The physical truth of the virtual line (a real line's would be measured, not set)."""

    parts_from: Path = Field(description="folder with def_front/ and ok_front/ images")
    belt_speed_mm_s: float = Field(default=600, gt=0, le=5000)
    pitch_mm: float = Field(default=120, gt=0, description="mean centre-to-centre spacing")
    pitch_jitter: float = Field(default=0.15, ge=0, lt=0.5, description="+- fraction of pitch")
    px_per_mm: float = Field(default=4.0, gt=0)
    frame_width: int = Field(default=640, ge=64)
    frame_height: int = Field(default=360, ge=64)
    fps: float = Field(default=60, gt=0, le=500)
    camera_x_mm: float = Field(default=60)
    gate_x_mm: float = Field(default=757.5, gt=0)
    strike_zone_mm: float = Field(default=20, gt=0)
    counts_per_mm: float = Field(default=10, gt=0, description="encoder resolution")
    photo_eye: bool = Field(default=True, description="false: a vision-trigger line")
    shuffle_seed: int = 1


class StationConfig(_Section):
    station: str = Field(min_length=1)
    calibration: Path
    model: Path = DEFAULT_MODEL_DIR
    camera: CameraConfig
    link: LinkConfig
    trigger: TriggerMode = TriggerMode.PHOTO_EYE
    vision_trigger: VisionTriggerConfig = VisionTriggerConfig()
    audit: AuditConfig
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    record: RecordConfig | None = None
    virtual_line: VirtualLineConfig | None = Field(
        default=None, description="the simulated belt, for camera.kind virtual"
    )
    auto_reset_faults: bool = Field(
        default=True,
        description="clear a latched Mega fault once the link is healthy (alarm stays counted)",
    )


def load_station_config(path: Path) -> tuple[StationConfig, Calibration]:
    """Read and check the station file and the calibration file it names."""
    path = Path(path)
    data = load_yaml_mapping(path, ConfigError)
    try:
        config = StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
    config = _resolve_paths(config, path.parent)
    try:
        calibration = Calibration.load(config.calibration)
    except CalibrationError as exc:
        raise ConfigError(f"{exc} (named by {path}: calibration)") from None
    if calibration.station != config.station:
        raise ConfigError(
            f"{path}: station {config.station!r} but {config.calibration} is the calibration "
            f"of station {calibration.station!r}"
        )
    if config.camera.kind == CameraKind.VIRTUAL and config.virtual_line is None:
        raise ConfigError(f"{path}: camera.kind virtual needs a virtual_line section")
    return config, calibration


def _resolve_paths(config: StationConfig, base: Path) -> StationConfig:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    audit = config.audit.model_copy(
        update={
            "database": resolve(config.audit.database),
            "images_dir": resolve(config.audit.images_dir),
        }
    )
    record = (
        config.record.model_copy(update={"directory": resolve(config.record.directory)})
        if config.record
        else None
    )
    virtual_line = (
        config.virtual_line.model_copy(
            update={"parts_from": resolve(config.virtual_line.parts_from)}
        )
        if config.virtual_line
        else None
    )
    camera = config.camera
    if camera.kind in (CameraKind.VIDEO, CameraKind.FOLDER) and isinstance(camera.device, str):
        camera = camera.model_copy(update={"device": str(resolve(Path(camera.device)))})
    web = config.web
    if web.token_file is not None:
        web = web.model_copy(update={"token_file": resolve(web.token_file)})
    return config.model_copy(
        update={
            "calibration": resolve(config.calibration),
            "model": resolve(config.model),
            "audit": audit,
            "record": record,
            "camera": camera,
            "virtual_line": virtual_line,
            "web": web,
        }
    )
