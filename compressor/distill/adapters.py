"""1×1 conv adapters from student to teacher channels, for layers where pruning left the
student narrower. Where the student is a pruned copy of the teacher, an adapter starts as the
kept-channel selection (student channel j -> the teacher channel it was cut from), so the
feature loss starts near zero instead of from noise. Adapters train with the student and are
saved beside it, never inside it, so no export ever contains one.

The adapter is a conv with a bias rather than conv + BatchNorm: in training mode a BatchNorm
re-normalises every batch and so cannot start as the selection; the bias gives the same
per-channel affine freedom."""

import copy
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from compressor.distill.pairing import Pair
from compressor.errors import CompressorError
from compressor.pruning.engine import replay


def kept_channels(teacher: nn.Module, history: list[list], input_shape,
                  layers: dict[str, int]) -> dict[str, torch.Tensor] | None:
    """Which output channels of each teacher layer ({name: width}) survive the pruning history.
    The history is replayed on a copy carrying, beside each layer, a BatchNorm whose weights
    number the channels; torch-pruning's dependency graph prunes it along with the layer, so
    the weights it keeps are the indices of the kept channels. None where the history removes
    attention heads: heads are cut beside the dependency graph, which is what prunes the probes."""
    if any(not isinstance(kind, bool) for step in history for _, kind, _ in step):
        return None
    model = copy.deepcopy(teacher).cpu().eval().requires_grad_(True)  # torch-pruning traces autograd
    modules = dict(model.named_modules())
    probes = {}
    for i, (name, width) in enumerate(layers.items()):
        probe = nn.BatchNorm2d(width)
        with torch.no_grad():
            probe.weight.copy_(torch.arange(width))
        model.add_module(f"channel_probe_{i}", probe)  # a submodule, so torch-pruning tracks and prunes it
        probes[name] = probe

    def forward_with_probes(net: nn.Module, example: torch.Tensor) -> torch.Tensor:
        # Hooked here, after torch-pruning's own hooks, so those still see each layer's real output.
        # Adding 0·probe(x) ties the probe's channels to the layer's output without changing it.
        hooks = [modules[name].register_forward_hook(lambda m, i, out, probe=probe: out + 0 * probe(out))
                 for name, probe in probes.items()]
        try:
            return net(example)
        finally:
            for h in hooks:
                h.remove()

    replay(model, history, input_shape, forward_fn=forward_with_probes)
    return {name: probe.weight.detach().round().long() for name, probe in probes.items()}


def selection_adapter(kept: torch.Tensor, teacher_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(len(kept), teacher_channels, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[kept, torch.arange(len(kept)), 0, 0] = 1.0
        conv.bias.zero_()
    return conv


def add_adapters(pairs: list[Pair], kept: dict[str, torch.Tensor] | None) -> None:
    """Gives every pair whose widths differ an adapter: the kept-channel selection where `kept`
    (teacher layer -> kept channel indices) is known, a default-initialised conv otherwise."""
    for pair in pairs:
        if pair.student_channels == pair.teacher_channels:
            continue
        if kept is None:
            pair.adapter = nn.Conv2d(pair.student_channels, pair.teacher_channels, 1)
            continue
        if len(kept[pair.teacher]) != pair.student_channels:
            raise CompressorError(
                f"features.layers: the pruning history keeps {len(kept[pair.teacher])} channels of teacher "
                f"'{pair.teacher}' but student '{pair.student}' has {pair.student_channels}; pair layers that "
                "correspond (the same name in a pruned copy)")
        pair.adapter = selection_adapter(kept[pair.teacher], pair.teacher_channels)


def save_adapters(pairs: list[Pair], path: Path) -> None:
    tensors = {f"{p.student}.{k}": v.detach().cpu().contiguous() for p in pairs if p.adapter is not None
               for k, v in p.adapter.state_dict().items()}
    if tensors:
        save_file(tensors, str(path))
