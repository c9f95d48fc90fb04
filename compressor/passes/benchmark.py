"""Latency of every stage of the run against the unmodified model, timed side by side."""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator, model_validator

from compressor.console import console
from compressor.models import Trust
from compressor.passes import Pass, register_pass
from compressor.tasks import QUALITY
from compressor.schema import PassParams
from compressor.runtime.backends import Candidate, Settings
from compressor.runtime.compare import measure
from compressor.state import load_checkpoint


class BenchmarkParams(PassParams):
    type: Literal["benchmark"] = "benchmark"
    backends: list[Literal["torch", "onnxruntime", "tensorrt"]] = Field(
        ["torch", "onnxruntime"], min_length=1,
        description="torch (on CUDA also as a CUDA graph), onnxruntime (CPU; CUDA and TensorRT EPs too where "
                    "installed), tensorrt (engines built here)")
    batch_sizes: list[int] = Field([1, 32], min_length=1, description="each timed separately")
    warmup: int = Field(10, ge=0, description="untimed runs first (and at least 0.5 s of them)")
    iters: int = Field(50, gt=0, description="timed runs per model, at least (timing lasts at least 2 s)")
    duration_s: float | None = Field(None, gt=0, description="time for about this long instead of `iters` runs")
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all torch uses)")
    stages: Literal["all", "ends"] = Field("all", description="time every stage of the run, or only the "
                                                                 "unmodified model and the last")
    precision: Literal["fp32", "fp16"] = Field("fp32", description="of the GPU backends (torch on CUDA, "
                                                                    "TensorRT); CPU backends run fp32")
    semi_structured: bool = Field(False, description="torch on CUDA: run 2:4 weights as semi-structured sparse "
                                                     "tensors (needs precision fp16; skipped on CPU)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if min(sizes) < 1:
            raise ValueError(f"batch sizes are 1 or more, got {min(sizes)}")
        return sizes

    @model_validator(mode="after")
    def _sparse_kernels_are_half(self):
        if self.semi_structured and self.precision != "fp16":
            raise ValueError("semi_structured: true needs precision: fp16 (the 2:4 kernels run in half precision)")
        return self


@dataclass
class Stage:
    """Consecutive passes that leave the architecture (params and MACs) as it is: one latency each."""

    name: str
    records: list[dict]

    @property
    def checkpoint(self) -> str | None:
        return next((r["dir"] for r in reversed(self.records) if r["dir"]), None)

    def summary(self, first: bool) -> dict:
        # The unmodified stage is quoted at its first accuracy (the input model), later ones at their last.
        quality = {}
        for key in QUALITY:
            values = [r["metrics"][key] for r in self.records if key in r["metrics"]]
            if values or key == "top1":
                quality[key] = (values[0] if first else values[-1]) if values else None
        return {"name": self.name, "passes": [r["dir"] for r in self.records if r["dir"]],
                "params": self.records[-1]["params"], "macs": self.records[-1]["macs"], **quality}


def split_stages(records: list[dict]) -> list[Stage]:
    stages: list[Stage] = []
    for r in records:
        if stages and (r["params"], r["macs"]) == (stages[-1].records[-1]["params"], stages[-1].records[-1]["macs"]):
            stages[-1].records.append(r)
        else:
            stages.append(Stage("unmodified" if not stages else r["dir"], [r]))
    if len(stages) == 1 and len(records) > 1:  # nothing changed the architecture: input against final weights
        stages = [Stage("unmodified", records[:1]), Stage("final", records[1:])]
    return stages


def chosen_stages(records: list[dict], choice: str) -> list[Stage]:
    """The stages to time: all, or the ends (the unmodified model and the last)."""
    stages = split_stages(records)
    return [stages[0], stages[-1]] if choice == "ends" and len(stages) > 1 else stages


def stage_candidates(stages: list[Stage], run_dir: Path, baseline: Callable[[], nn.Module], trust: Trust,
                     current: tuple[nn.Module, dict] | None = None) -> list[Candidate]:
    """Each stage's model as its last checkpoint left it; `current` (the model and masks in hand)
    stands in for the last stage, and `baseline` for a first stage without a checkpoint."""
    candidates = []
    for i, stage in enumerate(stages):
        if i == len(stages) - 1 and current:
            model, masks = current
        elif stage.checkpoint:
            loaded = load_checkpoint(run_dir / stage.checkpoint, trust)
            model, masks = loaded.model, loaded.masks
        else:
            model, masks = baseline(), {}
        candidates.append(Candidate(stage.name, model, two_four=bool(masks)))
    return candidates


def benchmark(candidates: list[Candidate], p: BenchmarkParams, device: torch.device, input_shape) -> dict:
    """Times the candidates as `p` asks and returns the metrics a report renders."""
    threads = p.threads or torch.get_num_threads()
    notes = []
    if p.semi_structured and device.type != "cuda":
        notes.append("semi_structured: semi-structured sparse tensors need CUDA")
        console.print(f"  [yellow]skipped[/yellow] {notes[-1]}")
    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(threads, device, Path(workdir), p.precision, p.semi_structured and device.type == "cuda")
        rows, skipped = measure(candidates, p.backends, p.batch_sizes, settings, input_shape, p.warmup,
                                None if p.duration_s else p.iters, p.duration_s)
    return {"latency": rows, "skipped": skipped + notes, "threads": threads, "precision": p.precision}


@register_pass
class Benchmark(Pass):
    """p50/p90/p99 latency and throughput of each stage vs the unmodified model, interleaved in one process."""

    Params = BenchmarkParams

    def run(self, state, ctx) -> dict:
        stages = chosen_stages(state.records, self.params.stages)
        candidates = stage_candidates(stages, ctx.run_dir, ctx.baseline, ctx.trust, (state.model, state.masks))
        try:
            metrics = benchmark(candidates, self.params, ctx.device, state.input_shape)
        finally:
            state.model.to(ctx.device)
        return {"stages": [s.summary(first=i == 0) for i, s in enumerate(stages)], **metrics}
