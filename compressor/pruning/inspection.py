"""What `compress inspect` shows: a model's size, the groups of channels and attention heads
that can be pruned, and every layer that cannot be, with the reason; and the search for every
group that breaks when cut, which a failing prune step runs as well."""

import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.measure import count_macs_params
from compressor.pruning.diagnose import forward_or_explain
from compressor.pruning.engine import Plan, clone, prune_channels, replay
from compressor.pruning.graph import Group, GroupFailure, Survey, explain_group_failure, match_modules, survey

# inspect's cut on a copy: every group by half, as a prune pass by default, no layer more
TRIAL_PLAN, TRIAL_RATIO = Plan(max_ratio=0.5), 0.5


@dataclass
class Inspection:
    title: str
    input_shape: tuple[int, ...]
    macs: int
    params: int
    survey: Survey
    broken: dict[str, str] = field(default_factory=dict)  # group root -> how pruning it breaks the forward
    skipped: dict[str, str] = field(default_factory=dict)  # group root -> why torch-pruning leaves it whole


@dataclass
class Breakage:
    """What cutting every group of a model does wrong, by the root torch-pruning names each group by."""

    broken: dict[str, str]  # groups whose cut fails or leaves a model that does not run -> how
    skipped: dict[str, str]  # groups torch-pruning leaves whole -> why


def _alike(reason: str) -> str:
    """`reason` without its numbers and quoted names: the same failure in another block."""
    return re.sub(r"'[^']*'|\d+", "…", reason)


class BreakingGroups(CompressorError):
    """Pruning breaks these groups: all of them, found at once, so that one `ignore` fixes them."""

    def __init__(self, broken: dict[str, str]):
        kinds: dict[str, list[str]] = {}
        for root, reason in broken.items():
            kinds.setdefault(_alike(reason), []).append(root)
        why = "; ".join(f"'{roots[0]}'{f' and {len(roots) - 1} alike' if len(roots) > 1 else ''}: {broken[roots[0]]}"
                        for roots in kinds.values())
        names = ", ".join(f"'{root}'" for root in broken)
        advice = f"add {names} to ignore" if len(broken) == 1 else f"add all {len(broken)} to ignore: {names}"
        super().__init__(f"pruning breaks {len(broken)} group{'s' if len(broken) > 1 else ''} of channels; {advice} "
                         f"({why})")
        self.roots = list(broken)


def _failure(model: nn.Module, example: torch.Tensor, entries: list) -> str | None:
    """How the model fails once `entries` are pruned from a copy of it (None: it runs)."""
    twin = clone(model)
    try:
        replay(twin, [entries], tuple(example.shape[1:]))
        forward_or_explain(twin, example, "pruning it")
    except CompressorError as e:
        return str(e)
    return None


def _cut_whole(model: nn.Module, example: torch.Tensor, found: Survey, plan: Plan, ratio: float,
               broken: dict[str, str]):
    """Cuts every group but those `found` protects on a copy; each group whose cut fails is
    added to `broken` and the cut starts again without it."""
    while True:
        try:
            return prune_channels(clone(model), example, plan, ratio, found.protected_layers() | set(broken))
        except GroupFailure as failure:
            if failure.root in broken:  # not a layer that ignoring can keep whole
                raise CompressorError(str(failure)) from None
            broken[failure.root] = explain_group_failure(model, example, failure)


def breaking_groups(model: nn.Module, example: torch.Tensor, found: Survey, plan: Plan = TRIAL_PLAN,
                    ratio: float = TRIAL_RATIO) -> Breakage:
    """Groups that survey deems prunable but that break when cut by `ratio` under `plan`:
    torch-pruning maps their channels wrongly, leaves them whole, or the model no longer runs
    (a hard-coded reshape, an unregistered tensor of that width …). All groups are cut on a
    copy; each failing group is named, and when the copy does not run, a bisection over the
    groups finds the culprits."""
    broken: dict[str, str] = {}
    cut = _cut_whole(model, example, found, plan, ratio, broken)
    entries = list(cut.entries)
    while entries and _failure(model, example, entries):
        good, bad = 0, len(entries)  # entries[:good] runs, entries[:bad] fails
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if _failure(model, example, entries[:middle]) is None else (good, middle)
        culprit = entries.pop(bad - 1)
        broken[culprit[0]] = _failure(model, example, [culprit]) or "fails together with other groups"
    return Breakage(broken, cut.skipped)


def _runs_without(model: nn.Module, example: torch.Tensor, found: Survey, plan: Plan, ratio: float,
                  kept: set[str]) -> bool:
    """Whether a copy cut by `ratio` under `plan`, keeping the groups of `kept` whole, still runs."""
    twin = clone(model)
    try:
        prune_channels(twin, example, plan, ratio, found.protected_layers() | kept)
        forward_or_explain(twin, example, "pruning it")
    except CompressorError:
        return False
    return True


def fewest_to_ignore(model: nn.Module, example: torch.Tensor, found: Survey, plan: Plan, ratio: float,
                     broken: list[str]) -> list[str]:
    """`broken` less each layer (tried in the order found) whose group need not stay whole once
    the others do: keeping one group whole can keep another from breaking (cspdarknet: the layer
    feeding a split of hard-coded size, and a branch of that split torch-pruning maps wrongly)."""
    needed = list(broken)
    for root in broken:
        if _runs_without(model, example, found, plan, ratio, set(needed) - {root}):
            needed.remove(root)
    return needed


def _owner(found: Survey, layer: str) -> Group | None:
    """The group of `found` that `layer` loses output channels in."""
    return next((g for g in found.groups if layer in (g.root, *g.layers)), None)


def _mark(found: Survey, reasons: dict[str, str]) -> None:
    """Gives each group holding a root of `reasons` that reason (torch-pruning roots a group at a
    layer of its own choosing, often not the one survey names it by)."""
    for layer, reason in reasons.items():
        group = _owner(found, layer)
        if group is None:
            found.groups.append(Group(layer, 0, reason=reason))
        elif group.reason is None:
            group.reason = reason


def inspect_model(model: nn.Module, input_shape, title: str, ignore: list[str] = ()) -> Inspection:
    model = model.eval()
    example = example_input(input_shape)
    found = survey(model, example, match_modules(model, ignore, "ignore"))
    breakage = breaking_groups(model, example, found)
    _mark(found, breakage.broken)
    _mark(found, breakage.skipped)
    return Inspection(title, tuple(input_shape), *count_macs_params(model, example), found, breakage.broken,
                      breakage.skipped)
