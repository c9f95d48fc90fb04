"""`yolo:PATH/data.yaml` — object-detection data in the Ultralytics layout, loaded by Ultralytics.

A data.yaml names the splits and the classes:

    path: .                  # optional root; relative to the folder holding this yaml
    train: images/train      # a folder of images, a .txt list of images, or a list of either
    val: images/val
    names: [person, car]     # or {0: person, 1: car}; `nc`, if given, must agree

and each image `…/images/…/x.jpg` has its labels in `…/labels/…/x.txt`, one object a line:
`class cx cy w h`, normalised to 0–1 (a polygon line `class x1 y1 x2 y2 x3 y3 …` is read as its
bounding box, as Ultralytics does; no label file means an image with no objects).

Ultralytics' own `YOLODataset` reads the images and augments them (mosaic, random affine, HSV,
flips with its default hyperparameters) and its `collate_fn` batches them. What is ours:

* the mistakes. Ultralytics skips a corrupt image or label file with a log line and trains on the
  rest; here every one is a CompressorError naming the file (and line), at load time. Label files
  are parsed here (cheap text), images are judged by Ultralytics' own scan (PIL verify, cached in
  `labels/<split>.cache` where the folder is writable) and any image it dropped is named.
* the file list, built here (so `train_samples` / `eval_samples` keep the first N images in
  sorted order) and handed to Ultralytics unchanged.
* nothing reaches the network: Ultralytics is imported through `compressor.ultra.require`, and
  its `check_det_dataset` (which downloads missing datasets and fonts) is never called.
* the loader: the interface of `TensorLoader` (shard, set_epoch, num_samples), float images in
  [0, 1], shuffling and augmentation reproducible for a seed, an epoch and a worker count.
"""

import glob
import math
import os
import random
from copy import copy
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from compressor.data import DATASETS, DataBundle
from compressor.data.split import hold_out
from compressor.errors import CompressorError, bounded, excerpt
from compressor.process import usable_cpus

STRIDE = 32  # the coarsest YOLO feature map: input sides must be multiples of it
DEFAULT_SIZE = 640
PAD_VALUE = 114
TOLERANCE = 0.01  # Ultralytics accepts coordinates up to 1% outside [0, 1] (float rounding in exports)
LABEL_FORMAT = "'class cx cy w h' normalised to 0-1"
MASK = 2**64 - 1  # a recipe seed may be negative; numpy's SeedSequence takes only non-negative ints


def preprocessing(size: int) -> dict:
    """What a deployer must do to an image before the model sees it (written into exports)."""
    return {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": "1/255", "layout": "NCHW",
            "channels": "RGB", "resize": f"letterbox to {size}x{size}, padded with {PAD_VALUE}"}


def _fail(message: str):
    raise CompressorError(bounded(message)) from None


# data.yaml ------------------------------------------------------------------------------------


def find_yaml(arg: str) -> Path:
    """The data.yaml named by `yolo:ARG` (a folder holding a data.yaml is accepted too)."""
    if not arg:
        _fail("dataset 'yolo:' needs the path of a data.yaml: dataset: yolo:PATH/data.yaml")
    path = Path(arg).expanduser()
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    if not path.is_file():
        _fail(f"data not found: '{path}' does not exist; set data.dataset to yolo:PATH/data.yaml, the "
              "Ultralytics dataset description (train, val, names)")
    return path


def read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        _fail(f"data.yaml '{path}'{where} is not valid YAML ({getattr(e, 'problem', None) or e}); fix the syntax")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"data.yaml '{path}' cannot be read ({getattr(e, 'strerror', None) or e})")
    if not isinstance(doc, dict):
        _fail(f"data.yaml '{path}' must be a mapping with keys train, val and names, not {type(doc).__name__}")
    missing = [k for k in ("train", "val", "names") if doc.get(k) in (None, "", [], {})]
    if missing:
        _fail(f"data.yaml '{path}' lacks {', '.join(missing)}: it needs train and val (image folders or "
              ".txt lists, relative to path) and names (the class names, a list or {id: name})")
    return doc


