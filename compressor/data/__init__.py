"""Dataset sources: `fashion-mnist`, `imagefolder:PATH`, `synthetic` (classification), and
`yolo:PATH/data.yaml`, `fmnist-detect` (detection)."""

from dataclasses import dataclass
from typing import Any

import torch

from compressor.console import console
from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass
class DataBundle:
    train: Any  # iterable of (inputs, targets) with __len__, set_epoch, shard and num_samples
    eval: Any  # the split results are reported on
    input_shape: tuple[int, int, int]
    num_classes: int
    preprocessing: dict  # written into exported models so deployers feed the same numbers
    task: str = "classify"  # the compressor.tasks entry that loads, scores and compares for this data
    names: list[str] | None = None  # class names, where the data has them
    # A loader like eval that choices are made on: held out of train (data.val_split), or the
    # dataset's own val split, which is then eval itself (yolo, imagefolder); None: there is none.
    val: Any = None

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return example_input(self.input_shape, batch)

    def decision_split(self):
        """The loader that choices inside a run are made on: the validation split, else the
        evaluation split, with a note, since a choice made on the reported split flatters it."""
        if self.val is not None:
            return self.val
        console.print("[yellow]note: this data has no validation split (data.val_split), so choices are made on "
                      "the test split the results report[/yellow]")
        return self.eval


def load_data(spec, seed: int) -> DataBundle:
    kind, _, arg = spec.dataset.partition(":")
    data = DATASETS.get(kind)(spec, arg, seed)
    if spec.val_split and data.val is None:
        raise CompressorError(f"data.val_split: dataset '{kind}' cannot hold out a validation split; remove val_split")
    return data


# Each source registers itself on import.
from compressor.data import fashion_mnist, fmnist_detect, imagefolder, synthetic, yolo  # noqa: E402,F401
