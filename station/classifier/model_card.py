"""The model card: what a model file needs around it to be used and trusted.

It travels beside the `.tflite` as `model_card.json`. The run-time side reads
`input_size`, `threshold`, `test_time_views` and `pit_check`; the rest is the
record an engineer checks before putting a model on the line (how it was
trained, on what data, and how well it did on the validation split).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_CARD_NAME = "model_card.json"
MODEL_FILE_NAME = "model.tflite"


class ModelCardError(ValueError):
    """A model card is missing, is not JSON, or has a wrong field."""


class Figures(BaseModel):
    """Classification figures at the model's threshold ("defective" is the positive class)."""

    model_config = ConfigDict(extra="forbid")

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    missed_defects: int = Field(description="defective parts scored as OK")
    false_rejects: int = Field(description="OK parts scored as defective")
    confusion: dict[str, int] = Field(description="true/false positive/negative counts")


class PitCheckSettings(BaseModel):
    """The pit check that runs beside the network (station.classifier.pit_check)."""

    model_config = ConfigDict(extra="forbid")

    darkness_cut: float = Field(
        gt=0.0,
        lt=1.0,
        description="a round flange spot darker than this fraction of the metal round it is "
        "a pit: the part is rejected",
    )
    dip_cut: float = Field(
        gt=0.0,
        description="a round flange spot whose brightness dips more sharply than this is a "
        "pit: the part is rejected",
    )
    round_darkness_cut: float = Field(
        gt=0.0,
        lt=1.0,
        description="a flange spot that dips roundly and is darker than this fraction of the "
        "metal round it is a pit: the part is rejected",
    )
    isolated_dip_cut: float = Field(
        gt=0.0,
        description="a flange dip standing more than this above the sharpest dip on the ring "
        "round it (a pit alone on clean metal) is a pit: the part is rejected",
    )
    notch_cut: float = Field(
        gt=0.0,
        lt=1.0,
        description="a spot between the groove and the rim's edge darker than this fraction "
        "of the metal along its circle is a notch (a chip or a burr): the part is rejected",
    )
    method: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    created_utc: str
    architecture: str
    parameters: int
    input_size: int = Field(gt=0, le=1024)
    preprocessing: str
    output: str = "probability that the part is defective"
    test_time_views: int = Field(
        ge=1,
        le=2,
        description=("1: score the image; 2: the mean score of the image and its mirror image"),
    )
    threshold: float = Field(gt=0.0, lt=1.0)
    threshold_rule: str
    pit_check: PitCheckSettings = Field(
        description="the pit check's settings: a part is rejected when the network's score "
        "reaches the threshold or a round spot on the flange is past any of its cuts"
    )
    cross_validation: dict | None = Field(
        default=None,
        description="out-of-fold figures of this recipe over the whole training folder "
        "(station train --folds K --attach-to): every image scored by a model that never "
        "saw it, at a threshold chosen without it; the figure to trust over `validation`",
    )
    validation: Figures
    split: dict[str, float | int | str]
    dataset: dict[str, str | int]
    training: dict[str, bool | float | int | str]
    model_sha256: str
    status: str = Field(
        default="passed",
        description="'passed' the quality gate, or 'FAILED: <why>' (refused at load)",
    )
    pit_sensitivity: dict[str, float | int | str] | None = Field(
        default=None,
        description="share of held-out OK photos rejected with one synthetic dark pit of each "
        "diameter (px in the 300 px frame) painted on the flange (station.sensitivity)",
    )

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelCardError(f"{path}: model card not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelCardError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ModelCardError(f"{path}: {problems}") from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
