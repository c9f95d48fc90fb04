"""The one INT8 scheme: per-channel symmetric int8 weights (range ±127, zero point 0) and
per-tensor activations, uint8 with a zero point for onnxruntime on the CPU or symmetric int8 for
TensorRT, whose explicit quantisation takes zero-point-0 int8 only. The same arithmetic as
onnxruntime.quantization's compute_scale_zp, so that what QAT's fake quant computes in torch is
what the Q/DQ ONNX computes."""

from dataclasses import dataclass

import torch

WEIGHT_RANGE = (-127, 127)  # onnxruntime's symmetric int8 range: -128 is never used, so ±max is exact
TINY = 1e-12  # an all-zero channel (a pruned one) still needs a positive scale


@dataclass(frozen=True)
class Scheme:
    activations: str  # "uint8" (asymmetric) or "int8" (symmetric)

    @property
    def symmetric(self) -> bool:
        return self.activations == "int8"

    @property
    def activation_range(self) -> tuple[int, int]:
        return (-127, 127) if self.symmetric else (0, 255)

    def activation_qparams(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for values in [low, high], as onnxruntime computes them from a calibrated range."""
        qmin, qmax = self.activation_range
        low, high = low.clamp(max=0), high.clamp(min=0)  # zero must be exact (padding, ReLU)
        if self.symmetric:
            high = torch.maximum(-low, high)
            low = -high
        scale = ((high - low) / (qmax - qmin)).clamp(min=TINY)
        zero_point = (qmin - torch.round(low / scale)).clamp(qmin, qmax)
        return scale.float().reshape(1), zero_point.int().reshape(1)

    def fake_quant_activation(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self.activation_qparams(low, high)
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, *self.activation_range)


SCHEMES = {"onnxruntime": Scheme("uint8"), "tensorrt": Scheme("int8")}


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel, symmetric. A BatchNorm folded into a conv scales each output channel by
    one number, which scales that channel's step by the same number: the integers are the same,
    so quantising the unfolded weight here matches the folded weight in the ONNX."""
    absmax = weight.detach().abs().flatten(1).amax(1).float()
    scale = (absmax / WEIGHT_RANGE[1]).clamp(min=TINY)
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight.float(), scale, zero_point, 0, *WEIGHT_RANGE).to(weight.dtype)
