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
    return {"p50_ms": p50, "p90_ms": pct(0.9), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(ordered),
            "std_ms": statistics.pstdev(ordered), "iters": len(ordered), "throughput": 1000 * batch / p50}


def interleaved(runners: dict[str, Callable[[], None]], warmup: int, iters: int, chunk: int = 5) -> dict[str, list[float]]:
    """Times each runner `iters` times, alternating between runners every `chunk` calls."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    while any(len(t) < iters for t in times.values()):
        for name in names:
            for _ in range(min(chunk, iters - len(times[name]))):
                start = time.perf_counter()
                runners[name]()
                times[name].append(1000 * (time.perf_counter() - start))
        names.reverse()  # neither candidate always runs first after the other
    return times


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
