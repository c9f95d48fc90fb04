"""Structured pruning: whole channels, filters or heads are removed, so the model gets
smaller and faster on any backend. torch-pruning's dependency graph does the surgery."""

import copy
import fnmatch
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.measure import count_macs_params
from compressor.passes import Pass, register_pass
from compressor.recipe import PassParams, Strict


class Target(Strict):
    macs: float | None = Field(None, gt=0, lt=1, description="fraction of the original MACs to keep")
    params: float | None = Field(None, gt=0, lt=1, description="fraction of the original parameters to keep")

    @model_validator(mode="after")
    def one(self):
        if (self.macs is None) == (self.params is None):
            raise ValueError("give exactly one of macs or params")
        return self


class PruneParams(PassParams):
    importance: Literal["magnitude", "bn_scale", "taylor", "lamp", "fpgm", "random"] = "magnitude"
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of channels removed (default 0.5)")
    target: Target | None = Field(None, description="{macs: 0.5} or {params: 0.5}: fraction kept")
    global_: bool = Field(False, alias="global", description="rank channels across layers, not per layer")
    round_to: int | None = Field(None, gt=0, description="keep channel counts a multiple of this")
    max_ratio_per_layer: float = Field(0.9, gt=0, le=1, description="no layer loses more than this")
    ignore: list[str] = Field(default_factory=list, description="module-name globs never pruned")
    ratios: dict[str, float] = Field(default_factory=dict, description="per-module ratio by glob")
    taylor_batches: int = Field(4, gt=0, description="training batches for taylor gradients")

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def ratio_or_target(self):
        if self.ratio is not None and self.target is not None:
            raise ValueError("give either ratio or target, not both")
        return self


def importance(name: str):
    import torch_pruning as tp

    return {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "fpgm": lambda: tp.importance.FPGMImportance(p=2),
        "random": lambda: tp.importance.RandomImportance(),
    }[name]()


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layer that produces the model's output: its width is part of the model's contract."""
    with torch.no_grad():
        width = model.eval()(example).shape[1]
    last = [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == width)
            or (isinstance(m, nn.Conv2d) and m.out_channels == width)]
    return last[-1:]


def matching(model: nn.Module, pattern: str, field: str) -> list[nn.Module]:
    found = [m for name, m in model.named_modules() if name and fnmatch.fnmatch(name, pattern)]
    if not found:
        names = [n for n, _ in model.named_modules() if n][:8]
        raise CompressorError(f"{field}: pattern '{pattern}' matches no module (modules are named like {', '.join(names)})")
    return found


def build_pruner(model: nn.Module, example: torch.Tensor, p: PruneParams, ratio: float):
    import torch_pruning as tp

    ignored = output_layers(model, example) + [m for pat in p.ignore for m in matching(model, pat, "ignore")]
    per_module = {m: r for pat, r in p.ratios.items() for m in matching(model, pat, "ratios")}
    try:
        return tp.pruner.BasePruner(
            model, example, importance=importance(p.importance), global_pruning=p.global_,
            pruning_ratio=ratio, pruning_ratio_dict=per_module or None, max_pruning_ratio=p.max_ratio_per_layer,
            ignored_layers=ignored, round_to=p.round_to,
        )
    except Exception as e:  # torch-pruning's tracing fails on structures it cannot follow
        raise CompressorError(f"torch-pruning cannot trace this model: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def prune_to(model: nn.Module, example: torch.Tensor, p: PruneParams, ratio: float) -> list:
    pruner = build_pruner(model, example, p, ratio)
    pruner.step()
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def find_ratio(model: nn.Module, example: torch.Tensor, p: PruneParams) -> float:
    """Bisects the channel ratio on copies until MACs (or params) land on the target fraction."""
    key, goal = ("macs", p.target.macs) if p.target.macs is not None else ("params", p.target.params)
    base = count_macs_params(model, example)[0 if key == "macs" else 1]
    low, high, best = 0.0, p.max_ratio_per_layer, None
    for _ in range(12):
        mid = (low + high) / 2
        trial = copy.deepcopy(model)
        prune_to(trial, example, p, mid)
        kept = count_macs_params(trial, example)[0 if key == "macs" else 1] / base
        if kept > goal:
            low = mid
        else:
            high, best = mid, mid
        if abs(kept - goal) / goal < 0.01:
            break
    if best is None:
        raise CompressorError(
            f"target {key}: {goal} is out of reach with max_ratio_per_layer {p.max_ratio_per_layer} "
            "and the protected layers; raise max_ratio_per_layer or ask for less"
        )
    return best


def taylor_gradients(model: nn.Module, data, device: torch.device, batches: int) -> None:
    model.train().zero_grad()
    for i, (inputs, targets) in enumerate(data):
        if i >= batches:
            break
        F.cross_entropy(model(inputs.to(device)), targets.to(device)).backward()


@register_pass("prune")
class Prune(Pass):
    """Structured pruning of channels / filters with torch-pruning, by a ratio or a MACs/params target."""

    Params = PruneParams

    def run(self, state, ctx):
        p = self.params
        if state.masks:
            raise CompressorError("prune cannot follow semi_structured (its masks would lose their shape); "
                                  "put semi_structured after prune")
        state.snapshot_teacher(ctx.previous)
        model = state.model.to(ctx.device)
        example = state.example_input(device=ctx.device)
        if p.importance == "taylor":
            taylor_gradients(model, ctx.data.train, ctx.device, p.taylor_batches)
        ratio = find_ratio(model, example, p) if p.target else (p.ratio or 0.5)
        before = count_macs_params(model, example)
        history = prune_to(model, example, p, ratio)
        model.zero_grad(set_to_none=True)
        after = count_macs_params(model, example)
        state.pruning_history.append(history)
        ctx.metrics.update(ratio=round(ratio, 4), macs_kept=after[0] / before[0], params_kept=after[1] / before[1])
        console.print(f"  pruned {ratio:.1%} of channels ({p.importance}, {'global' if p.global_ else 'per layer'}): "
                      f"MACs ×{after[0] / before[0]:.3f}, params ×{after[1] / before[1]:.3f}")
        return state