def class_names(doc: dict, path: Path) -> list[str]:
    names = doc["names"]
    if isinstance(names, dict):
        keys = list(names)
        whole = all(isinstance(k, int) and not isinstance(k, bool) for k in keys)
        if not whole or sorted(keys) != list(range(len(keys))):
            _fail(f"data.yaml '{path}': names as a mapping needs the ids 0..{len(keys) - 1}, each once, "
                  f"got {excerpt(keys)}; write names as a list or as {{0: name, 1: name, …}}")
        names = [names[i] for i in range(len(keys))]
    if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
        _fail(f"data.yaml '{path}': names must be a list of class names or {{id: name}}, got {excerpt(names)}")
    names = [str(n) for n in names]
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        _fail(f"data.yaml '{path}': nc is {excerpt(nc)} but names lists {len(names)} classes; make them agree "
              "(or drop nc)")
    return names


def dataset_root(doc: dict, path: Path) -> Path:
    """`path:` resolved against the yaml's folder (so an exported dataset is self-contained)."""
    root = doc.get("path")
    if root in (None, ""):
        return path.parent
    if not isinstance(root, str):
        _fail(f"data.yaml '{path}': path must be a folder name, got {excerpt(root)}")
    root = Path(root).expanduser()
    return root if root.is_absolute() else path.parent / root


# images and labels ----------------------------------------------------------------------------


def image_formats() -> set[str]:
    from ultralytics.data.utils import IMG_FORMATS

    return set(IMG_FORMATS)


def list_images(entries, root: Path, split: str, yaml_path: Path) -> list[str]:
    """The split's image files, sorted as Ultralytics sorts them: every image under a folder
    (recursively), or each line of a .txt list (relative lines against the list's folder)."""
    formats = image_formats()
    files = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if not isinstance(entry, str):
            _fail(f"data.yaml '{yaml_path}': {split} must be a folder, a .txt list or a list of them, "
                  f"got {excerpt(entry)}")
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.exists() and entry.startswith("../") and (root / entry[3:]).exists():
            p = root / entry[3:]  # Roboflow exports write ../train/images; Ultralytics retries without ../
        if p.is_dir():
            found = glob.glob(str(Path(glob.escape(str(p))) / "**" / "*.*"), recursive=True)
            files += [f for f in found if f.rpartition(".")[-1].lower() in formats and os.path.isfile(f)]
        elif p.is_file() and p.suffix.lower() == ".txt":
            files += list_file(p, formats)
        elif p.is_file():
            _fail(f"data.yaml '{yaml_path}': {split} '{p}' is a file but not a .txt list of images; "
                  "point it at a folder of images or a .txt list")
        else:
            _fail(f"data.yaml '{yaml_path}': {split} folder '{p}' does not exist; fix {split} (relative to "
                  f"'{root}') or create the folder")
    files = sorted(set(f.replace("/", os.sep) for f in files))
    if not files:
        _fail(f"data.yaml '{yaml_path}': no images in {split} ({excerpt(entries)} under '{root}'); "
              f"add images ({', '.join(sorted(formats))}) or fix the path")
    return files


def list_file(path: Path, formats: set[str]) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"image list '{path}' cannot be read ({getattr(e, 'strerror', None) or e})")
    files = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.rpartition(".")[-1].lower() not in formats:
            continue
        f = Path(line)
        f = f if f.is_absolute() else path.parent / line.removeprefix("./")
        if not f.is_file():
            _fail(f"image list '{path}' line {number}: image '{f}' does not exist; fix the line or remove it")
        files.append(str(f))
    return files


def label_files(images: list[str]) -> list[str]:
    from ultralytics.data.utils import img2label_paths

    return img2label_paths(images)


def check_label_folders(images: list[str], labels: list[str], split: str) -> None:
    """Each folder of images needs its parallel labels folder; a missing label *file* is an
    image without objects (Ultralytics' 'background'), but a missing folder is a layout mistake."""
    seen = set()
    for image, label in zip(images, labels):
        folder = os.path.dirname(label)
        if folder in seen:
            continue
        seen.add(folder)
        if not os.path.isdir(folder):
            _fail(f"{split} images in '{os.path.dirname(image)}' have no labels folder '{folder}': put one "
                  f".txt per image there ({LABEL_FORMAT}), the same name as the image")


