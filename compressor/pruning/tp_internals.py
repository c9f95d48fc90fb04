"""The private parts of torch-pruning this project relies on, each behind one function, so that a
release which moves one breaks here alone. tests/test_tp_internals.py exercises every one of them
on the installed release, and pyproject.toml pins torch-pruning to the minor release it passes on."""

import contextlib
from collections.abc import Callable, Iterator

import torch.nn as nn
import torch_pruning as tp
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
