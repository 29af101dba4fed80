"""The operator's page: a Flask app on a thread of its own in the station's process.

Reads: the latest `LineSnapshot` (handed over by the main loop) and the audit
database through its own read-only connection. Writes: none here. An action
(acknowledge the alarms, review a part) is put on the main loop's inbox and
answered when the loop has done it, so the audit has one writer and no
request can hold up the line.

Security, by default: the address is 127.0.0.1 unless the station file says
otherwise; reading needs nothing, every action needs the token from a file
only the service user can read (`Authorization: Bearer <token>`, else 403);
an image is found by part ID in the audit, never by a path from the request;
bodies over 64 kB get 413; more than `RATE_PER_S` requests a second from one
address get 429; no caching of the API, no framing, no sniffing.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from flask import Flask, Response, abort, jsonify, request, send_from_directory
from waitress.server import create_server
from waitress.wasyncore import close_all
from werkzeug.exceptions import HTTPException

from station.audit import AuditReader
from station.tracker import OperatorAck
from station.web.snapshot import (
    JudgedView,
    LineSnapshot,
    PartsInJudgement,
    ReviewPart,
    WebRequest,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
MAX_SPOOLED_BODY_BYTES = 16 * 1024 * 1024
RATE_PER_S = 200
"""Requests a second one address may make (4 pages at 5 requests a second use 20)."""
ACTION_TIMEOUT_S = 3.0
"""How long a request waits for the main loop to carry out its action."""
NAME_MAX = 64
SERVER_THREADS = 4
YIELD_TO_LINE_S = 0.025
"""Longest a request waits for the parts in judgement (PartsInJudgement) before it runs
anyway: a hung classifier makes the page slower, never unavailable."""
LIST_CACHE_S = 1.0
"""Audit queries are shared by every open page for this long: four pages cost the line
about what one does."""


class Cached:
    """A value made at most once per `ttl_s`, whoever asks for it."""

    def __init__(self, make: Callable[[], object], ttl_s: float):
        self.make = make
        self.ttl_s = ttl_s
        self._value: object = None
        self._made_at = -1e9
        self._lock = threading.Lock()

    def get(self) -> object:
        with self._lock:
            now = time.monotonic()
            if now - self._made_at >= self.ttl_s:
                self._value, self._made_at = self.make(), now
            return self._value

    def expire(self) -> None:
        with self._lock:
            self._made_at = -1e9


def load_token(path: Path) -> str:
    """The actions' token from `path`; refuses a file others could read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"web.token_file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(
            f"web.token_file {path}: readable by others (mode {mode & 0o777:o}); "
            f"chmod 600 it, owned by the service user"
        )
    if len(token) < 16:
        raise ValueError(f"web.token_file {path}: the token must be at least 16 characters")
    return token


