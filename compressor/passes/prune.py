"""Structured pruning: whole channels, filters and attention heads are removed, so the model
gets smaller and faster on any backend. torch-pruning's dependency graph does the surgery;
compressor.pruning decides what to remove, how much, and checks the result."""

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.measure import count_macs_params
from compressor.passes import PASSES, Pass, register_pass
from compressor.pruning.engine import Plan, prune_step, resolve_ratios
from compressor.pruning.graph import match_modules, survey
from compressor.pruning.importance import NEEDS_GRADIENTS, Criterion, accumulate_gradients
from compressor.pruning.leftovers import drop_autograd_history
from compressor.pruning.targets import BudgetSearch, LatencyProbe, LatencySearch, RatioSearch
from compressor.schema import PassParams, Variant, tagged
from compressor.training import TrainParams, fit

GOALS = ("macs", "params", "speedup", "latency_ms")
AFTER_MASKS = ("prune cannot follow semi_structured or sparse_train method nm (their N:M masks would lose their "
               "shape); put them after prune")


class MacsTarget(Variant):
    macs: float = Field(gt=0, lt=1, description="fraction of the original MACs to keep")

    def search(self, plan: Plan, model, example, state, ctx):
        return BudgetSearch(plan, "macs", count_macs_params(model, example)[0], self.macs)


class ParamsTarget(Variant):
    params: float = Field(gt=0, lt=1, description="fraction of the original parameters to keep")

    def search(self, plan: Plan, model, example, state, ctx):
        return BudgetSearch(plan, "params", count_macs_params(model, example)[1], self.params)


class MeasuredTarget(Variant):
    """A goal measured on a backend, interleaved with the model the pass starts from."""

    backend: str = Field("onnxruntime", description="latency backend: onnxruntime, torch, tensorrt … (see bench)")
    batch_size: int = Field(1, gt=0, description="batch size latency is measured at")
    threads: int | None = Field(None, gt=0, description="CPU threads for timing (default: all torch uses)")
    warmup: int = Field(5, ge=0, description="untimed runs before each latency measurement")
    iters: int = Field(30, gt=0, description="timed runs per model in each latency measurement, at least (each "
                                             "lasts at least 2 s)")
    tolerance: float = Field(0.05, gt=0, lt=1, description="a latency this fraction below the goal ends the search")
    max_trials: int = Field(8, gt=0, description="latency measurements per pruning step at most")

    @field_validator("backend")
    @classmethod
    def known_backend(cls, name: str) -> str:
        from compressor.runtime.backends import BACKENDS

        try:
            BACKENDS.get(name)
        except CompressorError as e:
            raise ValueError(str(e)) from None
        return name

    def probe(self, model, state, ctx) -> LatencyProbe:
        console.print(f"  timing the starting model on {self.backend} (batch {self.batch_size}) …")
        return LatencyProbe(model, state.input_shape, self.backend, self.batch_size,
                            self.threads or torch.get_num_threads(), ctx.device, self.warmup, self.iters)

    def measured_search(self, plan: Plan, probe: LatencyProbe, key: str, start: float, fraction: float):
        return LatencySearch(plan, probe, key, start, fraction, self.tolerance, self.max_trials, log_trial)


class SpeedupTarget(MeasuredTarget):
    speedup: float = Field(gt=1, description="measured speedup over the model this pass starts from")

    def search(self, plan: Plan, model, example, state, ctx):
        return self.measured_search(plan, self.probe(model, state, ctx), "relative", 1.0, 1 / self.speedup)


class LatencyTarget(MeasuredTarget):
    latency_ms: float = Field(gt=0, description="measured p50 latency (ms) to reach")

    def search(self, plan: Plan, model, example, state, ctx):
        probe = self.probe(model, state, ctx)
        return self.measured_search(plan, probe, "latency_ms", probe.reference_ms,
                                    self.latency_ms / probe.reference_ms)


def _goal(value: dict) -> str | None:
    given = [k for k in GOALS if value.get(k) is not None]
    return given[0] if len(given) == 1 else None


Target = tagged({"macs": MacsTarget, "params": ParamsTarget, "speedup": SpeedupTarget, "latency_ms": LatencyTarget},
                pick=_goal, describe=lambda tags: " and ".join(tags) + (" targets" if len(tags) > 1 else " target"),
                missing="give exactly one of macs, params, speedup or latency_ms")


