"""How small a pinhole the model catches: synthetic dark pits on held-out OK castings.

The most common casting defect is an isolated pinhole or pit. For each
held-out OK photo and each pit diameter (2, 3, 4, 6 and 8 px in the 300 px
frame), one dark round pit with a soft edge, its centre at 30% of the
metal's brightness, is painted at a random place on the flange ring (the
flat annulus between the casting's outer rim and its inner groove, as
`station.classifier.flange` finds it); the detection rate is the share of
painted photos the model rejects at its threshold. The same photos unpainted give the
baseline (how many it rejects anyway). Seeded: the same model and photos
give the same table, so `station train` reproduces what the card says.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.classifier.flange import FLANGE, rim_circle

PIT_SIZES_PX = (2, 3, 4, 6, 8)
PIT_DARKNESS = 0.3
"""The pit's centre, as a fraction of the metal's brightness around it."""
SEED = 20261124


@dataclass(frozen=True)
class PitSensitivity:
    threshold: float
    images: int
    baseline_rejected: float
    """Share of the same OK photos rejected with no pit painted."""
    detection: dict[int, float]
    """Pit diameter (px, in the 300 px frame) -> share of painted photos rejected."""
    darkness: float = PIT_DARKNESS
    """The pits' centre as a fraction of the metal's brightness (PIT_DARKNESS unless asked)."""
    examples: dict[int, list[tuple[np.ndarray, tuple[int, int], float]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """A few painted photos per size: (image, pit centre, score), for the picture."""

    def card_entry(self) -> dict[str, float | int | str]:
        entry: dict[str, float | int | str] = {
            "method": f"one dark round pit (centre at {self.darkness:.0%} brightness, soft edge) "
            "at a random place on the flange ring of each held-out OK photo",
            "images": self.images,
            "baseline_rejected": round(self.baseline_rejected, 4),
        }
        entry.update({f"detected_{d}px": round(r, 4) for d, r in self.detection.items()})
        return entry


def paint_pit(
    grey: np.ndarray,
    diameter_px: float,
    rng: np.random.Generator,
    darkness: float = PIT_DARKNESS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """A copy of `grey` with one soft-edged dark pit on the flange ring; and its centre."""
    height, width = grey.shape
    scale = min(height, width) / 300  # sizes are given for the 300 px frame
    radius = diameter_px * scale / 2
    rim = rim_circle(grey)
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(FLANGE[0] * rim.radius + radius, FLANGE[1] * rim.radius - radius)
    px, py = rim.x + distance * np.cos(angle), rim.y + distance * np.sin(angle)
    ys, xs = np.mgrid[0:height, 0:width]
    dist = np.hypot(xs - px, ys - py)
    alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)  # anti-aliased disc
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=0.6 * scale)  # a soft edge...
    alpha /= alpha.max()  # ...and the centre still at `darkness`, however small the pit
    out = grey.astype(np.float32) * (1 - (1 - darkness) * alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), (int(round(px)), int(round(py)))


def pit_sensitivity(
    score: Callable[[np.ndarray], float],
    ok_images: list[np.ndarray],
    threshold: float,
    sizes: tuple[int, ...] = PIT_SIZES_PX,
    seed: int = SEED,
    examples: int = 4,
    darkness: float = PIT_DARKNESS,
) -> PitSensitivity:
    """Detection rate per pit size at `threshold`, over `ok_images` (held-out OK photos).

    `darkness` below PIT_DARKNESS's 0.3 paints blacker pits; the pinholes the
    model misses in the training photos are near 0.86 (tools/pinhole_contrast.py).
    """
    if not ok_images:
        raise ValueError("no OK images to paint pits on")
    if not 0.0 < darkness < 1.0:
        raise ValueError(f"pit darkness must be between 0 and 1 (exclusive), not {darkness}")
    rng = np.random.default_rng(seed)
    baseline = np.mean([score(image) >= threshold for image in ok_images])
    detection: dict[int, float] = {}
    kept: dict[int, list] = {}
    for size in sizes:
        hits = []
        kept[size] = []
        for image in ok_images:
            painted, centre = paint_pit(image, size, rng, darkness)
            s = score(painted)
            hits.append(s >= threshold)
            if len(kept[size]) < examples:
                kept[size].append((painted, centre, s))
        detection[size] = float(np.mean(hits))
    return PitSensitivity(threshold, len(ok_images), float(baseline), detection, darkness, kept)


def held_out_ok_images(model_dir: Path, data_dir: Path) -> list[Path]:
    """The OK photos the model never trained on: those its validation_scores.csv lists
    that exist under `data_dir`; if it lists none there (a folder of new photos), every
    image under `data_dir/ok_front`."""
    listed = Path(model_dir) / "validation_scores.csv"
    if listed.is_file():
        with listed.open() as f:
            names = [row["file"] for row in csv.DictReader(f) if row["label"] == "0"]
        found = [Path(data_dir) / n for n in names if (Path(data_dir) / n).is_file()]
        if found:
            return found
    return sorted(p for p in (Path(data_dir) / "ok_front").glob("*") if p.is_file())
