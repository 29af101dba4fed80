"""The audit trail: every part in SQLite, images of rejects under a disk quota.

One row per part that broke the beam (or crossed the vision trigger line),
written when the PART event arrives and updated at the verdict and at the
gate, each in its own committed transaction: with WAL journaling a killed
process loses nothing that was committed, and the row exists before the
part is judged, so a crash mid-judgement still leaves the part on record.
Times are stored as UNIX seconds (UTC) so the table can be read without
this program.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    uid             INTEGER PRIMARY KEY AUTOINCREMENT,
    link_epoch      INTEGER NOT NULL,   -- counts handshakes: Mega part IDs restart at each boot
    part_id         INTEGER NOT NULL,   -- the Mega's ID; vision-trigger IDs have bit 31 set
    trigger_source  TEXT NOT NULL,      -- photo_eye | vision | gate_only
    mcu_trigger_ms  INTEGER,            -- the Mega's millis() at the trigger
    trigger_time    REAL,               -- UNIX s
    frame_time      REAL,
    verdict_time    REAL,
    gate_time       REAL,
    score           REAL,
    verdict         TEXT,               -- pass | reject (fail-safe rejects included)
    failsafe_reason TEXT,               -- why a reject was not a judgement; NULL if judged
    gate_action     TEXT,               -- fired | passed; NULL until the Mega reports it
    gate_reason     TEXT,               -- the Mega's reason (verdict, no_verdict, link_lost...)
    model_version   TEXT NOT NULL,
    calibration_crc TEXT NOT NULL,
    image_path      TEXT,
    note            TEXT,
    UNIQUE (link_epoch, part_id)
);
CREATE TABLE IF NOT EXISTS alarms (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   REAL NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (    -- an engineer's word on what a part truly was
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         INTEGER NOT NULL REFERENCES parts (uid),
    truth       TEXT NOT NULL CHECK (truth IN ('defective', 'ok')),
    reviewer    TEXT NOT NULL,
    reviewed_at REAL NOT NULL           -- UNIX s; the latest review of a part stands
);
"""

ACK_ALARM_KIND = "acknowledged"
"""The row an operator's acknowledgement writes (the tracker's OperatorAck rule; the tracker
may not import this module): alarms before it are no longer active."""
INFO_ALARM_KINDS = ("link_up", "fault_cleared", ACK_ALARM_KIND)
"""Alarm rows that report good news or an action, not a problem to look at."""


class AuditLog:
    """The SQLite audit database. Used from one thread (the station's main loop)."""

    def __init__(
        self,
        path: Path,
        model_version: str,
        calibration_crc: int,
        clock_offset_s: float | None = None,
        commit_every: int = 1,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill in WAL
        self.db.executescript(SCHEMA)
        self.commit_every = commit_every
        """1 on the line: every write its own transaction, so a killed process loses nothing
        committed. The stepped line's soak batches (a simulation can be run again)."""
        self._uncommitted = 0
        self.model_version = model_version
        self.calibration_crc = f"{calibration_crc:#010x}"
        self._clock_offset = (
            time.time() - time.monotonic() if clock_offset_s is None else clock_offset_s
        )
        """Added to the station's clock (monotonic, or a simulation's) to give UNIX time."""

    @property
    def clock_offset_s(self) -> float:
        """What `wall` adds: fixed when the log opens, so later steps of the wall clock
        (NTP, a virtual machine resumed) do not move times already written."""
        return self._clock_offset

    def wall(self, monotonic_s: float | None) -> float | None:
        return None if monotonic_s is None else monotonic_s + self._clock_offset

    def next_epoch(self) -> int:
        """One more than any epoch on record, so IDs never collide across restarts."""
        row = self.db.execute("SELECT COALESCE(MAX(link_epoch), 0) FROM parts").fetchone()
        return int(row[0]) + 1

    def next_uid(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(uid), 0) FROM parts").fetchone()
        return int(row[0]) + 1

    def new_part(
        self,
        uid: int,
        epoch: int,
        part_id: int,
        source: str,
        mcu_trigger_ms: int | None,
        trigger_time: float | None,
        note: str | None = None,
    ) -> int:
        cur = self._write(
            "INSERT INTO parts (uid, link_epoch, part_id, trigger_source, mcu_trigger_ms, "
            "trigger_time, model_version, calibration_crc, note) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                uid,
                epoch,
                part_id,
                source,
                mcu_trigger_ms,
                self.wall(trigger_time),
                self.model_version,
                self.calibration_crc,
                note,
            ),
        )
        return int(cur.lastrowid)

    def update(self, uid: int, **fields) -> None:
        """Set columns of one part; times given as monotonic seconds are converted."""
        for name in ("trigger_time", "frame_time", "verdict_time", "gate_time"):
            if name in fields:
                fields[name] = self.wall(fields[name])
        columns = ", ".join(f"{name} = ?" for name in fields)
        self._write(f"UPDATE parts SET {columns} WHERE uid = ?", (*fields.values(), uid))

    def alarm(self, kind: str, detail: str, when: float | None = None) -> None:
        """`when` on the station's clock; None: now."""
        at = time.time() if when is None else self.wall(when)
        self._write("INSERT INTO alarms (time, kind, detail) VALUES (?,?,?)", (at, kind, detail))

    def review(self, uid: int, truth: str, reviewer: str) -> bool:
        """Record what part `uid` truly was; False if no such part is on record."""
        if truth not in ("defective", "ok"):
            raise ValueError(f"truth must be 'defective' or 'ok', not {truth!r}")
        if self.db.execute("SELECT 1 FROM parts WHERE uid = ?", (uid,)).fetchone() is None:
            return False
        self._write(
            "INSERT INTO reviews (uid, truth, reviewer, reviewed_at) VALUES (?,?,?,?)",
            (uid, truth, reviewer, time.time()),
        )
        return True

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        if self.commit_every > 1 and not self.db.in_transaction:
            self.db.execute("BEGIN")
        cursor = self.db.execute(sql, params)
        self._uncommitted += 1
        if self.db.in_transaction and self._uncommitted >= self.commit_every:
            self.commit()
        return cursor

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._uncommitted = 0

    def close(self) -> None:
        self.commit()
        self.db.close()


