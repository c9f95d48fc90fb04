"""An in-memory batch loader: small datasets live in one uint8 tensor, and per-batch tensor
ops (augment, resize, normalise) are far faster on 2 CPU cores than per-sample PIL pipelines."""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class Preprocess:
    """uint8 NCHW -> normalised float; the same numbers go into the ONNX metadata."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per-sample random shift by up to `pad` pixels and horizontal flip, done batch-wide."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(-1, images.shape[1], -1, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(-1, images.shape[1], h, -1)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


class TensorLoader:
    """Batches over (images uint8 NCHW, labels); shuffled per epoch with a seeded generator and
    optionally sharded across distributed ranks (each rank sees a disjoint, equal-sized part)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, preprocess: Callable,
                 shuffle: bool = False, augment: bool = False, seed: int = 0):
        self.images, self.labels = images, labels
        self.batch_size, self.preprocess = batch_size, preprocess
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.epoch, self.rank, self.world = 0, 0, 1

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        per_rank = n // self.world
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return -(-(len(self.labels) // self.world) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels) // self.world

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch + 7)
        for idx in self._indices().split(self.batch_size):
            images = self.images[idx]
            if self.augment:
                images = random_crop_flip(images, g)
            yield self.preprocess(images), self.labels[idx]
