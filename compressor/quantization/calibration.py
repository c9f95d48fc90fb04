"""Calibration images: real training batches, checked for count and shape, fed to
onnxruntime.quantization through its CalibrationDataReader."""

from itertools import islice

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from compressor.errors import CompressorError
from compressor.runtime import onnx as ox


def calibration_batches(loader, count: int, input_shape) -> list[torch.Tensor]:
    if len(loader) < count:
        raise CompressorError(f"calibration_batches is {count}, and the training split has only {len(loader)} "
                              f"batches: lower calibration_batches to {len(loader)} or less, "
                              "or give more training data")
    batches = [inputs for inputs, _ in islice(loader, count)]
    for inputs in batches:
        if tuple(inputs.shape[1:]) != tuple(input_shape):
            raise CompressorError(f"calibration images have shape {tuple(inputs.shape[1:])} and the model takes "
                                  f"{tuple(input_shape)}: check data.channels and data.image_size")
    return batches


class BatchReader(CalibrationDataReader):
    def __init__(self, batches: list[torch.Tensor]):
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {ox.INPUT_NAME: batch.cpu().float().numpy()}
