"""Process set-up: the CPU threads a run uses, and keeping freed memory in the process. PyTorch on the CPU allocates every feature
map afresh, and glibc returns large freed blocks to the OS and faults them in again, page by page,
on the next allocation; a measurable share of a training step went to those page faults (see
docs/measurements.md). jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends, keep such
blocks; glibc does too once told to."""

import ctypes
import ctypes.util
import os

import torch

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


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_warning(threads: int) -> str | None:
    """What to tell the user where other processes already hold the CPUs this run will use: each
    of its threads then waits its turn at every parallel operation, and a run with as many threads
    as CPUs can go several times slower than one with fewer (measured in docs/measurements.md)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cpus = usable_cpus()
    if load < cpus or threads == 1:
        return None
    return (f"the machine is busy (load {load:.1f} on {cpus} CPUs) and this run uses {threads} threads; if it runs "
            "slowly, try --threads 1 (or threads: 1 in the recipe)")


def use_threads(threads: int | None) -> int:
    """Sets the CPU threads of torch's parallel operations for this process and returns the number.
    Default: OMP_NUM_THREADS where the environment sets it, else this process's share of the usable
    CPUs (shared with the other processes torchrun started on this machine)."""
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    default = int(from_env) if from_env.isdigit() and int(from_env) > 0 else \
        max(1, usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = threads or default
    torch.set_num_threads(threads)
    return threads
