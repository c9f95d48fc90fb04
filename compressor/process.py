"""Process set-up: keeping freed memory in the process. PyTorch on the CPU allocates every feature
map afresh, and glibc returns large freed blocks to the OS and faults them in again, page by page,
on the next allocation; a measurable share of a training step went to those page faults (see
docs/measurements.md). jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends, keep such
blocks; glibc does too once told to."""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # free memory at the heap's top kept before it is given back
M_MMAP_THRESHOLD = -3  # blocks from this size on get their own mapping, unmapped on free
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for it on 64-bit systems


def keep_freed_memory() -> bool:
    """Asks glibc to serve blocks up to 32 MB from the heap, and to keep up to 1 GB of it free
    before giving any back; False where the C library has no such switch (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
