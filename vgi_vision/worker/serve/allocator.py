"""The C allocator of a worker process, set for buffers of megabytes that come and go.

Every request moves its images through several buffers: the message read off the wire, one
``bytes`` object per image taken out of it, the frames decoded from them. With glibc's
defaults, a block over the mmap threshold (128 KiB at start, raised only to the size of the
last such block freed) is mapped fresh from the kernel, and free memory at the top of the heap
past the trim threshold is handed back: each copy of a request's images then pays a page fault
per 4 KiB it touches. Measured on 24 phone photos (43 MB; ``bench/bench_phone.py`` images):
turning that request's Arrow column into ``bytes`` took 24 ms with the defaults and 4 ms with
the values below, and classifying the fresh copies ran ~10% faster.

The cost is memory the process keeps after a peak instead of returning it: up to
``TRIM_THRESHOLD_BYTES`` of free heap, reused by the next request. Only a process that is a
worker (``vgi-vision serve``) is set this way; a library never changes its host's allocator.
On a C library without ``mallopt`` (not glibc) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc's ceiling for the threshold on 64-bit).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free heap kept for reuse before any is returned to the kernel.
TRIM_THRESHOLD_BYTES = 256 << 20


def tune_for_large_buffers() -> bool:
    """Set the thresholds; True if the C library took both."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
             and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    if not taken:
        log.info("the C library did not take the allocator thresholds; left as they were")
    return taken
