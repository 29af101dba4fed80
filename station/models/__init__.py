"""Shipped models. `default/` is the one `station run` and `station evaluate` use."""

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