class RateLimiter:
    """A token bucket per client address: `rate` a second, bursts up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.rate, now))
            tokens = min(self.rate, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1, now)
            return True


class FrameImages:
    """JPEGs of the latest judged frame (crop box and verdict drawn) and of saved
    parts, made on the web threads and kept for the next request."""

    SHOWN_KEPT = 8

    def __init__(self) -> None:
        self._live: tuple[int, bytes] | None = None
        self._thumbs: dict[int, bytes] = {}
        self._shown: dict[int, JudgedView] = {}
        """The latest frames a status answer named, by uid: the page asks for the image of
        the part its caption names, which may no longer be the latest."""
        self._lock = threading.Lock()

    def named(self, view: JudgedView) -> None:
        with self._lock:
            self._shown[view.uid] = view
            while len(self._shown) > self.SHOWN_KEPT:
                del self._shown[next(iter(self._shown))]

    def view(self, uid: int | None, latest: JudgedView) -> JudgedView:
        """The frame `uid` if a status answer named it lately, else the latest."""
        with self._lock:
            return self._shown.get(uid, latest) if uid is not None else latest

    def live(self, view: JudgedView) -> bytes:
        with self._lock:
            if self._live and self._live[0] == view.uid:
                return self._live[1]
        jpeg = _jpeg(_annotated(view), quality=80)
        with self._lock:
            self._live = (view.uid, jpeg)
        return jpeg

    def thumbnail(self, uid: int, path: Path) -> bytes | None:
        with self._lock:
            if uid in self._thumbs:
                return self._thumbs[uid]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return None
        scale = 160 / max(image.shape[:2])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        jpeg = _jpeg(small, quality=75)
        with self._lock:
            if len(self._thumbs) > 500:
                self._thumbs.clear()
            self._thumbs[uid] = jpeg
        return jpeg


def _annotated(view: JudgedView) -> np.ndarray:
    image = view.image if view.image.ndim == 3 else cv2.cvtColor(view.image, cv2.COLOR_GRAY2BGR)
    image = image.copy()  # the frame itself is shared with the line: never draw on it
    # red reject, green pass, amber for anything else (a calibration step's words)
    colour = {"reject": (40, 40, 220), "pass": (60, 180, 60)}.get(view.verdict, (40, 160, 240))
    if view.roi:
        x, y, w, h = view.roi
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
    label = f"#{view.uid} {view.verdict.upper()}"
    if view.score is not None:
        label += f" {view.score:.3f}"
    if view.failsafe:
        label += f" ({view.failsafe})"
    font, width = cv2.FONT_HERSHEY_SIMPLEX, image.shape[1] - 16
    scale = min(0.7, 0.7 * width / cv2.getTextSize(label, font, 0.7, 2)[0][0])
    cv2.putText(image, label, (8, 24), font, scale, colour, 2, cv2.LINE_AA)
    return image


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def create_app(
    snapshot: Callable[[], LineSnapshot | None],
    submit: Callable[[WebRequest], WebRequest],
    reader: AuditReader,
    images_dir: Path,
    token: str | None,
    shift_start: Callable[[float], float],
    judging: PartsInJudgement | None = None,
    rate_per_s: float = RATE_PER_S,
) -> Flask:
    """`snapshot()`: the latest picture of the line; `submit(request)`: hands an action
    to the main loop; `shift_start(now)`: UNIX s at which the current shift began;
    `judging`: the line's parts in judgement, which every request lets go first."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    limiter = RateLimiter(rate_per_s)
    frames = FrameImages()
    images_root = Path(images_dir).resolve()
    shift_counts = Cached(lambda: _shift_counts(reader, shift_start), LIST_CACHE_S)
    recent_parts = Cached(lambda: reader.recent_parts(50), LIST_CACHE_S)
    recent_rejects = Cached(
        lambda: {"rejects": reader.recent_rejects(24), "passes": reader.sampled_passes(12)},
        LIST_CACHE_S,
    )
    recent_alarms = Cached(lambda: dict(zip(("active", "recent"), reader.alarms(50))), LIST_CACHE_S)
    status_body: dict[float, bytes] = {}

    @app.before_request
    def _yield_to_line() -> None:
        if judging is not None:
            judging.wait_quiet(YIELD_TO_LINE_S)

    @app.before_request
    def _limit() -> Response | None:
        if not limiter.allow(request.remote_addr or "?"):
            return _error(429, f"more than {rate_per_s:.0f} requests a second; slow down")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    def _snapshot() -> LineSnapshot:
        snap = snapshot()
        if snap is None:
            abort(503, "the station is starting; no picture of the line yet")
        return snap

    def _authorised() -> None:
        if token is None:
            abort(403, "actions are disabled: no web.token_file in the station file")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            abort(403, "this action needs the station's token (Authorization: Bearer ...)")

    def _name(body: dict) -> str:
        name = str(body.get("name", "")).strip()
        if not name or len(name) > NAME_MAX or not name.isprintable():
            abort(400, f"'name': who you are, 1 to {NAME_MAX} printable characters")
        return name

    def _body() -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, "the body must be a JSON object")
        return body

    def _carry_out(action: object) -> object:
        pending = submit(WebRequest(action))
        try:
            return pending.done.result(timeout=ACTION_TIMEOUT_S)
        except FutureTimeout:
            abort(503, f"the station did not carry this out within {ACTION_TIMEOUT_S:.0f} s")

    # --- pages -----------------------------------------------------------------------

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<name>")
    def static_file(name: str) -> Response:
        if name not in ("app.js", "style.css"):
            abort(404, "no such file")
        return send_from_directory(STATIC, name)

    # --- the API -----------------------------------------------------------------------

    @app.get("/api/status")
    def status() -> Response:
        snap = _snapshot()
        body = status_body.get(snap.taken_at)
        if body is None:  # once per snapshot, whoever asks first
            body = _status_json(snap, shift_counts.get())
            status_body.clear()
            status_body[snap.taken_at] = body
            if snap.latest is not None:
                frames.named(snap.latest)
        return Response(body, mimetype="application/json")

    @app.get("/api/live.jpg")
    def live() -> Response:
        latest = _snapshot().latest
        if latest is None:
            abort(404, "no part judged yet")
        wanted = request.args.get("uid", type=int)  # the part the page's caption names
        return Response(frames.live(frames.view(wanted, latest)), mimetype="image/jpeg")

    @app.get("/api/parts/recent")
    def recent() -> Response:
        return jsonify(recent_parts.get())

    @app.get("/api/rejects")
    def rejects() -> Response:
        return jsonify(recent_rejects.get())

    @app.get("/api/parts/<int:uid>")
    def part(uid: int) -> Response:
        row = reader.part(uid)
        if row is None:
            abort(404, f"no part {uid} in the audit")
        row["image"] = _image_path(row) is not None
        row.pop("image_path", None)
        return jsonify(row)

    def _image_path(row: dict) -> Path | None:
        """The part's saved image, only if it lies under the image store."""
        stored = row.get("image_path")
        if not stored:
            return None
        path = Path(stored).resolve()
        if not path.is_relative_to(images_root) or not path.is_file():
            return None
        return path

    def _part_image_path(uid: int) -> Path:
        row = reader.part(uid)
        if row is None:
            abort(404, f"no part {uid} in the audit")
        path = _image_path(row)
        if path is None:
            abort(404, f"part {uid} has no saved image (passes are sampled; old ones expire)")
        return path

    @app.get("/api/parts/<int:uid>/image")
    def part_image(uid: int) -> Response:
        path = _part_image_path(uid)
        return send_from_directory(path.parent, path.name, mimetype="image/png")

    @app.get("/api/parts/<int:uid>/thumb.jpg")
    def part_thumb(uid: int) -> Response:
        path = _part_image_path(uid)
        jpeg = frames.thumbnail(uid, path)
        if jpeg is None:
            abort(404, f"part {uid}: the saved image cannot be read")
        return Response(jpeg, mimetype="image/jpeg")

    @app.get("/api/alarms")
    def alarms() -> Response:
        return jsonify(recent_alarms.get())

    @app.post("/api/alarms/ack")
    def acknowledge() -> Response:
        _authorised()
        name = _name(_body())
        _carry_out(OperatorAck(name))
        recent_alarms.expire()  # the page shows the acknowledgement at once
        return jsonify({"acknowledged_by": name, "at": time.time()})

    @app.post("/api/parts/<int:uid>/review")
    def review(uid: int) -> Response:
        _authorised()
        body = _body()
        name = _name(body)
        truth = body.get("truth")
        if truth not in ("defective", "ok"):
            abort(400, "'truth' must be 'defective' or 'ok'")
        if not _carry_out(ReviewPart(uid, truth, name)):
            abort(404, f"no part {uid} in the audit")
        recent_rejects.expire()
        return jsonify({"uid": uid, "truth": truth, "reviewer": name})

    return app


