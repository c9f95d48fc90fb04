"""SR-STE (Zhou et al. 2021, "Learning N:M fine-grained structured sparse neural networks
from scratch"): the forward pass uses W⊙M with the N:M mask M recomputed from the dense W
at every step, the gradient reaches the dense W straight through, and the pruned weights
are pulled towards zero by λ_w·(1−M)⊙W so the mask settles. When training ends the masks
are frozen and the weights baked to W⊙M."""

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from compressor.sparsity.nm import nm_mask
from compressor.sparsity.regularizers import strength_at
from compressor.sparsity.selection import weight_key
from compressor.training import Step, Term


class NMForward(nn.Module):
    """Parametrisation: the layer computes with W⊙M(W); the gradient passes to W unchanged."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.n, self.m = n, m
        self.mask: torch.Tensor | None = None  # the mask of the latest forward pass

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self.mask = nm_mask(weight, self.n, self.m)
        return weight + (weight * self.mask - weight).detach()


class SRSTE(Term):
    name = "sr_ste"

    def __init__(self, layers: dict[str, nn.Module], n: int, m: int, strength: float, schedule: str = "constant"):
        self.layers, self.n, self.m = layers, n, m
        self.strength, self.schedule = strength, schedule
        self.masks: dict[str, torch.Tensor] = {}  # the frozen masks, by parameter name, once training ended
        self._last: dict[str, torch.Tensor] = {}

    def _current(self) -> dict[str, torch.Tensor]:
        return {name: nm_mask(mod.parametrizations.weight.original, self.n, self.m) for name, mod in self.layers.items()}

    def attach(self, model: nn.Module) -> None:
        for module in self.layers.values():
            parametrize.register_parametrization(module, "weight", NMForward(self.n, self.m))
        self._last = self._current()

    @torch.no_grad()
    def before_step(self, model: nn.Module, step: Step) -> None:
        decay = strength_at(self.strength, self.schedule, step.progress)
        if decay == 0:
            return
        for module in self.layers.values():
            dense, mask = module.parametrizations.weight.original, module.parametrizations.weight[0].mask
            if dense.grad is not None and mask is not None:
                dense.grad.add_(dense * (1 - mask), alpha=decay)

    def end_epoch(self, model: nn.Module, epoch: int) -> dict:
        """The share of mask entries that changed during the epoch: it falls as the masks settle."""
        now = self._current()
        changed = sum(int((now[k] != self._last[k]).sum()) for k in now)
        total = sum(mask.numel() for mask in now.values())
        self._last = now
        return {"mask_flips": changed / max(total, 1)}

    def state_dict(self) -> dict:
        return {f"last.{k}": v for k, v in self._last.items()}

    def load_state_dict(self, state: dict) -> None:
        last = {k: state[f"last.{k}"].to(v.device) for k, v in self._last.items()}
        if any(last[k].shape != v.shape for k, v in self._last.items()):
            raise ValueError("its N:M masks have other shapes than the layers")
        self._last = last

    def detach(self) -> None:
        for name, module in self.layers.items():
            if parametrize.is_parametrized(module, "weight"):
                self.masks[weight_key(name)] = nm_mask(module.parametrizations.weight.original, self.n, self.m).cpu()
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