def check_label_file(path: str, nc: int) -> int | None:
    """Parse one label file as Ultralytics will; the first bad line is an error naming file:line.
    Returns the number of objects, None where the file does not exist (an image without objects)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"label file '{path}' cannot be read ({getattr(e, 'strerror', None) or e}); fix or delete it")
    kinds, objects = set(), 0
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"label file '{path}' line {number}"
        values = []
        for token in tokens:
            try:
                values.append(float(token))
            except ValueError:
                _fail(f"{where}: {excerpt(token)} is not a number; each line is {LABEL_FORMAT}")
        if not all(math.isfinite(v) for v in values):
            _fail(f"{where}: {excerpt(line.strip())} holds a value that is not finite; each line is {LABEL_FORMAT}")
        if len(values) == 5:
            kind = "box"
        elif len(values) >= 7 and len(values) % 2 == 1:
            kind = "polygon"
        else:
            _fail(f"{where}: {len(values)} numbers where a box is 5, {LABEL_FORMAT} (a polygon line is "
                  "'class x1 y1 x2 y2 x3 y3 …', at least 3 points)")
        kinds.add(kind)
        if len(kinds) > 1:
            _fail(f"{where}: the file mixes box lines (5 numbers) and polygon lines; use one kind per file")
        cls = values[0]
        if cls != int(cls) or cls < 0:
            _fail(f"{where}: class {excerpt(tokens[0])} is not a whole number >= 0; the first number is the "
                  "class id, counted from 0 in data.yaml names")
        if cls >= nc:
            _fail(f"{where}: class {int(cls)} is out of range, data.yaml names has {nc} classes (ids 0-{nc - 1}); "
                  "fix the id or add the class to names")
        coords = values[1:]
        if min(coords) < -TOLERANCE or max(coords) > 1 + TOLERANCE or (kind == "box" and min(coords[2:]) < 0):
            _fail(f"{where}: coordinates {excerpt(' '.join(tokens[1:]))} are not normalised to 0-1; divide x and "
                  "width by the image width, y and height by its height (cx cy are the box centre)")
        objects += 1
    return objects


def check_jpeg_ends(images: list[str]) -> None:
    """A JPEG without its end marker is truncated. Ultralytics would rewrite the user's file in
    place ("corrupt JPEG restored"); here it is named instead, before Ultralytics sees it."""
    for image in images:
        if image.rpartition(".")[-1].lower() in ("jpg", "jpeg"):
            try:
                with open(image, "rb") as f:
                    f.seek(-2, os.SEEK_END)
                    end = f.read()
            except OSError as e:
                _fail(f"image '{image}' cannot be read ({e.strerror or e}); replace it with a valid image or "
                      "delete it and its label file")
            if end != b"\xff\xd9":
                _fail(f"image '{image}' does not end with a JPEG end marker (truncated, or data appended after "
                      "the image); re-download or re-save it, or delete it and its label file")


# the dataset ----------------------------------------------------------------------------------


def __getattr__(name: str):
    """`ListedYOLODataset`, built on first use so that importing this module does not import
    Ultralytics; a DataLoader worker that unpickles the dataset finds the class here too."""
    if name == "ListedYOLODataset":
        return _listed_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _listed_dataset_class():
    cls = globals().get("_LISTED")
    if cls is None:
        from ultralytics.data.dataset import YOLODataset

        class ListedYOLODataset(YOLODataset):
            """Ultralytics' YOLODataset over exactly the files given (its own listing would re-glob the
            folder and sample a few files to time the disk)."""

            def __init__(self, files: list[str], **kwargs):
                self.listed = list(files)
                super().__init__(**kwargs)

            def get_img_files(self, img_path):
                return list(self.listed)

        ListedYOLODataset.__module__, ListedYOLODataset.__qualname__ = __name__, "ListedYOLODataset"
        globals()["_LISTED"] = cls = ListedYOLODataset
    return cls


def hyperparameters():
    from ultralytics.cfg import get_cfg

    return get_cfg()


def build_dataset(files: list[str], names: list[str], size: int, augment: bool, batch_size: int, split: str,
                  hyp=None):
    """Ultralytics' YOLODataset over `files`; an image its scan dropped is an error naming it."""
    hyp = hyp if hyp is not None else hyperparameters()
    kwargs = dict(img_path=files[0], imgsz=size, cache=False, augment=augment, hyp=hyp, prefix=f"{split}: ",
                  rect=False, batch_size=batch_size, stride=STRIDE, pad=0.0 if augment else 0.5, single_cls=False,
                  classes=None, fraction=1.0, data={"names": dict(enumerate(names)), "nc": len(names), "channels": 3},
                  task="detect")
    try:
        dataset, failure = _listed_dataset_class()(files, **kwargs), None
    except (RuntimeError, ValueError, FileNotFoundError) as e:  # e.g. no valid image at all
        dataset, failure = None, e
    kept = set(dataset.im_files) if dataset is not None else set()
    dropped = [f for f in files if f not in kept]
    for image in dropped:
        unreadable(image, len(names), len(dropped))
    if dropped and failure is None:
        _fail(f"Ultralytics skipped {len(dropped)} {split} image(s), the first '{dropped[0]}'; delete "
              f"'{os.path.dirname(label_files(dropped[:1])[0])}.cache' (a stale label cache) and retry")
    if failure is not None:
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        _fail(f"Ultralytics cannot load the {split} split ({first})")
    return dataset


