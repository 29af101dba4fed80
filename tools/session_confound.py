#!/usr/bin/env python3
"""How much of the label the training photos give away without looking at a defect.

    .venv/bin/python tools/session_confound.py [../shared/datasets/casting/train]

Prints, for the near-duplicate groups that cross-validation keeps whole
(`station.dataset.near_duplicate_groups`):
- how many groups hold both labels (a group is a chain of look-alike photos);
- group sizes per label, and for the largest groups how alike their members'
  signatures are. Low pairwise similarity was read (2026-11-24) as "a chain
  through a photo session, not copies of one casting"; that was wrong: the
  signature describes texture and light, and laying the photos on each other
  (`tools/castings.py`) shows the 291-photo group to be one casting, all its
  pairs matching. Count castings with that tool, not with this one;
- how well one number per photo, with no knowledge of defects, separates the
  labels: the mean grey level of the whole photo, of its corners
  (background only) and its spread (AUC, and the best accuracy of a single
  cut).
A model can learn any of these instead of the defects, and it would then
fail on a casting or photo session it has not seen; that is what the grouped
cross-validation measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.dataset import (  # noqa: E402
    load_grey,
    near_duplicate_groups,
    rotation_invariant_signature,
    scan_labelled_folder,
)


def auc(score: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, either direction (a cue is a cue)."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    n1 = labels.sum()
    n0 = len(labels) - n1
    a = (ranks[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(max(a, 1 - a))


def best_cut_accuracy(score: np.ndarray, labels: np.ndarray) -> float:
    cuts = np.percentile(score, np.arange(1, 100))
    return float(
        max(max(((score > c) == labels).mean(), ((score <= c) == labels).mean()) for c in cuts)
    )


def main(data: Path) -> None:
    folder = scan_labelled_folder(data)
    greys = np.stack([load_grey(s.path, (300, 300)) for s in folder.samples])
    labels = np.array([s.label for s in folder.samples])
    signatures = np.stack([rotation_invariant_signature(g) for g in greys])
    groups = near_duplicate_groups(signatures)
    sizes = np.bincount(groups)
    mixed = sum(1 for g in range(len(sizes)) if 0 < labels[groups == g].mean() < 1)
    print(f"{len(labels)} photos in {len(sizes)} groups; groups holding both labels: {mixed}")
    for label, name in ((1, "defective"), (0, "ok")):
        in_class = sizes[np.unique(groups[labels == label])]
        print(
            f"  {name}: {(labels == label).sum()} photos in {len(in_class)} groups; "
            f"{in_class[in_class >= 50].sum()} of them in groups of 50 or more; "
            f"largest {sorted(int(n) for n in in_class)[-5:]}"
        )
    z = (signatures - signatures.mean(0)) / (signatures.std(0) + 1e-9)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    print("largest groups: pairwise similarity (the grouping links pairs above 0.97)")
    for g in np.argsort(-sizes)[:5]:
        members = np.nonzero(groups == g)[0]
        sims = (z[members] @ z[members].T)[np.triu_indices(len(members), 1)]
        print(
            f"  group of {len(members)} ({'defective' if labels[members].mean() > 0.5 else 'ok'}):"
            f" median {np.median(sims):.3f}, 5th percentile {np.percentile(sims, 5):.3f},"
            f" pairs above 0.97 {100 * (sims > 0.97).mean():.0f}%"
        )
    flat = greys.reshape(len(greys), -1).astype(np.float32)
    corners = np.concatenate(
        [greys[:, :20, :20].reshape(len(greys), -1), greys[:, -20:, -20:].reshape(len(greys), -1)],
        axis=1,
    ).mean(1)
    print("one number per photo against the label:")
    for name, score in (
        ("mean grey of the photo", flat.mean(1)),
        ("mean grey of two corners (background)", corners),
        ("grey spread (std) of the photo", flat.std(1)),
    ):
        print(
            f"  {name}: AUC {auc(score, labels):.3f}, "
            f"best single cut {100 * best_cut_accuracy(score, labels):.1f}% correct"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared/datasets/casting/train")
