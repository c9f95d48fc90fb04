"""Random images and labels: for tests and latency-only runs, where accuracy means nothing."""

import torch

from compressor.data import DATASETS, DataBundle
from compressor.data.loader import Preprocess, TensorLoader


@DATASETS.register("synthetic")
def synthetic(spec, arg: str, seed: int) -> DataBundle:
    channels, size, classes = spec.channels or 3, spec.image_size or 32, spec.num_classes or 10
    g = torch.Generator().manual_seed(seed)

    def make(n):
        return (torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                torch.randint(0, classes, (n,), generator=g))

    pre = Preprocess((0.5,) * channels, (0.25,) * channels, channels, size)
    train = TensorLoader(*make(spec.train_samples or 256), spec.batch_size, pre, shuffle=True, seed=seed)
    evaluation = TensorLoader(*make(spec.eval_samples or 128), spec.eval_batch_size, pre)
    return DataBundle(train, evaluation, (channels, size, size), classes,
                      {"mean": list(pre.mean), "std": list(pre.std), "scale": "1/255", "layout": "NCHW"})
