#!/usr/bin/env python3
"""Whether two pit-check measures taken at the same spot find the faint pinholes: a trial.

    .venv/bin/python tools/pit_joint_trial.py [--data ../shared/datasets/casting/train]

The pit check passes three of the 16 reviewed pinholes (`cast_def_0_3047`,
`_7847`, `_8041`): each of its measures reads them inside the good photos'
range. Its measures are taken at different spots of a flange: the sharpest
dip at one, the darkest spot at another. A pinhole is all of them at one
spot. So this takes the 64 sharpest flange dips of each photo, exactly as
`find_pit` finds them, and at each one its dip, how far it stands above the
dips on the ring round it (the isolated dip's measure) and its darkness
against its rings (the darkness measure's), and scores the photo by the
strongest spot under each way of combining them. Each combination's cut is
set as the card's are, 5% past the worst of the 2,764 reviewed good photos;
then: the reviewed pinholes, the three faint ones, the 111 doubted photos of
the pinhole casting, and pits painted at 86% of the metal's brightness (as
faint as the pinholes) on the good photos, per size. About 2 minutes on 2
cores.
"""

from __future__ import annotations

import argparse
import zlib
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

from station.classifier import pit_check
from station.classifier.flange import long_edges, rim_circle
from station.dataset import load_grey
from station.sensitivity import paint_pit
from station.training.label_review import REVIEW_FILE, load_review

REPO = Path(__file__).resolve().parent.parent
SPOTS = 64
FAINT = ("cast_def_0_3047", "cast_def_0_7847", "cast_def_0_8041")
PAINTED_SIZES_PX = (2, 3, 4, 6, 8)
PAINTED_DARKNESS = 0.86
MARGIN = 0.05
COMBINATIONS = {
    "isolation (the card's measure)": lambda dip, alone, dark: alone,
    "dip (the card's measure)": lambda dip, alone, dark: dip,
    "isolation + 0.5 x darkness": lambda dip, alone, dark: alone + 0.5 * dark,
    "isolation + darkness": lambda dip, alone, dark: alone + dark,
    "isolation + 2 x darkness": lambda dip, alone, dark: alone + 2 * dark,
    "dip + 0.5 x darkness": lambda dip, alone, dark: dip + 0.5 * dark,
    "isolation x darkness": lambda dip, alone, dark: alone * dark,
    "isolation + dip": lambda dip, alone, dark: alone + dip,
    "isolation + dip + darkness": lambda dip, alone, dark: alone + dip + dark,
}
"""How a spot's three measures make one (darkness: 1 less its ratio to the ring, so that
darker is higher, as the dips are)."""


def spot_measures(grey: np.ndarray) -> np.ndarray:
    """(dip, isolation, darkness) of each of the SPOTS sharpest flange dips, the flange and
    the dips as `find_pit` finds them; no rows where there is no flange."""
    edges = long_edges(grey)
    flange = pit_check.flange_pixels(grey, edges, rim_circle(grey, edges))
    height, width = grey.shape
    reach = pit_check.ISOLATION_RING_PX[1]
    ys, xs = np.divmod(flange, width)
    flange = flange[(ys >= reach) & (ys < height - reach) & (xs >= reach) & (xs < width - reach)]
    if not len(flange):
        return np.zeros((0, 3))
    pixels = grey.astype(np.float32)
    field = pit_check._DipField.of(grey, pixels)
    dips = field.at(flange)
    spots = flange[np.argsort(-dips)[:SPOTS]]
    dip = field.at(spots)
    ring = pit_check.ISOLATION_RING[:, :1] * width + pit_check.ISOLATION_RING[:, 1:]
    alone = dip - field.at(spots[None, :] + ring).max(axis=0)
    ratio = pit_check.ring_ratios(cv2.GaussianBlur(pixels, (0, 0), 0.7), spots)
    return np.stack([dip, alone, 1.0 - ratio], axis=1)


def _photo(job: tuple[Path, bool]) -> list[np.ndarray]:
    """The spots of a photo as it is, then with each painted pit if `painted`."""
    path, painted = job
    grey = load_grey(path)
    out = [spot_measures(grey)]
    if painted:
        rng = np.random.default_rng(zlib.crc32(path.name.encode()))
        for size in PAINTED_SIZES_PX:
            out.append(spot_measures(paint_pit(grey, size, rng, PAINTED_DARKNESS)[0]))
    return out


def _strongest(spots: np.ndarray, combine) -> float:
    return float(combine(*spots.T).max()) if len(spots) else -np.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    review = load_review(REVIEW_FILE, args.data)
    doubted = sorted(e.file for e in review.reviews if e.decision == "doubtful_label")
    pinholes = sorted(e.file for e in review.reviews if e.decision == "real_defect")
    good = [
        p
        for p in sorted((args.data / "ok_front").glob("*.jpeg"))
        if f"ok_front/{p.name}" not in doubted
    ]
    jobs = [(p, True) for p in good] + [(args.data / f, False) for f in pinholes + doubted]
    with Pool(2) as pool:
        measured = pool.map(_photo, jobs, chunksize=16)
    good_spots, other = measured[: len(good)], measured[len(good) :]
    pinhole_spots, doubted_spots = other[: len(pinholes)], other[len(pinholes) :]
    faint = [i for i, f in enumerate(pinholes) if Path(f).stem in FAINT]
    print(
        f"{len(good)} good photos, {len(pinholes)} reviewed pinholes ({len(faint)} faint), "
        f"{len(doubted)} doubted; cut {MARGIN:.0%} past the worst good photo"
    )
    for name, combine in COMBINATIONS.items():
        worst = max(_strongest(s[0], combine) for s in good_spots)
        cut = worst + MARGIN * abs(worst)
        found = [_strongest(s[0], combine) > cut for s in pinhole_spots]
        faint_values = ", ".join(f"{_strongest(pinhole_spots[i][0], combine):.4f}" for i in faint)
        painted = []
        for k, size in enumerate(PAINTED_SIZES_PX, start=1):
            share = np.mean([_strongest(s[k], combine) > cut for s in good_spots])
            painted.append(f"{size} px {share:.0%}")
        print(
            f"{name}: worst good {worst:.4f}, cut {cut:.4f}; pinholes {sum(found)} of "
            f"{len(found)}, the faint ones {faint_values}; doubted "
            f"{sum(_strongest(s[0], combine) > cut for s in doubted_spots)}; painted at "
            f"{PAINTED_DARKNESS:.0%}: {', '.join(painted)}"
        )


if __name__ == "__main__":
    main()