class AuditReader:
    """Read-only queries for the operator's page and the exports, on a connection of
    their own: with WAL, readers never block the line's writes, nor it theirs."""

    PART_COLUMNS = (
        "uid, link_epoch, part_id, trigger_source, trigger_time, verdict_time, gate_time, "
        "score, verdict, failsafe_reason, gate_action, gate_reason, model_version, "
        "calibration_crc, image_path, note"
    )

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        """One connection shared by the web server's threads: one query at a time."""

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    def recent_parts(self, limit: int = 50) -> list[dict]:
        return self._rows(
            f"SELECT {self.PART_COLUMNS} FROM parts ORDER BY uid DESC LIMIT ?", (limit,)
        )

    def recent_rejects(self, limit: int = 24) -> list[dict]:
        return self._rows(
            f"SELECT {self.PART_COLUMNS} FROM parts WHERE verdict = 'reject' "
            "ORDER BY uid DESC LIMIT ?",
            (limit,),
        )

    def sampled_passes(self, limit: int = 24) -> list[dict]:
        """Passed parts whose image was kept (one in `pass_sample_every`), for review."""
        return self._rows(
            f"SELECT {self.PART_COLUMNS} FROM parts WHERE verdict = 'pass' "
            "AND image_path IS NOT NULL ORDER BY uid DESC LIMIT ?",
            (limit,),
        )

    def part(self, uid: int) -> dict | None:
        rows = self._rows(f"SELECT {self.PART_COLUMNS} FROM parts WHERE uid = ?", (uid,))
        if not rows:
            return None
        part = rows[0]
        part["reviews"] = self._rows(
            "SELECT truth, reviewer, reviewed_at FROM reviews WHERE uid = ? ORDER BY id", (uid,)
        )
        return part

    def counts_since(self, since: float) -> dict:
        """Counters over the parts that broke the beam at or after `since` (UNIX s)."""
        rows = self._rows(
            "SELECT verdict, failsafe_reason, COUNT(*) AS n FROM parts "
            "WHERE trigger_time >= ? GROUP BY verdict, failsafe_reason",
            (since,),
        )
        counts = {"parts": 0, "passed": 0, "rejected": 0, "failsafe_rejects": 0}
        by_reason: dict[str, int] = {}
        for r in rows:
            counts["parts"] += r["n"]
            if r["verdict"] == "pass":
                counts["passed"] += r["n"]
            elif r["verdict"] == "reject":
                counts["rejected"] += r["n"]
            if r["failsafe_reason"]:
                counts["failsafe_rejects"] += r["n"]
                by_reason[r["failsafe_reason"]] = by_reason.get(r["failsafe_reason"], 0) + r["n"]
        counts["failsafe_by_reason"] = by_reason
        return counts

    def alarms(self, limit: int = 50) -> tuple[list[dict], list[dict]]:
        """(active, recent): active = problems raised since the last acknowledgement."""
        recent = self._rows(
            "SELECT id, time, kind, detail FROM alarms ORDER BY id DESC LIMIT ?", (limit,)
        )
        acked = self._rows(
            "SELECT COALESCE(MAX(id), 0) AS id FROM alarms WHERE kind = ?", (ACK_ALARM_KIND,)
        )[0]["id"]
        active = self._rows(
            "SELECT id, time, kind, detail FROM alarms WHERE id > ? AND kind NOT IN "
            f"({','.join('?' * len(INFO_ALARM_KINDS))}) ORDER BY id DESC LIMIT ?",
            (acked, *INFO_ALARM_KINDS, limit),
        )
        return active, recent

    def latest_reviews(self) -> list[dict]:
        """Each reviewed part once, with its latest review, oldest part first."""
        return self._rows(
            f"SELECT {', '.join('p.' + c.strip() for c in self.PART_COLUMNS.split(','))}, "
            "r.truth, r.reviewer, r.reviewed_at FROM reviews r JOIN parts p ON p.uid = r.uid "
            "WHERE r.id = (SELECT MAX(id) FROM reviews WHERE uid = r.uid) ORDER BY p.uid"
        )

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class _ImageJob:
    path: Path
    image: np.ndarray | None
    """None: only merge `sidecar` into the JSON file already beside `path`."""
    sidecar: dict | None = None


