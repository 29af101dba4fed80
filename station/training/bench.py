"""`station bench`: latency of the shipped model against the baselines, in one run.

All models run in LiteRT on one thread (the line PC's budget), with random
weights for the baselines: latency does not depend on the weight values.
Keras `predict()` on the shipped model shows what skipping LiteRT would cost.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from station.calibration import CameraCalibration
from station.camera.frames import Frame
from station.classifier.litert_classifier import Classifier
from station.classifier.pit_check import find_pit
from station.config import VirtualLineConfig
from station.heap import retain_freed_memory
from station.judge import Judge

WARMUP = 50
SAMPLE_PHOTO = (
    Path(__file__).resolve().parents[2] / "tests/data/casting_sample/ok_front/cast_ok_0_1.jpeg"
)
"""The part photo the whole decision is timed on, unless `station bench --photo` names one."""
THROUGHPUT_BATCH = 32
PAUSE_S = 0.1
"""The pause before each part in the line's timing. The virtual line meets a part every 200
ms; after any pause of 10 ms or more this machine decides about half as fast again as back
to back (2026-12-05: 3.6 ms p50 back to back, 4.5 after 10 ms, 5.3 after 50, 5.5 after 200),
because the caches, the branch predictors and the TLB have been given to other work."""
MIN_PART_AREA_PX = CameraCalibration.model_fields["min_part_area_px"].default
LINE_RUNS = 300
"""At most this many parts timed with PAUSE_S before each (30 s)."""


@dataclass
class BenchRow:
    name: str
    runtime: str
    input_shape: str
    parameters: int
    p50_ms: float
    p99_ms: float
    images_per_s: float


@dataclass
class BenchTable:
    rows: list[BenchRow]
    runs: int
    runtime_rss_mb: float
    """Peak RSS of the process that timed the shipped decision: one like `station run`'s,
    with the run-time classifier alone."""

    def speedup_vs_seed(self) -> float:
        """Seed CNN (one invoke) against the whole shipped decision (preprocess + views)."""
        litert = {r.name: r for r in self.rows if r.runtime.startswith("LiteRT")}
        return litert["seed_cnn_300"].p99_ms / litert["shipped decision"].p99_ms

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "rows": [asdict(r) for r in self.rows],
            "p99_speedup_vs_seed": round(self.speedup_vs_seed(), 1),
            "runtime_rss_mb": self.runtime_rss_mb,
        }

    def as_text(self) -> str:
        header = (
            f"{'model':<26}{'runtime':<20}{'input':<20}{'params':>9}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'img/s':>9}"
        )
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r.name:<26}{r.runtime:<20}{r.input_shape:<20}{r.parameters:>9}"
                f"{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.images_per_s:>9.0f}"
            )
        lines.append(
            f"shipped decision p99 is {self.speedup_vs_seed():.1f}x faster than the seed CNN; "
            f"run-time classifier peak RSS {self.runtime_rss_mb:.0f} MB "
            f"({self.runs} timed runs each, the line judge {min(self.runs, LINE_RUNS)}, after "
            f"{WARMUP} warm-up, one thread)"
        )
        return "\n".join(lines)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time_calls(call, runs: int, pause_s: float = 0.0) -> list[float]:
    """Seconds each of `runs` calls took, after WARMUP untimed ones; `pause_s` slept before
    each timed call."""
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(runs):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _interpreter(model_path: Path) -> Interpreter:
    """A bare interpreter: the baselines are not grey single-channel models like the shipped one."""
    interp = Interpreter(model_path=str(model_path), num_threads=1)
    interp.allocate_tensors()
    return interp


def _litert_row(name: str, model_path: Path, parameters: int, runs: int) -> BenchRow:
    interp = _interpreter(model_path)
    detail = interp.get_input_details()[0]
    shape = tuple(int(v) for v in detail["shape"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = interp.get_output_details()[0]["index"]

    def call() -> None:
        interp.set_tensor(detail["index"], x)
        interp.invoke()
        interp.get_tensor(out)

    p50, p99 = _percentiles(_time_calls(call, runs))
    return BenchRow(
        name,
        "LiteRT 1 thread",
        "x".join(map(str, shape[1:])),
        parameters,
        p50,
        p99,
        _litert_throughput(model_path, shape),
    )


def _litert_throughput(model_path: Path, shape: tuple[int, ...]) -> float:
    """Images per second with a batch of 32 in one invoke (one thread)."""
    interp = _interpreter(model_path)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, [THROUGHPUT_BATCH, *shape[1:]])
    interp.allocate_tensors()
    x = np.random.default_rng(1).random((THROUGHPUT_BATCH, *shape[1:]), dtype=np.float32)

    def call() -> None:
        interp.set_tensor(index, x)
        interp.invoke()

    times = _time_calls(call, 20)
    return THROUGHPUT_BATCH / float(np.median(times))


def _shipped_decision(model_dir: Path, runs: int, photo: Path) -> list[BenchRow]:
    """A part photo (colour, as the camera gives it) to score, back to back: grey, crop,
    the network with the card's test-time views, the pit check. Then the pit check alone,
    and the line's judge (`_line_judge`). OpenCV on one thread too. A real photo, not
    noise: the pit check's work depends on the edges it finds."""
    cv2.setNumThreads(1)
    classifier = Classifier(model_dir)
    frame = cv2.imread(str(photo), cv2.IMREAD_COLOR)  # readable: `_line_process` checked
    shape = "x".join(map(str, frame.shape))
    p50, p99 = _percentiles(_time_calls(lambda: classifier.score(frame), runs))
    views = classifier.card.test_time_views
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    pit50, pit99 = _percentiles(_time_calls(lambda: find_pit(grey), runs))
    return [
        BenchRow(
            "shipped decision",
            f"LiteRT 1 thread x{views}",
            f"{shape} photo",
            classifier.card.parameters,
            p50,
            p99,
            1000.0 / p50,
        ),
        BenchRow(
            "  of which pit check",
            "OpenCV 1 thread",
            f"{grey.shape[1]}x{grey.shape[0]}",
            0,
            pit50,
            pit99,
            1000.0 / pit50,
        ),
        *_line_judge(classifier, grey, min(runs, LINE_RUNS), photo),
    ]


