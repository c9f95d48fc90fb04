"""Fashion-MNIST: from the user's directory, the Debian package, or torchvision's downloader."""

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from compressor.data import DATASETS, DataBundle
from compressor.data.loader import Preprocess, TensorLoader
from compressor.data.split import hold_out
from compressor.errors import CompressorError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compressor" / "fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MEAN, STD = 0.2860, 0.3530
DEFAULT_VAL = 5000  # held-out training images, where data.val_split is not given (its help says why)


def _read_idx(base: Path) -> np.ndarray:
    for path, opener in ((base.with_name(base.name + ".gz"), gzip.open), (base, open)):
        if path.is_file():
            with opener(path, "rb") as f:
                data = f.read()
            ndim = data[3]
            shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    raise FileNotFoundError(base)


def _has_files(directory: Path) -> bool:
    return all(
        (directory / name).is_file() or (directory / (name + ".gz")).is_file()
        for pair in FILES.values() for name in pair
    )


def _download() -> Path:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(DOWNLOAD_DIR), train=True, download=True)
        FashionMNIST(str(DOWNLOAD_DIR), train=False, download=True)
    except Exception:
        return None
    return DOWNLOAD_DIR / "FashionMNIST" / "raw"


def find_fashion_mnist(root: str | None) -> Path:
    """The first directory holding the four idx files: the user's, Debian's, then a download."""
    if root:
        for candidate in (Path(root), Path(root) / "FashionMNIST" / "raw"):
            if _has_files(candidate):
                return candidate
        raise CompressorError(
            f"data.root '{root}' has no Fashion-MNIST idx files (train-images-idx3-ubyte[.gz], …)"
        )
    for candidate in (DEBIAN_DIR, DOWNLOAD_DIR / "FashionMNIST" / "raw"):
        if _has_files(candidate):
            return candidate
    downloaded = _download()
    if downloaded and _has_files(downloaded):
        return downloaded
    raise CompressorError(
        "Fashion-MNIST not found: install it with `apt-get install dataset-fashion-mnist`, "
        "or set data.root to a directory holding its idx files"
    )


@DATASETS.register("fashion-mnist")
def fashion_mnist(spec, arg: str, seed: int) -> DataBundle:
    directory = find_fashion_mnist(spec.root)
    split = {}
    for name, (images, labels) in FILES.items():
        x = torch.from_numpy(_read_idx(directory / images).copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(directory / labels).astype(np.int64))
        split[name] = (x, y)
    channels = spec.channels or 1
    size = spec.image_size or 28
    pre = Preprocess((MEAN,) * channels, (STD,) * channels, channels, size)

    def limit(pair, n):
        return pair if n is None else (pair[0][:n], pair[1][:n])

    images, labels = split["train"]
    keep, held = hold_out(len(labels), DEFAULT_VAL if spec.val_split is None else spec.val_split, seed, labels)
    train = TensorLoader(*limit((images[keep], labels[keep]), spec.train_samples), spec.batch_size, pre,
                         shuffle=True, augment=spec.augment, seed=seed)
    evaluation = TensorLoader(*limit(split["test"], spec.eval_samples), spec.eval_batch_size, pre)
    val = TensorLoader(*limit((images[held], labels[held]), spec.eval_samples), spec.eval_batch_size, pre) \
        if len(held) else None
    return DataBundle(train, evaluation, (channels, size, size), 10,
                      {"mean": list(pre.mean), "std": list(pre.std), "scale": "1/255", "layout": "NCHW"}, val=val)