def unreadable(image: str, nc: int, count: int) -> None:
    """Why Ultralytics' scan dropped `image`, in its own words, as an error naming the file."""
    from ultralytics.data.utils import verify_image_label

    label = label_files([image])[0]
    message = verify_image_label((image, label, "", False, nc, 0, 0, False))[-1]
    if "ignoring corrupt image/label: " not in message:
        return
    reason = message.rpartition("ignoring corrupt image/label: ")[2].strip()
    if "pi_heif" in reason or "cannot identify" in reason:  # Ultralytics' PIL patch retries with a HEIF plugin
        reason = "not an image PIL can identify"
    more = f" ({count - 1} more {'images also fail' if count > 2 else 'image also fails'})" if count > 1 else ""
    _fail(f"image '{image}' cannot be used ({reason}){more}; replace it with a valid image (at least "
          "10x10 pixels) or delete it and its label file")


def check_split(files: list[str], nc: int, split: str) -> int:
    """All the checks that name a file, before Ultralytics reads anything. Returns the object count."""
    labels = label_files(files)
    check_label_folders(files, labels, split)
    counts = [check_label_file(label, nc) for label in labels]
    if all(c is None for c in counts):
        _fail(f"{split} has no label files: none of its {len(files)} images has a .txt in "
              f"'{os.path.dirname(labels[0])}' (one per image, the image's name, {LABEL_FORMAT})")
    objects = sum(c or 0 for c in counts)
    if not objects:
        _fail(f"{split} has no objects: every label file in '{os.path.dirname(labels[0])}' is empty; "
              f"add one line per object ({LABEL_FORMAT})")
    check_jpeg_ends(files)
    return objects


# the loader -----------------------------------------------------------------------------------


