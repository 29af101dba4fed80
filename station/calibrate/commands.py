"""`station calibrate ...`: the technician's steps, each ending in one checked write.

Every step reads the station file (`--config`) to find the camera, the port
and the calibration file, measures or asks, shows the change, and writes
the calibration only after confirmation (`--yes` for scripts). Flags give
every value, so a step runs without a terminal; at a terminal, missing
values are asked for with the current one as default. `--virtual-line`
runs a step against the virtual conveyor and the simulated Mega.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from station.calibrate.store import CalibrationFile, Change, UnsafeValue
from station.calibration import Calibration, CalibrationError, TimingMode
from station.camera.frames import CameraError, FrameSource
from station.config import ConfigError, StationConfig, load_station_config
from station.link.session import LinkError

SYSTEM_CONFIG = Path("/etc/station/station.yaml")
CONFIG_ENV = "STATION_CONFIG"


def default_config() -> Path:
    """The line PC's station file: $STATION_CONFIG, else /etc/station/station.yaml.

    Never a file inside the installed package: a technician who forgets
    --config must not rewrite the calibration shipped with the source.
    """
    return Path(os.environ.get(CONFIG_ENV) or SYSTEM_CONFIG)


@dataclass
class Machine:
    """Where a step finds the camera and the Mega: the real ones, or the virtual line's."""

    port: str
    make_source: Callable[[], FrameSource]


@click.group()
def calibrate() -> None:
    """What a technician does at the machine: camera, roi, timing, servo, threshold, show."""


def _common(f):
    f = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help=f"Station file; the calibration it names is the one changed "
        f"[default: ${CONFIG_ENV}, else {SYSTEM_CONFIG}].",
    )(f)
    f = click.option(
        "--virtual-line", is_flag=True, help="Use the virtual conveyor and the simulated Mega."
    )(f)
    return click.option("--yes", is_flag=True, help="Write without asking.")(f)


def _serve_option(f):
    return click.option(
        "--serve",
        "serve_listen",
        default=None,
        metavar="ADDR",
        help="Show the live camera with the crop on the operator's page at HOST:PORT while "
        "you adjust; Ctrl-C ends it and the step goes on with the latest --frames frames.",
    )(f)


def _load(config_path: Path | None) -> tuple[StationConfig, CalibrationFile]:
    config_path = config_path or default_config()
    try:
        config, _ = load_station_config(config_path)
        store = CalibrationFile(config.calibration)
    except (ConfigError, CalibrationError) as exc:
        hint = "" if config_path.exists() else f" (give --config or set ${CONFIG_ENV})"
        raise click.ClickException(f"{exc}{hint}") from None
    click.echo(f"station file {config_path}; calibration {store.path}", err=True)
    return config, store


@contextlib.contextmanager
def _machine(config: StationConfig, virtual: bool, parts: int = 20) -> Iterator[Machine]:
    if not virtual:
        from station.service.assembly import StartupError, source_factory

        try:
            make_source = source_factory(config.camera)
        except StartupError as exc:
            raise click.ClickException(f"camera: {exc}") from None
        yield Machine(config.link.port, make_source)
        return
    from station.sim.virtual_line import virtual_rig

    if config.virtual_line is None:
        raise click.ClickException(f"{config.station}: no virtual_line section in the config")
    line = config.virtual_line.model_copy(update={"pitch_mm": 300.0, "pitch_jitter": 0.0})
    with tempfile.TemporaryDirectory() as work, virtual_rig(line, parts, Path(work)) as rig:
        yield Machine(rig.port, rig.camera)


def _ask(value, prompt: str, default, kind=float):
    """The flag's value; else, at a terminal, ask (current value as default); else the default."""
    if value is not None:
        return value
    if sys.stdin.isatty():
        return click.prompt(prompt, default=default, type=kind)
    return default


def _write(store: CalibrationFile, proposed: Calibration, changes: list[Change], step: str, yes):
    if not changes:
        click.echo(f"no change: {store.path} left as it was")
        return
    for c in changes:
        click.echo(f"  {c.field}: {c.before} -> {c.after}")
    if not yes and not (sys.stdin.isatty() and click.confirm(f"write {store.path}?")):
        raise click.ClickException(f"not written (give --yes to write): {store.path} unchanged")
    store.commit(proposed, step)
    click.echo(
        f"written {store.path} (checksum {proposed.checksum():#010x}; "
        f"previous kept as {store.path.name}.bak)"
    )


def _propose(store: CalibrationFile, **sections):
    try:
        return store.propose(**sections)
    except UnsafeValue as exc:
        raise click.ClickException(str(exc)) from None


# --- the steps ------------------------------------------------------------------------


