"""Build a LineStation from the configuration, and run it as the service.

Everything that can be checked is checked before the station says READY:
the configuration and calibration (by loading them), the model (by loading
it and matching its card), the camera (first frame), and the Mega (the
handshake, which also proves it runs this calibration). A failure here
stops the start with one message naming what is wrong; systemd restarts
the service (Restart=on-failure) after its back-off.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from station.audit import AuditLog, AuditReader, ImageStore
from station.calibration import Calibration
from station.camera.feed import CameraFeed
from station.camera.frames import CameraError, FrameBuffer, FrameSource
from station.camera.sources import ImageFolder, OpenCVCamera, VideoFile
from station.classifier.litert_classifier import Classifier
from station.config import CameraConfig, CameraKind, StationConfig, TriggerMode
from station.judge import Judge
from station.link.session import MegaSession
from station.recording import Recorder
from station.service.line_station import LineStation
from station.service.metrics import LineMetrics
from station.service.records import PartRecords
from station.service.systemd_notify import SystemdNotifier
from station.tracker import PartTracker, TrackerSettings
from station.vision.vision_trigger import VisionTrigger
from station.web.server import WebServer, create_app, load_token
from station.web.shifts import shift_start

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The station cannot start; the message says what to fix."""


def source_factory(camera: CameraConfig) -> Callable[[], FrameSource]:
    if camera.kind == CameraKind.OPENCV:
        if camera.device is None:
            raise StartupError("camera.device is required for an opencv camera")
        return lambda: OpenCVCamera(
            camera.device, camera.width, camera.height, camera.fps, camera.exposure
        )
    if camera.kind == CameraKind.VIDEO:
        return lambda: VideoFile(camera.device, paced=True)
    if camera.kind == CameraKind.FOLDER:
        return lambda: ImageFolder(camera.device, fps=camera.fps or 10, paced=True)
    raise StartupError("camera.kind virtual is only available with --virtual-line")


@dataclass
class Assembly:
    station: LineStation
    classifier: Classifier
    metrics: LineMetrics
    vision_trigger: VisionTrigger
    web: WebServer | None = None

    def close(self) -> None:
        """What `start` started besides the station (which stops itself)."""
        self.vision_trigger.stop()
        self.metrics.close()
        if self.web is not None:
            self.web.close()


def assemble(
    config: StationConfig,
    calibration: Calibration,
    make_source: Callable[[], FrameSource] | None = None,
    wrap_classifier: Callable[[Classifier], object] | None = None,
    notifier: SystemdNotifier | None = None,
) -> Assembly:
    classifier = Classifier(config.model, threshold=calibration.threshold)
    scorer = wrap_classifier(classifier) if wrap_classifier else classifier
    judge = Judge(
        scorer,
        calibration.camera.crop_px,
        calibration.camera.min_part_area_px,
        threshold=classifier.threshold,
    )
    inbox: queue.Queue = queue.Queue()
    frames = FrameBuffer(config.camera.buffer_s)
    link = MegaSession(
        config.link.port,
        calibration.configure_message(),
        host_timeout_s=config.link.host_timeout_s,
        events=inbox,
    )
    audit = AuditLog(config.audit.database, classifier.version, calibration.checksum())
    images = ImageStore(config.audit.images_dir, config.audit.images_quota_mb)
    recorder = (
        Recorder(config.record.directory, config.record.quota_mb, config.station)
        if config.record
        else None
    )
    metrics = LineMetrics()
    records = PartRecords(audit, metrics, images, recorder, config.audit.pass_sample_every)
    feed = CameraFeed(
        make_source or source_factory(config.camera),
        frames,
        stall_timeout_s=config.camera.stall_timeout_s,
        reopen_interval_s=config.camera.reopen_interval_s,
    )
    tracker = PartTracker(
        TrackerSettings(
            deadlines=calibration.deadlines(),
            heartbeat_timeout_s=calibration.link.heartbeat_timeout_ms / 1000,
            vision_to_gate_s=(
                config.vision_trigger.camera_to_gate_ms / 1000
                if config.trigger == TriggerMode.VISION
                else None
            ),
            auto_reset_faults=config.auto_reset_faults,
            pulse_s=calibration.servo.pulse_ms / 1000,
        ),
        epoch_base=audit.next_epoch() - 1,
        first_uid=audit.next_uid(),
    )
    station = LineStation(
        tracker,
        link,
        inbox,
        frames,
        feed,
        judge,
        audit,
        records,
        metrics,
        notifier=notifier,
        summary_every_s=config.metrics.summary_every_s,
        max_frame_lag_s=config.camera.max_frame_lag_s,
        drain_s=calibration.gate_travel_ms / 1000 + 1.0,
    )
    feed.on_problem = station.camera_problem
    guard_s = config.link.reset_guard_s
    link.reopen_ok = lambda: tracker.reset_is_safe(time.monotonic(), guard_s)
    # A photo-eye line runs it too, as the witness that finds the parts the Mega cannot
    # report (the tracker's `_on_backup_sighting`).
    backup = config.trigger != TriggerMode.VISION
    trigger = VisionTrigger(frames, inbox, config.vision_trigger, calibration, backup=backup)
    trigger.on_problem = station.camera_problem
    station.trigger_progress_age_s = trigger.progress_age_s
    return Assembly(station, classifier, metrics, trigger)


