"""The arithmetic TensorFlow trains with, pinned, so that `station train` makes the same model
on another machine.

Why: a float sum depends on the order of its terms, and two things outside the recipe set
that order. oneDNN, which does TensorFlow's convolutions and matrix products on x86, picks
its kernels by the instruction sets the CPU has (SSE4.1, AVX, AVX2, AVX-512); and TensorFlow
splits each op over as many threads as the machine has cores. Over 45 epochs the differences
grow into another network: the shipped model's recipe, run on a machine with AVX-512, did not
give the shipped `model.tflite` (README, "Why a retrain gave another network").

Measured on this project's 2-core AMD EPYC (AVX-512), 2026-12-05: 3 epochs on 320 training
photos at the shipped input size and width, one `model.tflite` hash per setting:
- oneDNN capped at SSE4.1, AVX, AVX2 and AVX-512 gave four different models; the caps above
  AVX-512 (VNNI, BF16) gave the uncapped one; two runs of one setting, the same model;
- 1, 2 and 4 threads gave three different models; 2 threads on one core (taskset) or on two
  gave the same model: the thread count decides, not the cores under it;
- `TF_ENABLE_ONEDNN_OPTS=0` does not take oneDNN out: its model still changed with the cap.

So training runs on AVX2 kernels (every x86-64 CPU since 2013-2015 has AVX2; an AVX-512 CPU
capped to it runs the same code as one without) and on 2 threads (the line PC's cores; a
bigger machine trains no faster, and no differently).

That makes the same model again on the same kind of CPU, not on any CPU. Measured
2026-12-06 on a 2-core Intel Xeon (AVX-512, 2 MiB of L2 a core; KVM): the 3-epoch run that
gave 6457b76234de on the AMD EPYC (README) gave 10321c61cd72, and another model again at
every other cap (SSE4.1, AVX, AVX-512) and on 1 thread, none of them one the EPYC gave; the
cross-validation's fold 0, on the same split and photos, trained another network. The
libraries were not the cause: TensorFlow and Keras were the EPYC's, and NumPy 2.3 or 2.4,
OpenCV 5.0 or 5.1 give the Xeon's model to the bit. Where the two CPUs part (oneDNN's blocks
sized by the cache, or code chosen per vendor) was not found; no cap or thread count made
them agree. OpenCV 4.14 does change the model (it makes the augmented frames). The cap, the
threads, the CPU and the versions of TensorFlow, Keras, OpenCV and NumPy go into the model
card, so a model that differs says where it was made.

oneDNN reads its cap when it first runs a kernel, and TensorFlow fixes its thread pools when
it first runs an op: `pin()` must come before either in the process (`station train` calls it
first thing).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

ISA = "AVX2"
"""oneDNN's instruction-set cap (ONEDNN_MAX_CPU_ISA)."""
THREADS = 2
"""TensorFlow's intra-op and inter-op threads."""


class KernelPinError(RuntimeError):
    """TensorFlow already ran in this process with other threads: the model would differ."""


@dataclass(frozen=True)
class Kernels:
    """What the model card records of the arithmetic a model was trained with."""

    onednn_max_cpu_isa: str
    threads: int
    cpu: str
    cpu_has_isa: bool
    """False: the CPU does not report AVX2 (or /proc/cpuinfo is not there); without it
    oneDNN falls back to older kernels and the model differs."""

    def as_card(self) -> dict[str, str | int | bool]:
        return asdict(self)


def pin() -> Kernels:
    """Pin oneDNN's kernels and TensorFlow's threads; call before TensorFlow runs anything."""
    os.environ["ONEDNN_MAX_CPU_ISA"] = ISA
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(THREADS)
        threading.set_inter_op_parallelism_threads(THREADS)
    except RuntimeError:  # an op ran already: oneDNN has read its cap too, or may have
        raise KernelPinError(
            f"TensorFlow already runs with {threading.get_intra_op_parallelism_threads()} "
            f"intra-op threads in this process (0: one per core); training needs {THREADS} "
            "to give the same model every time: train in a fresh process"
        ) from None
    flags, model = _cpu()
    return Kernels(ISA, THREADS, model, ISA.lower() in flags)


def _cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[set[str], str]:
    """The CPU's flags and model name (Linux); empty where the file is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set(), "unknown"
    first_cpu = text.split("\n\n", 1)[0]
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in first_cpu.splitlines())
    )
    return set(fields.get("flags", "").split()), fields.get("model name", "unknown")
