"""Terms plug into the one training loop: extra losses, gradient regularisers, weight constraints."""

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class Step:
    inputs: torch.Tensor
    targets: torch.Tensor
    outputs: torch.Tensor
    epoch: int
    progress: float  # 0 at the first step, 1 at the last


class Term:
    """Override what applies. `loss` adds to the objective; `before_step` edits gradients;
    `after_step` edits weights; `parameters` are trained along with the model; `state_dict`
    is what a resumed training restores (training/resume.py)."""

    name = "term"

    def attach(self, model: nn.Module) -> None: ...

    def detach(self) -> None: ...

    def parameters(self) -> list[nn.Parameter]:
        return []

    def loss(self, step: Step) -> torch.Tensor | None:
        return None

    def before_step(self, model: nn.Module, step: Step) -> None: ...

    def after_step(self, model: nn.Module) -> None: ...

    def end_epoch(self, model: nn.Module, epoch: int) -> dict:
        return {}

    def state_dict(self) -> dict:
        """What the term carries from one epoch to the next, taken at an epoch's end (after
        `end_epoch`): tensors, and values JSON can hold. By default its trained parameters; a
        term that keeps more (a running record, a schedule's position) adds that."""
        return {f"parameter.{i}": p for i, p in enumerate(self.parameters())}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Puts back what `state_dict` gave, after `attach`; raises where it does not fit."""
        for i, p in enumerate(self.parameters()):
            saved = state[f"parameter.{i}"]
            if saved.shape != p.shape:  # copy_ would broadcast it
                raise ValueError(f"parameter {i} of term {self.name} is {tuple(saved.shape)}, not {tuple(p.shape)}")
            p.copy_(saved)


class KeepMasks(Term):
    """Holds masked weights at exactly zero: the gradient is masked so optimiser momentum
    cannot move them, and the weights are re-masked after each step for weight decay."""

    name = "masks"

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks
        self.params: dict[str, nn.Parameter] = {}

    def attach(self, model: nn.Module) -> None:
        named = dict(model.named_parameters())
        self.params = {k: named[k] for k in self.masks}
        device = next(iter(self.params.values())).device if self.params else "cpu"
        self.masks = {k: m.to(device) for k, m in self.masks.items()}
        self.after_step(model)

    def before_step(self, model: nn.Module, step: Step) -> None:
        for k, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[k])

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for k, p in self.params.items():
            p.mul_(self.masks[k])
