"""The private torch-pruning internals behind compressor/pruning/tp_internals.py, on the installed
torch-pruning and real models: each still exists with the signature we call, and still does
what we rely on. A failure here means a torch-pruning release moved one: update
tp_internals.py for it before widening the torch-pruning range in pyproject.toml."""

import copy
import inspect
from importlib.metadata import version

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
import torchvision

from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.models import build_model
from compressor.pruning.engine import Plan, prune_channels
from compressor.pruning.graph import GroupFailure, build_graph
from compressor.pruning.tp_internals import (
    channel_groups,
    deferred_group_check,
    failing_group,
    failing_node,
    module_names,
    rounding_pruner,
)

SHAPE = (1, 28, 28)


def moved(internal: str, change: str) -> str:
    return (f"torch-pruning {version('torch-pruning')}: {internal} {change}; compressor relies on it, so update "
            "compressor/pruning/tp_internals.py for this release (and the torch-pruning range in pyproject.toml)")


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model("zoo:resnet20", {"in_channels": 1, "num_classes": 10}).eval()


def widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def root_name(model: nn.Module, group) -> str:
    return {m: n for n, m in model.named_modules()}[group[0].dep.target.module]


@pytest.mark.parametrize("owner, name, params", [
    (tp.pruner.BasePruner, "_round_to", ["self", "n_pruned", "current_channels", "round_to"]),
    (tp.pruner.BasePruner, "_get_channel_groups", ["self", "group"]),
    (tp.DependencyGraph, "check_pruning_group", ["self", "group"]),
])
def test_overridden_and_called_internals_keep_their_signatures(owner, name, params):
    internal = f"{owner.__name__}.{name}"
    assert callable(getattr(owner, name, None)), moved(internal, "is gone")
    assert list(inspect.signature(getattr(owner, name)).parameters) == params, moved(
        internal, f"now takes {inspect.signature(getattr(owner, name))}, not ({', '.join(params)})")


def test_the_round_to_hook_decides_how_many_channels_stay():
    model, calls = resnet20(), []

    def keep_round_to(n_pruned, current_channels, round_to):
        calls.append((n_pruned, current_channels, round_to))
        return current_channels - round_to

    pruner = rounding_pruner(keep_round_to, model, example_input(SHAPE), importance=tp.importance.GroupMagnitudeImportance(),
                             pruning_ratio=0.1, round_to=4, ignored_layers=[model.fc])
    pruner.step()
    assert calls and all(isinstance(v, int) for call in calls for v in call), moved(
        "BasePruner._round_to(n_pruned, current_channels, round_to)", f"is not called with channel counts ({calls})")
    assert model.conv1.out_channels == 4, moved("BasePruner._round_to", "no longer sets the channels pruned")

    # Ours keeps the nearest multiple where torch-pruning rounds down: 16 and 32 channels less 10%.
    ours, theirs = resnet20(), resnet20()
    prune_channels(ours, example_input(SHAPE), Plan(round_to=8), 0.1, {"fc"})
    tp.pruner.BasePruner(theirs, example_input(SHAPE), importance=tp.importance.GroupMagnitudeImportance(),
                         pruning_ratio=0.1, round_to=8, ignored_layers=[theirs.fc]).step()
    assert (widths(ours)["conv1"], widths(ours)["layer2.1.conv1"]) == (16, 32)
    assert (widths(theirs)["conv1"], widths(theirs)["layer2.1.conv1"]) == (8, 24), moved(
        "BasePruner._round_to", "no longer rounds the kept channels down (is our override still needed?)")