@calibrate.command()
@_common
@click.option("--frames", default=30, show_default=True, help="Frames to grab.")
@click.option(
    "--snapshot",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to save the frame with the crop drawn (default runs/calibrate-<station>.png).",
)
@_serve_option
def camera(config_path, virtual_line, yes, frames, snapshot, serve_listen) -> None:
    """Check brightness, contrast and focus against limits; save a snapshot with the crop."""
    from station.calibrate import camera as cam

    config, store = _load(config_path)
    cal = store.current
    snapshot = snapshot or Path("runs") / f"calibrate-{config.station}.png"
    with _machine(config, virtual_line, _virtual_parts(serve_listen)) as machine:
        grabbed = _frames_for(machine, frames, serve_listen, "camera", cal)
    seen = cam.sightings(grabbed, cal.camera.min_part_area_px)
    # Judged on frames that show a part, as the classifier's are; an empty belt is flat.
    measured = [s.frame for s in seen] or grabbed
    quality = cam.measure_quality(measured, cal.camera.crop_px, cal.camera.min_part_area_px)
    limits = cam.QualityLimits()
    shown = cam.best_sighting(seen).frame if seen else grabbed[-1]
    cam.snapshot(shown, cal.camera.crop_px, cal.camera.min_part_area_px, snapshot)
    focus = "-" if quality.focus is None else f"{quality.focus:.0f}"
    click.echo(
        f"{len(grabbed)} frames: brightness {quality.brightness:.0f} "
        f"(limits {limits.brightness[0]:.0f}..{limits.brightness[1]:.0f}), contrast "
        f"{quality.contrast:.1f} (min {limits.min_contrast:.0f}), focus {focus} "
        f"(min {limits.min_focus:.0f}); parts in view in {len(seen)} frames"
    )
    click.echo(f"snapshot: {snapshot}")
    problems = quality.problems(limits)
    if problems:
        raise click.ClickException("camera check failed: " + "; ".join(problems))
    click.echo("camera OK (nothing written: this step only checks)")


def _virtual_parts(serve_listen: str | None) -> int:
    """Parts on the virtual belt: enough to keep it busy while a technician watches."""
    return 2000 if serve_listen else 20


def _frames_for(machine: Machine, frames: int, serve_listen: str | None, step: str, cal):
    """The frames a camera step checks: grabbed at once, or (`--serve`) the latest ones
    when the technician stops the live page."""
    if not serve_listen:
        return _grab(machine, frames)
    from station.calibrate.camera import QualityLimits
    from station.calibrate.live import LiveCamera

    live = LiveCamera(
        machine.make_source,
        step,
        cal.camera.crop_px,
        cal.camera.min_part_area_px,
        QualityLimits(),
        keep=frames,
    ).start()
    try:
        with _live_page(live, serve_listen) as url:
            click.echo(f"live camera on {url}; Ctrl-C when it looks right", err=True)
            _wait_for_stop()
    finally:
        grabbed = live.stop()
    if not grabbed:
        raise click.ClickException(f"camera: {live.error or 'no frame'}")
    click.echo(f"stopped: checking the latest {len(grabbed)} frames", err=True)
    return grabbed


@contextlib.contextmanager
def _live_page(live, listen: str) -> Iterator[str]:
    """The operator's page over the live camera: read-only, over an empty audit."""
    from station.audit import AuditLog, AuditReader
    from station.web.server import WebServer, create_app

    def no_actions(request):
        raise RuntimeError("a calibration step's page takes no actions")

    with tempfile.TemporaryDirectory() as work:
        empty = AuditLog(Path(work) / "audit.sqlite", "-", 0)
        app = create_app(
            snapshot=lambda: live.snapshot,
            submit=no_actions,
            reader=AuditReader(empty.path),
            images_dir=Path(work),
            token=None,
            shift_start=lambda now: now,
        )
        try:
            server = WebServer(app, listen).start()
        except OSError as exc:
            raise click.ClickException(f"--serve {listen}: {exc}") from None
        try:
            yield server.url
        finally:
            server.close()
            empty.close()


def _wait_for_stop() -> None:
    """Until Ctrl-C (or SIGTERM); the handlers before are put back."""
    stop = threading.Event()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in handlers:
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()  # a signal interrupts the wait on POSIX, and its handler sets `stop`
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _grab(machine: Machine, frames: int):
    from station.calibrate.camera import grab

    try:
        return grab(machine.make_source, frames, timeout_s=max(5.0, frames / 5))
    except CameraError as exc:
        raise click.ClickException(f"camera: {exc}") from None