def _shift_counts(reader: AuditReader, shift_start: Callable[[float], float]) -> dict:
    since = shift_start(time.time())
    counts = reader.counts_since(since)
    counts["since"] = since
    return counts


def _status_json(snap: LineSnapshot, shift: dict) -> bytes:
    latest = snap.latest
    return json.dumps(
        {
            "taken_at": snap.taken_at,
            "mode": snap.mode,
            "uptime_s": round(time.time() - snap.started_at, 1),
            "since_start": snap.counters,
            "since_shift_start": shift,
            "link": snap.link,
            "camera": snap.camera,
            "model": snap.model,
            "images": snap.images,
            "calibration": snap.calibration,
            "latest": None
            if latest is None
            else {k: v for k, v in asdict(latest).items() if k != "image"},
        }
    ).encode()


def _error(code: int, message: str) -> Response:
    response = jsonify({"error": message, "status": code})
    response.status_code = code
    return response


class WebServer:
    """The app on `host:port`, served by waitress from a daemon thread: one I/O thread
    and a fixed pool of SERVER_THREADS, no thread made per request."""

    def __init__(self, app: Flask, listen: str):
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self._server = create_server(
            app,
            host=self.host,
            port=int(port),
            threads=SERVER_THREADS,
            ident="station",
            # Bodies past Flask's 64 kB get its JSON 413 once read; past 16 MB waitress
            # stops reading and closes the connection instead of spooling more.
            max_request_body_size=MAX_SPOOLED_BODY_BYTES,
        )
        self.port = self._server.effective_port
        # Its 'Task queue depth is N' on every busy moment would bury the station's log.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "WebServer":
        self._thread.start()
        log.info("operator's page on %s", self.url)
        return self

    def close(self) -> None:
        """Let the requests in hand finish, then close every connection and the listening
        socket from waitress's own I/O thread (closing them from here races its poll)."""
        self._server.task_dispatcher.shutdown(timeout=2)
        self._server.trigger.pull_trigger(lambda: close_all(self._server._map))
        self._thread.join(timeout=5)