def _seed_worker(worker_id: int) -> None:
    """Python's and numpy's generators in a DataLoader worker, from the seed torch gave it
    (the loader's generator, seeded per epoch, plus the worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _reset_mosaic_buffer(dataset) -> None:
    """Mosaic draws its partner images from the last images loaded; in the main process that buffer
    would carry over from the previous epoch, so an epoch would depend on the ones before it."""
    for j in dataset.buffer:
        dataset.ims[j] = dataset.im_hw0[j] = dataset.im_hw[j] = None
    dataset.buffer.clear()


class YoloLoader:
    """Batches of a YOLODataset with the interface of TensorLoader: `(images, targets)` where images
    are float32 N×3×S×S RGB in [0, 1] and targets is Ultralytics' collated batch without "img"
    (batch_idx, cls, bboxes as normalised cx cy w h, im_file, ori_shape, resized_shape, ratio_pad).

    Shuffled per epoch from (seed, epoch), the same order on every rank; `shard` gives each rank a
    disjoint, equal part. Augmentation is seeded from (seed, epoch, rank) — python's and numpy's
    generators in the main process or in each worker — so an epoch repeats exactly for the same seed
    and worker count (mosaic partners come from each worker's recent images, so a different worker
    count gives different, equally valid, mosaics)."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, workers: int, seed: int, hyp=None):
        self.dataset, self.batch_size, self.shuffle, self.workers = dataset, batch_size, shuffle, workers
        self.seed, self.hyp = seed, hyp
        self.epoch, self.rank, self.world = 0, 0, 1

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        return len(self.dataset) // self.world

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    @property
    def names(self) -> list[str]:
        return [self.dataset.data["names"][i] for i in range(len(self.dataset.data["names"]))]

    def close_mosaic(self) -> None:
        """Ultralytics' last-epochs switch: no mosaic (nor mixup / copy-paste) from the next epoch on."""
        self.dataset.close_mosaic(hyp=copy(self.hyp if self.hyp is not None else hyperparameters()))

    def _seed(self, *keys: int) -> int:
        return int(np.random.SeedSequence([self.seed & MASK, *keys]).generate_state(1)[0])

    def _indices(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self._seed(self.epoch)))
        else:
            order = torch.arange(n)
        per_rank = n // self.world
        return order[self.rank * per_rank:(self.rank + 1) * per_rank].tolist()

    def __iter__(self):
        seed = self._seed(self.epoch, self.rank, 1)
        if self.workers == 0:
            random.seed(seed)
            np.random.seed(seed)
            if self.dataset.augment:
                _reset_mosaic_buffer(self.dataset)
        loader = DataLoader(self.dataset, self.batch_size, sampler=self._indices(), num_workers=self.workers,
                            collate_fn=self.dataset.collate_fn, worker_init_fn=_seed_worker,
                            generator=torch.Generator().manual_seed(seed), drop_last=False)
        for batch in loader:
            images = batch.pop("img")
            yield images.float().div_(255), batch


# the source -----------------------------------------------------------------------------------


def image_size(spec, default: int = DEFAULT_SIZE) -> int:
    size = spec.image_size or default
    if size % STRIDE:
        nearby = sorted({max(STRIDE, size // STRIDE * STRIDE), (size // STRIDE + 1) * STRIDE})
        _fail(f"data.image_size {size} must be a multiple of {STRIDE} (the YOLO stride) for detection; "
              f"use {' or '.join(map(str, nearby))}")
    return size


def load_yolo(spec, yaml_path: Path, seed: int, default_size: int = DEFAULT_SIZE) -> DataBundle:
    """A DataBundle over the dataset that `yaml_path` describes (also used by `fmnist-detect`)."""
    from compressor.ultra import require

    size = image_size(spec, default_size)
    require("dataset 'yolo:'")
    doc = read_yaml(yaml_path)
    names = class_names(doc, yaml_path)
    root = dataset_root(doc, yaml_path)
    hyp = hyperparameters()
    training = list_images(doc["train"], root, "train", yaml_path)
    splits = {"val": list_images(doc["val"], root, "val", yaml_path)[:spec.eval_samples]}
    if spec.val_split:  # by default none: the data.yaml's val split is the validation split
        keep, held = hold_out(len(training), spec.val_split, seed)
        splits["held-out train"] = [training[i] for i in held][:spec.eval_samples]
        training = [training[i] for i in keep]
    splits = {"train": training[:spec.train_samples], **splits}
    for split, files in splits.items():
        check_split(files, len(names), split)
    workers = min(spec.workers, usable_cpus())  # more loader processes than CPUs only adds switching

    def evaluation(split: str) -> YoloLoader:
        dataset = build_dataset(splits[split], names, size, False, spec.eval_batch_size, split, hyp)
        return YoloLoader(dataset, spec.eval_batch_size, False, workers, seed, hyp)

    train = build_dataset(splits["train"], names, size, spec.augment, spec.batch_size, "train", hyp)
    reported = evaluation("val")
    return DataBundle(
        YoloLoader(train, spec.batch_size, True, workers, seed, hyp), reported,
        (3, size, size), len(names), preprocessing(size), task="detect", names=names,
        val=evaluation("held-out train") if spec.val_split else reported,
    )


@DATASETS.register("yolo")
def yolo(spec, arg: str, seed: int) -> DataBundle:
    return load_yolo(spec, find_yaml(arg or spec.root or ""), seed)