@calibrate.command()
@_common
@click.option("--frames", default=60, show_default=True, help="Frames to grab.")
@click.option(
    "--margin-pct",
    default=0.0,
    show_default=True,
    help="Widen the crop beyond the part's box (the training images are framed tight).",
)
@_serve_option
def roi(config_path, virtual_line, yes, frames, margin_pct, serve_listen) -> None:
    """Find the part in view and set the crop the classifier sees."""
    from station.calibrate import camera as cam

    config, store = _load(config_path)
    cal = store.current
    with _machine(config, virtual_line, _virtual_parts(serve_listen)) as machine:
        grabbed = _frames_for(machine, frames, serve_listen, "roi", cal)
    seen = cam.sightings(grabbed, cal.camera.min_part_area_px)
    try:
        crop, min_area = cam.measure_roi(seen, grabbed[0].image.shape, margin_pct)
    except cam.NoPartInView:
        raise click.ClickException(
            f"no whole part in view in {len(grabbed)} frames: put a part under the camera "
            f"(or lower camera.min_part_area_px, now {cal.camera.min_part_area_px}); "
            f"{store.path} unchanged"
        ) from None
    click.echo(f"part seen in {len(seen)} of {len(grabbed)} frames")
    proposed, changes = _propose(store, camera={"crop_px": crop, "min_part_area_px": min_area})
    snapshot = Path("runs") / f"calibrate-{config.station}-roi.png"
    cam.snapshot(cam.best_sighting(seen).frame, crop, min_area, snapshot)
    click.echo(f"snapshot: {snapshot}")
    _write(store, proposed, changes, "roi", yes)


@calibrate.command()
@_common
@click.option("--gate-distance-mm", type=float, help="Photo-eye beam to the pusher's centre.")
@click.option("--part-length-mm", type=float, help="Part size along the belt.")
@click.option("--belt-speed-mm-s", type=float, help="Measured belt speed.")
@click.option(
    "--counts-per-mm", type=float, help="Encoder counts per mm: switches to encoder timing."
)
@click.option(
    "--measure-camera",
    type=int,
    default=0,
    help="Send N test parts past the photo-eye and measure the camera delay.",
)
def timing(
    config_path,
    virtual_line,
    yes,
    gate_distance_mm,
    part_length_mm,
    belt_speed_mm_s,
    counts_per_mm,
    measure_camera,
) -> None:
    """Photo-eye to gate (from distance and speed, or encoder counts) and the camera delay."""
    from station.calibrate import timing as tm

    config, store = _load(config_path)
    cal = store.current
    changes: dict = {"timing": {}, "camera": {}}
    if measure_camera:
        with _machine(config, virtual_line, parts=measure_camera) as machine:
            try:
                delays = tm.measure_camera_delay(
                    cal,
                    machine.port,
                    machine.make_source,
                    config.vision_trigger.direction,
                    measure_camera,
                    timeout_s=5 + measure_camera * 2,
                )
                delay = tm.summarise(delays, measure_camera)
            except (LinkError, CameraError, tm.MeasurementError) as exc:
                raise click.ClickException(f"{exc}; {store.path} unchanged") from None
        spread = max(delays) - min(delays)
        click.echo(f"camera delay {delay:.1f} ms (median of {len(delays)}, spread {spread:.1f})")
        changes["camera"]["trigger_delay_ms"] = round(delay, 1)
    distance = _ask(gate_distance_mm, "photo-eye to pusher (mm)", None)
    if distance is not None:
        part = _ask(part_length_mm, "part length along the belt (mm)", 75.0)
        speed = _ask(belt_speed_mm_s, "belt speed (mm/s)", cal.timing.belt_speed_mm_s)
        pulse = cal.servo.pulse_ms
        lead_ms = cal.decision_lead_ms
        if counts_per_mm:
            changes["timing"] = {
                "mode": TimingMode.ENCODER.value,
                "counts_per_mm": counts_per_mm,
                "gate_offset": tm.gate_offset_counts(distance, part, counts_per_mm, speed, pulse),
                "decision_lead": int(round(lead_ms / 1000 * speed * counts_per_mm)),
                "belt_speed_mm_s": speed,
            }
        else:
            changes["timing"] = {
                "mode": TimingMode.MILLISECONDS.value,
                "gate_offset": tm.gate_offset_ms(distance, part, speed, pulse),
                "decision_lead": int(round(lead_ms)),
                "belt_speed_mm_s": speed,
            }
    if not changes["timing"] and not changes["camera"]:
        raise click.UsageError("give --gate-distance-mm (with speed or counts) or --measure-camera")
    proposed, diff = _propose(store, **{k: v for k, v in changes.items() if v})
    click.echo(f"deadlines {proposed.deadlines().describe()}")
    _write(store, proposed, diff, "timing", yes)


