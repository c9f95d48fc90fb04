"""Process set-up: the CPU threads a run uses, and keeping freed memory in the process. PyTorch on the CPU allocates every feature
map afresh, and glibc returns large freed blocks to the OS and faults them in again, page by page,
on the next allocation; a measurable share of a training step went to those page faults (see
docs/measurements.md). jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends, keep such
blocks; glibc does too once told to."""

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

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


class Threads(int):
    """A thread count and where it came from (`why`), for the run's header. An int, so whatever
    prints, compares or stores the count keeps working."""

    why: str

    def __new__(cls, count: int, why: str):
        threads = super().__new__(cls, count)
        threads.why = why
        return threads

    def __getnewargs__(self):  # copy and pickle rebuild it through __new__
        return int(self), self.why


def choose_threads(asked: int | None, environ: Mapping[str, str], cpus: int) -> Threads:
    """The threads asked for (the recipe's threads or --threads), else OMP_NUM_THREADS, else this
    process's share of `cpus` (shared with the other processes torchrun started on this machine).
    libgomp's threads spin while they wait: on a quiet machine that made two threads 1.9x as fast as
    one, and 2.4x as fast as two that sleep; where other processes hold the CPUs it made them 5-10x
    slower (docs/threads.md), which busy_warning tells the user."""
    if asked:
        return Threads(asked, "as asked")
    from_env = environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return Threads(int(from_env), "OMP_NUM_THREADS")
    world = int(environ.get("LOCAL_WORLD_SIZE", "1"))
    share = f"{cpus} usable CPUs" + (f" ÷ {world} processes" if world > 1 else "")
    return Threads(max(1, cpus // world), share)


def threads_spin(environ: Mapping[str, str]) -> bool:
    """Whether OpenMP threads out of work spin before they sleep, as libgomp reads the environment:
    they do unless OMP_WAIT_POLICY is PASSIVE or GOMP_SPINCOUNT is 0 (a spin count wins)."""
    if "GOMP_SPINCOUNT" in environ:
        return environ["GOMP_SPINCOUNT"].strip() != "0"
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE"


def busy_warning(threads: int) -> str | None:
    """What to tell the user where other processes already hold the CPUs this run will use and its
    threads spin while they wait: each then burns a CPU that the other processes want, and the run
    went 5-10x slower than with its threads asleep (docs/threads.md)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cpus = usable_cpus()
    if load < cpus or threads == 1 or not threads_spin(os.environ):
        return None
    return (f"the machine is busy (load {load:.1f} on {cpus} CPUs) and this run's {threads} threads spin while they "
            "wait; if it runs slowly, start it with OMP_WAIT_POLICY=PASSIVE in the environment, or try --threads 1 "
            "(docs/threads.md)")


def use_threads(asked: int | None) -> Threads:
    """Sets the CPU threads of torch's parallel operations for this process (choose_threads) and returns them."""
    threads = choose_threads(asked, os.environ, usable_cpus())
    torch.set_num_threads(threads)
    return threads
