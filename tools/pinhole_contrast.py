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

Then the question a pinhole detector faces: is the pinhole the darkest
spot of the whole flange, and do good castings have spots as dark? Over
the flange (between the groove and the rim, each found per degree of turn,
3 px clear of both), each pixel (lightly smoothed) against the median of
its 9x9 neighbourhood; the minimum per photo, for the reviewed photos and
for every 4th good photo of the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.classifier.flange import part_centre  # noqa: E402
from station.dataset import load_grey  # noqa: E402
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


def flange_mask(grey: np.ndarray, clear_px: int = 3) -> np.ndarray:
    """The flange: inside the rim, outside the groove, both found per half degree.

    Both are dark circles in the black top-hat (a 9 px closing less the
    photo): the rim is the strongest such circle 95 to 150 px out, the groove
    the outermost circle at least 15 px inside the rim that reaches a third
    of the rim's strength.
    """
    f = grey.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    closed = cv2.morphologyEx(f, cv2.MORPH_CLOSE, kernel)
    tophat = (closed - f) / (closed + 1)
    cx, cy = part_centre(grey)
    # WARP_FILL_OUTLIERS: without it, points past the frame's edge keep uninitialised memory.
    polar = cv2.warpPolar(
        tophat, (160, 720), (cx, cy), 160, cv2.WARP_POLAR_LINEAR | cv2.WARP_FILL_OUTLIERS
    )
    profile = np.median(polar, axis=0)
    rim = 95 + int(np.argmax(profile[95:150]))
    inside = np.nonzero(profile[50 : rim - 15] > 0.35 * profile[rim])[0]
    groove = 50 + int(inside.max()) if len(inside) else int(rim * 0.62)

    def per_angle(radius: int) -> np.ndarray:
        found = radius - 10 + np.argmax(polar[:, radius - 10 : radius + 11], axis=1)
        return np.array(
            [np.median(np.take(found, range(k - 8, k + 9), mode="wrap")) for k in range(720)]
        )

    yy, xx = np.mgrid[: grey.shape[0], : grey.shape[1]]
    angle = (np.degrees(np.arctan2(yy - cy, xx - cx)) % 360 * 2).astype(int) % 720
    r = np.hypot(xx - cx, yy - cy)
    return (r > per_angle(groove)[angle] + clear_px + 2) & (r < per_angle(rim)[angle] - clear_px)


def darkest_on_flange(grey: np.ndarray) -> tuple[float, tuple[int, int]]:
    """(darkest pixel against its 9x9 median, its x, y) over the flange."""
    ratio = cv2.GaussianBlur(grey.astype(np.float32), (3, 3), 0.7) / (cv2.medianBlur(grey, 9) + 1.0)
    ratio[~flange_mask(grey)] = np.inf
    k = int(np.argmin(ratio))
    return float(ratio.flat[k]), (k % grey.shape[1], k // grey.shape[1])


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
    pinholes = []
    for entry in review.reviews:
        if entry.decision == "real_defect" and entry.pit_at_px is not None:
            value, (x, y) = darkest_on_flange(load_grey(args.data / entry.file))
            mx, my = entry.pit_at_px
            pinholes.append((value, np.hypot(x - mx, y - my) < 5))
    good = sorted((args.data / "ok_front").glob("*.jpeg"))[::4]
    good_values = np.array([darkest_on_flange(load_grey(p))[0] for p in good])
    pit_values = np.array([v for v, _ in pinholes])
    print(
        f"whole flange: the reviewed photos' darkest spot is the pinhole on "
        f"{sum(at for _, at in pinholes)} of {len(pinholes)} (ratio {pit_values.min():.3f} to "
        f"{pit_values.max():.3f}); {len(good)} good photos: median {np.median(good_values):.3f}, "
        f"{np.mean(good_values <= pit_values.max()):.0%} have a spot as dark as the palest "
        f"pinhole, {np.mean(good_values <= np.median(pit_values)):.0%} as the median one"
    )


if __name__ == "__main__":
    main()
