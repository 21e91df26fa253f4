"""Process-wide allocator setting for CPU inference.

glibc serves allocations above its mmap threshold with a fresh mmap, returns them to the kernel
on free, and trims the top of the heap once more than a few hundred KiB there is free. A batched
forward pass allocates and frees feature maps of several MiB to tens of MiB on every call, so
each batch page-faults its memory in again and the kernel zeroes it: for LBDT-1 at 320 on the
2-core development machine, 11,000-25,000 minor faults and 60-90 ms of system time per frame at
batch 4-8 (about 7% of the CPU time). With the mmap threshold at its maximum (32 MiB) and no
trimming, blocks up to 32 MiB are reused from the heap instead: about 0 faults per frame at batch
4 and 1,600 at batch 8, for a peak RSS 2-3% higher (measured with getrusage over 12 forwards).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

__all__ = ["keep_freed_memory", "peak_rss_mb"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit on 64-bit
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks up to 32 MiB from the heap and not to trim it. Idempotent; a no-op
    (False) off glibc or when LBDT_DEFAULT_MALLOC=1 is set. True when the setting took effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("LBDT_DEFAULT_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
