"""Latency of the compressed model against the unmodified one, timed side by side."""

import tempfile
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from compressor.console import console
from compressor.passes import Pass, register_pass
from compressor.recipe import PassParams
from compressor.runtime import onnx as ox
from compressor.runtime.backends import BACKENDS
from compressor.runtime.latency import device_name, interleaved, summarize


class BenchmarkParams(PassParams):
    backends: list[Literal["torch", "onnxruntime"]] = Field(["torch", "onnxruntime"], min_length=1)
    batch_sizes: list[int] = Field([1, 32], min_length=1)
    warmup: int = Field(10, ge=0, description="untimed runs first")
    iters: int = Field(50, gt=0, description="timed runs per model")
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all torch uses)")


@register_pass("benchmark")
class Benchmark(Pass):
    """p50/p90 latency and throughput of the model vs the unmodified one, interleaved in one process."""

    Params = BenchmarkParams

    def run(self, state, ctx):
        p = self.params
        threads = p.threads or torch.get_num_threads()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        device = ctx.device if "onnxruntime" not in p.backends else torch.device("cpu")
        models = {"baseline": ctx.baseline(), "compressed": state.model}
        rows = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                onnx_paths = {}
                if "onnxruntime" in p.backends:
                    onnx_paths["baseline"] = Path(tmp) / "baseline.onnx"
                    ox.export(models["baseline"], state.input_shape, onnx_paths["baseline"])
                    own = state.artifacts.get("onnx")
                    onnx_paths["compressed"] = Path(own) if own and Path(own).is_file() else Path(tmp) / "compressed.onnx"
                    if not onnx_paths["compressed"].is_file():
                        ox.export(state.model, state.input_shape, onnx_paths["compressed"])
                for backend in p.backends:
                    for batch in p.batch_sizes:
                        runners = {name: BACKENDS.get(backend)(m, onnx_paths.get(name), batch, state.input_shape,
                                                               device, threads) for name, m in models.items()}
                        times = interleaved(runners, p.warmup, p.iters)
                        base, comp = summarize(times["baseline"], batch), summarize(times["compressed"], batch)
                        row = {"backend": backend, "device": device_name(device), "batch_size": batch,
                               "threads": threads, "baseline_ms": base["p50_ms"], "compressed_ms": comp["p50_ms"],
                               "speedup": base["p50_ms"] / comp["p50_ms"], "baseline": base, "compressed": comp}
                        rows.append(row)
                        console.print(f"  {backend:12s} batch {batch:3d}: {base['p50_ms']:8.2f} → {comp['p50_ms']:8.2f} ms "
                                      f"p50 ({row['speedup']:.2f}× faster; p90 {comp['p90_ms']:.2f} ms)")
        finally:
            torch.set_num_threads(previous_threads)
            state.model.to(ctx.device)
        ctx.metrics["latency"] = rows
        return state
