"""Keep freed memory in the process for reuse (glibc only).

The optimisation loops allocate and free the same large activations thousands of times. By
default glibc hands blocks above a dynamic threshold (at most 32 MB) straight back to the
operating system, so every new activation is fresh memory that the kernel must fault in and
zero, page by page: on EfficientNet-Lite0 that took as long as the convolutions.
:func:`keep_freed_memory` raises glibc's mmap and trim thresholds so freed blocks are reused
instead. Peak memory does not grow (the same blocks are reused); memory freed by attribution
stays with the process for later calls. This is a process-wide setting, made once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done: bool | None = None


def keep_freed_memory(mmap_threshold: int = 256 * 2**20, trim_threshold: int = 1024 * 2**20) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (once per process).

    Args:
        mmap_threshold: blocks at least this large (bytes) are mapped from the OS directly.
        trim_threshold: free memory at the top of the heap above this size (bytes) is given back.

    Returns:
        True when the setting is in effect (a glibc Linux process), else False.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    return _done
