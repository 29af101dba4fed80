"""Keep the memory one decision frees inside the process, for the next part.

Why: one decision (grey, crop, the network's input, the pit check's smoothed,
unrolled and filtered images) allocates and frees a few megabytes in blocks of
a 300x300 frame's size and larger. glibc gives blocks that large back to the
kernel when they are freed (its mmap threshold, and trimming the top of the
heap), so the next part faults the same pages in again: about 930 page faults
a part, a quarter of the decision's time (2026-12-05, on the bench photo, one
thread: p50 5.1 ms, 3.8 ms with this; the pit check alone 4.0 ms, 3.0 ms).

Raising both thresholds keeps freed blocks in the heap. The decision then
faults no page, and the peak RSS does not grow (84 MB either way): every part
needs the same buffers again. `station` sets it once at start-up, for every
command, so `station bench` times what `station run` does. It costs training
nothing measurable: `station train --epochs 3` on the whole folder took 2:31
against 2:30, peak RSS 5.57 GB against 5.53 GB, and wrote a byte-identical
model.tflite; `station replay` of the 6,633 training photos ran at 196 parts/s
against 181, peak RSS 157 MB both ways.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 64 << 20
"""Blocks below this come from the heap, not from a mapping of their own (glibc's
default: 128 kB, raised on its own only as far as the largest block freed so far)."""
TRIM_THRESHOLD = 128 << 20
"""The heap's free top is given back only when it is larger than this."""
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process. False where the C library
    has no `mallopt` or refuses (not glibc): nothing is changed, the station runs as it
    would, a little slower."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
