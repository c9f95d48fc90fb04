"""Importance criteria: which channels and which attention heads matter least. Channel scores
are torch-pruning's; head scores apply the same idea to each head's slice of the attention
projections."""

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from compressor.errors import CompressorError
from compressor.registry import Registry

Criterion = Literal["magnitude", "bn_scale", "taylor", "lamp", "fpgm", "random"]
NEEDS_GRADIENTS = {"taylor"}

CHANNEL_SCORES: Registry = Registry("importance criterion")
CHANNEL_SCORES.register("magnitude")(lambda norm: tp.importance.GroupMagnitudeImportance(p=norm))
# Raw |γ|, not normalised per layer: a global threshold over all γ is Network Slimming.
CHANNEL_SCORES.register("bn_scale")(lambda norm: tp.importance.BNScaleImportance(normalizer=None))
CHANNEL_SCORES.register("taylor")(lambda norm: tp.importance.GroupTaylorImportance())
CHANNEL_SCORES.register("lamp")(lambda norm: tp.importance.LAMPImportance(p=norm))
CHANNEL_SCORES.register("fpgm")(lambda norm: tp.importance.FPGMImportance(p=norm))
CHANNEL_SCORES.register("random")(lambda norm: tp.importance.RandomImportance())


def channel_importance(criterion: str, norm: int):
    return CHANNEL_SCORES.get(criterion)(norm)


def head_scores(weights: torch.Tensor, grads: torch.Tensor | None, criterion: str, norm: int) -> torch.Tensor:
    """One score per head from its (heads, n) weight rows, scaled to mean 1 so that heads of
    different blocks compare in a global ranking. bn_scale has no BatchNorm to read in
    attention and falls back to magnitude."""
    if criterion in ("magnitude", "bn_scale"):
        scores = weights.norm(p=norm, dim=1)
    elif criterion == "taylor":
        if grads is None:
            raise CompressorError("taylor importance needs gradients, and an attention block has none")
        scores = (weights * grads).abs().sum(dim=1)
    elif criterion == "lamp":
        # LAMP: a head's squared norm over the sum of those not smaller in the same block.
        energy = weights.pow(2).sum(dim=1)
        ordered, order = energy.sort()
        tails = ordered.flip(0).cumsum(0).flip(0)
        scores = torch.empty_like(energy).scatter_(0, order, ordered / tails)
    elif criterion == "fpgm":
        # FPGM: a head close to all others (near the geometric median) is the most replaceable.
        scores = torch.cdist(weights, weights, p=norm).sum(dim=1)
    elif criterion == "random":
        scores = torch.rand(len(weights))
    else:
        raise CompressorError(f"unknown importance criterion '{criterion}'")
    return scores / scores.mean().clamp_min(1e-12)


def accumulate_gradients(model: nn.Module, loader, device: torch.device, batches: int) -> None:
    """Gradients of the training loss over a few batches, left in `.grad` for taylor scores."""
    model.train().zero_grad()
    for i, (inputs, targets) in enumerate(loader):
        if i >= batches:
            break
        F.cross_entropy(model(inputs.to(device)), targets.to(device)).backward()
    model.eval()
