"""Dataset sources: `fashion-mnist`, `imagefolder:PATH`, `synthetic` (classification), and
`yolo:PATH/data.yaml`, `fmnist-detect` (detection)."""

from dataclasses import dataclass
from typing import Any

import torch

from compressor.inputs import example_input
from compressor.registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass
class DataBundle:
    train: Any  # iterable of (inputs, targets) with __len__, set_epoch, shard and num_samples
    eval: Any
    input_shape: tuple[int, int, int]
    num_classes: int
    preprocessing: dict  # written into exported models so deployers feed the same numbers
    task: str = "classify"  # the compressor.tasks entry that loads, scores and compares for this data
    names: list[str] | None = None  # class names, where the data has them

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return example_input(self.input_shape, batch)


def load_data(spec, seed: int) -> DataBundle:
    kind, _, arg = spec.dataset.partition(":")
    return DATASETS.get(kind)(spec, arg, seed)


# Each source registers itself on import.
from compressor.data import fashion_mnist, fmnist_detect, imagefolder, synthetic, yolo  # noqa: E402,F401
