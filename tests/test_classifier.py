"""The run-time classifier: loads the shipped model, refuses broken ones by name."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

from station.classifier import Classifier, ModelLoadError
from station.classifier.litert_classifier import DEFAULT_MODEL_DIR
from station.dataset import load_grey


@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    return target


def test_shipped_model_is_small_and_carries_its_card():
    classifier = Classifier()
    assert (DEFAULT_MODEL_DIR / "model.tflite").stat().st_size < 1_000_000
    assert classifier.card.validation.missed_defects == 0
    assert 0 < classifier.threshold < 1
    assert classifier.version.startswith("impeller_net-")


def test_shipped_model_sorts_the_sample_parts(sample_images):
    classifier = Classifier()
    for path in sample_images:
        decision = classifier.decide(load_grey(path))
        assert decision.defective == (path.parent.name == "def_front"), (
            f"{path.name}: score {decision.score:.4f}, threshold {classifier.threshold:.4f}"
        )


def test_score_is_the_mean_of_the_part_and_its_mirror_image(sample_images):
    from station.classifier.preprocess import preprocess

    classifier = Classifier()
    assert classifier.card.test_time_views == 2
    grey = load_grey(sample_images[0])
    tensor = preprocess(grey, classifier.input_size)
    one = classifier.model.score_tensor(tensor)
    mirror = classifier.model.score_tensor(np.ascontiguousarray(tensor[:, ::-1]))
    assert classifier.inspect(grey).network_score == pytest.approx((one + mirror) / 2)
    flipped = classifier.inspect(cv2.flip(grey, 1)).network_score
    assert flipped == pytest.approx(classifier.inspect(grey).network_score, abs=1e-5)


def test_colour_frame_scores_like_its_grey_version(sample_images):
    classifier = Classifier()
    grey = load_grey(sample_images[0])
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert classifier.score(bgr) == pytest.approx(classifier.score(grey), abs=1e-3)


def test_threshold_override_changes_the_decision(sample_images):
    """The override moves the network's threshold; a part past a pit-check cut is a reject at
    any threshold (the pit score sits past it), so the part here is a good one."""
    grey = load_grey(next(p for p in sample_images if p.parent.name == "ok_front"))
    strict = Classifier(threshold=1e-6).decide(grey)
    lax = Classifier(threshold=1 - 1e-9).decide(grey)
    assert strict.defective and not lax.defective


def test_missing_model_file_is_named(model_copy):
    (model_copy / "model.tflite").unlink()
    with pytest.raises(ModelLoadError, match="model.tflite: model file not found"):
        Classifier(model_copy)


def test_corrupt_model_file_is_named(model_copy):
    (model_copy / "model.tflite").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="model.tflite: not a usable TFLite model"):
        Classifier(model_copy)


def test_card_of_another_model_is_refused(model_copy):
    card = json.loads((model_copy / "model_card.json").read_text())
    card["model_sha256"] = "0" * 64
    (model_copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="does not match the model card"):
        Classifier(model_copy)


def test_wrong_input_shape_is_refused(model_copy):
    card = json.loads((model_copy / "model_card.json").read_text())
    card["input_size"] = card["input_size"] // 2
    (model_copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="does not match the expected"):
        Classifier(model_copy)


def test_card_field_errors_name_the_field(model_copy):
    card = json.loads((model_copy / "model_card.json").read_text())
    del card["threshold"]
    card["input_size"] = "big"
    card["test_time_views"] = 3
    (model_copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelLoadError,
        match=r"model_card.json: input_size: .*test_time_views: .*threshold: Field required",
    ):
        Classifier(model_copy)


def test_run_time_modules_never_import_tensorflow():
    """`station run` must start fast and small: LiteRT only, no TensorFlow."""
    code = (
        "import sys, numpy as np\n"
        "import station.cli, station.classifier, station.evaluation, station.dataset\n"
        "from station.classifier import Classifier\n"
        "Classifier().score(np.zeros((300, 300), np.uint8))\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.split() == ["False", "False"]
