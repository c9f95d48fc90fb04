"""torch-pruning's dependency graph as this project configures it, and a survey of its groups:
which channels are removed together, and why the others cannot be."""

import contextlib
import fnmatch
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode

from compressor.errors import CompressorError
from compressor.pruning.attention import attention_heads, attention_types, opaque_types
from compressor.pruning.diagnose import explain_graph_failure, forward_or_explain, headline, recording_origins
from compressor.pruning.fixed import fixed_widths
from compressor.pruning.leftovers import leaving_no_tensors
from compressor.pruning.tp_internals import bounded_groups, known_concat_sizes, module_names

# Graph nodes that move channels around rather than compute on them: where mapping goes wrong.
RESHAPING = (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND,
             tp.ops.OPTYPE.EXPAND, tp.ops.OPTYPE.SLICE)
ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)  # layers whose output channels start a group
IGNORED = "ignore: "  # how the reason of a group the user's ignore keeps starts


def _width(layer: nn.Module) -> int:
    return layer.weight.shape[0] if isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) else 0


class _AttentionWidth(tp.pruner.BasePruningFunc):
    """An attention block's embedding width as one opaque graph node: tracing into windowed
    attention makes torch-pruning's index mapping explode. Groups holding it are protected
    (see `survey`); heads are removed by compressor.pruning.attention instead."""

    def prune_out_channels(self, layer, idxs):
        raise CompressorError(f"the embedding width of {type(layer).__name__} is protected")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        if not hasattr(layer, "qkv"):
            return layer.in_proj_weight.shape[1]
        qkv = getattr(layer.qkv, "conv", layer.qkv)  # Ultralytics wraps its projection convs
        return qkv.weight.shape[1]

    get_in_channels = get_out_channels


class _Options(Mapping):
    """Keyword arguments for every DependencyGraph and BasePruner (`**GRAPH_OPTIONS`), so a
    replayed history meets the same graph. A mapping read on use: timm's attention joins the
    opaque types once a timm model has been built."""

    def __getitem__(self, key):
        if key != "customized_pruners":
            raise KeyError(key)
        return {cls: _ATTENTION_WIDTH for cls in opaque_types()}

    def __iter__(self):
        return iter(["customized_pruners"])

    def __len__(self):
        return 1


_ATTENTION_WIDTH = _AttentionWidth()
GRAPH_OPTIONS = _Options()


ForwardFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]

_CATS = {torch.cat, torch.concat, torch.concatenate}
# A real group reaches each layer with a few different sets of channels (Swin: 3, RexNet: 11, a
# chain of 20 partial residuals: 35, EdgeNeXt: 66), and addresses at most as many channels in one
# as the widest weight dimension has (a flatten into a Linear): past these bounds, with a
# margin, torch-pruning's index mapping has run away.
VISITS, CHANNELS_PER_WIDTH = 128, 2


class _Trace(TorchFunctionMode):
    """What torch-pruning's tracing loses, kept while the model runs: the input widths of each
    torch.cat, by the autograd node of its output."""

    def __init__(self):
        super().__init__()
        self.cat_sizes: dict[object, list[int]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CATS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            tensors = args[0] if args else kwargs["tensors"]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
            self.cat_sizes[out.grad_fn] = [t.shape[dim] for t in tensors]
        return out


@contextlib.contextmanager
def forming_groups(model: nn.Module) -> Iterator[None]:
    """While the block runs, forming a group of a graph of `model` stops with GroupExplosion
    once it outgrows any real group."""
    widest = max((max(p.shape, default=1) for p in model.parameters()), default=1)
    with bounded_groups(VISITS, CHANNELS_PER_WIDTH * widest):
        yield


@contextlib.contextmanager
def tracing(model: nn.Module, forward_fn: ForwardFn | None = None) -> Iterator[ForwardFn]:
    """The forward to give torch-pruning for `model`: `forward_fn(model, example)` (the model
    alone when None), which leaves no tensor cached in the model. While the block runs, graphs
    traced with it map channels through every torch.cat with the widths the forward saw, and
    forming a group stops with GroupExplosion once it outgrows any real group."""
    trace = _Trace()

    def forward(net: nn.Module, example: torch.Tensor) -> torch.Tensor:
        with leaving_no_tensors(net), trace:
            return forward_fn(net, example) if forward_fn else net(example)

    with known_concat_sizes(trace.cat_sizes), forming_groups(model):
        yield forward


def _build(model: nn.Module, example: torch.Tensor, forward_fn: ForwardFn | None = None) -> tp.DependencyGraph:
    with tracing(model, forward_fn) as forward, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped parameter it meets
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=forward,
                                                     verbose=False, **GRAPH_OPTIONS)


def build_graph(model: nn.Module, example: torch.Tensor, forward_fn: ForwardFn | None = None) -> tp.DependencyGraph:
    """The dependency graph of `model`, traced by running `forward_fn(model, example)` (the model
    alone when None)."""
    try:
        return _build(model, example, forward_fn)
    except CompressorError:
        raise
    except Exception as e:  # torch-pruning meets a structure it cannot follow
        why = explain_graph_failure(model, example, e, lambda: _build(model, example, forward_fn))
        raise CompressorError(f"torch-pruning cannot analyse this model: {why}") from None


def out_group(graph: tp.DependencyGraph, module: nn.Module):
    """Everything coupled to `module`'s output channels."""
    pruner = graph.get_pruner_of_module(module)
    return graph.get_pruning_group(module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module))))