class ImageStore:
    """PNG files under a quota; the oldest go first. Written by a thread of its own.

    PNG because it is lossless: a saved reject can be replayed and gives the
    same score. An image may carry a JSON sidecar (same name, `.json`) that
    counts towards the quota and goes with it. The queue is bounded and never
    blocks the line: when the disk is too slow, an image is dropped and
    counted, the audit row stays. A replay has no belt to keep up with, so it
    waits for the disk instead (`wait_when_full`) and loses no image.
    """

    def __init__(
        self, root: Path, quota_mb: float, queue_size: int = 64, wait_when_full: bool = False
    ):
        self.root = Path(root)
        self.wait_when_full = wait_when_full
        self.quota_bytes = int(quota_mb * 1e6)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self.removed = 0
        self._queue: queue.Queue[_ImageJob | None] = queue.Queue(maxsize=queue_size)
        self._files: list[tuple[Path, int]] = self._scan()
        self._bytes = sum(size for _, size in self._files)
        self._thread = threading.Thread(target=self._write_loop, name="image-store", daemon=True)
        self._thread.start()

    def save(self, relative: str, image: np.ndarray, sidecar: dict | None = None) -> Path | None:
        """Queue `image` to be written at root/relative; returns the path or None if dropped."""
        return self._put(_ImageJob(self.root / relative, image, sidecar))

    def update_sidecar(self, relative: str, fields: dict) -> None:
        """Merge `fields` into the sidecar of an image saved earlier (if it is still there)."""
        self._put(_ImageJob(self.root / relative, None, fields))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def _put(self, job: _ImageJob) -> Path | None:
        try:
            self._queue.put(job, block=self.wait_when_full)
        except queue.Full:
            self.dropped += 1
            log.warning("image store busy: %s not saved", job.path.relative_to(self.root))
            return None
        return job.path

    def _scan(self) -> list[tuple[Path, int]]:
        files = [
            (p, p.stat().st_size + _size(p.with_suffix(".json")))
            for p in self.root.rglob("*.png")
            if p.is_file() and not p.name.endswith(".part.png")
        ]
        return sorted(files, key=lambda f: (f[0].stat().st_mtime, str(f[0])))

    def _write_loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.image is None:
                self._merge_sidecar(job.path.with_suffix(".json"), job.sidecar or {})
                continue
            job.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = job.path.with_suffix(".part.png")
            if not cv2.imwrite(str(tmp), job.image):
                log.error("%s: could not write image", job.path)
                continue
            os.replace(tmp, job.path)
            if job.sidecar is not None:
                _write_json(job.path.with_suffix(".json"), job.sidecar)
            size = job.path.stat().st_size + _size(job.path.with_suffix(".json"))
            self._files.append((job.path, size))
            self._bytes += size
            self._enforce_quota()

    def _merge_sidecar(self, path: Path, fields: dict) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return  # removed by the quota (or never written): nothing to update
        data.update(fields)
        _write_json(path, data)

    def _enforce_quota(self) -> None:
        while self._bytes > self.quota_bytes and len(self._files) > 1:
            path, size = self._files.pop(0)
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            self._bytes -= size
            self.removed += 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a reader (or a crash) never sees half a file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
