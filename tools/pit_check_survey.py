#!/usr/bin/env python3
"""The pit check over a whole labelled folder: good flanges, painted pits, defective photos.

    .venv/bin/python tools/pit_check_survey.py [--data ../shared/datasets/casting/train]
        [--out /tmp/pit-survey] [--every N]

For every OK photo the label review keeps (the 111 doubted ones are left
out, as training leaves them out): the darkest flange spot as it is, and
with one pit painted by `station sensitivity`'s painter at 2, 3, 4, 6 and 8
px, at 30% of the metal's brightness (the issue's pits) and at 86% (as faint
as the reviewed pinholes). For every defective photo and every doubted
one: the darkest spot and where. Then, for a few cuts around the card's,
how many good photos the check alone would reject and how many pits it
finds. About 3 minutes on 2 cores; `--every 4` takes every 4th photo.
Writes `ok.csv` and `defective.csv` (the ratios) to `--out`.

The check has one setting, the cut, and this is the measure it was set on
(station.classifier.pit_check.PIT_CUT): the lowest good photo, and how far
below it the painted pits fall.
"""

from __future__ import annotations

import argparse
import csv
import sys
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.classifier.pit_check import PIT_CUT, find_darkest_pit  # noqa: E402
from station.dataset import load_grey  # noqa: E402
from station.sensitivity import PIT_SIZES_PX, paint_pit  # noqa: E402
from station.training.label_review import load_review  # noqa: E402

DARKNESSES = (0.3, 0.86)


def good_photo(path: Path) -> list[float]:
    """The darkest spot as it is, then with each painted pit (darkness, then size)."""
    grey = load_grey(path)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    row = [find_darkest_pit(grey).ratio]
    for darkness in DARKNESSES:
        for size in PIT_SIZES_PX:
            row.append(find_darkest_pit(paint_pit(grey, size, rng, darkness)[0]).ratio)
    return row


def any_photo(path: Path) -> tuple[float, int, int]:
    found = find_darkest_pit(load_grey(path))
    return found.ratio, found.x, found.y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pit-survey"))
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    review = load_review(REPO / "station/training/label_review.yaml", args.data)
    doubted = sorted(e.file for e in review.reviews if e.decision == "doubtful_label")
    good = [
        p
        for p in sorted((args.data / "ok_front").glob("*.jpeg"))
        if f"ok_front/{p.name}" not in doubted
    ][:: args.every]
    others = sorted((args.data / "def_front").glob("*.jpeg"))[:: args.every]
    others += [args.data / f for f in doubted]
    with Pool(2) as pool:
        good_rows = np.array(pool.map(good_photo, good, chunksize=16))
        other_rows = pool.map(any_photo, others, chunksize=32)
    args.out.mkdir(parents=True, exist_ok=True)
    columns = [f"pit_{round(d * 100)}_{s}px" for d in DARKNESSES for s in PIT_SIZES_PX]
    with (args.out / "ok.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "ratio", *columns])
        for path, row in zip(good, good_rows):
            writer.writerow([f"ok_front/{path.name}", *(f"{v:.4f}" for v in row)])
    with (args.out / "defective.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "ratio", "x", "y"])
        for path, (ratio, x, y) in zip(others, other_rows):
            writer.writerow([path.relative_to(args.data).as_posix(), f"{ratio:.4f}", x, y])
    plain = good_rows[:, 0]
    defective = np.array([r[0] for p, r in zip(others, other_rows) if p.parent.name == "def_front"])
    doubted_ratios = np.array(
        [r[0] for p, r in zip(others, other_rows) if p.parent.name != "def_front"]
    )
    print(
        f"{len(good)} good photos: darkest flange spot {plain.min():.3f} "
        f"(median {np.median(plain):.3f}); {len(defective)} defective, "
        f"{len(doubted_ratios)} doubted; card's cut {PIT_CUT}"
    )
    for cut in sorted({0.8, 0.82, 0.84, 0.86, PIT_CUT}):
        print(
            f"cut {cut:.2f}: good photos rejected {int((plain < cut).sum())}, "
            f"defective photos with a pit {(defective < cut).mean():.1%}, "
            f"doubted {int((doubted_ratios < cut).sum())}"
        )
        for k, darkness in enumerate(DARKNESSES):
            found = [
                f"{size} px {(good_rows[:, 1 + 5 * k + j] < cut).mean():.1%}"
                for j, size in enumerate(PIT_SIZES_PX)
            ]
            print(f"    painted at {darkness:.0%}: " + ", ".join(found))
    print(f"ratios in {args.out}/ok.csv and defective.csv")


if __name__ == "__main__":
    main()