class GroupFailure(CompressorError):
    """torch-pruning failed while cutting the group rooted at `root`."""

    def __init__(self, root: str, cause: BaseException):
        super().__init__(f"torch-pruning fails on the channels of '{root}': {headline(cause)}")
        self.root, self.cause = root, cause


def explain_group_failure(model: nn.Module, example: torch.Tensor, failure: GroupFailure) -> str:
    """Why torch-pruning fails on the group, with the reshaping operations its channels pass
    through (the usual culprits), found on the intact `model`."""
    with recording_origins(model) as origins:
        graph = _build(model, example)
    try:
        with forming_groups(model):
            group = out_group(graph, model.get_submodule(failure.root))
    except Exception:  # torch-pruning cannot form the whole group either: no operation to point at
        group = []
    ops = [origins[d.target.grad_fn] for d, _ in group if d.target.type in RESHAPING and d.target.grad_fn in origins]
    where = f" (they pass through the {ops[0][0]} in module {ops[0][1]})" if ops else ""
    return f"torch-pruning fails on its channels: {headline(failure.cause)}{where}"


def match_modules(model: nn.Module, patterns, key: str) -> dict[str, str]:
    """Module name -> the glob that selects it, for every module under a matching one (later globs win)."""
    names = [n for n, _ in model.named_modules() if n]
    chosen: dict[str, str] = {}
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise CompressorError(f"{key}: pattern '{pattern}' matches no module; module names look like "
                                  f"{', '.join(names[:6])}, … (see `compress inspect`)")
        for hit in hits:
            chosen.update({n: pattern for n in names if n == hit or n.startswith(hit + ".")})
    return chosen


@dataclass
class Group:
    root: str  # the layer whose output channels name the group
    width: int
    layers: list[str] = field(default_factory=list)  # layers losing output channels with it
    followers: list[str] = field(default_factory=list)  # layers losing input channels
    reason: str | None = None  # why it cannot be pruned; None when it can


@dataclass
class Survey:
    groups: list[Group]
    heads: dict[str, int]  # attention module -> heads, for blocks whose heads can be removed
    untraced: list[str]  # layers the forward never reaches

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.reason is None]

    def prunable_channels(self, model: nn.Module) -> int:
        """Output channels, in `model` as it is now, of the layers this survey found prunable."""
        modules = dict(model.named_modules())
        return sum(_width(modules[name]) for g in self.prunable for name in [g.root, *g.layers] if name in modules)

    def protected_layers(self) -> set[str]:
        """Layers the channel pruner must leave alone: every layer of a group that cannot be pruned."""
        return {name for g in self.groups if g.reason for name in [g.root, *g.layers]}


def _reason(graph, group, sinks, ignored: dict[str, str], fixed: dict[str, str]) -> str | None:
    names = module_names(graph)
    for dep, _ in group:
        target, out = dep.target, graph.is_out_channel_pruning_fn(dep.handler)
        if out and names.get(target.module) in fixed:
            return fixed[names[target.module]]
        if target in sinks and out:
            return "its channels are the model's output"
        if isinstance(target.module, attention_types()):
            return f"embedding width of attention '{names[target.module]}' (its heads are pruned instead)"
        name = names.get(target.module) if out else None
        if name in ignored:
            return f"{IGNORED}'{ignored[name]}' covers '{name}'"
    return None


def _groups(model: nn.Module, example: torch.Tensor, graph: tp.DependencyGraph, ignored: dict[str, str]) -> list[Group]:
    names = {m: n for n, m in model.named_modules()}
    sinks = {node for node in graph.module2node.values() if not node.outputs}  # nodes that are model outputs
    fixed = fixed_widths(model)  # layers the model says are its outputs, where the graph shows no sink
    groups, seen = [], set()
    for module in [m for m in model.modules() if m in graph.module2node and isinstance(m, ROOT_TYPES)]:
        if module in seen:
            continue
        width = graph.get_out_channels(module)
        try:
            group = out_group(graph, module)
        except Exception as e:
            why = explain_graph_failure(model, example, e, lambda: out_group(_build(model, example),
                                                                             model.get_submodule(names[module])))
            groups.append(Group(names[module], width, reason=why))
            seen.add(module)
            continue
        outs = [d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)]
        ins = [d.target.module for d, _ in group if graph.is_in_channel_pruning_fn(d.handler)
               and not graph.is_out_channel_pruning_fn(d.handler)]
        seen.update(outs)
        layers = [names[m] for m in outs if m in names and m is not module and isinstance(m, ROOT_TYPES)]
        followers = [names[m] for m in ins if m in names and isinstance(m, (*ROOT_TYPES, *attention_types()))]
        groups.append(Group(names[module], width, layers, followers, _reason(graph, group, sinks, ignored, fixed)))
    return groups


def survey(model: nn.Module, example: torch.Tensor, ignored: dict[str, str] | None = None) -> Survey:
    """Every group of coupled channels in `model`, each prunable or with the reason it is not."""
    ignored = ignored or {}
    forward_or_explain(model, example, f"running the model on one input of shape {tuple(example.shape[1:])}")
    graph = build_graph(model, example)
    with forming_groups(model):
        groups = _groups(model, example, graph, ignored)
    inside_attention = {id(m) for a in model.modules() if isinstance(a, attention_types()) for m in a.modules()}
    untraced = [n for n, m in model.named_modules() if isinstance(m, ROOT_TYPES) and m not in graph.module2node
                and id(m) not in inside_attention]
    heads = {n: h for n, h in attention_heads(model).items() if n not in ignored}
    return Survey(groups, heads, untraced)