class PruneParams(PassParams):
    type: Literal["prune"] = "prune"
    importance: Criterion = Field("magnitude", description="how channels and heads are ranked")
    norm: Literal[1, 2] = Field(2, description="norm of magnitude, lamp and fpgm scores: 1 (L1) or 2 (L2)")
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of channels and heads removed (default 0.5)")
    target: Target | None = Field(None, description="{macs|params: fraction kept} or {speedup|latency_ms: …, backend: …}")
    global_: bool = Field(False, alias="global", description="rank channels across layers, not per layer")
    round_to: int | None = Field(None, gt=0, description="keep channel counts a multiple of this (8, 16: tensor cores)")
    max_ratio_per_layer: float = Field(0.9, gt=0, lt=1, description="no layer loses more than this fraction")
    ignore: list[str] = Field(default_factory=list, description="module-name globs whose output channels are kept")
    ratios: dict[str, float] = Field(default_factory=dict, description="module-name glob -> its own ratio")
    heads: bool = Field(True, description="remove whole attention heads (ViT, Swin); false: only MLP width")
    steps: int = Field(1, ge=1, description="prune in this many steps, fine-tuning between them")
    finetune: TrainParams = Field(default_factory=TrainParams,
                                  description="training after every step but the last (steps > 1): epochs, lr … "
                                              "as `train`; epochs: 0 for none")
    taylor_batches: int = Field(4, gt=0, description="training batches for taylor gradients")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}

    @field_validator("ratios")
    @classmethod
    def fractions(cls, ratios: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in ratios.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"each ratio is a fraction between 0 and 1 (exclusive); got {bad}")
        return ratios

    @model_validator(mode="after")
    def ratio_or_target(self):
        if self.ratio is not None and self.target is not None:
            raise ValueError("give either ratio or target, not both")
        return self

    def plan(self, model) -> Plan:
        return Plan(self.importance, self.norm, self.global_, self.round_to, self.max_ratio_per_layer,
                    resolve_ratios(model, self.ratios), self.heads)

    def unit_plan(self, model) -> Plan:
        """The plan for pruning one unit alone (sensitivity analysis): no global ranking, no per-layer ratios."""
        return replace(self.plan(model), global_=False, ratios={})


def prune_to(model, example, p: PruneParams, ratio: float) -> list:
    """One pruning step of `model`, in place, by `ratio` with the settings of `p`; returns the
    step's history (what checkpoints replay)."""
    found = survey(model, example, match_modules(model, p.ignore, "ignore"))
    return prune_step(model.eval(), example, p.plan(model), ratio, found).entries


def log_trial(step: int, number: int, row: dict) -> None:
    console.print(f"  step {step} trial {number}: ratio {row['ratio']:.3f}, "
                  f"MACs ×{row['macs_kept']:.3f} → {row['latency_ms']:.2f} ms p50 vs {row['reference_ms']:.2f} ms "
                  f"({row['speedup']:.2f}× faster){' ✓' if row['met'] else ''}")


@register_pass
class Prune(Pass):
    """Structured pruning of channels, filters and attention heads, by a ratio, a MACs/params
    budget or a latency measured on a backend; optionally in steps with fine-tuning between."""

    Params = PruneParams
    snapshots_teacher = True

    @classmethod
    def order_problem(cls, params, before) -> str | None:
        return AFTER_MASKS if any(PASSES.get(p.type).leaves_masks(p) for p in before) else None

    def run(self, state, ctx) -> dict:
        p = self.params
        if state.masks:
            raise CompressorError(AFTER_MASKS)
        state.snapshot_teacher(ctx.previous)
        model = state.model.to(ctx.device).eval()
        example = state.example_input(device=ctx.device)
        ignored = match_modules(model, p.ignore, "ignore")
        plan = p.plan(model).per_step(p.steps)
        macs0, params0 = count_macs_params(model, example)
        search = (p.target.search(plan, model, example, state, ctx) if p.target
                  else RatioSearch(plan, p.ratio or 0.5, p.steps))
        steps = []
        try:
            for step in range(1, p.steps + 1):
                found = survey(model, example, ignored)
                if not found.prunable and not (p.heads and found.heads):
                    reasons = sorted({g.reason for g in found.groups if g.reason})
                    raise CompressorError(f"nothing in this model can be pruned: {'; '.join(reasons) or 'no layers'}")
                if p.importance in NEEDS_GRADIENTS:
                    accumulate_gradients(model, ctx.data.train, ctx.device, p.taylor_batches, ctx.task)
                trial = search.trial(model, example, found, step, step / p.steps)
                channels = found.prunable_channels(model), found.prunable_channels(trial.model)
                model = state.model = trial.model
                state.pruning_history.append(trial.entries)
                record = self.log_step(step, p.steps, trial, channels, macs0, params0)
                if step < p.steps and p.finetune.epochs > 0:
                    record["finetune"] = fit(state, ctx, p.finetune, desc=f"fine-tune {step}/{p.steps}")
                steps.append(record)
        finally:
            search.close()
        model.zero_grad(set_to_none=True)
        macs, params = count_macs_params(model, example)
        drop_autograd_history(model)  # the passes after this one copy the model
        return {"macs_kept": macs / macs0, "params_kept": params / params0, "steps": steps,
                "protected": sorted({f"{g.root}: {g.reason}" for g in found.groups if g.reason}), **search.metrics()}

    @staticmethod
    def log_step(step: int, steps: int, trial, channels: tuple[int, int], macs0: int, params0: int) -> dict:
        heads = sum(len(idxs) for _, kind, idxs in trial.entries if kind == "heads")
        removed = 1 - channels[1] / channels[0] if channels[0] else 0.0
        record = {"step": step, "ratio": round(trial.ratio, 4), "channels_removed": removed,
                  "heads_removed": heads, "macs_kept": trial.macs / macs0, "params_kept": trial.params / params0,
                  "skipped": trial.skipped}
        console.print(f"  step {step}/{steps}: removed {removed:.1%} of the prunable channels"
                      f"{f' and {heads} attention heads' if heads else ''} (ratio {trial.ratio:.3f}): "
                      f"MACs ×{record['macs_kept']:.3f}, params ×{record['params_kept']:.3f} of the start")
        for root, why in trial.skipped.items():
            console.print(f"    [yellow]not pruned: '{root}': {why}[/yellow]")
        return record
