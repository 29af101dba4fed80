#!/usr/bin/env python3
"""How dark the real pinholes the model misses are, next to the pits `station sensitivity` paints.

    .venv/bin/python tools/pinhole_contrast.py [--data ../shared/datasets/casting/train]

For every `real_defect` in station/training/label_review.yaml with a
`pit_at_px` (marked by eye, within about 3 px), finds the darkest pixel
within 3 px of the mark and prints it as a fraction of the median grey 4 to
7 px away from that pixel (the metal around it).
`station sensitivity` paints pits whose centre is at PIT_DARKNESS of the
metal; a real pinhole near 1.0 is one the eye finds by its shape, not by
its darkness. As a control, the same measure is taken on the same photo at
the same radius a quarter, half and three quarters of a turn away (clean
flange, as far as the review saw): the floor that grain and JPEG set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.dataset import load_grey  # noqa: E402
from station.same_casting import part_centre  # noqa: E402
from station.sensitivity import PIT_DARKNESS  # noqa: E402
from station.training.label_review import load_review  # noqa: E402

SEARCH, AROUND = 3.0, (4.0, 7.0)


def darkness(grey: np.ndarray, x: int, y: int) -> float:
    yy, xx = np.mgrid[: grey.shape[0], : grey.shape[1]]
    near = np.hypot(xx - x, yy - y) <= SEARCH
    darkest = np.argmin(np.where(near, grey, np.inf))
    r = np.hypot(xx - xx.flat[darkest], yy - yy.flat[darkest])
    metal = np.median(grey[(r >= AROUND[0]) & (r <= AROUND[1])])
    return float(grey.flat[darkest] / metal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    args = parser.parse_args()
    review = load_review(REPO / "station/training/label_review.yaml", args.data)
    values, controls = [], []
    for entry in review.reviews:
        if entry.decision != "real_defect" or entry.pit_at_px is None:
            continue
        x, y = entry.pit_at_px
        grey = load_grey(args.data / entry.file)
        value = darkness(grey.astype(np.float32), x, y)
        values.append(value)
        cx, cy = part_centre(grey)
        around = []
        for turn in (0.5 * np.pi, np.pi, 1.5 * np.pi):
            c, s = np.cos(turn), np.sin(turn)
            tx, ty = cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)
            around.append(darkness(grey.astype(np.float32), round(tx), round(ty)))
        controls.extend(around)
        print(
            f"{entry.file}: pit centre at {value:.2f} of the metal around it; "
            f"clean flange at the same radius: {', '.join(f'{a:.2f}' for a in around)}"
        )
    print(
        f"{len(values)} pinholes: median {np.median(values):.2f}, "
        f"darkest {min(values):.2f}, palest {max(values):.2f}; "
        f"painted pits: {PIT_DARKNESS:.2f}"
    )
    print(
        f"control, {len(controls)} clean flange spots: median {np.median(controls):.2f}, "
        f"darkest {min(controls):.2f}; spots at or below the median pinhole: "
        f"{sum(c <= np.median(values) for c in controls)}"
    )


if __name__ == "__main__":
    main()
