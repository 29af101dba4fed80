"""The parts `station run` is built from, each on real inputs: YAML files, images,
SQLite, a Unix datagram socket, an HTTP endpoint, systemd-analyze."""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from station.audit import AuditLog, ImageStore
from station.calibration import Calibration, CalibrationError
from station.camera.feed import CameraFeed
from station.camera.frames import BadFrame, CameraError, Frame, FrameBuffer
from station.camera.sources import ImageFolder, VideoFile
from station.config import ConfigError, load_station_config
from station.service.metrics import LineMetrics
from station.service.systemd_notify import SystemdNotifier
from station.vision.locate import MIN_CONTRAST, PartNotFound, locate_part, split_contrast

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "calibration" / "virtual-line.yaml"
STATION_YAML = REPO / "calibration" / "virtual-line.station.yaml"


# --- calibration and configuration ---------------------------------------------------


def test_shipped_virtual_line_files_load_and_checksum_matches():
    config, calibration = load_station_config(STATION_YAML)
    assert calibration.station == config.station == "virtual-line"
    stored = yaml.safe_load(CALIBRATION.read_text())["checksum"]
    assert int(str(stored), 0) == calibration.checksum()
    assert calibration.configure_message().calibration_crc == calibration.checksum()


def _edited_calibration(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(CALIBRATION.read_text())
    data.pop("checksum")
    edit(data)
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda d: d["servo"].update(pulse_ms=5000), "servo.pulse_ms"),
        (lambda d: d["servo"].pop("rest_us"), "servo.rest_us"),
        (lambda d: d["timing"].update(decision_lead=5000), "timing.decision_lead"),
        (lambda d: d["camera"].update(trigger_delay_ms=1200), "camera.trigger_delay_ms"),
        (lambda d: d["timing"].update(mode="encoder"), "timing.counts_per_mm"),
        (lambda d: d.update(colour="red"), "colour"),
    ],
)
def test_unsafe_or_missing_calibration_values_are_named(tmp_path, edit, named):
    path = _edited_calibration(tmp_path, edit)
    with pytest.raises(CalibrationError) as err:
        Calibration.load(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_hand_edited_calibration_fails_its_checksum(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(CALIBRATION.read_text().replace("pulse_ms: 80", "pulse_ms: 90"))
    with pytest.raises(CalibrationError, match="checksum"):
        Calibration.load(path)


def test_calibration_save_round_trips_and_keeps_a_backup(tmp_path):
    calibration = Calibration.load(CALIBRATION)
    path = tmp_path / "line.yaml"
    calibration.save(path)
    changed = calibration.model_copy(update={"threshold": 0.3})
    changed.save(path)
    assert Calibration.load(path).threshold == 0.3
    assert Calibration.load(path.with_suffix(".yaml.bak")) == calibration
    assert "# the maximum servo on-time" in path.read_text()


def test_station_config_errors_name_file_and_field(tmp_path):
    shutil.copy(CALIBRATION, tmp_path / "virtual-line.yaml")
    data = yaml.safe_load(STATION_YAML.read_text())
    data["camera"]["stall_timeout_s"] = -1
    bad = tmp_path / "station.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"station\.yaml: camera\.stall_timeout_s"):
        load_station_config(bad)
    data = yaml.safe_load(STATION_YAML.read_text())
    data["station"] = "line-7"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="calibration of station 'virtual-line'"):
        load_station_config(bad)
    bad.write_text("station: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_station_config(bad)


# --- locating the part ------------------------------------------------------------------


def _on_belt(image: np.ndarray, left: int, top: int, size=(360, 640)) -> np.ndarray:
    rng = np.random.default_rng(3)
    frame = rng.normal(32, 6, size=size).clip(0, 255).astype(np.uint8)
    h, w = image.shape
    frame[top : top + h, left : left + w] = image
    return frame


def test_locate_crops_each_sample_image_exactly(sample_images):
    for k, path in enumerate(sample_images):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        left, top = 20 + 27 * k, 20 + (k % 5) * 7
        where = locate_part(_on_belt(image, left, top), 300)
        assert (where.roi.x, where.roi.y) == (left, top), path.name


def test_locate_refuses_an_empty_belt_and_a_part_cut_by_the_edge(sample_images):
    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    with pytest.raises(PartNotFound, match="no part"):
        locate_part(_on_belt(image, 0, 0)[:, 320:][:, :10].repeat(64, axis=1), 300)
    with pytest.raises(PartNotFound, match="no part"):
        locate_part(_on_belt(np.full((1, 1), 30, np.uint8), 0, 0), 300)
    with pytest.raises(PartNotFound, match="cut by the frame edge"):
        locate_part(_on_belt(image[:, 100:], 0, 30), 300)


def test_split_contrast_is_numpys_difference_of_means_and_refuses_a_faint_part(sample_images):
    """The sums behind `split_contrast` give, to the last bit, what gathering each side's
    pixels by the mask gave; so a part just under MIN_CONTRAST is refused as before."""
    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    faint = _on_belt((image // 8 + 30).astype(np.uint8), 40, 20)
    contrasts = []
    for frame in (_on_belt(image, 40, 20), image, faint):
        small = cv2.GaussianBlur(frame, (5, 5), 0)
        _, mask = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        gathered = float(small[mask > 0].mean()) - float(small[mask == 0].mean())
        assert split_contrast(small, mask, cv2.countNonZero(mask)) == gathered
        contrasts.append(gathered)
    assert contrasts[0] > MIN_CONTRAST > contrasts[2]
    with pytest.raises(PartNotFound, match="no part"):
        locate_part(faint, 300)


def test_vision_trigger_times_the_crossing_between_frames(sample_images):
    """A part moving 40 px per frame crosses the middle line (320 px) between two frames;
    the crossing is timed by interpolation, not stamped with the later frame."""
    from station.config import VisionTriggerConfig
    from station.vision.vision_trigger import LineCrossing

    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    config = VisionTriggerConfig(line_x_fraction=0.5, camera_to_gate_ms=1000)
    trigger = LineCrossing(config, min_area_px=20000)
    # Centres at 290 and 330 px: 30 of the 40 px step are before the line.
    before = trigger.centres(_on_belt(image, 290 - 150, 30))
    after = trigger.centres(_on_belt(image, 330 - 150, 30))
    assert before == [pytest.approx(290 / 640)] and after == [pytest.approx(330 / 640)]
    assert trigger.crossing(before, after) == pytest.approx(0.75)
    assert trigger.crossing(after, after) is None  # already past: counted once
    assert trigger.crossing([], after) is None  # no earlier sighting: not a crossing


def test_the_witness_at_half_size_times_the_crossing_as_the_full_size_trigger(sample_images):
    """A photo-eye line's witness runs on every frame at half size (WITNESS_SCALE): its
    centres may be 2 px of 640 out, and its crossing times about as little."""
    from station.config import VisionTriggerConfig
    from station.vision.vision_trigger import WITNESS_SCALE, LineCrossing

    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    config = VisionTriggerConfig(line_x_fraction=0.5, camera_to_gate_ms=1000)
    full = LineCrossing(config, min_area_px=20000)
    half = LineCrossing(config, min_area_px=20000, scale=WITNESS_SCALE)
    assert half.min_area_px == 5000
    for left in range(100, 250, 7):
        frame = _on_belt(image, left, 30)
        (exact,), (seen,) = full.centres(frame), half.centres(frame)
        assert abs(seen - exact) <= 2 / 640, left
    before, after = _on_belt(image, 290 - 150, 30), _on_belt(image, 330 - 150, 30)
    step = half.crossing(half.centres(before), half.centres(after))
    assert step == pytest.approx(full.crossing(full.centres(before), full.centres(after)), abs=0.05)


def test_the_witness_times_parts_at_the_frame_centre_as_the_trigger_delay_is_measured():
    """`camera.trigger_delay_ms` is the photo-eye to the part centred in the frame
    (`calibrate timing`); a photo-eye line's witness crosses there, whatever line a vision
    line's trigger would use, and a vision line's trigger keeps its own line and full size."""
    import queue

    from station.camera.frames import FrameBuffer
    from station.vision.vision_trigger import WITNESS_SCALE, VisionTrigger

    config, calibration = load_station_config(STATION_YAML)
    line = config.vision_trigger.model_copy(update={"line_x_fraction": 0.3})
    witness = VisionTrigger(FrameBuffer(1.0), queue.Queue(), line, calibration, backup=True)
    trigger = VisionTrigger(FrameBuffer(1.0), queue.Queue(), line, calibration)
    assert (witness.crossings.config.line_x_fraction, witness.crossings.scale) == (
        0.5,
        WITNESS_SCALE,
    )
    assert (trigger.crossings.config.line_x_fraction, trigger.crossings.scale) == (0.3, 1.0)


def test_the_vision_trigger_survives_a_frame_it_cannot_look_at(sample_images):
    """Its thread is a vision line's only trigger and a photo-eye line's only witness of
    the parts the Mega cannot report: one bad frame is alarmed and skipped, not the end."""
    import queue

    from station.vision.vision_trigger import VisionTrigger

    config, calibration = load_station_config(STATION_YAML)
    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    frames, inbox, problems = FrameBuffer(5.0), queue.Queue(), []
    trigger = VisionTrigger(frames, inbox, config.vision_trigger, calibration)
    trigger.on_problem = lambda kind, detail: problems.append((kind, detail))
    trigger.start()
    try:
        t = time.monotonic()
        frames.push(Frame(np.zeros((0, 0), np.uint8), t - 0.016, 1, "test"))  # nothing there
        frames.push(Frame(np.zeros((0, 0), np.uint8), t, 4, "test"))  # again: not alarmed again
        frames.push(Frame(_on_belt(image, 290 - 150, 30), t + 0.016, 2, "test"))
        frames.push(Frame(_on_belt(image, 330 - 150, 30), t + 0.033, 3, "test"))
        sighting = inbox.get(timeout=2.0)
        assert trigger.progress_age_s(time.monotonic()) < 0.5
    finally:
        trigger.stop()
    assert sighting.trigger_time == pytest.approx(t + 0.016 + 0.75 * 0.017)
    ((kind, detail),) = problems
    assert kind == "vision_trigger_error" and "frame 1 could not be looked at" in detail
    assert trigger.progress_age_s(time.monotonic()) == 0.0, "stopped: nothing to watch"


# --- frames -------------------------------------------------------------------------------


def _frame(t: float, index: int = 0) -> Frame:
    return Frame(np.zeros((2, 2), np.uint8), t, index, "test")


def test_lag_watch_reports_a_frame_looked_at_late_once_per_period():
    from station.vision.vision_trigger import LagWatch

    watch = LagWatch(limit_s=0.25, every_s=10.0)
    assert watch.check(frame_time=100.0, now=100.25) is None  # at the limit: in time
    late = watch.check(frame_time=100.0, now=100.3)
    assert late is not None and late.lag_s == pytest.approx(0.3) and late.frame_time == 100.0
    assert watch.check(frame_time=101.0, now=109.0) is None  # reported 8.7 s ago
    assert watch.check(frame_time=109.0, now=110.3) is not None
    starting = LagWatch(limit_s=0.25, watching_from=50.0)
    assert starting.check(frame_time=48.0, now=50.01) is None  # buffered before the start
    assert starting.check(frame_time=50.0, now=50.3) is not None


def test_frame_spacing_compares_frames_a_dropped_frame_apart_but_not_across_a_gap():
    from station.vision.vision_trigger import FrameSpacing

    spacing = FrameSpacing()
    times = [k / 60 for k in range(20)]
    assert all(spacing.comparable(a, b) is None for a, b in zip(times, times[1:]))
    assert spacing.comparable(times[-1], times[-1] + 3 / 60) is None  # two frames dropped
    gap = spacing.comparable(times[-1], times[-1] + 0.2)
    assert gap is not None and gap.gap_s == pytest.approx(0.2)
    assert gap.limit_s == pytest.approx(0.1)  # 3 intervals of 1/60 s is under MIN_GAP_S
    slow = FrameSpacing()  # a 5 fps camera: 3 intervals
    for k in range(10):
        slow.comparable(k * 0.2, (k + 1) * 0.2)
    assert slow.comparable(2.0, 2.5) is None
    assert slow.comparable(2.5, 3.2).limit_s == pytest.approx(0.6)


def test_frame_spacing_is_not_blinded_by_frames_read_in_a_burst():
    """A reader that fell behind reads buffered frames a millisecond apart; learning its
    interval from them must not make every later frame a gap (the trigger would be blind)."""
    from station.vision.vision_trigger import FrameSpacing

    spacing = FrameSpacing()
    t = 0.0
    for _ in range(16):  # a burst: 16 frames read 1 ms apart
        assert spacing.comparable(t, t + 0.001) is None
        t += 0.001
    for _ in range(5):  # the camera's own pace again
        assert spacing.comparable(t, t + 1 / 60) is None
        t += 1 / 60


def test_vision_trigger_reads_no_crossing_across_a_gap_in_the_frames(sample_images):
    """The real trigger thread: a part short of the line, then after a 0.4 s gap a part
    past it. Compared, the two would make a crossing timed inside the gap; the trigger
    reports the gap instead. The same frames with no gap make one sighting."""
    from station.config import VisionTriggerConfig
    from station.vision.sighting import FrameGap, VisionSighting
    from station.vision.vision_trigger import VisionTrigger

    calibration = Calibration.load(CALIBRATION)
    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    config = VisionTriggerConfig(camera_to_gate_ms=1000)
    for gap_s, sightings, gaps in ((0.0, 1, 0), (0.4, 0, 1)):
        frames, inbox = FrameBuffer(), queue.Queue()
        trigger = VisionTrigger(frames, inbox, config, calibration)
        trigger.start()
        time.sleep(0.05)
        start = time.monotonic()
        lefts = [20 + 10 * k for k in range(8)] + [180]  # centres 170..240 px, then 330
        for k, left in enumerate(lefts):
            taken = start + k / 60 + (gap_s if k == len(lefts) - 1 else 0.0)
            frames.push(Frame(_on_belt(image, left, 30), taken, k, "test"))
        time.sleep(0.3)
        trigger.stop()
        said = list(inbox.queue)
        assert sum(isinstance(x, VisionSighting) for x in said) == sightings, (gap_s, said)
        assert sum(isinstance(x, FrameGap) for x in said) == gaps, (gap_s, said)


def test_vision_trigger_reports_when_it_falls_behind_its_camera(sample_images):
    """The real trigger thread on a real frame buffer: frames it is given half a second
    after they were taken are reported as VisionLag, once; frames in time are not, nor
    the frames buffered before it started."""
    from station.config import VisionTriggerConfig
    from station.vision.sighting import VisionLag
    from station.vision.vision_trigger import VisionTrigger

    calibration = Calibration.load(CALIBRATION)
    image = cv2.imread(str(sample_images[0]), cv2.IMREAD_GRAYSCALE)
    config = VisionTriggerConfig(camera_to_gate_ms=1000)  # reported beyond 250 ms
    for age_s, reported in ((0.0, 0), (0.5, 1)):
        frames, inbox = FrameBuffer(), queue.Queue()
        # buffered while the link's handshake ran: looked at late, but not behind the camera
        frames.push(Frame(_on_belt(image, 20, 30), time.monotonic() - 2.0, 0, "test"))
        trigger = VisionTrigger(frames, inbox, config, calibration)
        trigger.start()
        time.sleep(age_s + 0.05)  # the frames below were taken after the trigger started
        for k in range(1, 6):
            taken = time.monotonic() - age_s
            frames.push(Frame(_on_belt(image, 20 + 40 * k, 30), taken, k, "test"))
            time.sleep(0.05)
        trigger.stop()
        lags = [item for item in list(inbox.queue) if isinstance(item, VisionLag)]
        assert len(lags) == reported, (age_s, lags)
        assert all(lag.lag_s >= age_s for lag in lags)


def test_frame_buffer_gives_the_first_frame_after_and_refuses_a_late_one():
    buffer = FrameBuffer(keep_s=10)
    for k, t in enumerate([1.0, 1.02, 1.04, 2.0]):
        buffer.push(_frame(t, k))
    now = time.monotonic()
    assert buffer.wait_first_after(1.01, now, max_lag_s=0.05).index == 1
    assert buffer.wait_first_after(1.5, now, max_lag_s=0.05) is None  # camera gap: no frame
    assert buffer.wait_first_after(5.0, now + 0.05, max_lag_s=0.05) is None


def test_image_folder_names_each_bad_file_and_goes_on(damaged_folder):
    source = ImageFolder(damaged_folder)
    source.open()
    good, bad = 0, []
    while True:
        try:
            frame = source.read()
        except BadFrame as exc:
            bad.append(str(exc))
            continue
        if frame is None:
            break
        good += 1
        assert frame.meta["label"] in ("defective", "ok")
    assert good == 14  # 12 samples, the small one and the colour one decode
    assert len(bad) == 2 and any("truncated.jpeg" in b for b in bad)
    assert any("empty.jpeg" in b for b in bad)


def test_video_file_reads_frames_and_reports_truncation(tmp_path, sample_images):
    path = tmp_path / "belt.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (300, 300))
    for image_path in sample_images:
        writer.write(cv2.imread(str(image_path)))
    writer.release()
    source = VideoFile(path)
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == len(sample_images)
    assert frames[1].timestamp == pytest.approx(0.1)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    source = VideoFile(cut)
    with pytest.raises(CameraError, match="cut.avi"):
        source.open()
        while source.read() is not None:
            pass
    with pytest.raises(CameraError, match="not found"):
        VideoFile(tmp_path / "missing.avi").open()


class HangingSource:
    """A camera whose driver hangs after a few frames (the unit under test is the feed)."""

    opened = 0
    released_while_hung = 0

    def __init__(self, hang: threading.Event):
        self.name = "hanging camera"
        self.hang = hang
        self.sent = 0
        self.device_held = False
        self.released = threading.Event()

    def open(self) -> None:
        HangingSource.opened += 1
        self.device_held = True

    def read(self) -> Frame:
        if self.hang.is_set() and HangingSource.opened == 1:
            self.released.wait(60)  # a hung driver returns only once the device is closed
            raise CameraError("read interrupted: device closed")
        time.sleep(0.01)
        self.sent += 1
        return _frame(time.monotonic(), self.sent)

    def close(self) -> None:
        if self.hang.is_set() and not self.released.is_set() and self.device_held:
            HangingSource.released_while_hung += 1
        self.device_held = False
        self.released.set()


def test_camera_watchdog_replaces_a_hung_reader():
    hang = threading.Event()
    buffer = FrameBuffer()
    problems = []
    feed = CameraFeed(
        lambda: HangingSource(hang),
        buffer,
        stall_timeout_s=0.3,
        on_problem=lambda kind, detail: problems.append(kind),
    )
    feed.start()
    time.sleep(0.2)
    hang.set()
    time.sleep(0.9)
    try:
        assert problems == ["camera_stall"]
        assert HangingSource.released_while_hung == 1, "the stuck device was closed from outside"
        assert HangingSource.opened == 2
        assert (feed.stats.stalls, feed.stats.reopens) == (1, 1)
        assert feed.healthy() and buffer.latest().timestamp > time.monotonic() - 0.1
    finally:
        feed.stop()


class UnpluggedCamera:
    def __init__(self):
        self.name = "/dev/video7"

    def open(self) -> None:
        raise CameraError("/dev/video7: no such device")

    def read(self) -> Frame:
        raise AssertionError("never opened")

    def close(self) -> None:
        pass


def test_an_unplugged_camera_is_retried_with_back_off_each_attempt_alarmed():
    problems: list[tuple[str, str]] = []
    feed = CameraFeed(
        UnpluggedCamera,
        FrameBuffer(),
        stall_timeout_s=0.2,
        reopen_interval_s=0.05,
        max_backoff_s=0.2,
        on_problem=lambda kind, detail: problems.append((kind, detail)),
    )
    feed.start()
    time.sleep(0.7)
    feed.stop()
    waits = [float(d.split()[2]) for k, d in problems if k == "camera_reopen"]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.2], "doubling, capped"
    assert feed.stats.reopens == len(waits) >= 4
    assert sum(k == "camera_error" for k, _ in problems) == len(waits), "one per failed open"
    assert feed.progress_age_s(time.monotonic()) < 0.3, "retrying is progress for the watchdog"


# --- audit --------------------------------------------------------------------------------


def test_audit_rows_survive_reopening_and_epochs_continue(tmp_path):
    audit = AuditLog(tmp_path / "audit.sqlite", "model-x", 0x1234)
    uid = audit.new_part(audit.next_uid(), 1, 7, "photo_eye", 1000, time.monotonic())
    audit.update(uid, verdict="reject", failsafe_reason="no_frame", gate_action="fired")
    audit.close()
    again = AuditLog(tmp_path / "audit.sqlite", "model-x", 0x1234)
    row = again.db.execute("SELECT verdict, gate_action, calibration_crc FROM parts").fetchone()
    assert row == ("reject", "fired", "0x00001234")
    assert again.next_epoch() == 2
    assert again.next_uid() == uid + 1
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_image_store_removes_the_oldest_over_quota(tmp_path):
    store = ImageStore(tmp_path / "images", quota_mb=0.25)
    rng = np.random.default_rng(0)
    for k in range(8):
        store.save(f"d/{k:03d}.png", rng.integers(0, 255, (200, 200), dtype=np.uint8))
    store.close()
    left = sorted(p.name for p in (tmp_path / "images" / "d").glob("*.png"))
    assert store.used_bytes <= 0.25e6 and store.removed > 0
    assert left == [f"{k:03d}.png" for k in range(8 - len(left), 8)]


def test_image_store_sidecars_are_updated_and_leave_with_their_image(tmp_path):
    store = ImageStore(tmp_path / "rec", quota_mb=0.25)
    rng = np.random.default_rng(0)
    for k in range(8):
        image = rng.integers(0, 255, (200, 200), dtype=np.uint8)
        store.save(f"d/{k:03d}.png", image, {"uid": k, "gate_action": None})
        store.update_sidecar(f"d/{k:03d}.png", {"gate_action": "fired"})
    store.close()
    pngs = sorted(p.stem for p in (tmp_path / "rec" / "d").glob("*.png"))
    sidecars = sorted((tmp_path / "rec" / "d").glob("*.json"))
    assert [p.stem for p in sidecars] == pngs and len(pngs) < 8
    assert all(json.loads(p.read_text())["gate_action"] == "fired" for p in sidecars)
    reopened = ImageStore(tmp_path / "rec", quota_mb=0.25)  # the quota counts sidecars too
    assert reopened.used_bytes == sum(
        p.stat().st_size for p in (tmp_path / "rec").rglob("*") if p.is_file()
    )
    reopened.close()


# --- service integration ------------------------------------------------------------------


def test_sd_notify_datagrams_reach_the_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"})
    assert notifier.watchdog_s == 10
    notifier.ready("running")
    notifier.watchdog()
    assert sock.recv(100) == b"READY=1\nSTATUS=running"
    assert sock.recv(100) == b"WATCHDOG=1"
    SystemdNotifier({}).ready("nobody listening")  # outside systemd: a no-op


def test_metrics_endpoint_serves_the_counters():
    metrics = LineMetrics()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(f"127.0.0.1:{port}")
    try:
        metrics.part_triggered()
        metrics.verdict_sent(True, "no_frame", None, None)
        metrics.gated("fired", None)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    finally:
        metrics.close()
    text = body.decode()
    assert 'station_failsafe_rejects_total{reason="no_frame"} 1.0' in text
    assert 'station_parts_total{action="fired"} 1.0' in text
    assert "failsafe[no_frame=1]" in metrics.summary_line()


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (tools/setup installs the systemd package)")
    unit = (REPO / "systemd" / "station.service").read_text()
    station = REPO / ".venv" / "bin" / "station"
    assert "/opt/station/.venv/bin/station" in unit and station.exists()
    path = tmp_path / "station.service"
    path.write_text(unit.replace("/opt/station/.venv/bin/station", str(station)))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "SupplementaryGroups=dialout"):
        assert key in unit
    rule = (REPO / "systemd" / "99-reject-mega.rules").read_text()
    assert 'SYMLINK+="reject-mega"' in rule
    # Exposure 2.5 or lower (the scale is 0-10; --threshold counts tenths).
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=25", str(path)],
        capture_output=True,
        text=True,
    )
    assert security.returncode == 0, security.stdout[-2000:]
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) <= 2.5
