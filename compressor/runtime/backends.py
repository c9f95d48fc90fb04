"""Latency backends: each builds a zero-argument callable that runs one batch to completion."""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from compressor.registry import Registry
from compressor.runtime import onnx as ox

BACKENDS: Registry = Registry("latency backend")


@BACKENDS.register("torch")
def torch_runner(model: nn.Module, onnx_path: Path | None, batch: int, input_shape, device: torch.device,
                 threads: int) -> Callable[[], None]:
    model = model.eval().to(device)
    x = torch.randn(batch, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @torch.inference_mode()
    def run():
        model(x)
        sync()  # CUDA calls return before the work is done

    return run


@BACKENDS.register("onnxruntime")
def onnxruntime_runner(model: nn.Module, onnx_path: Path, batch: int, input_shape, device: torch.device,
                       threads: int) -> Callable[[], None]:
    sess = ox.session(onnx_path, threads)
    feed = {ox.INPUT_NAME: np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)}
    return lambda: sess.run(None, feed)
