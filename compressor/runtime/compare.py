"""Side-by-side latency: for each backend and batch size, all candidates are timed interleaved in
one process, and each gets its speedup over the first (the reference) from that same session,
paired round by round (see latency.round_ratios)."""

import re
from pathlib import Path

import torch

from compressor.console import console
from compressor.errors import CompressorError
from compressor.runtime import onnx as ox
from compressor.runtime.backends import BACKENDS, Candidate, Settings, expand
from compressor.runtime.latency import (device_name, interleaved, paired_speedup, speedup_iqr, summarize,
                                        unsteady)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "model"


def make_forms(candidates: list[Candidate], needs: str, input_shape, workdir: Path) -> None:
    """Gives every candidate the form a backend runs: a torch backend needs the model; ONNX and
    TensorRT backends an ONNX file, exported here from the model where there is none."""
    for c in candidates:
        if needs == "model" and c.model is None:
            raise CompressorError(f"the torch backend times PyTorch models, and '{c.name}' is only "
                                  f"{c.onnx or c.engine}: choose onnxruntime or tensorrt")
        if needs == "engine" and c.engine is not None:
            continue
        if needs in ("onnx", "engine") and c.onnx is None:
            if c.model is None:
                raise CompressorError(f"'{c.name}' is a TensorRT engine ({c.engine}): only the tensorrt backend runs it")
            c.onnx = workdir / f"{slug(c.name)}.onnx"
            ox.export(c.model, input_shape, c.onnx)


def compare_times(times: dict[str, list[float]], reference: str, name: str, batch: int) -> dict:
    """One stage against the reference, from the same interleaved session."""
    base, own = summarize(times[reference], batch), summarize(times[name], batch)
    return {"stage": name, "baseline_ms": base["p50_ms"], "compressed_ms": own["p50_ms"],
            "speedup": paired_speedup(times[reference], times[name]),
            "speedup_iqr": speedup_iqr(times[reference], times[name]), "baseline": base, "compressed": own}


def measure(candidates: list[Candidate], backends: list[str], batch_sizes: list[int], settings: Settings,
            input_shape, warmup: int, iters: int | None, duration_s: float | None) -> tuple[list[dict], list[str]]:
    """Returns one row per backend, batch and candidate after the first, each against the first
    (a lone candidate gets one row against itself), and the backends skipped here with why."""
    rows, skipped = [], []
    reference = candidates[0].name
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        for name in expand(backends, settings):
            backend = BACKENDS.get(name)
            reason = backend.unavailable(settings)
            if reason:
                skipped.append(f"{name}: {reason}")
                console.print(f"  [yellow]skipped[/yellow] {name}: {reason}")
                continue
            make_forms(candidates, backend.needs, input_shape, settings.workdir)
            where = {"backend": name, "device": device_name(backend.device(settings)), "threads": settings.threads}
            for batch in batch_sizes:
                runners = {c.name: backend.runner(c, batch, input_shape, settings) for c in candidates}
                times = interleaved(runners, warmup, iters, duration_s)
                found = [{**where, "batch_size": batch, **compare_times(times, reference, c.name, batch)}
                         for c in candidates[1:] or candidates]
                rows += found
                console.print(f"  {name:12s} batch {batch:3d}: {reference} {found[0]['baseline_ms']:.3g} ms"
                              + "".join(f" | {r['stage']} {r['compressed_ms']:.3g} ms ({r['speedup']:.2f}×"
                                        f"{', unsteady' if unsteady(r) else ''})" for r in found if r["stage"] != reference))
    finally:
        torch.set_num_threads(previous_threads)
    return rows, skipped
