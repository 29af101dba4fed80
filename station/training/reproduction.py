"""Did a retrain give the shipped model again, and if not, what recorded difference explains it.

Why: `station train` must reproduce the shipped model, and an engineer who retrains on the
line's own PC and gets another `model.tflite` needs to know at once whether that is a
fault (another recipe, other photos) or expected (another CPU: the pinned kernels give the
same model on the same kind of CPU only, `kernels.py`). The two cards hold everything that
decides the network; this compares them and says which of it differs, most telling first.
No TensorFlow here: it reads cards.
"""

from __future__ import annotations

from station.classifier.model_card import ModelCard
from station.training.config import RECIPE_KEYS, recorded

MACHINE_KEYS = ("cpu", "onednn_max_cpu_isa", "threads")
"""What the pinned kernels depend on: another CPU trains another network (kernels.py)."""
LIBRARY_KEYS = ("tensorflow", "keras", "opencv", "numpy")
NOT_RECORDED = "not recorded"


def differences(made: ModelCard, reference: ModelCard) -> list[str]:
    """What recorded of `made`'s training differs from `reference`'s, one line each:
    the recipe and the photos first (a real change), then the machine and the libraries
    (expected to give another network), then the code's commit (which may change nothing)."""
    lines = []
    for key in (*RECIPE_KEYS, "seed"):
        _compare(lines, "recipe", key, made.training, reference.training)
    for key in ("manifest_sha256", "label_review_sha256"):
        _compare(lines, "photos", key, made.dataset, reference.dataset)
    for key in MACHINE_KEYS:
        _compare(lines, "machine", key, made.training, reference.training)
    for key in LIBRARY_KEYS:
        _compare(lines, "library", key, made.training, reference.training)
    _compare(lines, "code", "commit", made.training, reference.training)
    return lines


def reproduction_report(made: ModelCard, reference: ModelCard, reference_name: str) -> str:
    """A few lines for the end of `station train`: the same file as `reference`, or not and
    why (`differences`)."""
    if made.model_sha256 == reference.model_sha256:
        return (
            f"model.tflite is {reference_name}'s, byte for byte "
            f"(sha256 {made.model_sha256[:12]}...)"
        )
    found = differences(made, reference)
    head = (
        f"model.tflite differs from {reference_name}'s (sha256 {made.model_sha256[:12]}... "
        f"against {reference.model_sha256[:12]}...)"
    )
    if not found:
        return (
            f"{head}, and nothing its card records differs: the same recipe, photos, CPU and "
            "libraries gave another network. That is a fault to report (kernels.py)."
        )
    if any(line.startswith(("recipe", "photos")) for line in found):
        why = "another recipe or other photos: another model is expected"
    elif any(line.startswith("machine") for line in found):
        why = "another CPU trains another network from the same recipe (kernels.py)"
    elif any(line.startswith("library") for line in found):
        why = "another library version can train another network (kernels.py)"
    else:
        why = "only the code's commit differs: a change there moved the network"
    return "\n".join([f"{head}: {why}", *(f"  {line}" for line in found)])


def _compare(lines: list[str], kind: str, key: str, made: dict, reference: dict) -> None:
    ours, theirs = (_value(entries, key) for entries in (made, reference))
    if ours != theirs:
        lines.append(f"{kind} {key}: {theirs} there, {ours} here")


def _value(entries: dict, key: str) -> object:
    """A card entry as trained (config.recorded: old cards' defaults), or NOT_RECORDED."""
    value = recorded(entries, key)
    return NOT_RECORDED if value is None else value