@calibrate.command()
@_common
@click.option("--rest-us", type=int, help="Pulse width with the pusher at rest.")
@click.option("--reject-us", type=int, help="Pulse width with the pusher out.")
@click.option("--pulse-ms", type=int, help="How long the pusher stays out.")
@click.option("--fire", default=3, show_default=True, help="Test fires (1..10) to confirm.")
def servo(config_path, virtual_line, yes, rest_us, reject_us, pulse_ms, fire) -> None:
    """Jog the rest and reject positions, test-fire through the Mega, confirm the timing."""
    from station.calibrate.servo import fire_test_pulses

    config, store = _load(config_path)
    current = store.current.servo
    values = {
        "rest_us": _ask(rest_us, "rest pulse width (us)", current.rest_us, int),
        "reject_us": _ask(reject_us, "reject pulse width (us)", current.reject_us, int),
        "pulse_ms": _ask(pulse_ms, "pusher out for (ms)", current.pulse_ms, int),
    }
    proposed, changes = _propose(store, servo=values)
    if not 1 <= fire <= 10:
        raise click.BadParameter("1..10 test fires", param_hint="--fire")
    with _machine(config, virtual_line) as machine:
        try:
            report = fire_test_pulses(proposed, machine.port, fire)
        except (LinkError, OSError) as exc:
            raise click.ClickException(f"{exc}; {store.path} unchanged") from None
    expected = 2 * proposed.servo.pulse_ms
    click.echo(
        f"test fire: {report.fired} of {report.asked} at {proposed.servo.reject_us} us for "
        f"{proposed.servo.pulse_ms} ms, spacing {report.spacing_ms} ms (expected {expected}); "
        f"Mega runs calibration {report.calibration_crc:#010x}"
    )
    if report.fired != report.asked or any(abs(s - expected) > 5 for s in report.spacing_ms):
        raise click.ClickException(f"the gate did not fire as asked; {store.path} unchanged")
    if report.calibration_crc != proposed.checksum():
        raise click.ClickException(
            f"the Mega reports calibration {report.calibration_crc:#010x}, not "
            f"{proposed.checksum():#010x}; {store.path} unchanged"
        )
    _write(store, proposed, changes, "servo", yes)


@calibrate.command()
@_common
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Golden samples: def_front/ and ok_front/.",
)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path),
    default=Path("runs") / "calibrate-threshold",
    show_default=True,
)
def threshold(config_path, virtual_line, yes, data_dir, model_dir, plots_dir) -> None:
    """Zero missed defects with the fewest false rejects, on this station's golden samples."""
    from station.calibrate.threshold import NotEnoughSamples, choose_threshold
    from station.classifier.litert_classifier import Classifier, ModelLoadError
    from station.dataset import DatasetError

    config, store = _load(config_path)
    try:
        choice = choose_threshold(Classifier(model_dir or config.model), data_dir, plots_dir)
    except (DatasetError, ModelLoadError, NotEnoughSamples) as exc:
        raise click.ClickException(f"{exc}; {store.path} unchanged") from None
    click.echo(
        f"{choice.samples} samples ({choice.defective} defective, {len(choice.skipped)} "
        f"skipped): threshold {choice.threshold:.4f} gives {choice.missed_defects} missed "
        f"defects, {choice.false_rejects} false rejects (lowest defect score "
        f"{choice.lowest_defect_score:.4f})"
    )
    if min(choice.defective, choice.samples - choice.defective) < 50:
        click.echo(
            "note: fewer than 50 samples of a class; the threshold is only as good as the "
            "golden samples, so add more when you can"
        )
    click.echo(
        f"the threshold is held by {choice.held_by} (network "
        f"{choice.held_by_network_score:.4f}"
        + ("; the pit check rejects it too" if choice.held_by_pit_check else "")
        + "): look at it if the false rejects are many"
    )
    for item in choice.skipped:
        click.echo(f"skipped {item.path}: {item.reason}")
    for path in choice.plots.values():
        click.echo(f"plot: {path}")
    proposed, changes = _propose(store, threshold=choice.threshold)
    _write(store, proposed, changes, "threshold", yes)


@calibrate.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Station file [default: ${CONFIG_ENV}, else {SYSTEM_CONFIG}].",
)
def show(config_path) -> None:
    """Print the current calibration, its checksum and the figures derived from it."""
    _, store = _load(config_path)
    cal = store.current
    click.echo(f"# {store.path}")
    click.echo(store.path.read_text().rstrip())
    click.echo(
        f"# checksum {cal.checksum():#010x} (matches the file); {cal.deadlines().describe()}"
    )
