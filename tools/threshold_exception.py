#!/usr/bin/env python3
"""What the threshold rule's one exception does out of fold, from finished cross-validations.

    .venv/bin/python tools/threshold_exception.py CV_DIR [CV_DIR ...]

From 2026-12-05 to 2026-12-06 the threshold rule left out a defective
validation photo that the pit check rejects and the network scores no higher
than the highest good one (a pinhole the network cannot see must not drag
the threshold onto the good parts). This recomputes each fold's threshold
from its saved validation scores with that exception, with "no higher than"
measured against a percentile of the good photos' scores instead, and with
no exception (the rule since: `scoring.zero_miss_threshold`), and judges the
fold's saved held-out scores at each, as the line judges: rejected if the
network's score reaches the threshold or the pit check rejects (each fold
card's own pit-check cuts, on the saved measures). Only the threshold moves;
the networks and the pit check's findings are the runs' own. Each column
reproduces the figures of a run made under its rule.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from station.classifier.model_card import ModelCard
from station.classifier.pit_check import PitCheckSettings, PitFinding
from station.scoring import zero_miss_threshold

RULES: dict[str, float | None] = {
    "exception (highest good)": 1.0,
    "good 99th percentile": 0.99,
    "good 90th percentile": 0.9,
    "good median": 0.5,
    "no exception": None,
}
"""Each rule: the quantile of the good validation scores a defect must not exceed to be
left to the pit check (1.0: the exception as it was); None: every defect holds it."""


def caught(rows: list[dict], settings: PitCheckSettings) -> np.ndarray:
    """Whether the pit check rejects each row, from the measures the CSV saved."""
    return np.array([PitFinding.from_score_columns(r).is_pit(settings) for r in rows])


def threshold(labels: np.ndarray, network: np.ndarray, pits: np.ndarray, q: float | None) -> float:
    if q is None:
        return zero_miss_threshold(labels, network)
    bar = float(np.quantile(network[~labels], q))
    left = labels & pits & (network <= bar)
    if not labels[~left].any():
        return zero_miss_threshold(labels, network)
    return zero_miss_threshold(labels[~left], network[~left])


def read(path: Path) -> tuple[list[dict], np.ndarray, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    labels = np.array([r["label"] == "1" for r in rows])
    network = np.array([float(r["network_score"]) for r in rows])
    return rows, labels, network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="station train --folds K --out folders")
    args = parser.parse_args()
    print("escapes / false rejects out of fold, by the exception's bar")
    print("run".ljust(28) + "".join(name.rjust(28) for name in RULES))
    for run in args.runs:
        totals = {name: [0, 0] for name in RULES}
        for fold in sorted(run.glob("fold_*")):
            settings = ModelCard.load(fold / "model_card.json").pit_check
            val_rows, val_labels, val_network = read(fold / "validation_scores.csv")
            held_rows, held_labels, held_network = read(fold / "oof.csv")
            val_pits = caught(val_rows, settings)
            held_pits = caught(held_rows, settings)
            for name, q in RULES.items():
                t = threshold(val_labels, val_network, val_pits, q)
                rejected = (held_network >= t) | held_pits
                totals[name][0] += int(np.sum(held_labels & ~rejected))
                totals[name][1] += int(np.sum(~held_labels & rejected))
        cells = "".join(f"{e} / {f}".rjust(28) for e, f in totals.values())
        print(run.name.ljust(28) + cells)


if __name__ == "__main__":
    main()
