"""Importance criteria: which channels and which attention heads matter least. Channel scores
are torch-pruning's; head scores apply the same idea to each head's slice of the attention
projections."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch_pruning as tp

from compressor.errors import CompressorError
from compressor.registry import Registry


def _magnitude(weights: torch.Tensor, grads: torch.Tensor | None, norm: int) -> torch.Tensor:
    return weights.norm(p=norm, dim=1)


def _taylor(weights: torch.Tensor, grads: torch.Tensor | None, norm: int) -> torch.Tensor:
    if grads is None:
        raise CompressorError("taylor importance needs gradients, and an attention block has none")
    return (weights * grads).abs().sum(dim=1)


def _lamp(weights: torch.Tensor, grads: torch.Tensor | None, norm: int) -> torch.Tensor:
    """A head's squared norm over the sum of those not smaller in the same block."""
    energy = weights.pow(2).sum(dim=1)
    ordered, order = energy.sort()
    tails = ordered.flip(0).cumsum(0).flip(0)
    return torch.empty_like(energy).scatter_(0, order, ordered / tails)


def _fpgm(weights: torch.Tensor, grads: torch.Tensor | None, norm: int) -> torch.Tensor:
    """A head close to all others (near the geometric median) is the most replaceable."""
    return torch.cdist(weights, weights, p=norm).sum(dim=1)


def _random(weights: torch.Tensor, grads: torch.Tensor | None, norm: int) -> torch.Tensor:
    return torch.rand(len(weights))


@dataclass(frozen=True)
class Scores:
    """One criterion: torch-pruning's channel importance for a norm, and the unnormalised score
    of each head from its (heads, n) weight rows, their gradients (or None) and the norm."""

    channels: Callable[[int], tp.importance.Importance]
    heads: Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor]
    needs_gradients: bool = False


_TABLE = {
    "magnitude": Scores(lambda norm: tp.importance.GroupMagnitudeImportance(p=norm), _magnitude),
    # Raw |γ|, not normalised per layer: a global threshold over all γ is Network Slimming.
    # Attention has no BatchNorm to read, so heads fall back to magnitude.
    "bn_scale": Scores(lambda norm: tp.importance.BNScaleImportance(normalizer=None), _magnitude),
    "taylor": Scores(lambda norm: tp.importance.GroupTaylorImportance(), _taylor, needs_gradients=True),
    "lamp": Scores(lambda norm: tp.importance.LAMPImportance(p=norm), _lamp),
    "fpgm": Scores(lambda norm: tp.importance.FPGMImportance(p=norm), _fpgm),
    "random": Scores(lambda norm: tp.importance.RandomImportance(), _random),
}
CRITERIA: Registry[Scores] = Registry("importance criterion")
for _name, _scores in _TABLE.items():
    CRITERIA.register(_name)(_scores)
Criterion = Literal[tuple(_TABLE)]
NEEDS_GRADIENTS = {name for name, scores in _TABLE.items() if scores.needs_gradients}


def channel_importance(criterion: str, norm: int):
    return CRITERIA.get(criterion).channels(norm)


def head_scores(weights: torch.Tensor, grads: torch.Tensor | None, criterion: str, norm: int) -> torch.Tensor:
    """One score per head from its (heads, n) weight rows, scaled to mean 1 so that heads of
    different blocks compare in a global ranking."""
    scores = CRITERIA.get(criterion).heads(weights, grads, norm)
    return scores / scores.mean().clamp_min(1e-12)


def accumulate_gradients(model: nn.Module, loader, device: torch.device, batches: int, task) -> None:
    """Gradients of the task's training loss over a few batches, left in `.grad` for taylor scores."""
    model.train().zero_grad()
    loss = task.criterion(model)
    for i, (inputs, targets) in enumerate(loader):
        if i >= batches:
            break
        sum(loss(model(inputs.to(device)), task.move(targets, device)).values()).backward()
    model.eval()
