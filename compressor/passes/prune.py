"""Structured pruning: whole channels, filters and attention heads are removed, so the model
gets smaller and faster on any backend. torch-pruning's dependency graph does the surgery;
compressor.pruning decides what to remove, how much, and checks the result."""

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.measure import count_macs_params
from compressor.pruning.engine import Plan, prune_step, resolve_ratios
from compressor.pruning.graph import match_modules, survey
from compressor.pruning.importance import NEEDS_GRADIENTS, Criterion, accumulate_gradients
from compressor.pruning.targets import LatencyProbe, bisect, prune_copy, search_latency
from compressor.recipe import Strict
from compressor.training import TrainParams, fit

LATENCY_KEYS = {"backend", "batch_size", "threads", "warmup", "iters", "tolerance", "max_trials"}


class Target(Strict):
    macs: float | None = Field(None, gt=0, lt=1, description="fraction of the original MACs to keep")
    params: float | None = Field(None, gt=0, lt=1, description="fraction of the original parameters to keep")
    speedup: float | None = Field(None, gt=1, description="measured speedup over the model this pass starts from")
    latency_ms: float | None = Field(None, gt=0, description="measured p50 latency (ms) to reach")
    backend: str = Field("onnxruntime", description="latency backend: onnxruntime, torch, tensorrt … (see bench)")
    batch_size: int = Field(1, gt=0, description="batch size latency is measured at")
    threads: int | None = Field(None, gt=0, description="CPU threads for timing (default: all torch uses)")
    warmup: int = Field(5, ge=0, description="untimed runs before each latency measurement")
    iters: int = Field(30, gt=0, description="timed runs per model in each latency measurement, at least (each lasts at least 2 s)")
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

    @model_validator(mode="after")
    def one_goal(self):
        given = [k for k in ("macs", "params", "speedup", "latency_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of macs, params, speedup or latency_ms")
        stray = sorted(self.model_fields_set & LATENCY_KEYS)
        if given[0] in ("macs", "params") and stray:
            raise ValueError(f"{', '.join(stray)} only apply to speedup and latency_ms targets")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("macs", "params", "speedup", "latency_ms") if getattr(self, k) is not None)


class PruneParams(TrainParams):
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
    epochs: float = Field(1, ge=0, alias="finetune_epochs",
                          description="fine-tuning epochs after every step but the last (steps > 1)")
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


def plan_for(model, p: PruneParams) -> Plan:
    return Plan(p.importance, p.norm, p.global_, p.round_to, p.max_ratio_per_layer, resolve_ratios(model, p.ratios),
                p.heads)


def prune_to(model, example, p: PruneParams, ratio: float) -> list:
    """One pruning step of `model`, in place, by `ratio` with the settings of `p`; returns the
    step's history (what checkpoints replay)."""
    found = survey(model, example, match_modules(model, p.ignore, "ignore"))
    return prune_step(model.eval(), example, plan_for(model, p), ratio, found)


