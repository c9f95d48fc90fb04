"""MACs and parameters of a model as it stands, counted from the operations it actually runs.

torch's FlopCounterMode sees every matmul and convolution, attention included, whatever module
issues it; torch-pruning's counter only knows module types, so it misses torchvision's Swin
attention and counts a head-pruned attention block differently from the original one.
Normalisations, activations and adds are not counted: they are a few percent of a CNN's work."""

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    was_training = model.training
    device = next(model.parameters()).device
    # Autograd stays on: under no_grad nn.MultiheadAttention takes a fused kernel the counter cannot see.
    with FlopCounterMode(display=False) as counter:
        model.eval()(example.to(device))
    model.train(was_training)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
