#!/usr/bin/env python3
"""What the operator's page costs the line: the same virtual line run three times:
without the page; with K clients making the page's requests at its rates (status
and a new live frame 3 a second, the lists every 2 s) from this process, as
browsers on other machines would; and with the page open in K headless Chromium
windows on this machine (line view).

    .venv/bin/python tools/web_bench.py [--parts 150] [--clients 4]

Prints for each run: trigger-to-verdict and frame-to-verdict p50/p99, parts
routed as their verdict, and the station process's CPU seconds (from
/proc/PID/stat: its threads, not the clients'); the page's CPU cost is the
difference from the run without it, per second, as a share of one core. For the
Chromium run: first paint of the line view and live frames a second per window.
Chromium on the line PC itself competes with the station for the CPU; the
API-client run is the figure for browsers elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.web.screenshot import headless_chromium  # noqa: E402

COUNT_LIVE_FRAMES = """
window.__liveFrames = 0;
document.getElementById('live').addEventListener('load', () => window.__liveFrames++);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of one process (all its threads), None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_client(url: str, stop: threading.Event, results: list, index: int) -> None:
    """The page's requests, without rendering: what a browser elsewhere costs the station."""
    frames, last_uid, next_slow = 0, None, 0.0
    while not stop.is_set():
        try:
            status = json.loads(urllib.request.urlopen(url + "api/status", timeout=2).read())
            uid = (status.get("latest") or {}).get("uid")
            if uid is not None and uid != last_uid:
                urllib.request.urlopen(f"{url}api/live.jpg?uid={uid}", timeout=2).read()
                frames, last_uid = frames + 1, uid
            if time.monotonic() >= next_slow:
                for path in ("api/parts/recent", "api/alarms", "api/rejects"):
                    urllib.request.urlopen(url + path, timeout=2).read()
                next_slow = time.monotonic() + 2.0
        except OSError:
            pass
        stop.wait(1 / 3)
    results[index] = {"live_frames": frames}


def run_line(parts: int, web: str | None, out: Path) -> subprocess.Popen:
    command = [
        str(REPO / ".venv/bin/station"),
        "run",
        "--virtual-line",
        "--parts",
        str(parts),
        "--json",
        "--out",
        str(out),
    ]
    if web:
        command += ["--web", web]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_for_page(url: str, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "api/status", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: the page did not come up")


def watch(url: str, seconds: float, results: list, index: int) -> None:
    driver = headless_chromium()
    try:
        driver.get(url + "#line")
        paint = driver.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "return p ? p.startTime : null;"
        )
        driver.execute_script(COUNT_LIVE_FRAMES)
        time.sleep(seconds)
        frames = driver.execute_script("return window.__liveFrames;")
        results[index] = {"first_paint_ms": paint, "live_fps": frames / seconds}
    finally:
        driver.quit()


def measure(parts: int, clients: int, kind: str, tmp: Path) -> dict:
    """kind: 'none', 'api' or 'chromium'."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    line = run_line(parts, None if kind == "none" else f"127.0.0.1:{port}", tmp / kind)
    cpu = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            value = process_cpu_s(line.pid)
            if value is not None:
                cpu[0] = value
            sampling.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list = [None] * clients
    if kind != "none":
        wait_for_page(url)
        seconds = max(5.0, parts / 5 - 8)  # most of the run: 5 parts a second
        stop = threading.Event()
        target = watch if kind == "chromium" else api_client
        arguments = (url, seconds) if kind == "chromium" else (url, stop)
        threads = [
            threading.Thread(target=target, args=(*arguments, results, i)) for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        if kind == "api":
            time.sleep(seconds)
            stop.set()
        for thread in threads:
            thread.join()
    out, _ = line.communicate(timeout=600)
    sampling.set()
    sampler.join()
    summary = json.loads(out.strip().splitlines()[-1])
    return {"summary": summary, "cpu_s": cpu[0], "clients": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=150)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "no page": measure(args.parts, 0, "none", Path(tmp)),
            f"{args.clients} clients": measure(args.parts, args.clients, "api", Path(tmp)),
            f"{args.clients} Chromium": measure(args.parts, args.clients, "chromium", Path(tmp)),
        }
    keys = (
        "verdict_latency_ms_p50",
        "verdict_latency_ms_p99",
        "frame_to_verdict_ms_p50",
        "frame_to_verdict_ms_p99",
        "lost",
        "routed_as_verdict",
    )
    print(f"{args.parts} parts on the virtual line")
    print(f"{'':<12}" + "".join(f"{k:>25}" for k in keys) + f"{'station CPU s':>15}")
    for name, run in runs.items():
        s = run["summary"]
        print(f"{name:<12}" + "".join(f"{s[k]:>25}" for k in keys) + f"{run['cpu_s']:>15.1f}")
    base = runs["no page"]
    for name, run in list(runs.items())[1:]:
        for key in ("verdict_latency_ms_p99", "frame_to_verdict_ms_p99"):
            change = run["summary"][key] / base["summary"][key] - 1
            print(f"{name}: {key} {change:+.1%}")
        cost = (run["cpu_s"] - base["cpu_s"]) / run["summary"]["wall_s"]
        print(f"{name}: the page's CPU in the station {cost:.1%} of one core")
    api = runs[f"{args.clients} clients"]
    seconds = max(5.0, args.parts / 5 - 8)
    for i, client in enumerate(api["clients"]):
        print(f"client {i}: live view {client['live_frames'] / seconds:.1f} frames/s")
    page = runs[f"{args.clients} Chromium"]
    for i, client in enumerate(page["clients"]):
        paint = client["first_paint_ms"]
        print(
            f"window {i}: first paint {paint if paint is None else round(paint)} ms, "
            f"live view {client['live_fps']:.1f} frames/s"
        )


if __name__ == "__main__":
    main()