def start(assembly: Assembly, config: StationConfig, camera_timeout_s: float = 5.0) -> None:
    """Camera first frame, link handshake, metrics endpoint; raises StartupError."""
    station = assembly.station
    station.feed.start()
    deadline = time.monotonic() + camera_timeout_s
    while station.frames.latest() is None:
        if time.monotonic() > deadline:
            station.feed.stop()
            raise StartupError(f"camera: no frame within {camera_timeout_s:.0f} s")
        time.sleep(0.02)
    station.worker.start()
    try:
        station.link.start()
    except (OSError, RuntimeError) as exc:
        station.feed.stop()
        raise StartupError(f"link: {exc}") from None
    assembly.vision_trigger.start()
    if config.metrics.listen:
        try:
            assembly.metrics.serve(config.metrics.listen)
        except OSError as exc:
            raise StartupError(f"metrics.listen {config.metrics.listen}: {exc}") from None
    if config.web.listen:
        assembly.web = start_web(station, config)


def start_web(station: LineStation, config: StationConfig) -> WebServer | None:
    """The operator's page (station/web/), reading the station's snapshots and audit.

    A wrong token file is a configuration mistake and stops the start. An address that
    cannot be bound (another program has the port) does not: the line sorts parts
    without the page, and the alarm and the log say why there is none."""
    web = config.web
    try:
        token = load_token(web.token_file) if web.token_file else None
        app = create_app(
            snapshot=lambda: station.snapshot,
            submit=station.submit,
            reader=AuditReader(config.audit.database),
            images_dir=config.audit.images_dir,
            token=token,
            shift_start=shift_start(web.shifts),
            judging=station.judging,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    try:
        server = WebServer(app, web.listen)
    except OSError as exc:
        detail = f"web.listen {web.listen}: {exc}; the line runs without the operator's page"
        log.error("%s", detail)
        station.audit.alarm("web_unavailable", detail)
        return None
    if token is None:
        log.warning("operator's page is read-only: no web.token_file")
    return server.start()


def install_signal_handlers(station: LineStation) -> None:
    def on_signal(signum, _frame) -> None:
        log.info("%s received", signal.Signals(signum).name)
        station.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_service(config: StationConfig, calibration: Calibration) -> None:
    started = time.monotonic()
    assembly = assemble(config, calibration, notifier=SystemdNotifier())
    install_signal_handlers(assembly.station)
    try:
        start(assembly, config)
    except CameraError as exc:
        raise StartupError(f"camera: {exc}") from None
    log.info("started in %.1f s", time.monotonic() - started)
    try:
        assembly.station.run()
    finally:
        assembly.close()
