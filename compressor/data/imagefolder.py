"""`imagefolder:PATH` — class-per-folder images under PATH/train and PATH/val."""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from compressor.data import DATASETS, DataBundle
from compressor.errors import CompressorError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderLoader:
    """A DataLoader with the same small interface as TensorLoader (shard, set_epoch)."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, workers: int, seed: int):
        self.dataset, self.batch_size, self.shuffle, self.workers, self.seed = dataset, batch_size, shuffle, workers, seed
        self.sampler = None

    def shard(self, rank: int, world: int) -> None:
        self.sampler = DistributedSampler(self.dataset, world, rank, shuffle=self.shuffle, seed=self.seed)

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    @property
    def num_samples(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        return iter(DataLoader(self.dataset, self.batch_size, shuffle=self.shuffle and self.sampler is None,
                               sampler=self.sampler, num_workers=self.workers, generator=g))


@DATASETS.register("imagefolder")
def imagefolder(spec, arg: str, seed: int) -> DataBundle:
    from torchvision import datasets, transforms

    root = Path(arg or spec.root or "")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise CompressorError(f"imagefolder '{root}' needs a '{split}/' folder with one subfolder per class")
    size = spec.image_size or 224
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                                  transforms.ToTensor(), normalize])
    train = datasets.ImageFolder(str(root / "train"), train_tf)
    val = datasets.ImageFolder(str(root / "val"), eval_tf)
    return DataBundle(
        FolderLoader(train, spec.batch_size, True, spec.workers, seed),
        FolderLoader(val, spec.eval_batch_size, False, spec.workers, seed),
        (3, size, size), len(train.classes),
        {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "1/255", "layout": "NCHW",
         "resize": int(size * 256 / 224), "crop": size},
    )
