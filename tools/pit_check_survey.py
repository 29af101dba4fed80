#!/usr/bin/env python3
"""The pit check over a whole labelled folder: good parts, painted pits, real pinholes, chips.

    .venv/bin/python tools/pit_check_survey.py [--data ../shared/datasets/casting/train]
        [--out /tmp/pit-survey] [--every N] [--castings castings.csv] [--oof oof.csv]

For every OK photo the label review keeps (the 111 doubted ones are left
out, as training leaves them out): the five findings as it is (the flange's
darkest spot, sharpest dip, darkest round spot and most isolated dip, the
face's darkest notch), and with one pit painted by `station sensitivity`'s painter at
2, 3, 4, 6 and 8 px, at 30% of the metal's brightness (the issue's pits) and
at 86% (as faint as the reviewed pinholes). For every defective photo and
every doubted one: the five findings. Then, at the card's cuts
(station.classifier.pit_check.CARD_SETTINGS): how many good photos the check
alone rejects, how many painted pits and reviewed pinholes it finds.

`--castings` (OUT/castings.csv of tools/castings.py: file, label, casting)
adds the figure for castings the cuts were not set on: each good casting in
turn is left out, each cut is set at the card's margin from the worst of
the other castings' photos, and the left-out casting's photos past any of
them are counted. The cuts were set on all 23 good castings at once; this says what
that rule does to a casting it has not seen.

`--oof` (the card's cv_oof_scores.csv) adds the defective photos the fold
networks passed out of fold, and how many of them the cuts catch.

About 3 minutes on 2 cores; `--every 4` takes every 4th photo. Writes
`ok.csv` and `other.csv` (the findings) to `--out`. The cuts were set on
this measure.
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

from station.classifier.pit_check import CARD_SETTINGS, find_pit  # noqa: E402
from station.dataset import load_grey  # noqa: E402
from station.sensitivity import PIT_SIZES_PX, paint_pit  # noqa: E402
from station.training.label_review import load_review  # noqa: E402

DARKNESSES = (0.3, 0.86)
CUTS = np.array(
    [
        CARD_SETTINGS.darkness_cut,
        CARD_SETTINGS.dip_cut,
        CARD_SETTINGS.round_darkness_cut,
        CARD_SETTINGS.isolated_dip_cut,
        CARD_SETTINGS.notch_cut,
    ]
)
MEASURES = ("darkness", "dip", "round", "isolated", "notch")
PAST = (np.less, np.greater, np.less, np.greater, np.less)
"""How each finding is past its cut: darker (lower), sharper (higher), darker, standing
higher, darker."""
DARKER = [m for m, beyond in enumerate(PAST) if beyond is np.less]
SHARPER = [m for m, beyond in enumerate(PAST) if beyond is np.greater]
NOTCH = MEASURES.index("notch")


def findings(grey: np.ndarray) -> tuple[float, ...]:
    pit = find_pit(grey)
    return (
        pit.darkest.value,
        pit.sharpest.value,
        pit.darkest_round.value,
        pit.isolated.value,
        pit.notch.value,
    )


def good_photo(path: Path) -> list[float]:
    """The findings as it is, then with each painted pit (darkness, then size)."""
    grey = load_grey(path)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    row = list(findings(grey))
    for darkness in DARKNESSES:
        for size in PIT_SIZES_PX:
            row += findings(paint_pit(grey, size, rng, darkness)[0])
    return row


def any_photo(path: Path) -> tuple[float, ...]:
    return findings(load_grey(path))


def past(rows: np.ndarray, cuts: np.ndarray = CUTS) -> np.ndarray:
    """Per row of findings (MEASURES) and per measure: past its cut."""
    return np.stack([beyond(rows[:, m], cuts[m]) for m, beyond in enumerate(PAST)], axis=1)


def worst(rows: np.ndarray) -> np.ndarray:
    """Per measure, the finding nearest to being past its cut: the darkest or the sharpest."""
    return np.array(
        [(np.max if beyond is np.greater else np.min)(rows[:, m]) for m, beyond in enumerate(PAST)]
    )


def caught(rows: np.ndarray, cuts: np.ndarray = CUTS) -> np.ndarray:
    """Rows past any cut."""
    return past(rows, cuts).any(axis=1)


def _by_measure(rows: np.ndarray) -> str:
    counts = past(rows).sum(axis=0)
    return ", ".join(f"{name} {int(n)}" for name, n in zip(MEASURES, counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pit-survey"))
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--castings", type=Path, help="castings.csv of tools/castings.py")
    parser.add_argument(
        "--oof",
        type=Path,
        help="an out-of-fold scores CSV of station train --folds (the card's cv_oof_scores.csv): "
        "how many of the photos the fold networks passed the cuts catch",
    )
    args = parser.parse_args()
    review = load_review(REPO / "station/training/label_review.yaml", args.data)
    doubted = sorted(e.file for e in review.reviews if e.decision == "doubtful_label")
    pinholes = {e.file for e in review.reviews if e.decision == "real_defect"}
    good = [
        p
        for p in sorted((args.data / "ok_front").glob("*.jpeg"))
        if f"ok_front/{p.name}" not in doubted
    ][:: args.every]
    others = sorted((args.data / "def_front").glob("*.jpeg"))[:: args.every]
    others += [args.data / f for f in doubted]
    with Pool(2) as pool:
        good_rows = np.array(pool.map(good_photo, good, chunksize=16))
        other_rows = np.array(pool.map(any_photo, others, chunksize=32))
    names = [p.relative_to(args.data).as_posix() for p in others]
    _write(args.out, good, good_rows, names, other_rows, args.data)

    width = len(MEASURES)
    plain = good_rows[:, :width]
    print(
        f"{len(good)} good photos: darkest spot {plain[:, 0].min():.3f} (median "
        f"{np.median(plain[:, 0]):.3f}), sharpest dip {plain[:, 1].max():.4f} (median "
        f"{np.median(plain[:, 1]):.4f}), darkest round spot {plain[:, 2].min():.3f}, most "
        f"isolated dip {plain[:, 3].max():.4f} (median {np.median(plain[:, 3]):.4f}), darkest "
        f"notch {plain[:, 4].min():.3f} (median {np.median(plain[:, 4]):.3f}); card's cuts: "
        f"darker than {CUTS[0]}, dip above {CUTS[1]}, round and darker than {CUTS[2]}, "
        f"isolated above {CUTS[3]}, notch darker than {CUTS[4]}"
    )
    print(f"good photos rejected: {int(caught(plain).sum())} (by {_by_measure(plain)})")
    for k, darkness in enumerate(DARKNESSES):
        cells = []
        for j, size in enumerate(PIT_SIZES_PX):
            column = width * (1 + len(PIT_SIZES_PX) * k + j)
            rows = good_rows[:, column : column + width]
            shares = past(rows).mean(axis=0)
            cells.append(
                f"{size} px {caught(rows).mean():.1%} ("
                + ", ".join(f"{name} {v:.0%}" for name, v in zip(MEASURES, shares))
                + ")"
            )
        print(f"painted at {darkness:.0%}: " + "; ".join(cells))
    kinds = {
        "reviewed pinholes": [n in pinholes for n in names],
        "other defective photos": [n.startswith("def_front/") and n not in pinholes for n in names],
        "doubted OK photos (the pinhole casting)": [n.startswith("ok_front/") for n in names],
    }
    for kind, mask in kinds.items():
        rows = other_rows[np.array(mask)]
        print(f"{kind}: {int(caught(rows).sum())} of {len(rows)} caught (by {_by_measure(rows)})")
    if args.castings:
        _unseen_castings(args.castings, good, plain)
    if args.oof:
        _network_misses(args.oof, names, other_rows)
    print(f"findings in {args.out}/ok.csv and other.csv")


def _unseen_castings(castings_csv: Path, good: list[Path], plain: np.ndarray) -> None:
    with castings_csv.open() as f:
        casting_of = {row["file"]: row["casting"] for row in csv.DictReader(f)}
    castings = np.array([int(casting_of[f"ok_front/{p.name}"]) for p in good])
    # The card's margins: darkness-like cuts below the darkest good photo, the dips' cuts a
    # factor above the sharpest.
    good_worst = worst(plain)
    margin = CUTS - good_worst
    rejected = {}
    for casting in sorted(set(castings)):
        cuts = worst(plain[castings != casting])
        cuts[DARKER] += margin[DARKER]
        cuts[SHARPER] *= CUTS[SHARPER] / good_worst[SHARPER]
        rejected[int(casting)] = int(caught(plain[castings == casting], cuts).sum())
    hit = {c: n for c, n in rejected.items() if n}
    print(
        f"castings left out in turn ({len(rejected)} good castings; cuts at the card's margin "
        f"from the others' worst photo): {sum(hit.values())} of {len(plain)} good photos "
        f"rejected, from {len(hit)} castings {hit}"
    )


def _network_misses(oof_csv: Path, names: list[str], rows: np.ndarray) -> None:
    """The defective photos each fold's network passed out of fold, against the cuts."""
    with oof_csv.open() as f:
        passed = {
            r["file"]
            for r in csv.DictReader(f)
            if r["label"] == "1" and float(r["network_score"]) < float(r["threshold"])
        }
    missed = rows[np.array([n in passed for n in names])]
    print(
        f"defective photos the fold networks passed out of fold ({oof_csv}): "
        f"{int(caught(missed).sum())} of {len(missed)} caught (by {_by_measure(missed)}); "
        f"darkest notch {missed[:, NOTCH].min():.3f} to {missed[:, NOTCH].max():.3f}"
    )


def _write(out: Path, good, good_rows, names, other_rows, data: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    painted = [f"pit_{round(d * 100)}_{s}px" for d in DARKNESSES for s in PIT_SIZES_PX]
    columns = [*MEASURES] + [f"{pit}_{m}" for pit in painted for m in MEASURES]
    with (out / "ok.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", *columns])
        for path, row in zip(good, good_rows):
            writer.writerow([path.relative_to(data).as_posix(), *(f"{v:.4f}" for v in row)])
    with (out / "other.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", *MEASURES])
        for name, row in zip(names, other_rows):
            writer.writerow([name, *(f"{v:.4f}" for v in row)])


if __name__ == "__main__":
    main()
