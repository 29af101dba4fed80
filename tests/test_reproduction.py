"""`station train`'s last word: the shipped model again, or which recorded thing differs.

Pure: two model cards in, lines out. The shipped card is the reference, as it is for a
retrain on the line's PC."""

import pytest

from station.classifier.model_card import MODEL_CARD_NAME, ModelCard
from station.models import DEFAULT_MODEL_DIR
from station.training.reproduction import differences, reproduction_report

SHIPPED = ModelCard.load(DEFAULT_MODEL_DIR / MODEL_CARD_NAME)
OTHER_SHA = "0" * 64


def retrained(sha: str = OTHER_SHA, **training) -> ModelCard:
    """The shipped card as a retrain would write it, `training` entries changed."""
    return SHIPPED.model_copy(
        update={"model_sha256": sha, "training": {**SHIPPED.training, **training}}
    )


def test_the_same_file_is_said_to_be_the_same():
    report = reproduction_report(retrained(SHIPPED.model_sha256), SHIPPED, "shipped")
    assert report.startswith("model.tflite is shipped's, byte for byte")


def test_another_cpu_is_named_as_the_expected_cause():
    other = "Example CPU 9000"  # a name no shipped card will hold
    made = retrained(cpu=other)
    report = reproduction_report(made, SHIPPED, "shipped")
    assert "another CPU trains another network" in report
    assert f"machine cpu: {SHIPPED.training['cpu']} there, {other} here" in report


def test_a_changed_recipe_comes_before_the_machine():
    made = retrained(width=8, cpu="another")
    lines = differences(made, SHIPPED)
    assert lines[0] == f"recipe width: {SHIPPED.training['width']} there, 8 here"
    assert "another recipe or other photos" in reproduction_report(made, SHIPPED, "shipped")


def test_other_photos_are_a_recipe_change():
    made = retrained().model_copy(
        update={"dataset": {**SHIPPED.dataset, "manifest_sha256": "f" * 64}}
    )
    assert differences(made, SHIPPED)[0].startswith("photos manifest_sha256:")


def test_a_library_the_reference_did_not_record_is_said_so():
    made = retrained(opencv="5.1.0")
    reference = SHIPPED.model_copy(
        update={"training": {k: v for k, v in SHIPPED.training.items() if k != "opencv"}}
    )
    report = reproduction_report(made, reference, "shipped")
    assert "another library version can train another network" in report
    assert "library opencv: not recorded there, 5.1.0 here" in report


def test_another_file_with_nothing_recorded_different_is_a_fault():
    report = reproduction_report(retrained(), SHIPPED, "shipped")
    assert "nothing its card records differs" in report and "fault" in report


@pytest.mark.parametrize("key", ["seconds", "epochs_run", "best_epoch"])
def test_what_a_run_measures_is_not_a_difference(key):
    """How long it took and which epoch it kept are results of the run, not its causes."""
    assert differences(retrained(**{key: -1}), SHIPPED) == []


def test_a_card_from_before_a_recipe_key_is_read_as_it_was_trained():
    """Cards from before --val-split trained on near-duplicate groups (config.CARDS_BEFORE,
    as the cross-validation's --attach-to reads them): no difference to name there."""
    old = SHIPPED.model_copy(
        update={"training": {k: v for k, v in SHIPPED.training.items() if k != "val_split"}}
    )
    assert SHIPPED.training["val_split"] == "signature"
    assert differences(retrained(), old) == []
    assert differences(retrained(val_split="casting"), old) == [
        "recipe val_split: signature there, casting here"
    ]
