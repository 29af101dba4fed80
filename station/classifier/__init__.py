"""Run-time classification: one preprocessing function, the model card, LiteRT inference.

Nothing here imports TensorFlow; `tests/test_no_tensorflow_at_runtime.py` checks it.
"""

from station.classifier.litert_classifier import Classifier, LiteRTModel, ModelLoadError
from station.classifier.model_card import ModelCard
from station.classifier.preprocess import preprocess

__all__ = ["Classifier", "LiteRTModel", "ModelCard", "ModelLoadError", "preprocess"]
