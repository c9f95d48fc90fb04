"""The private parts of torch-pruning this project relies on, each behind one function, so that a
release which moves one breaks here alone. tests/test_tp_internals.py exercises every one of them
on the installed release (known_concat_sizes and bounded_groups in tests/test_prune.py),
and pyproject.toml pins torch-pruning to the minor release it passes on."""

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch.nn as nn
import torch_pruning as tp
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.group import Group
from torch_pruning.dependency.node import Node

# (channels the ratio asks to prune, the layer's channels, round_to) -> channels to prune
Rounding = Callable[[int, int, int], int]


class _RoundingPruner(tp.pruner.BasePruner):
    def __init__(self, *args, rounding: Rounding, **kwargs):
        self.rounding = rounding
        super().__init__(*args, **kwargs)

    def _round_to(self, n_pruned, current_channels, round_to):
        return self.rounding(n_pruned, current_channels, round_to)


def rounding_pruner(rounding: Rounding, *args, **kwargs) -> tp.pruner.BasePruner:
    """`tp.pruner.BasePruner(*args, **kwargs)`, whose channel counts under `round_to` come from
    `rounding` instead of torch-pruning's round-down.

    Relies on BasePruner._prune calling `self._round_to(n_pruned, current_channels, round_to)`
    for every group when round_to is set, and pruning the count it returns. No public option
    changes how torch-pruning rounds."""
    return _RoundingPruner(*args, rounding=rounding, **kwargs)


def channel_groups(pruner: tp.pruner.BasePruner, group: tp.dependency.Group) -> int:
    """Into how many channel groups the layers of `group` split their channels (grouped and
    depthwise convolutions; 1 when none).

    Relies on BasePruner._get_channel_groups(group), which reads the groups BasePruner.__init__
    found in the model. Ranking a group again ourselves must remove the same positions in every
    channel group, as torch-pruning does, or the grouped layer no longer divides evenly."""
    return pruner._get_channel_groups(group)


@contextlib.contextmanager
def deferred_group_check(pruner: tp.pruner.BasePruner) -> Iterator[Callable[[tp.dependency.Group], bool]]:
    """While the block runs, `pruner.step(interactive=True)` yields every group, also those its
    over-pruning check would drop; the block receives that check, to apply once it has reshaped
    a group.

    Relies on BasePruner._prune calling `self.DG.check_pruning_group(group)` before yielding
    each group, looked up on the graph object each time, so an attribute of that object takes
    its place. The check drops a group that would lose every channel of a layer, where under
    global ranking such a group should lose max_ratio of them instead."""
    graph = pruner.DG
    check = graph.check_pruning_group
    graph.check_pruning_group = lambda group: True
    try:
        yield check
    finally:
        del graph.check_pruning_group  # the class's own check again


def module_names(graph: tp.DependencyGraph) -> dict[nn.Module, str]:
    """Module -> its name, for every module of the model the graph was built from (and its
    unwrapped parameters, under names torch-pruning makes up).

    Relies on DependencyGraph.build_dependency keeping that map as `_module2name`: the names
    torch-pruning itself records in pruning histories, so the names we report are the ones a
    history holds."""
    return graph._module2name


def innermost_local(exc: BaseException, kind: type):
    """The value of type `kind` held by the innermost frame of `exc`'s traceback that holds one.
    torch-pruning's exceptions carry no reference to the graph element they failed on; the
    frames that raised them still hold it as a local variable."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        values = [v for v in tb.tb_frame.f_locals.values() if isinstance(v, kind)]
        found = values[0] if values else found
        tb = tb.tb_next
    return found


def failing_group(exc: BaseException) -> tp.dependency.Group | None:
    """The group torch-pruning was pruning when it raised `exc`, or None.

    Relies on Group.prune (its `self`) and BasePruner's step (its `group`) holding the group as
    a local of a frame in the traceback, and on groups being `tp.dependency.Group`s."""
    return innermost_local(exc, tp.dependency.Group)


def failing_node(exc: BaseException) -> Node | None:
    """The graph node torch-pruning was analysing when it raised `exc` while building a
    dependency graph or a group, or None.

    Relies on torch-pruning's tracing, shape inference and index mapping holding the node they
    work on as a local of a frame in the traceback, and on nodes being
    `torch_pruning.dependency.node.Node`s with a `grad_fn` and a `name`."""
    return innermost_local(exc, Node)


@contextlib.contextmanager
def known_concat_sizes(sizes: Mapping[object, list[int]]) -> Iterator[None]:
    """While the block runs, a dependency graph maps channels through each torch.cat whose
    output's autograd node is a key of `sizes` with the input widths it gives, instead of
    widths torch-pruning infers. Its inference reads through a slice as if the slice kept every
    channel, so on timm's rexnet (`cat([x[:, :c] + shortcut, x[:, c:]])`) the offsets come out
    wrong and forming a group shifts channel indices round the block without end.

    Relies on index_mapping.update_index_mapping calling the module-level
    update_concat_index_mapping(graph, node) for every concat node (when the graph is built and
    before each group is formed), and on that function taking `node.module.concat_sizes` as
    the input widths when set, and keeping what it infers there otherwise."""
    infer = index_mapping.update_concat_index_mapping

    def update(graph, node):
        if node.module.concat_sizes is None and node.grad_fn in sizes:
            node.module.concat_sizes = list(sizes[node.grad_fn])
        infer(graph, node)

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = infer


class GroupExplosion(RuntimeError):
    """torch-pruning kept adding to a group past any size a real group of the model can reach."""


@contextlib.contextmanager
def bounded_groups(visits: int, channels: int) -> Iterator[None]:
    """While the block runs, forming a group raises GroupExplosion once the group reaches one
    layer or operation with `visits` different sets of channels, or one dependency would address
    more than `channels` distinct channels. torch-pruning follows every path between layers anew
    whenever it arrives with other channels, and the time each arrival takes grows with the
    group; index mappings that cycle (wrong cat offsets) or multiply the channels (flattening
    window partitions) keep it going for hours.

    Relies on DependencyGraph.get_pruning_group adding every dependency it reaches through
    Group.add_dep(dep, idxs) on the one group it is forming, looked up on the class, with `idxs`
    a list of _HybridIndex (the same channel may come more than once, from several roots), and
    on a Node keeping its module's name as `_name` (None for an operation)."""
    add = Group.add_dep
    forming = {"group": None, "visits": {}}

    def bounded(group, dep, idxs):
        if group is not forming["group"]:
            forming.update(group=group, visits={})
        key = (dep.target, dep.handler)
        forming["visits"][key] = forming["visits"].get(key, 0) + 1
        where = f"forming a group of coupled channels, it reached '{dep.target._name or dep.target.module}'"
        if forming["visits"][key] > visits:
            raise GroupExplosion(f"torch-pruning's index mapping runs away: {where} {visits} times with other channels")
        if len({i.idx for i in idxs}) > channels:
            raise GroupExplosion(f"torch-pruning's index mapping runs away: {where} with more than the {channels} "
                                 "channels any layer of this model could have")
        add(group, dep, idxs)

    Group.add_dep = bounded
    try:
        yield
    finally:
        Group.add_dep = add
