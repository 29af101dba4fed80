"""The virtual conveyor: labelled impellers on a moving belt, a camera, a photo-eye, a gate.

Parts are drawn from a folder of labelled images (def_front/ok_front) and
ride a belt at a set speed and spacing. The conveyor breaks the simulated
Mega's photo-eye when a part's leading edge reaches it, drives its encoder,
and renders what the camera sees at any instant (`VirtualCamera`). At the
gate it looks at the servo, not at any message: a part whose centre crosses
the pusher's strike zone while the servo is out goes to the reject bin,
otherwise it passes. That physical outcome, part by part, is the ledger the
virtual line is judged by.

Geometry (millimetres along the belt, 0 at the photo-eye, downstream
positive): the camera's optical axis is at `camera_x_mm`, the pusher at
`gate_x_mm`. A part's image is pasted unaltered (one dataset image is one
part as the camera sees it), so a correctly located crop is exactly the
image the model was evaluated on.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.camera.frames import Frame
from station.camera.sources import IMAGE_SUFFIXES, label_of
from station.config import VirtualLineConfig
from station.sim.mega_pty import SimulatedMega


@dataclass
class PartOnBelt:
    index: int
    file: str
    label: str
    image: np.ndarray
    eye_time: float
    """Monotonic s at which the leading edge reaches the photo-eye."""
    lateral_px: int = 0
    part_id: int | None = None
    mcu_trigger_ms: int | None = None
    servo_seen_out: bool = False
    fate: str | None = None  # "rejected" or "passed" once past the gate
    gate_time: float | None = None
    latch_late_ms: float = 0.0
    """How late this thread noticed the edge (the Mega latches the true edge time)."""
    polled_fate: str | None = None
    """What polling the servo from this thread saw (the fate is exact: `exact_fates`)."""


def load_parts(folder: Path, count: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """`count` labelled images from `folder`, shuffled (cycled if the folder holds fewer)."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and label_of(p)
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no labelled images under def_front/ or ok_front/")
    order = np.random.default_rng(seed).permutation(len(files))
    cache: dict[Path, np.ndarray] = {}
    parts = []
    for k in range(count):
        path = files[order[k % len(files)]]
        if path not in cache:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise ValueError(f"{path}: not a readable image")
            cache[path] = image
        parts.append((str(path.relative_to(folder)), label_of(path), cache[path]))
    return parts