def test_channel_groups_are_those_of_a_grouped_conv():
    model = nn.Sequential(nn.Conv2d(1, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4),
                          nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    pruner = tp.pruner.BasePruner(model, example_input(SHAPE), importance=tp.importance.GroupMagnitudeImportance(),
                                  ignored_layers=[model[5]])
    into_grouped = pruner.DG.get_pruning_group(model[0], tp.prune_conv_out_channels, list(range(16)))
    plain = pruner.DG.get_pruning_group(model[5], tp.prune_conv_out_channels, list(range(8)))
    assert channel_groups(pruner, into_grouped) == 4, moved(
        "BasePruner._get_channel_groups", "no longer counts the 4 groups of a grouped conv in a group")
    assert channel_groups(pruner, plain) == 1, moved("BasePruner._get_channel_groups", "is not 1 without grouping")


def test_a_deferred_check_lets_a_globally_ranked_group_be_capped():
    model = resnet20()
    with torch.no_grad():  # a layer whose channels all look useless: global ranking would empty it
        model.layer1[1].bn1.weight.fill_(1e-4)

    def pruner(net):
        return tp.pruner.BasePruner(net, example_input(SHAPE), importance=tp.importance.BNScaleImportance(normalizer=None),
                                    global_pruning=True, pruning_ratio=0.3, ignored_layers=[net.fc])

    plain = copy.deepcopy(model)
    assert "layer1.1.conv1" not in [root_name(plain, g) for g in pruner(plain).step(interactive=True)], moved(
        "DependencyGraph.check_pruning_group", "no longer drops a group that would empty a layer")

    deferred = pruner(model)
    with deferred_group_check(deferred) as check:
        faded = [g for g in deferred.step(interactive=True) if root_name(model, g) == "layer1.1.conv1"]
        assert faded, moved("BasePruner.step", "does not look check_pruning_group up on its graph object")
        assert not check(faded[0]), moved("DependencyGraph.check_pruning_group", "passes a group emptying a layer")
        dep = faded[0][0].dep
        capped = deferred.DG.get_pruning_group(dep.target.module, dep.handler, list(range(12)))
        assert check(capped)
    assert "check_pruning_group" not in vars(deferred.DG)

    capped_model = resnet20()
    with torch.no_grad():
        capped_model.layer1[1].bn1.weight.fill_(1e-4)
    prune_channels(capped_model, example_input(SHAPE), Plan(importance="bn_scale", global_=True, max_ratio=0.75), 0.3,
                   {"fc"})
    assert widths(capped_model)["layer1.1.conv1"] == 4  # 16 less 75%


def test_module_names_name_every_module_the_graph_holds():
    model = resnet20()
    names = module_names(build_graph(model, example_input(SHAPE)))
    assert isinstance(names, dict), moved("DependencyGraph._module2name", "is gone")
    assert all(names.get(m) == n for n, m in model.named_modules()), moved(
        "DependencyGraph._module2name", "no longer maps each module to its name in model.named_modules()")


def bn_without_bias() -> nn.Module:
    """A BatchNorm whose bias was removed: torch-pruning's BatchNorm pruner fails on it."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    model[1].bias = None
    return model


def test_failing_group_finds_the_group_torch_pruning_was_cutting():
    model = bn_without_bias()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(SHAPE), verbose=False)
    try:
        graph.get_pruning_group(model[0], tp.prune_conv_out_channels, [0, 1]).prune()  # no Group in this frame
    except AttributeError as e:
        group = failing_group(e)
    else:
        pytest.fail(f"torch-pruning {version('torch-pruning')} prunes a BatchNorm without bias: this test needs "
                    "another structure its pruning functions fail on")
    assert group is not None and group[0].dep.target.module is model[0], moved(
        "Group.prune", "no longer holds the group it prunes as a local of a frame in the traceback")

    with pytest.raises(GroupFailure, match="torch-pruning fails on the channels of '0'"):
        prune_channels(bn_without_bias(), example_input(SHAPE), Plan(), 0.5, set())


def test_failing_node_finds_the_node_torch_pruning_could_not_map():
    model = torchvision.models.shufflenet_v2_x0_5().eval()
    example = example_input((3, 32, 32))
    try:  # torch-pruning's index mapping divides by zero at a channel shuffle
        tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except ZeroDivisionError as e:
        node = failing_node(e)
    else:
        pytest.fail(f"torch-pruning {version('torch-pruning')} maps shufflenet's channel shuffle: this test (and "
                    "tests/test_inspect_analyze.py) needs another structure it cannot map")
    assert node is not None, moved("DependencyGraph.build_dependency", "no longer holds the failing Node as a local")
    assert node.grad_fn is not None and isinstance(node.name, str), moved("Node", "has no grad_fn or name")

    with pytest.raises(CompressorError, match="cannot map channels through the view at torchvision/models/shufflenetv2.py"):
        build_graph(model, example)