@register_pass("prune")
class Prune(Pass):
    """Structured pruning of channels, filters and attention heads, by a ratio, a MACs/params
    budget or a latency measured on a backend; optionally in steps with fine-tuning between."""

    Params = PruneParams

    def run(self, state, ctx):
        p = self.params
        if state.masks:
            raise CompressorError("prune cannot follow semi_structured (its masks would lose their shape); "
                                  "put semi_structured after prune")
        state.snapshot_teacher(ctx.previous)
        model = state.model.to(ctx.device).eval()
        example = state.example_input(device=ctx.device)
        ignored = match_modules(model, p.ignore, "ignore")
        plan = plan_for(model, p).per_step(p.steps)
        macs0, params0 = count_macs_params(model, example)
        kind = p.target.kind if p.target else "ratio"
        probe = self.latency_probe(model, state, ctx) if kind in ("speedup", "latency_ms") else None
        trials, steps = [], []
        current = 1.0 if kind == "speedup" else probe.reference_ms if probe else None  # what `model` measures
        try:
            for step in range(1, p.steps + 1):
                found = survey(model, example, ignored)
                if not found.prunable and not (p.heads and found.heads):
                    reasons = sorted({g.reason for g in found.groups if g.reason})
                    raise CompressorError(f"nothing in this model can be pruned: {'; '.join(reasons) or 'no layers'}")
                if p.importance in NEEDS_GRADIENTS:
                    accumulate_gradients(model, ctx.data.train, ctx.device, p.taylor_batches)
                trial = self.step_trial(model, example, plan, found, step, {"macs": macs0, "params": params0}, probe,
                                        current, lambda row, step=step: self.log_trial(trials, step, row))
                if trial.measured:
                    current = trial.measured["relative" if kind == "speedup" else "latency_ms"]
                channels = found.prunable_channels(model), found.prunable_channels(trial.model)
                model = state.model = trial.model
                state.pruning_history.append(trial.entries)
                record = self.log_step(step, p.steps, trial, channels, macs0, params0)
                if step < p.steps and p.epochs > 0:
                    record["finetune"] = fit(state, ctx, p, desc=f"fine-tune {step}/{p.steps}")
                steps.append(record)
        finally:
            if probe:
                probe.close()
        model.zero_grad(set_to_none=True)
        macs, params = count_macs_params(model, example)
        ctx.metrics.update(macs_kept=macs / macs0, params_kept=params / params0, steps=steps,
                           protected=sorted({f"{g.root}: {g.reason}" for g in found.groups if g.reason}))
        if trials:
            ctx.metrics.update(latency_trials=trials, latency_reached=trial.measured)
        return state

    def step_trial(self, model, example, plan: Plan, found, step: int, start: dict, probe, current, log):
        """The pruned copy of `model` for this step: by the step's share of the ratio, or by the
        target's value interpolated geometrically from the start to the goal."""
        p = self.params
        share = step / p.steps  # of the whole reduction, done after this step
        if p.target is None:
            return prune_copy(model, example, plan, 1 - (1 - (p.ratio or 0.5)) ** (1 / p.steps), found)
        kind = p.target.kind
        if kind in ("macs", "params"):
            return bisect(model, example, plan, found, kind, start[kind] * getattr(p.target, kind) ** share)
        if kind == "speedup":
            key, goal = "relative", (1 / p.target.speedup) ** share
        else:
            key, goal = "latency_ms", probe.reference_ms * (p.target.latency_ms / probe.reference_ms) ** share
        return search_latency(model, example, plan, found, probe, key, goal, current, p.target.tolerance,
                              p.target.max_trials, log)

    def latency_probe(self, model, state, ctx) -> LatencyProbe:
        t = self.params.target
        console.print(f"  timing the starting model on {t.backend} (batch {t.batch_size}) …")
        return LatencyProbe(model, state.input_shape, t.backend, t.batch_size, t.threads or torch.get_num_threads(),
                            ctx.device, t.warmup, t.iters)

    @staticmethod
    def log_trial(trials: list, step: int, row: dict) -> None:
        trials.append({"step": step, **row})
        console.print(f"  step {step} trial {len([t for t in trials if t['step'] == step])}: ratio {row['ratio']:.3f}, "
                      f"MACs ×{row['macs_kept']:.3f} → {row['latency_ms']:.2f} ms p50 vs {row['reference_ms']:.2f} ms "
                      f"({row['speedup']:.2f}× faster){' ✓' if row['met'] else ''}")

    @staticmethod
    def log_step(step: int, steps: int, trial, channels: tuple[int, int], macs0: int, params0: int) -> dict:
        heads = sum(len(idxs) for _, kind, idxs in trial.entries if kind == "heads")
        removed = 1 - channels[1] / channels[0] if channels[0] else 0.0
        record = {"step": step, "ratio": round(trial.ratio, 4), "channels_removed": removed,
                  "heads_removed": heads, "macs_kept": trial.macs / macs0, "params_kept": trial.params / params0}
        console.print(f"  step {step}/{steps}: removed {removed:.1%} of the prunable channels"
                      f"{f' and {heads} attention heads' if heads else ''} (ratio {trial.ratio:.3f}): "
                      f"MACs ×{record['macs_kept']:.3f}, params ×{record['params_kept']:.3f} of the start")
        return record
