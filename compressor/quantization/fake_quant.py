"""Fake quant as a term of the one training loop: each INT8 layer sees its input and its weight
rounded to the scheme's grid (straight-through gradients), so fine-tuning learns weights that
survive the Q/DQ ONNX. The input ranges follow the batches (a moving average of their min and
max, as torch's own observers keep them); the quantize pass then calibrates the ONNX afresh
on the fine-tuned model with the same scheme."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.quantization.scheme import Scheme, fake_quant_weight
from compressor.training import Term


class FakeQuant(Term):
    name = "fake_quant"

    def __init__(self, layers: list[str], scheme: Scheme, momentum: float = 0.01):
        self.layers, self.scheme, self.momentum = layers, scheme, momentum
        self.ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.modules: list[nn.Module] = []

    def attach(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for name in self.layers:
            module = modules[name]
            # An instance attribute shadows the class's forward; the module's hooks and names stay.
            module.forward = self._forward(name, module)
            self.modules.append(module)

    def detach(self) -> None:
        for module in self.modules:
            del module.forward
        self.modules = []

    def _observe(self, name: str, x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = x.detach().min().float(), x.detach().max().float()
        if name in self.ranges and training:
            old_low, old_high = self.ranges[name]
            low, high = old_low.lerp(low, self.momentum), old_high.lerp(high, self.momentum)
        if name not in self.ranges or training:  # in eval the first batch seen sets the range, as calibration would
            self.ranges[name] = (low, high)
        return self.ranges[name]

    def _forward(self, name: str, module: nn.Module):
        def forward(x: torch.Tensor) -> torch.Tensor:
            x = self.scheme.fake_quant_activation(x, *self._observe(name, x, module.training)).to(x.dtype)
            weight = fake_quant_weight(module.weight).to(x.dtype)
            bias = None if module.bias is None else module.bias.to(x.dtype)
            if isinstance(module, nn.Linear):
                return F.linear(x, weight, bias)
            return module._conv_forward(x, weight, bias)
        return forward
