"""Sparsity regularisers as terms of the one training loop: they push unimportant channels
towards zero so that a later structured prune removes little that matters."""

import warnings

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from compressor.training import Step, Term


def strength_at(strength: float, schedule: str, progress: float) -> float:
    """`decay` eases off as training ends, strength·(1 − 0.9·epoch/epochs), so the surviving
    channels can settle; `constant` keeps the pull all the way."""
    return strength * (1 - 0.9 * progress) if schedule == "decay" else strength


def batchnorm_scales(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, _BatchNorm) and m.weight is not None]


class BatchNormL1(Term):
    """Network Slimming (Liu et al. 2017): the L1 subgradient strength·sign(γ) on every
    BatchNorm scale, added to the gradient so it bypasses the optimiser's weight decay."""

    name = "bn_l1"

    def __init__(self, strength: float, schedule: str = "constant"):
        self.strength, self.schedule = strength, schedule
        self.scales: list[nn.Parameter] = []

    def attach(self, model: nn.Module) -> None:
        self.scales = [w for w in batchnorm_scales(model) if w.requires_grad]

    @torch.no_grad()
    def before_step(self, model: nn.Module, step: Step) -> None:
        live = [w for w in self.scales if w.grad is not None]
        if live:
            strength = strength_at(self.strength, self.schedule, step.progress)
            torch._foreach_add_([w.grad for w in live], torch._foreach_sign(live), alpha=strength)


class GroupNormRegularizer(Term):
    """DepGraph's group-level regulariser (torch-pruning's GroupNormPruner.regularize): every
    layer of a dependency group is pulled towards zero together, weakest groups hardest, so
    channels coupled by residual adds fade as one and can later be cut as one."""

    name = "group_norm"

    def __init__(self, strength: float, schedule: str, example: torch.Tensor):
        self.strength, self.schedule, self.example = strength, schedule, example
        self.pruner = None

    def attach(self, model: nn.Module) -> None:
        import torch_pruning as tp

        from compressor.pruning.graph import GRAPH_OPTIONS, survey

        training = model.training
        model.eval()  # tracing in train mode would nudge BatchNorm running statistics
        modules = dict(model.named_modules())
        # Groups prune cannot cut (the model's output width, attention widths) are left alone.
        protected = [modules[name] for name in survey(model, self.example).protected_layers()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped parameter it meets
            self.pruner = tp.pruner.GroupNormPruner(
                model, self.example, importance=tp.importance.GroupMagnitudeImportance(p=2), reg=self.strength,
                ignored_layers=protected, **GRAPH_OPTIONS)
        model.train(training)

    def before_step(self, model: nn.Module, step: Step) -> None:
        self.pruner.reg = strength_at(self.strength, self.schedule, step.progress)
        self.pruner.regularize(model)

    def detach(self) -> None:
        self.pruner = None
