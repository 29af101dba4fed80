"""PNG plots people would rather see than read: curves, confusion matrix, score histogram."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # headless line PC and CI: never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from station.classifier.model_card import Figures  # noqa: E402
from station.classifier.preprocess import Roi, to_grey  # noqa: E402


def save_part(
    path: Path,
    image: np.ndarray,
    roi: Roi | None,
    lines: list[str],
    reject: bool,
    mark: tuple[int, int] | None = None,
):
    """The image as judged: the crop the classifier saw boxed, what was decided written on it
    (red for reject, green for pass), `mark` (the pit check's darkest spot) circled.
    Used for escapes, false rejects and flips."""
    out = cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2BGR)
    colour = (0, 0, 255) if reject else (0, 160, 0)
    if roi is not None:
        corner = (roi.x + roi.width - 1, roi.y + roi.height - 1)
        cv2.rectangle(out, (roi.x, roi.y), corner, colour, 2)
    if mark is not None:
        cv2.circle(out, mark, max(8, out.shape[1] // 30), (0, 200, 255), 1)
    scale = max(0.5, out.shape[1] / 600)
    for k, line in enumerate(lines):
        y = int((18 + 18 * k) * scale)
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), out)


def training_curves(
    history: dict[str, list[float]],
    path: Path,
    kept_epoch: int | None = None,
    selection_from: int | None = None,
) -> None:
    """Loss and accuracy per epoch; the epochs the kept weights were chosen among
    shaded, the kept epoch marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    style,
                    label=("validation " if prefix else "training ") + metric,
                )
        if selection_from is not None:
            ax.axvspan(selection_from + 0.5, len(history["loss"]) + 0.5, color="grey", alpha=0.12)
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="black", linewidth=1, label=f"kept: epoch {kept_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(figures: Figures, threshold: float, title: str, path: Path) -> None:
    c = figures.confusion
    matrix = np.array([[c["true_pass"], c["false_reject"]], [c["missed_defect"], c["true_reject"]]])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    names = [["true pass", "false reject"], ["MISSED DEFECT", "true reject"]]
    for i in range(2):
        for j in range(2):
            if (i, j) == (1, 0) and matrix[i, j]:
                colour = "red"
            else:
                colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, f"{names[i][j]}\n{matrix[i, j]}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], ["pass", "reject"])
    ax.set_yticks([0, 1], ["OK", "defective"])
    ax.set_xlabel("station verdict")
    ax.set_ylabel("true label")
    ax.set_title(f"{title}\nthreshold {threshold:.4f}, accuracy {figures.accuracy:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_histogram(
    labels: np.ndarray, scores: np.ndarray, threshold: float, title: str, path: Path
) -> None:
    _class_histogram(
        labels,
        scores,
        np.linspace(0, 1, 51),
        threshold,
        f"threshold {threshold:.4f}",
        "defect score (reject at or above the threshold)",
        title,
        path,
    )


def oof_margins(labels: np.ndarray, margins: np.ndarray, title: str, path: Path) -> None:
    """Out-of-fold scores measured against each fold's own threshold (logit difference):
    right of 0 is rejected. One picture for K folds with K thresholds."""
    _class_histogram(
        labels,
        np.clip(margins, -15, 15),
        np.linspace(-15, 15, 61),
        0.0,
        "the fold's threshold",
        "logit(score) - logit(threshold of the image's fold); reject at >= 0",
        title,
        path,
    )


def _class_histogram(
    labels: np.ndarray,
    values: np.ndarray,
    bins: np.ndarray,
    cut: float,
    cut_label: str,
    xlabel: str,
    title: str,
    path: Path,
) -> None:
    """OK and defective images on one log-scale histogram, with the reject cut drawn."""
    labels = np.asarray(labels).astype(bool)
    values = np.asarray(values)
    fig, ax = plt.subplots(figsize=(7, 4))
    for chosen, name, colour in ((~labels, "OK", "tab:green"), (labels, "defective", "tab:red")):
        ax.hist(
            values[chosen], bins=bins, alpha=0.6, label=f"{name} ({chosen.sum()})", color=colour
        )
    ax.axvline(cut, color="black", linestyle="--", label=cut_label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images (log)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def misses_against_false_rejects(
    labels: np.ndarray, scores: np.ndarray, threshold: float, title: str, path: Path
) -> None:
    """Missed defects and false rejects at every threshold: the price of each operating point."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.unique(np.concatenate([scores, [threshold]]))
    missed = [int(np.sum(labels & (scores < t))) for t in candidates]
    false_rejects = [int(np.sum(~labels & (scores >= t))) for t in candidates]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.step(false_rejects, missed, where="post", color="tab:blue")
    chosen = int(np.searchsorted(candidates, threshold))
    ax.plot(
        false_rejects[chosen],
        missed[chosen],
        "o",
        color="black",
        label=f"threshold {threshold:.4f}: {missed[chosen]} missed, "
        f"{false_rejects[chosen]} false rejects",
    )
    ax.set_xlabel("false rejects (good parts thrown away)")
    ax.set_ylabel("missed defects (defective parts passed)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pit_sensitivity(result, title: str, path: Path) -> None:
    """Detection rate against pit diameter, the no-pit baseline, and one example of each."""
    sizes = list(result.detection)
    rates = [100 * result.detection[d] for d in sizes]
    fig = plt.figure(figsize=(9, 5.2))
    ax = fig.add_axes([0.08, 0.48, 0.88, 0.44])
    ax.plot(sizes, rates, "o-", color="tab:red", label="pit detected (rejected)")
    ax.axhline(100 * result.baseline_rejected, color="grey", ls="--", label="no pit (baseline)")
    for d, r in zip(sizes, rates):
        ax.annotate(f"{r:.1f}%", (d, r), textcoords="offset points", xytext=(0, 7), ha="center")
    ax.set_xlabel("pit diameter, px in the 300 px frame")
    ax.set_ylabel("held-out OK photos rejected, %")
    ax.set_ylim(-2, 105)
    ax.set_xticks(sizes)
    ax.legend(loc="upper left")
    ax.set_title(
        f"{title}: {result.images} photos, threshold {result.threshold:.4f}, "
        f"pit centre at {result.darkness:.0%} of the metal"
    )
    for k, d in enumerate(sizes):
        examples = result.examples.get(d) or []
        if not examples:
            continue
        image, (x, y), score = examples[0]
        inset = fig.add_axes([0.02 + k * 0.195, 0.01, 0.18, 0.28])
        half = max(12, int(image.shape[0] * 0.08))
        y0, x0 = max(0, y - half), max(0, x - half)
        inset.imshow(image[y0 : y + half, x0 : x + half], cmap="gray", vmin=0, vmax=255)
        inset.set_title(f"{d} px: score {score:.3f}", fontsize=8)
        inset.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)
