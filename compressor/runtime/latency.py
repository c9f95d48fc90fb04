"""Timing that survives a noisy machine: warm up, then time the candidates interleaved in
small chunks so drift hits all of them alike, and report percentiles."""

import platform
import statistics
import time
from typing import Callable

import torch


def summarize(times_ms: list[float], batch: int) -> dict:
    ordered = sorted(times_ms)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    p50 = statistics.median(ordered)
    return {"min_ms": ordered[0], "p50_ms": p50, "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(ordered), "std_ms": statistics.pstdev(ordered), "iters": len(ordered),
            "throughput": 1000 * batch / p50}


# Calls a runner makes in a row before the next takes over: short enough that neighbouring chunks
# see the same machine, long enough that each chunk's median call runs with warm caches.
CHUNK = 3

# A fixed count of calls is a few milliseconds for a small model at batch 1, short enough to fall
# whole into one slow spell of the machine and report a speedup the next run does not repeat (see
# docs/measurements.md). So warm-up and timing each also last at least this long, and the rounds
# outvote a slow spell.
MIN_WARMUP_S = 0.5
MIN_TIMED_S = 2.0


def interleaved(runners: dict[str, Callable[[], None]], warmup: int, iters: int | None = None,
                duration_s: float | None = None, chunk: int = CHUNK, min_warmup_s: float = MIN_WARMUP_S,
                min_timed_s: float = MIN_TIMED_S) -> dict[str, list[float]]:
    """Times each runner `iters` times (or for about `duration_s` seconds altogether), alternating
    between runners every `chunk` calls so that a slow spell of the machine hits them all.
    Each runner first runs untimed `warmup` times and for at least `min_warmup_s` seconds; with
    `iters`, timing goes on in whole rounds until at least `min_timed_s` seconds have passed."""
    if (iters is None) == (duration_s is None):
        raise ValueError("give exactly one of iters and duration_s")
    for fn in runners.values():
        calls, until = 0, time.perf_counter() + min_warmup_s
        while calls < warmup or time.perf_counter() < until:
            fn()
            calls += 1
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    deadline = time.perf_counter() + (duration_s if duration_s is not None else min_timed_s)

    while True:  # one round: every runner takes its turn of calls
        if time.perf_counter() < deadline:
            turns = dict.fromkeys(names, chunk)
        elif duration_s is not None:
            break
        else:
            turns = {name: max(0, min(chunk, iters - len(times[name]))) for name in names}
        if not any(turns.values()):
            break
        for name in names:
            for _ in range(turns[name]):
                start = time.perf_counter()
                runners[name]()
                times[name].append(1000 * (time.perf_counter() - start))
        names.reverse()  # neither candidate always runs first after the other
    return times


def round_ratios(reference: list[float], candidate: list[float], chunk: int = CHUNK) -> list[float]:
    """reference ÷ candidate for each round of `interleaved`, from the two chunks' fastest calls:
    the fastest call of a chunk is the one the machine disturbed least, and the two chunks of a
    round ran back to back, so a busy spell cancels out of the round's ratio."""
    return [min(reference[i:i + chunk]) / min(candidate[i:i + chunk])
            for i in range(0, min(len(reference), len(candidate)), chunk)]


def paired_speedup(reference: list[float], candidate: list[float], chunk: int = CHUNK) -> float:
    """How many times faster `candidate` is than `reference`: the median of the rounds' ratios,
    which repeats from run to run on a shared machine where the ratio of medians drifts (see
    docs/measurements.md)."""
    return statistics.median(round_ratios(reference, candidate, chunk))


def speedup_iqr(reference: list[float], candidate: list[float], chunk: int = CHUNK) -> list[float]:
    """The quartiles of the rounds' ratios: how much the rounds disagreed."""
    ratios = round_ratios(reference, candidate, chunk)
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return [q1, q3]


def unsteady(row: dict) -> bool:
    """Rounds that disagree by more than a quarter mean a busy machine and a speedup not to quote."""
    if not row["speedup_iqr"]:
        return False
    q1, q3 = row["speedup_iqr"]
    return q3 > 1.25 * q1


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
