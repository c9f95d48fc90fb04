"""`imagefolder:PATH` — class-per-folder images under PATH/train and PATH/val. val/ is also the
validation split, unless data.val_split holds one out of train/.

Every data mistake is a CompressorError naming the folder or file: a split without class
folders, a class folder without images, val/ classes that differ from train/'s (their indices
would silently disagree), and an image that does not decode. Images are checked where they
are read anyway — the dataset's loader decodes each one fully, so a file that fails is named
then, at no extra cost; a pass over every file up front would read the whole dataset once
more before the first step (PIL's cheap verify() does not even notice a truncated JPEG).
"""

import os
from copy import copy
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from compressor.data import DATASETS, DataBundle
from compressor.data.split import hold_out
from compressor.errors import CompressorError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnreadableImage(CompressorError):
    """An image file that does not open or decode.

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch as
    `UnreadableImage("Caught UnreadableImage in DataLoader worker process 0.\\nOriginal
    Traceback …")`: the message is then cut back to the worker's own line, so the user reads
    the one sentence naming the file, not a traceback."""

    def __init__(self, message: str):
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if "Original Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def load_image(path: str):
    """torchvision's PIL loader (open, then a full decode to RGB), naming the file it fails on."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as e:  # whatever the decoder raises, the fault is this one file's
        reason = "not an image PIL can identify" if isinstance(e, UnidentifiedImageError) \
            else f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        raise UnreadableImage(f"image '{path}' cannot be read ({reason}); replace it with a valid "
                              "image or delete it") from None


def listing(names, limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_split(datasets, folder: Path, transform):
    """ImageFolder over one split, with its layout mistakes as CompressorErrors."""
    try:
        has_classes = any(entry.is_dir() for entry in os.scandir(folder))
    except OSError as e:
        raise CompressorError(f"imagefolder cannot read '{folder}': {e.strerror or e}") from None
    if not has_classes:
        raise CompressorError(f"imagefolder '{folder}' has no class folders: put each class's images "
                              f"in a subfolder of its own, e.g. {folder / '<class>'}/")
    try:
        split = datasets.ImageFolder(str(folder), transform, loader=load_image, allow_empty=True)
    except OSError as e:
        raise CompressorError(f"imagefolder cannot read '{folder}': {e.strerror or e}") from None
    empty = set(split.classes) - {split.classes[t] for t in split.targets}
    if empty:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        raise CompressorError(
            f"imagefolder '{folder}': class folder{'s' * (len(empty) > 1)} {listing(empty)} "
            f"{'hold' if len(empty) > 1 else 'holds'} no images ({', '.join(IMG_EXTENSIONS)}); "
            "add images or remove the folder")
    return split


def same_classes(root: Path, train, val) -> None:
    """The label of an image is its class's index in the sorted folder names, so val/ must have
    exactly train/'s classes or every index after a difference scores against the wrong class."""
    lacking_in_val, lacking_in_train = set(train.classes) - set(val.classes), set(val.classes) - set(train.classes)
    if lacking_in_val or lacking_in_train:
        sides = [f"val/ lacks {listing(lacking_in_val)}" if lacking_in_val else "",
                 f"train/ lacks {listing(lacking_in_train)}" if lacking_in_train else ""]
        raise CompressorError(f"imagefolder '{root}': train/ and val/ must have the same class folders, "
                              f"but {' and '.join(s for s in sides if s)}; add or rename folders so they match")


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
    train = read_split(datasets, root / "train", train_tf)
    val = read_split(datasets, root / "val", eval_tf)
    same_classes(root, train, val)
    classes = len(train.classes)
    reported = FolderLoader(val, spec.eval_batch_size, False, spec.workers, seed)
    held_out = reported  # by default val/ is the validation split
    if spec.val_split:
        keep, held = hold_out(len(train), spec.val_split, seed, torch.tensor(train.targets))
        unaugmented = copy(train)  # the same files, read as val/ is
        unaugmented.transform = eval_tf
        held_out = FolderLoader(Subset(unaugmented, held.tolist()), spec.eval_batch_size, False, spec.workers, seed)
        train = Subset(train, keep.tolist())
    return DataBundle(
        FolderLoader(train, spec.batch_size, True, spec.workers, seed), reported,
        (3, size, size), classes,
        {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "1/255", "layout": "NCHW",
         "resize": int(size * 256 / 224), "crop": size},
        val=held_out,
    )
