"""`calibrate timing`: when the gate fires after the photo-eye, and when the camera sees the part.

The photo-eye sees a part's leading edge; the pusher must meet its centre.
The gate fires `pulse_ms / 2` before the centre arrives, so the pulse is
centred on the part and early and late errors are tolerated alike.

The camera delay (photo-eye to the frame that shows the part centred) is
measured with test parts: the Mega's PART time against the moment the
part's centre crosses the middle of the frame, interpolated between frames.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import numpy as np

from station.calibration import Calibration
from station.camera.feed import CameraFeed
from station.camera.frames import FrameBuffer, FrameSource
from station.config import VisionTriggerConfig
from station.link import messages as m
from station.link.session import MegaEvent, MegaSession
from station.vision.vision_trigger import LineCrossing


class MeasurementError(RuntimeError):
    """Too few test parts were seen to measure; says what was seen."""


def gate_offset_ms(distance_mm: float, part_mm: float, speed_mm_s: float, pulse_ms: int) -> int:
    """Photo-eye edge to the gate firing, in ms: the pulse centred on the part."""
    centre_ms = (distance_mm + part_mm / 2) / speed_mm_s * 1000
    return int(round(centre_ms - pulse_ms / 2))


def gate_offset_counts(
    distance_mm: float, part_mm: float, counts_per_mm: float, speed_mm_s: float, pulse_ms: int
) -> int:
    """The same in encoder counts: the belt travel to the part's centre, less half a pulse."""
    travel_mm = distance_mm + part_mm / 2 - pulse_ms / 2000 * speed_mm_s
    return int(round(travel_mm * counts_per_mm))


def measure_camera_delay(
    calibration: Calibration,
    port: str,
    make_source: Callable[[], FrameSource],
    direction: str,
    parts: int,
    timeout_s: float,
) -> list[float]:
    """Photo-eye to the part centred in the frame, in ms, for each test part seen."""
    frames = FrameBuffer(keep_s=5.0)
    feed = CameraFeed(make_source, frames)
    events: queue.Queue = queue.Queue()
    link = MegaSession(port, calibration.configure_message(), events=events)
    centre_line = VisionTriggerConfig(line_x_fraction=0.5, direction=direction)
    crossing = LineCrossing(centre_line, calibration.camera.min_part_area_px)
    feed.start()
    try:
        link.start()
        triggers = _part_times(link, events, parts, timeout_s)
        time.sleep(0.6)  # the last part reaches the camera
        return [d for t in triggers if (d := _centred_after(frames, crossing, t)) is not None]
    finally:
        link.close()
        feed.stop()


def _part_times(link: MegaSession, events: queue.Queue, parts: int, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    times: list[float] = []
    while len(times) < parts and time.monotonic() < deadline:
        try:
            notice = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if not isinstance(notice, MegaEvent):
            continue  # link up/down notices
        event = notice.message
        if isinstance(event, m.Part):
            synced = link.clock.to_host(event.mcu_time_ms)
            times.append(synced if synced is not None else time.monotonic())
            link.send_verdict(event.part_id, reject=False)  # a test part: let it pass
    return times


def _centred_after(frames: FrameBuffer, crossing: LineCrossing, trigger: float) -> float | None:
    """ms from `trigger` until a part's centre crosses the frame's middle, within 1 s."""
    previous_t, previous = None, []
    for frame in frames.wait_newer(trigger - 0.001, 0):
        if frame.timestamp > trigger + 1.0:
            break
        current = crossing.centres(frame.image)
        fraction = crossing.crossing(previous, current) if previous_t is not None else None
        if fraction is not None:
            crossed = previous_t + fraction * (frame.timestamp - previous_t)
            return (crossed - trigger) * 1000
        previous_t, previous = frame.timestamp, current
    return None


def summarise(delays_ms: list[float], wanted: int) -> float:
    if len(delays_ms) < max(1, wanted // 2):
        raise MeasurementError(
            f"only {len(delays_ms)} of {wanted} test parts were seen crossing the middle of "
            "the frame; check the camera view and that parts pass the photo-eye"
        )
    return float(np.median(delays_ms))
