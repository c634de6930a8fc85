"""Keep long decode loops from growing the process heap.

Every denoising step allocates a few megabyte-sized temporaries (a block's logits, float64
probabilities). glibc serves large requests with mmap and returns them to the OS on free, but after
the first such free it raises its mmap threshold dynamically, so later requests of the same size come
from the brk heap. Depending on the allocation order (which varies with Python's hash seed), that heap
can then fragment and keep growing: tracing 3 prompts with the dual cache held 3.4 GB in some runs and
0.44 GB in others, and a 48-prompt calibration run exhausted 24 GB. Pinning the threshold (``mallopt``)
turns the dynamic adjustment off; the same 3 prompts then stay at 0.44 GB in every run. Only glibc
(Linux) is affected; elsewhere this does nothing.

Called by the decode-heavy entry points (``spiffy bench``, ``spiffy calibrate``, trace collection, the
speculatability script), not by ``spiffy train``: there every megabyte-sized activation would become an
mmap/munmap pair, which cost a third of the throughput (4,528 -> 3,016 tokens/s measured).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter number
_done = False


def pin_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Serve allocations of at least ``nbytes`` with mmap for the rest of the process (glibc only).
    Returns True when the setting was applied (now or by an earlier call)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
