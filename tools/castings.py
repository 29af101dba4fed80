#!/usr/bin/env python3
"""How many physical castings the training folder holds, and what that does to every figure.

    .venv/bin/python tools/castings.py [--data ../shared/datasets/casting/train]
                                       [--model station/models/default] [--out castings/]

Groups the photos by physical casting (`station.same_casting`: turn,
mirror and shift one photo onto another and correlate the fine detail), then
prints:
- castings per class and their sizes: the number of independent parts each
  figure really rests on;
- a check of the grouping: the correlation of random pairs of photos;
- the model's validation split: how many validation photos show a casting
  that is also in training;
- the model's cross-validation (`cv_oof_scores.csv`): castings split across
  folds, and the out-of-fold errors counted per casting.
Writes OUT/castings.csv (photo, label, casting) and OUT/ok_castings_oof.png
(share of each OK casting's photos rejected out of fold).
About 2.5 minutes, one core.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.dataset import (  # noqa: E402
    load_grey,
    rotation_invariant_signature,
    scan_labelled_folder,
)
from station.same_casting import (  # noqa: E402
    SAME_CASTING_CORRELATION,
    aligned_detail_correlation,
    casting_groups,
    prepare,
)
from station.training.label_review import load_review  # noqa: E402

log = logging.getLogger("castings")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def report_split(name: str, in_training: np.ndarray, labels: np.ndarray) -> None:
    for label, word in ((1, "defective"), (0, "OK")):
        m = labels == label
        print(
            f"  {name}: {int(in_training[m].sum())} of {int(m.sum())} {word} photos show a "
            "casting that is also in training"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    parser.add_argument("--model", type=Path, default=REPO / "station/models/default")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("castings"),
        help="where castings.csv and the plot go (README copy: docs/castings-ok-oof.png)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    folder = scan_labelled_folder(args.data)
    names = [s.path.relative_to(args.data).as_posix() for s in folder.samples]
    labels = np.array([s.label for s in folder.samples])
    greys = np.stack([load_grey(s.path, (300, 300)) for s in folder.samples])
    log.info("loaded %d photos", len(greys))
    signatures = np.stack([rotation_invariant_signature(g) for g in greys])
    casting, correlations = casting_groups(greys, signatures)
    log.info("%d candidate pairs compared", len(correlations))

    rng = np.random.default_rng(0)
    random_pairs = [
        tuple(int(x) for x in rng.choice(len(greys), 2, replace=False)) for _ in range(1000)
    ]
    random_corr = np.array(
        [aligned_detail_correlation(prepare(greys[i]), prepare(greys[j])) for i, j in random_pairs]
    )
    same = np.array([casting[i] == casting[j] for i, j in random_pairs])

    print(
        f"\n{len(greys)} photos, {casting.max() + 1} castings "
        f"(aligned detail correlation > {SAME_CASTING_CORRELATION})"
    )
    for label, word in ((1, "defective"), (0, "OK")):
        ids, sizes = np.unique(casting[labels == label], return_counts=True)
        big = sizes >= 100
        print(
            f"  {word}: {int((labels == label).sum())} photos of {len(ids)} castings; "
            f"median {np.median(sizes):.0f} photos each, largest "
            f"{', '.join(str(s) for s in sorted(sizes)[::-1][:8])}; "
            f"{int(big.sum())} castings of 100+ photos hold {sizes[big].sum() / sizes.sum():.0%}"
        )
    mixed = sum(len(set(labels[casting == c])) > 1 for c in range(casting.max() + 1))
    print(f"  castings holding both labels: {mixed}")
    review = load_review(REPO / "station/training/label_review.yaml", args.data)
    reviewed = {r.file for r in review.reviews}
    for c in range(casting.max() + 1):
        members = np.nonzero(casting == c)[0]
        if len(set(labels[members])) > 1:
            named = sum(names[i] in reviewed for i in members)
            print(
                f"    casting {c}: {int((labels[members] == 1).sum())} photos labelled defective, "
                f"{int((labels[members] == 0).sum())} labelled OK; {named} of its photos are in "
                "station/training/label_review.yaml"
            )
    print(
        f"check: 1,000 random pairs, correlation median {np.median(random_corr):.2f}, "
        f"{int((random_corr > SAME_CASTING_CORRELATION).sum())} above the cut "
        f"({int(same.sum())} grouped as one casting)"
    )

    index = {n: i for i, n in enumerate(names)}
    validation = args.model / "validation_scores.csv"
    if validation.exists():
        val = np.zeros(len(names), bool)
        val[[index[r["file"]] for r in read_csv(validation) if r["file"] in index]] = True
        trained = set(casting[~val])
        in_training = np.array([casting[i] in trained for i in range(len(names))])[val]
        print(f"\nvalidation split of {args.model} ({int(val.sum())} photos):")
        report_split("validation", in_training, labels[val])

    oof = args.model / "cv_oof_scores.csv"
    if oof.exists():
        report_cross_validation(read_csv(oof), index, casting, labels, args.out)

    with (args.out / "castings.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "casting"])
        writer.writerows(zip(names, labels, casting))
    log.info("wrote %s in %.0f s", args.out / "castings.csv", time.monotonic() - started)


def report_cross_validation(rows, index, casting, labels, out: Path) -> None:
    n = len(labels)
    fold = np.full(n, -1)
    rejected = np.zeros(n, bool)
    for r in rows:
        i = index[r["file"]]
        fold[i] = int(r["fold"])
        rejected[i] = float(r["score"]) >= float(r["threshold"])  # as the station judges
    # Photos with no out-of-fold score (the label review's doubted ones) count nowhere.
    scored = fold >= 0
    split = np.array([len(set(fold[(casting == c) & scored])) > 1 for c in casting])
    print(f"\ncross-validation ({len(rows)} out-of-fold scores):")
    for label, word in ((1, "defective"), (0, "OK")):
        m = (labels == label) & scored
        print(
            f"  {int((split & m).sum())} of {int(m.sum())} {word} photos show a casting "
            "that other folds trained on"
        )
    wrong = scored & (rejected != (labels == 1))
    for leaked, word in ((True, "casting also in other folds"), (False, "casting held out whole")):
        m = (split == leaked) & scored
        if not m.any():
            print(f"  {word}: no photos")
            continue
        print(
            f"  {word}: {int(m.sum())} photos, {wrong[m].mean():.1%} wrong "
            f"({int((wrong & m & (labels == 1)).sum())} escapes, "
            f"{int((wrong & m & (labels == 0)).sum())} false rejects)"
        )
    defective_castings = np.unique(casting[labels == 1])
    escaped = [c for c in defective_castings if (wrong & (casting == c) & (labels == 1)).any()]
    print(
        f"  defective castings with at least one escaped photo: {len(escaped)} of "
        f"{len(defective_castings)}"
    )
    scored_ok = (labels == 0) & scored
    ok_castings = np.unique(casting[scored_ok])
    shares = np.array([rejected[(casting == c) & scored_ok].mean() for c in ok_castings])
    sizes = np.array([((casting == c) & scored_ok).sum() for c in ok_castings])
    print(
        f"  OK castings rejected out of fold: {int((shares > 0.5).sum())} of {len(ok_castings)} "
        f"mostly (over half their photos), {int((shares > 0).sum())} at least once; "
        f"their photos: {int(sizes[shares > 0.5].sum())}"
    )
    plot_ok_castings(shares, sizes, out / "ok_castings_oof.png")


def plot_ok_castings(shares: np.ndarray, sizes: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-sizes)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(
        range(len(order)),
        shares[order] * 100,
        color=["#c0392b" if s > 0.5 else "#2e86c1" for s in shares[order]],
    )
    for x, k in enumerate(order):
        ax.text(x, shares[k] * 100 + 1, str(sizes[k]), ha="center", fontsize=6)
    ax.set_xlabel("OK casting (largest first; the figure above each bar is its number of photos)")
    ax.set_ylabel("photos rejected out of fold (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Good castings: share of each one's photos rejected out of fold (red: over half)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