class VirtualConveyor:
    def __init__(self, config: VirtualLineConfig, mega: SimulatedMega | None, parts: int):
        self.config = config
        self.mega = mega
        self.rng = np.random.default_rng(config.shuffle_seed)
        self.items = load_parts(config.parts_from, parts, config.shuffle_seed)
        self.parts: list[PartOnBelt] = []
        self.start_time = 0.0
        self.camera_stalled_until = 0.0
        self._eye_misses = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._eye_times: list[float] = []
        self._belt = self._belt_texture()

    # --- geometry ----------------------------------------------------------------

    def strike_window(self, part: PartOnBelt) -> tuple[float, float]:
        """When the part's centre is within the pusher's strike zone (belt seconds)."""
        half = self.config.strike_zone_mm / 2
        return (
            self.time_centred_at(part, self.config.gate_x_mm - half),
            self.time_centred_at(part, self.config.gate_x_mm + half),
        )

    def part_length_mm(self, part: PartOnBelt) -> float:
        return part.image.shape[1] / self.config.px_per_mm

    def centre_mm(self, part: PartOnBelt, now: float) -> float:
        lead = (now - part.eye_time) * self.config.belt_speed_mm_s
        return lead - self.part_length_mm(part) / 2

    def time_centred_at(self, part: PartOnBelt, x_mm: float) -> float:
        """When the part's centre is at `x_mm` along the belt."""
        return part.eye_time + (x_mm + self.part_length_mm(part) / 2) / self.config.belt_speed_mm_s

    @property
    def parts_per_s(self) -> float:
        return self.config.belt_speed_mm_s / self.config.pitch_mm

    # --- life cycle --------------------------------------------------------------

    def start(self, lead_in_s: float = 0.5) -> None:
        """Lay the parts out on the belt, the first reaching the eye after `lead_in_s`."""
        self.lay_out(time.monotonic(), lead_in_s)
        self._thread = threading.Thread(target=self._run, name="conveyor", daemon=True)
        self._thread.start()

    def lay_out(self, start_time: float, lead_in_s: float, whole_ms: bool = False) -> None:
        """Place every part: eye times from `start_time + lead_in_s`, spaced by the pitch.

        `whole_ms`: eye times on whole milliseconds (the stepped line's clock)."""
        c = self.config
        self.start_time = start_time
        t = start_time + lead_in_s
        for k, (file, label, image) in enumerate(self.items):
            lateral = int(self.rng.integers(-8, 9))
            eye = round(t, 3) if whole_ms else t
            self.parts.append(PartOnBelt(k, file, label, image, eye, lateral))
            gap = c.pitch_mm * (1 + self.rng.uniform(-c.pitch_jitter, c.pitch_jitter))
            t += gap / c.belt_speed_mm_s
        self._eye_times = [p.eye_time for p in self.parts]

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)

    def stall_camera(self, seconds: float) -> None:
        """Fault: the camera's driver hangs; reads block until it recovers."""
        self.camera_stalled_until = time.monotonic() + seconds

    def miss_next_part(self) -> None:
        """Fault: the photo-eye misses the next part (dust on its reflector): the Mega never
        hears of it, and only the camera sees it."""
        with self._lock:
            self._eye_misses += 1

    def _eye_missed(self) -> bool:
        with self._lock:
            missed, self._eye_misses = self._eye_misses > 0, max(0, self._eye_misses - 1)
        return missed

    def _run(self) -> None:
        c = self.config
        next_eye = 0
        on_belt: list[PartOnBelt] = []
        while not self._stop.is_set():
            now = time.monotonic()
            self.mega.set_encoder(
                int((now - self.start_time) * c.belt_speed_mm_s * c.counts_per_mm)
            )
            while next_eye < len(self.parts) and self.parts[next_eye].eye_time <= now:
                part = self.parts[next_eye]
                if c.photo_eye and not self._eye_missed():
                    with self.mega.lock:
                        part.part_id = self.mega.photo_eye(at=part.eye_time)
                        part.mcu_trigger_ms = self.mega.last_trigger_ms
                    part.latch_late_ms = (now - part.eye_time) * 1000
                on_belt.append(part)
                next_eye += 1
            self._run_gate(on_belt, now)
            on_belt = [p for p in on_belt if p.fate is None]
            if next_eye == len(self.parts) and not on_belt:
                self.finished.set()
                return
            time.sleep(0.0005)

    def _run_gate(self, on_belt: list[PartOnBelt], now: float) -> None:
        half_zone = self.config.strike_zone_mm / 2
        for part in on_belt:
            offset = self.centre_mm(part, now) - self.config.gate_x_mm
            if -half_zone <= offset <= half_zone and self.mega.servo_out():
                part.servo_seen_out = True
            if offset > half_zone:
                part.fate = part.polled_fate = "rejected" if part.servo_seen_out else "passed"
                part.gate_time = now

    def exact_fates(self) -> None:
        """Each part's fate from the Mega's servo log, not from polling it.

        The pusher diverts a part iff a pulse (out at start_ms, back at end_ms on the
        Mega's clock, cut short where a reset cut it) overlaps the interval in which
        the part's centre is inside the strike zone. Polling the servo from a Python
        thread every ~0.5 ms can miss what happened while that thread was not running.
        """
        assert self.mega is not None
        clock = self.mega.clock
        pulses = [
            (clock.monotonic_at(p.start_ms), clock.monotonic_at(p.end_ms))
            for p in self.mega.all_pulses()
        ]
        for part in self.parts:
            if part.fate is None:
                continue
            lo, hi = self.strike_window(part)
            hit = any(start <= hi and end > lo for start, end in pulses)
            part.fate = "rejected" if hit else "passed"

    # --- what the camera sees ------------------------------------------------------

    def _belt_texture(self) -> np.ndarray:
        c = self.config
        rng = np.random.default_rng(7)
        period = c.frame_width * 2
        texture = rng.normal(32, 6, size=(c.frame_height, period)).clip(0, 255)
        return cv2.GaussianBlur(texture.astype(np.uint8), (3, 3), 0)

    def render(self, now: float) -> np.ndarray:
        c = self.config
        travel_px = int((now - self.start_time) * c.belt_speed_mm_s * c.px_per_mm)
        shift = travel_px % self._belt.shape[1]
        frame = np.roll(self._belt, shift, axis=1)[:, : c.frame_width].copy()
        for part in self.parts_in_view(now):
            centre_px = (self.centre_mm(part, now) - c.camera_x_mm) * c.px_per_mm
            h, w = part.image.shape
            left = int(round(c.frame_width / 2 + centre_px - w / 2))
            top = (c.frame_height - h) // 2 + part.lateral_px
            if left >= c.frame_width or left + w <= 0:
                continue
            x0, x1 = max(left, 0), min(left + w, c.frame_width)
            y0, y1 = max(top, 0), min(top + h, c.frame_height)
            frame[y0:y1, x0:x1] = part.image[y0 - top : y1 - top, x0 - left : x1 - left]
        return frame

    def parts_in_view(self, now: float) -> list[PartOnBelt]:
        """Parts that may overlap the frame (the list is sorted by eye time)."""
        c = self.config
        reach_mm = c.frame_width / c.px_per_mm  # generous: half a frame plus a part or two
        first = bisect.bisect_left(
            self._eye_times, now - (c.camera_x_mm + reach_mm) / c.belt_speed_mm_s
        )
        last = bisect.bisect_right(
            self._eye_times, now - (c.camera_x_mm - reach_mm) / c.belt_speed_mm_s
        )
        return self.parts[first:last]


class VirtualCamera:
    """A FrameSource that films the virtual conveyor at its frame rate."""

    def __init__(self, conveyor: VirtualConveyor):
        self.conveyor = conveyor
        self.name = "virtual camera"
        self._period = 1.0 / conveyor.config.fps
        self._index = 0
        self._next = 0.0

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self) -> Frame | None:
        stalled = self.conveyor.camera_stalled_until - time.monotonic()
        if stalled > 0:
            time.sleep(stalled)  # a hung driver: the read does not return
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        self._next = max(self._next + self._period, now)
        self._index += 1
        return Frame(self.conveyor.render(now), now, self._index, self.name)

    def close(self) -> None:
        pass
