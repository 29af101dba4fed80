"""Changing the calibration file safely: validate everything, then write once, keep a backup.

A step proposes new values; `CalibrationFile.propose` builds the whole new
calibration and validates it against the safe limits (the same checks
`station run` makes at start-up), so an unsafe value is refused with its
field and the reason before anything is written. `commit` writes the file
atomically, keeps the previous one as `<name>.bak`, and records the change
in the file's header: a technician can read, diff and roll back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from station.calibration import Calibration, CalibrationError, describe_validation_error

HISTORY_LINES = 10
HISTORY_PREFIX = "change "
STANDARD_HEADER = "Calibration of a reject station"


class UnsafeValue(CalibrationError):
    """A proposed value is outside the safe limits; nothing was written."""


@dataclass(frozen=True)
class Change:
    field: str
    before: object
    after: object


class CalibrationFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.current = Calibration.load(self.path)
        except CalibrationError as exc:
            raise CalibrationError(
                f"{exc}. Nothing was changed; restore {self.path.name}.bak or fix the file."
            ) from None

    def propose(self, **sections: dict | float | None) -> tuple[Calibration, list[Change]]:
        """The calibration with `sections` changed (camera={...}, threshold=0.3, ...), checked."""
        data = self.current.model_dump(mode="json")
        for name, values in sections.items():
            if isinstance(values, dict):
                data[name] = {**data[name], **values}
            else:
                data[name] = values
        try:
            proposed = Calibration.model_validate(data)
        except ValidationError as exc:
            raise UnsafeValue(
                f"refused, {self.path} left as it was: {describe_validation_error(exc)}"
            ) from None
        return proposed, _changes(self.current, proposed)

    def commit(self, proposed: Calibration, step: str) -> list[Change]:
        """Write `proposed` (atomically, previous file kept as .bak); returns what changed."""
        changes = _changes(self.current, proposed)
        if not changes:
            return []
        stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
        what = ", ".join(f"{c.field} {c.before} -> {c.after}" for c in changes)
        site, history = _header_of(self.path)
        history = (history + [f"{HISTORY_PREFIX}{stamp} `station calibrate {step}`: {what}"])[
            -HISTORY_LINES:
        ]
        proposed.save(self.path, "\n".join(site + history))
        self.current = proposed
        return changes


def _changes(before: Calibration, after: Calibration) -> list[Change]:
    old, new = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    return [Change(k, old.get(k), new[k]) for k in new if old.get(k) != new[k]]


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _header_of(path: Path) -> tuple[list[str], list[str]]:
    """The file's own comment lines above the standard header: site notes, change history."""
    site, history = [], []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text.startswith(STANDARD_HEADER):
            break
        (history if text.startswith(HISTORY_PREFIX) else site).append(text)
    return site, history
