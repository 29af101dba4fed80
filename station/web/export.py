"""`station export-reviewed`: what engineers said the parts truly were, as training data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2

from station.audit import AuditReader
from station.vision.locate import PartNotFound, frame_photo

EXPORT_SIZE = 300
"""Exported crops are the size of the training photos (the dataset's 300x300)."""


@dataclass
class ReviewExport:
    exported: dict[str, int]
    """Images written per truth: {'defective': n, 'ok': n}."""
    skipped: list[tuple[int, str]]
    """(uid, why) for reviewed parts with no usable image."""
    manifest: Path


def export_reviewed(database: Path, out_dir: Path, crop_px: int, min_area_px: int) -> ReviewExport:
    """Reviewed parts as a labelled folder: `def_front/` and `ok_front/` with each part
    cropped as the line cropped it (the calibration's `crop_px` around the part, found
    by the same function, in the same saved frame) at 300x300, and `manifest.csv` (one
    row per reviewed part, exported or not, with the reason). Ready for `station train`,
    `station evaluate` and `station replay --against`. The latest review stands."""
    reader = AuditReader(database)
    try:
        rows = reader.latest_reviews()
    finally:
        reader.close()
    out_dir = Path(out_dir)
    folders = {"defective": out_dir / "def_front", "ok": out_dir / "ok_front"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    exported = {"defective": 0, "ok": 0}
    skipped: list[tuple[int, str]] = []
    manifest_rows = []
    for row in rows:
        why, written = "", ""
        image = cv2.imread(row["image_path"], cv2.IMREAD_COLOR) if row["image_path"] else None
        if image is None:
            why = "no saved image (passes are sampled; the quota removes old images)"
        else:
            try:
                roi = frame_photo(image, crop_px, min_area_px)
            except PartNotFound as exc:
                why = f"part not found in the saved image: {exc}"
            else:
                if roi is not None:
                    image = image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
                crop = image
                crop = cv2.resize(crop, (EXPORT_SIZE, EXPORT_SIZE), interpolation=cv2.INTER_AREA)
                path = folders[row["truth"]] / f"line_{row['uid']:09d}.png"
                cv2.imwrite(str(path), crop)
                written = str(path.relative_to(out_dir))
                exported[row["truth"]] += 1
        if why:
            skipped.append((row["uid"], why))
        manifest_rows.append(
            {
                "file": written,
                "truth": row["truth"],
                "uid": row["uid"],
                "part_id": row["part_id"],
                "link_epoch": row["link_epoch"],
                "verdict": row["verdict"],
                "failsafe_reason": row["failsafe_reason"] or "",
                "score": "" if row["score"] is None else f"{row['score']:.6f}",
                "model_version": row["model_version"],
                "reviewer": row["reviewer"],
                "reviewed_at": f"{row['reviewed_at']:.3f}",
                "source_image": row["image_path"] or "",
                "not_exported_because": why,
            }
        )
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as f:
        fields = list(manifest_rows[0]) if manifest_rows else ["file", "truth", "uid"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(manifest_rows)
    return ReviewExport(exported, skipped, manifest)
