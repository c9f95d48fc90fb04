"""One pruning step: remove attention heads, then channels, and return the step's history.

A history step is a list of entries, replayed in order by `replay`:
  [layer_name, is_out, [channel indices]]  a torch-pruning group, rooted at that layer
  [attention_name, "heads", [head indices]]  whole heads of that attention block
"""

import copy
import math
import warnings
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch_pruning as tp

from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.pruning.attention import as_head_attention, drop_heads
from compressor.pruning.diagnose import forward_or_explain, headline
from compressor.pruning.graph import (
    GRAPH_OPTIONS,
    ForwardFn,
    GroupFailure,
    Survey,
    build_graph,
    forming_groups,
    match_modules,
    tracing,
)
from compressor.pruning.importance import channel_importance, head_scores
from compressor.pruning.leftovers import drop_autograd_history
from compressor.pruning.tp_internals import (
    GroupExplosion,
    channel_groups,
    deferred_group_check,
    failing_group,
    rounding_pruner,
)

HEADS = "heads"


def step_share(ratio: float, steps: int) -> float:
    """The ratio each of `steps` equal steps removes so that together they remove `ratio`: each
    step prunes a share of what the previous ones left."""
    return 1 - (1 - ratio) ** (1 / steps)


@dataclass(frozen=True)
class Plan:
    """How to prune, whatever the amount: the recipe's keys, resolved against one model."""

    importance: str = "magnitude"
    norm: int = 2
    global_: bool = False
    round_to: int | None = None
    max_ratio: float = 0.9  # no layer loses more than this in one step
    ratios: dict[str, float] = field(default_factory=dict)  # module name -> its own ratio
    heads: bool = True

    def per_step(self, steps: int) -> "Plan":
        """The plan for one of `steps` equal steps that together remove what this plan removes."""
        return replace(self, max_ratio=step_share(self.max_ratio, steps),
                       ratios={k: step_share(r, steps) for k, r in self.ratios.items()})


def resolve_ratios(model: nn.Module, patterns: dict[str, float]) -> dict[str, float]:
    chosen = match_modules(model, patterns, "ratios")
    return {name: patterns[pattern] for name, pattern in chosen.items()}


def clone(model: nn.Module) -> nn.Module:
    """A deep copy that keeps gradients (taylor importance reads them; deepcopy drops them)."""
    drop_autograd_history(model)  # deepcopy refuses a tensor with history
    twin = copy.deepcopy(model)
    for mine, theirs in zip(model.parameters(), twin.parameters()):
        if mine.grad is not None:
            theirs.grad = mine.grad.clone()
    return twin


def choose_heads(model: nn.Module, plan: Plan, ratio: float, heads: dict[str, int]) -> dict[str, list[int]]:
    """Heads to remove from each attention block: the lowest scored, ranked per block or globally."""
    blocks = {name: as_head_attention(model, name) for name in heads}
    scores, dropped = {}, {}
    for name, block in blocks.items():
        weights, grads = block.head_weights()
        scores[name] = head_scores(weights, grads, plan.importance, plan.norm)
    # At least one head stays, and no block loses more than max_ratio of its heads.
    cap = {name: min(math.floor(plan.max_ratio * b.num_heads + 1e-9), b.num_heads - 1) for name, b in blocks.items()}
    pooled = []
    for name, block in blocks.items():
        own = plan.ratios.get(name)
        if plan.global_ and own is None:
            pooled += [(float(s), name, h) for h, s in enumerate(scores[name])]
            continue
        count = min(round((own if own is not None else ratio) * block.num_heads), cap[name])
        dropped[name] = scores[name].argsort()[:count].tolist()
    budget = round(ratio * sum(blocks[n].num_heads for n in {n for _, n, _ in pooled}))
    for _, name, head in sorted(pooled):
        if budget <= 0:
            break
        if len(dropped.setdefault(name, [])) < cap[name]:
            dropped[name].append(head)
            budget -= 1
    return {name: sorted(h) for name, h in dropped.items() if h}


def _nearest_multiple(n_pruned: int, current_channels: int, round_to: int) -> int:
    """Channels to prune so that the multiple of `round_to` nearest to what the ratio asks is
    kept, and never fewer than `round_to` (torch-pruning rounds down, so ratio 0.1 halves a
    16-channel layer at round_to 8, and rounding down to zero makes it skip the layer altogether)."""
    kept = max(round_to, round_to * round((current_channels - n_pruned) / round_to))
    return max(current_channels - kept, 0)