def _line_judge(classifier: Classifier, grey: np.ndarray, runs: int, photo: Path) -> list[BenchRow]:
    """What one part costs on the line: the line's judge (`Judge.judge`: find the part in a
    belt frame, crop it, the decision), timed back to back and then with PAUSE_S before
    each part, as the line meets them."""
    belt = Frame(_on_belt(grey), 0.0, 0, "bench belt")
    judge = Judge(classifier, crop_px=min(grey.shape), min_part_area_px=MIN_PART_AREA_PX)
    if judge.judge(belt).failsafe is not None:
        raise RuntimeError(f"{photo}: the line's judge did not find the part on a belt frame")
    rows = []
    for pause_s in (0.0, PAUSE_S):
        p50, p99 = _percentiles(_time_calls(lambda: judge.judge(belt), runs, pause_s))
        spacing = f"{pause_s * 1000:.0f} ms apart" if pause_s else "back to back"
        rows.append(
            BenchRow(
                f"line judge, {spacing}",
                f"LiteRT 1 thread x{classifier.card.test_time_views}",
                f"{belt.image.shape[1]}x{belt.image.shape[0]} belt frame",
                classifier.card.parameters,
                p50,
                p99,
                1000.0 / p50,
            )
        )
    return rows


def _on_belt(grey: np.ndarray) -> np.ndarray:
    """The part photo on a belt frame as the virtual line's camera films it (its frame size,
    larger for a larger photo; a belt of grey 32 +- 6), centred: the line's judge first finds
    the part in the frame."""
    line = VirtualLineConfig(parts_from=Path("."))
    height, width = grey.shape
    size = (max(line.frame_height, height + 40), max(line.frame_width, width + 40))
    belt = np.random.default_rng(0).normal(32, 6, size).clip(0, 255).astype(np.uint8)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    belt[top : top + height, left : left + width] = grey
    return belt


def _line_process(model_dir: Path, runs: int, photo: Path) -> tuple[list[BenchRow], float]:
    """The shipped decision, the pit check and the line's judge timed, and the peak RSS, in a
    process of the line's kind: the run-time classifier alone, no TensorFlow, freed memory
    kept as every `station` command keeps it (station.heap).

    Why a process of its own: TensorFlow's allocations change how glibc's heap behaves.
    Timed here, beside TensorFlow, the decision faulted no page in, while a process like
    `station run`'s faulted about 930 a part before heap.py (2026-12-05, this machine: p50
    3.8 ms here, 5.1 ms there), so the bench showed a decision faster than the line's."""
    if cv2.imread(str(photo), cv2.IMREAD_COLOR) is None:
        raise FileNotFoundError(f"{photo}: not a readable photo")
    out = subprocess.run(
        [sys.executable, "-m", "station.training.bench", str(model_dir), str(runs), str(photo)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the line-like bench process failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [BenchRow(**row) for row in result["rows"]], float(result["peak_rss_mb"])


def _in_line_process(model_dir: Path, runs: int, photo: Path) -> dict:
    """What `_line_process` runs, in the child."""
    retain_freed_memory()
    rows = _shipped_decision(model_dir, runs, photo)
    if "tensorflow" in sys.modules:
        raise RuntimeError("the run-time classifier loaded TensorFlow")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of this
    # TensorFlow-laden process would report the parent's 1 GB.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return {"rows": [asdict(row) for row in rows], "peak_rss_mb": peak_kb / 1024}


def run_bench(model_dir: Path, runs: int, photo: Path = SAMPLE_PHOTO) -> BenchTable:
    import keras
    import tensorflow as tf

    from station.training.architecture import mobilenet_v2, seed_cnn
    from station.training.export import to_tflite

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    card_params = Classifier(model_dir).card.parameters
    decision_rows, peak_rss_mb = _line_process(model_dir, runs, photo)
    rows = [_litert_row("shipped", model_dir / "model.tflite", card_params, runs), *decision_rows]
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("seed_cnn_300", seed_cnn), ("mobilenet_v2_224", mobilenet_v2)):
            model = build()
            path = Path(tmp) / f"{name}.tflite"
            path.write_bytes(to_tflite(model))
            rows.append(_litert_row(name, path, int(model.count_params()), runs))

    keras_model = keras.models.load_model(model_dir / "model.keras")
    size = int(keras_model.input_shape[1])
    x = np.random.default_rng(3).random((1, size, size, 1), dtype=np.float32)
    keras_runs = min(runs, 100)
    p50, p99 = _percentiles(_time_calls(lambda: keras_model.predict(x, verbose=0), keras_runs))
    rows.append(
        BenchRow(
            "shipped",
            "Keras predict()",
            f"{size}x{size}x1",
            int(keras_model.count_params()),
            p50,
            p99,
            1000.0 / p50,
        )
    )
    return BenchTable(rows, runs, peak_rss_mb)


if __name__ == "__main__":  # the child of `_line_process`
    print(json.dumps(_in_line_process(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))))
