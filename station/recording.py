"""Recordings: what the line saw, kept so that it can be replayed (`station run --record DIR`).

On-disk layout, format 1 (plain files, readable without this program):

    DIR/
      recording.yaml          format, station, created_utc
      2026-11-22/             one folder per day (UTC)
        000001234.png         the frame the part was judged on, as the camera gave it
                              (PNG: lossless, so a replay scores exactly what the line did)
        000001234.json        that part, named by its audit uid:
                                uid, part_id, link_epoch, trigger_source,
                                trigger_time, frame_time, verdict_time, gate_time (UNIX s),
                                score, verdict, failsafe_reason, detail, roi [x, y, w, h],
                                model_version, calibration_checksum,
                                gate_action, gate_reason (null until the gate reports;
                                null for good if the link was down at gate time),
                                label (null; an engineer may set "defective" or "ok",
                                and `station replay` then counts missed defects and
                                false rejects)

Parts with no frame (a camera stall) have nothing to replay and are not
recorded; the audit has them. The folder is kept under `quota_mb`, the
oldest parts going first, PNG and JSON together. Several runs may record
into one folder: each part carries its own model version and calibration
checksum.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from station.audit import ImageStore
from station.camera.frames import Frame
from station.judgement import Judgement

FORMAT = 1
INDEX_NAME = "recording.yaml"


class RecordingError(RuntimeError):
    """The folder is not a recording this program can write to or read; names the file."""


class Recorder:
    """Writes judged parts into a recording folder, through an ImageStore (its own thread)."""

    def __init__(self, root: Path, quota_mb: float, station: str):
        self.root = Path(root)
        _open_index(self.root, station)
        self.store = ImageStore(self.root, quota_mb)
        self._names: dict[int, str] = {}

    def part_judged(self, uid: int, frame: Frame, judgement: Judgement, part: dict) -> None:
        """Keep the frame and what was decided. `part` holds the audit's fields for it, times
        included: the audit turns the station's clock into wall-clock time with one offset,
        so a sidecar's times agree with its row even if the wall clock steps mid-run."""
        roi = judgement.roi
        meta = {
            "uid": uid,
            "score": judgement.score,
            "verdict": judgement.verdict,
            "failsafe_reason": judgement.failsafe.value if judgement.failsafe else None,
            "detail": judgement.detail or None,
            "roi": [roi.x, roi.y, roi.width, roi.height] if roi else None,
            "gate_action": None,
            "gate_reason": None,
            "gate_time": None,
            "label": None,
            **part,  # what the station did with the judgement has the last word
        }
        name = f"{time.strftime('%Y-%m-%d', time.gmtime())}/{uid:09d}.png"
        if self.store.save(name, frame.image, meta) is not None:
            self._names[uid] = name

    def part_changed(self, uid: int, **fields) -> None:
        """Later news of a recorded part: its gate, or a fail-safe after the link dropped."""
        name = self._names.get(uid)
        if name is None:
            return
        if "gate_action" in fields:
            del self._names[uid]  # the gate is the last word on a part
        self.store.update_sidecar(name, fields)

    def close(self) -> None:
        self.store.close()


def _open_index(root: Path, station: str) -> None:
    index = root / INDEX_NAME
    if index.exists():
        data = read_index(root)
        if data.get("station") != station:
            raise RecordingError(
                f"{index}: a recording of station {data.get('station')!r}, not {station!r}; "
                "record into another folder"
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    index.write_text(
        "# A recording made by `station run --record`; layout in station/recording.py.\n"
        + yaml.safe_dump({"format": FORMAT, "station": station, "created_utc": created})
    )


def read_index(root: Path) -> dict:
    index = Path(root) / INDEX_NAME
    try:
        data = yaml.safe_load(index.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecordingError(f"{index}: cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordingError(f"{index}: format {data!r} is not {FORMAT}")
    return data


def is_recording(path: Path) -> bool:
    return (Path(path) / INDEX_NAME).is_file()


@dataclass(frozen=True)
class RecordedPart:
    image: Path
    meta: dict | None
    """The part's JSON; None if it is missing or unreadable (`problem` says why)."""
    problem: str | None = None


def recorded_parts(root: Path) -> list[RecordedPart]:
    """Every recorded part, oldest first (by uid); a bad sidecar is named, not fatal."""
    root = Path(root)
    read_index(root)
    parts = []
    for image in sorted(root.glob("*/*.png"), key=lambda p: p.stem):
        if image.name.endswith(".part.png"):
            continue  # a write the process did not finish
        sidecar = image.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            parts.append(RecordedPart(image, None, f"{sidecar}: missing"))
            continue
        except ValueError as exc:
            parts.append(RecordedPart(image, None, f"{sidecar}: unreadable JSON ({exc})"))
            continue
        parts.append(RecordedPart(image, meta))
    return parts


def label_parts(root: Path, labels: dict[int, str]) -> int:
    """Write known labels into recorded parts, by audit uid; returns how many were found.

    The virtual line knows every part's label, so its recordings replay with
    missed defects and false rejects counted.
    """
    found = 0
    for uid, label in labels.items():
        for sidecar in Path(root).glob(f"*/{uid:09d}.json"):
            meta = json.loads(sidecar.read_text())
            meta["label"] = label
            tmp = sidecar.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            tmp.replace(sidecar)
            found += 1
    return found
