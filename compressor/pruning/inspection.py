"""What `compress inspect` shows: a model's size, the groups of channels and attention heads
that can be pruned, and every layer that cannot be, with the reason."""

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.measure import count_macs_params
from compressor.pruning.diagnose import forward_or_explain
from compressor.pruning.engine import Plan, clone, prune_channels, replay
from compressor.pruning.graph import GroupFailure, Survey, explain_group_failure, match_modules, survey


@dataclass
class Inspection:
    title: str
    input_shape: tuple[int, ...]
    macs: int
    params: int
    survey: Survey
    broken: dict[str, str] = field(default_factory=dict)  # group root -> how pruning it breaks the forward


def _failure(model: nn.Module, example: torch.Tensor, entries: list) -> str | None:
    """How the model fails once `entries` are pruned from a copy of it (None: it runs)."""
    twin = copy.deepcopy(model)
    try:
        replay(twin, [entries], tuple(example.shape[1:]))
        forward_or_explain(twin, example, "pruning it")
    except CompressorError as e:
        return str(e)
    return None


def breaking_groups(model: nn.Module, example: torch.Tensor, found: Survey) -> dict[str, str]:
    """Groups that survey deems prunable but that break when cut: torch-pruning maps their
    channels wrongly, or the model no longer runs (a hard-coded reshape, an unregistered
    tensor of that width …). All groups are cut by half on a copy; each failing group is
    named, and when the copy does not run, a bisection over the groups finds the culprits."""
    broken: dict[str, str] = {}
    while True:
        protected = found.protected_layers() | set(broken)
        if not [g for g in found.prunable if g.root not in broken]:
            return broken
        try:
            entries = prune_channels(clone(model), example, Plan(max_ratio=0.5), 0.5, protected)
            break
        except GroupFailure as failure:
            broken[failure.root] = explain_group_failure(model, example, failure)
    while entries and _failure(model, example, entries):
        good, bad = 0, len(entries)  # entries[:good] runs, entries[:bad] fails
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if _failure(model, example, entries[:middle]) is None else (good, middle)
        culprit = entries.pop(bad - 1)
        broken[culprit[0]] = _failure(model, example, [culprit]) or "fails together with other groups"
    return broken


def inspect_model(model: nn.Module, input_shape, title: str, ignore: list[str] = ()) -> Inspection:
    model = model.eval()
    example = example_input(input_shape)
    found = survey(model, example, match_modules(model, ignore, "ignore"))
    broken = breaking_groups(model, example, found)
    for group in found.groups:
        if group.root in broken:
            group.reason = broken[group.root]
    return Inspection(title, tuple(input_shape), *count_macs_params(model, example), found, broken)
