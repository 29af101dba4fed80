"""The decision faults no page in once the heap keeps freed memory (station.heap).

Each process below scores the same real photo with the shipped classifier, as a line
does, and counts the page faults per part in the thread that decided, on the main thread
and on a worker thread (the service decides on one). Without the setting, every part
faults its buffers in again (about 930 a part, 2026-12-05); with it, none."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from conftest import SAMPLE_DIR

PHOTO = SAMPLE_DIR / "ok_front" / "cast_ok_0_1.jpeg"
CHILD = """
import json, resource, sys, threading
import cv2
from station.classifier import Classifier
from station.heap import retain_freed_memory
kept = retain_freed_memory() if sys.argv[1] == "kept" else None
photo = cv2.imread(sys.argv[2], cv2.IMREAD_COLOR)
classifier = Classifier()

def faults_per_part():
    for _ in range(20):
        classifier.score(photo)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(50):
        classifier.score(photo)
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 50

out = {"kept": kept, "main": faults_per_part()}
worker = threading.Thread(target=lambda: out.update(worker=faults_per_part()))
worker.start()
worker.join()
print(json.dumps(out))
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's, and page faults per thread are counted on Linux",
)


def _faults(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(PHOTO)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_decision_faults_no_page_in_once_freed_memory_is_kept():
    kept = _faults("kept")
    assert kept["kept"] is True
    assert kept["main"] < 1, kept
    assert kept["worker"] < 1, kept


def test_without_it_every_part_faults_its_buffers_in_again():
    """The cause, shown: if this stops holding (another C library, another glibc), the
    setting no longer buys anything, and heap.py's figures need measuring again."""
    default = _faults("default")
    assert default["main"] > 100, default
    assert default["worker"] > 100, default
