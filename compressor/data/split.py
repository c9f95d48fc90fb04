"""A validation split held out of the training images (`data.val_split`), so that choices made
inside a run (a search on accuracy, calibration images) are not made on the test split the
results are reported on."""

import torch

from compressor.errors import CompressorError

SALT = 0x5EED  # the hold-out's generator must not replay the train loader's shuffle of the same seed


def held_out_count(val_split: int | float, total: int) -> int:
    """How many of `total` training images `val_split` (a count, or a fraction of them) holds out."""
    count = round(val_split * total) if isinstance(val_split, float) else val_split
    if count >= total:
        raise CompressorError(f"data.val_split {val_split} holds out {count} of the {total} training images, "
                              f"leaving none to train on; use a count below {total} or a fraction such as 0.1")
    if count == 0 and val_split:
        raise CompressorError(f"data.val_split {val_split} of {total} training images is no image; use a larger "
                              "fraction or a count, or 0 for no validation split")
    return count


def hold_out(total: int, val_split: int | float, seed: int,
             labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) of `total` training images, each in the original order, the
    same for the same seed. With `labels`, every class gives the same share of its images (within
    one), so a small split is not short of a class by chance."""
    count = held_out_count(val_split, total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000 + SALT))
    if labels is not None:
        # Each image's rank among its class in the random order, as a fraction of the class: taking
        # the smallest fractions takes the first images of every class in proportion.
        shuffled = labels[order]
        grouped = torch.sort(shuffled, stable=True).indices
        sizes = torch.bincount(shuffled)
        starts = sizes.cumsum(0) - sizes
        rank = torch.empty(total)
        rank[grouped] = (torch.arange(total) - starts[shuffled[grouped]]).float()
        order = order[torch.sort((rank + 0.5) / sizes[shuffled], stable=True).indices]
    return order[count:].sort().values, order[:count].sort().values
