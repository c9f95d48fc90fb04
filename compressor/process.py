"""Process set-up: the CPU threads a run uses, how they wait for work, and keeping freed memory in
the process. Nothing here imports torch at module level: the wait policy is chosen before torch
loads libgomp, which reads its environment once, then.

The wait: libgomp's threads spin for about 300000 iterations before they sleep. On a quiet 2-CPU
machine that made the quickstart's distillation 1.2-2.4x faster than threads that sleep at once;
where one or two other processes held the CPUs it made it 1.6-2.5x slower (docs/threads.md). So a
run looks at how much CPU other processes use as it starts, and lets its threads sleep
(OMP_WAIT_POLICY=PASSIVE) where they would not each find a free CPU. It changes no number a run
computes, only its speed; the thread count, which changes the order of sums, is never chosen from
the load.

Freed memory: PyTorch on the CPU allocates every feature
map afresh, and glibc returns large freed blocks to the OS and faults them in again, page by page,
on the next allocation; a measurable share of a training step went to those page faults (see
docs/measurements.md). jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends, keep such
blocks; glibc does too once told to."""

import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

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


WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SAMPLE_SECONDS = 0.1  # ten scheduler ticks a CPU: enough to tell a busy CPU from an idle one
SPARE = 0.5  # of a CPU: others' use below this (a shell, a monitor) leaves the CPU free


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
    process's share of `cpus` (shared with the other processes torchrun started on this machine)."""
    if asked:
        return Threads(asked, "as asked")
    from_env = environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return Threads(int(from_env), "OMP_NUM_THREADS")
    world = int(environ.get("LOCAL_WORLD_SIZE", "1"))
    share = f"{cpus} usable CPUs" + (f" ÷ {world} processes" if world > 1 else "")
    return Threads(max(1, cpus // world), share)


def use_threads(asked: int | None) -> Threads:
    """Sets the CPU threads of torch's parallel operations for this process (choose_threads) and returns them."""
    import torch

    threads = choose_threads(asked, os.environ, usable_cpus())
    torch.set_num_threads(threads)
    return threads


@dataclass(frozen=True)
class WaitPolicy:
    spin: bool
    why: str

    def describe(self) -> str:
        return f"{'spinning' if self.spin else 'sleeping'} while they wait ({self.why})"


def threads_spin(environ: Mapping[str, str]) -> bool:
    """Whether OpenMP threads out of work spin before they sleep, as libgomp reads the environment:
    they do unless OMP_WAIT_POLICY is PASSIVE or GOMP_SPINCOUNT is 0 (a spin count wins)."""
    if "GOMP_SPINCOUNT" in environ:
        return environ["GOMP_SPINCOUNT"].strip() != "0"
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE"


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, all) scheduler ticks so far, summed over `cpus`, from /proc/stat. Busy includes the
    time a hypervisor gave to other machines (steal): that CPU was not free either."""
    try:
        with open("/proc/stat") as stat:
            lines = stat.read().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus) or len(fields) < 8:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + irq + softirq + steal + idle + iowait
    return (busy, total) if total else None


def others_cpu_use(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's usable CPUs other processes kept busy over the next `seconds`
    (this process's own threads, spinning or not, left out); None where /proc/stat cannot tell."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return None
    before, own_before, wall_before = _cpu_ticks(cpus), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    after, own_after, wall_after = _cpu_ticks(cpus), time.process_time(), time.perf_counter()
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy = len(cpus) * (after[0] - before[0]) / (after[1] - before[1])
    return max(0.0, busy - (own_after - own_before) / (wall_after - wall_before))


def choose_wait(environ: Mapping[str, str], torch_loaded: bool, others: float | None, cpus: int) -> WaitPolicy:
    """How a run's threads will wait: as the environment says where it says anything, as libgomp
    already read it where torch is loaded, else asleep where `others` (CPUs other processes use)
    leave fewer free CPUs than the threads a run takes by default."""
    if any(key in environ for key in WAIT_KEYS):
        return WaitPolicy(threads_spin(environ), "as the environment sets")
    if torch_loaded:
        return WaitPolicy(True, "libgomp's default: torch was loaded before compressor could choose")
    if others is None:
        return WaitPolicy(True, "libgomp's default: this system does not show other processes' CPU use")
    threads = choose_threads(None, environ, cpus)
    use = f"other processes used {others:.1f} of {cpus} CPUs as the run started"
    if threads > 1 and others + threads > cpus + SPARE:
        return WaitPolicy(False, f"{use}: OMP_WAIT_POLICY=PASSIVE")
    return WaitPolicy(True, use)


def settle_wait(environ: MutableMapping[str, str] | None = None) -> WaitPolicy:
    """Chooses how this process's OpenMP threads wait (choose_wait, on a 0.1 s look at the CPUs) and,
    where they should sleep, sets OMP_WAIT_POLICY=PASSIVE for torch's libgomp to read. Call it before
    torch is imported; `compress` does, first thing."""
    global WAIT
    environ = os.environ if environ is None else environ
    torch_loaded = "torch" in sys.modules
    decided = torch_loaded or any(key in environ for key in WAIT_KEYS)
    WAIT = choose_wait(environ, torch_loaded, None if decided else others_cpu_use(), usable_cpus())
    if not WAIT.spin and not decided:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return WAIT


WAIT: WaitPolicy | None = None  # what settle_wait chose for this process; None: not asked


def current_wait() -> WaitPolicy:
    """What settle_wait chose, or where it was never asked, what the environment made libgomp do."""
    return WAIT or choose_wait(os.environ, True, None, usable_cpus())


def busy_warning(threads: int, wait: WaitPolicy) -> str | None:
    """What to tell the user where this run's threads spin although other processes now hold the
    CPUs they need (the load came after the start, or the environment asked for spinning): each
    spinning thread then burns a CPU that another process wants, and the run went 1.6-2.5x slower."""
    if threads == 1 or not wait.spin:
        return None
    others = others_cpu_use()
    cpus = usable_cpus()
    if others is None or others + threads <= cpus + SPARE:
        return None
    return (f"other processes now use {others:.1f} of {cpus} CPUs and this run's {threads} threads spin while they "
            "wait; if it runs slowly, start it again with OMP_WAIT_POLICY=PASSIVE in the environment, or with "
            "--threads 1 (docs/threads.md)")