def channel_pruner(model: nn.Module, example: torch.Tensor, plan: Plan, ratio: float,
                   protected: set[str], forward_fn: ForwardFn | None = None) -> tp.pruner.BasePruner:
    modules = dict(model.named_modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped parameter it meets
        return rounding_pruner(
            _nearest_multiple, model, example, forward_fn=forward_fn,
            importance=channel_importance(plan.importance, plan.norm),
            global_pruning=plan.global_, pruning_ratio=ratio,
            pruning_ratio_dict={modules[n]: r for n, r in plan.ratios.items() if n in modules} or None,
            max_pruning_ratio=plan.max_ratio, round_to=plan.round_to,
            ignored_layers=[modules[n] for n in protected if n in modules], **GRAPH_OPTIONS,
        )


def _capped(pruner: tp.pruner.BasePruner, group, limit: float, round_to: int | None):
    """`group` restricted to the lowest-ranked channels its root may lose under `limit`: global
    ranking in torch-pruning prunes whatever falls under the threshold, which can empty a layer
    (Network Slimming cuts a whole faded layer)."""
    graph, dep = pruner.DG, group[0].dep
    module, handler = dep.target.module, dep.handler
    width = graph.get_out_channels(module) if graph.is_out_channel_pruning_fn(handler) else graph.get_in_channels(module)
    groups = channel_groups(pruner, group)
    size = width // groups  # grouped layers lose the same positions in every channel group
    chosen = sorted({int(i) % size for i in group[0].idxs})
    keep = size - math.floor(limit * size + 1e-9)
    if round_to:
        keep = min(size, round_to * math.ceil(keep / round_to))
    if len(chosen) <= size - keep:
        return group
    full = graph.get_pruning_group(module, handler, list(range(width)))
    scores = pruner.estimate_importance(full).view(groups, -1).mean(dim=0)
    chosen = sorted(chosen, key=lambda i: float(scores[i]))[:size - keep]
    return graph.get_pruning_group(module, handler, [i + g * size for g in range(groups) for i in chosen])


@dataclass
class Cut:
    """What a pruning step did: its history entries, and the groups torch-pruning left whole
    (root layer -> why)."""

    entries: list[list]
    skipped: dict[str, str] = field(default_factory=dict)


def _why_skipped(graph: tp.DependencyGraph, group, names: dict[nn.Module, str]) -> str:
    """torch-pruning's own check refuses a cut that would take every channel of a layer: which
    layer. Through channels coupled to the chosen ones (GhostNet's cat of a layer and a
    depthwise copy of it pairs channel i with i + width/2) a half-cut can reach them all."""
    for dep, idxs in group:
        out = graph.is_out_channel_pruning_fn(dep.handler)
        width = (graph.get_out_channels if out else graph.get_in_channels)(dep.target.module)
        if width is not None and len(idxs) >= width:
            layer = names.get(dep.target.module, dep.target.name)
            return (f"torch-pruning leaves it whole: with the channels coupled to those it ranks lowest, the cut "
                    f"would take all {width} {'output' if out else 'input'} channels of '{layer}'")
    return "torch-pruning's check refuses its cut"


def prune_channels(model: nn.Module, example: torch.Tensor, plan: Plan, ratio: float, protected: set[str]) -> Cut:
    """Cuts channels with torch-pruning; a failure on one group raises GroupFailure naming it."""
    names = {m: n for n, m in model.named_modules()}
    skipped = {}
    try:
        with tracing(model) as forward:
            pruner = channel_pruner(model, example, plan, ratio, protected, forward)
            # torch-pruning drops a group that would lose every channel; under global ranking that
            # group should lose max_ratio of them instead, so the check comes after the cap.
            with deferred_group_check(pruner) as check, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for group in pruner.step(interactive=True):
                    if plan.global_:
                        group = _capped(pruner, group, plan.max_ratio, plan.round_to)
                    if check(group):
                        group.prune()
                    else:
                        skipped[names.get(group[0].dep.target.module, "?")] = _why_skipped(pruner.DG, group, names)
    except CompressorError:
        raise
    except Exception as e:  # torch-pruning met a structure it maps wrongly
        group = failing_group(e)
        if group is None:
            raise CompressorError(f"torch-pruning fails: {headline(e)}") from None
        raise GroupFailure(names.get(group[0].dep.target.module, "?"), e) from None
    entries = [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]
    return Cut(entries, skipped)


def prune_step(model: nn.Module, example: torch.Tensor, plan: Plan, ratio: float, survey: Survey) -> Cut:
    """Prunes `model` in place by `ratio` (heads and channels): the step's history and the
    groups torch-pruning skipped."""
    cut = Cut([])
    if plan.heads and survey.heads:
        for name, heads in choose_heads(model, plan, ratio, survey.heads).items():
            drop_heads(model, name, heads)
            cut.entries.append([name, HEADS, heads])
    if survey.prunable:
        channels = prune_channels(model, example, plan, ratio, survey.protected_layers())
        cut = Cut(cut.entries + channels.entries, channels.skipped)
    model.zero_grad(set_to_none=True)
    forward_or_explain(model, example, "after pruning")
    return cut


def replay(model: nn.Module, history: list[list], input_shape, forward_fn: ForwardFn | None = None) -> nn.Module:
    """Rebuilds the pruned architecture from the unpruned one and its recorded history, in place.
    `forward_fn(model, example)` runs the model when torch-pruning traces it (the model alone
    when None)."""
    example = example_input(input_shape)
    for step in history:
        graph = None
        for name, kind, idxs in step:
            if kind == HEADS:
                drop_heads(model, name, idxs)
                graph = None  # the graph no longer matches the model
                continue
            graph = graph or build_graph(model, example, forward_fn)
            try:
                with forming_groups(model):
                    graph.load_pruning_history([(name, kind, idxs)])
            except (AttributeError, AssertionError, IndexError, ValueError, GroupExplosion) as e:
                raise CompressorError(f"cannot replay the pruning of '{name}' on this model "
                                      f"({type(e).__name__}: {e}); was the checkpoint made from another model?") from None
    return model
