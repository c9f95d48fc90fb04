"""`fmnist-detect` — a small detection dataset made offline from real Fashion-MNIST images.

Each canvas (160×160 RGB by default) holds 1–6 Fashion-MNIST items, scaled to 16–96 px on their
longer side, tinted, and mostly apart (some overlap), on clutter: a colour gradient, smooth and
fine noise, and faint partial fragments of other items that are *not* labelled. Each box is tight
around the item's non-zero pixels. Train canvases use the Fashion-MNIST train split, val canvases
its test split. It is a synthetic composition for tests and CPU-scale experiments, not a
benchmark of real-world detection.

It is written once in the standard YOLO layout and then read by the `yolo:` source, the same code
path as any other dataset:

    DIR/data.yaml  images/{train,val}/NNNNNN.jpg  labels/{train,val}/NNNNNN.txt  fmnist-detect.json

DIR is `data.root`, else `$XDG_CACHE_HOME/compressor/fmnist-detect-v1` (default ~/.cache). The
bytes depend on nothing but the version and the counts: every canvas comes from its own numpy
generator seeded with (SEED, split, index), never from the recipe's seed, so canvas i is the same
in a 12-image set and in the 2000-image one. The marker `fmnist-detect.json` is written last, and
the whole folder is built beside DIR and renamed into place, so a killed generation leaves no half
dataset behind (only a hidden `.NAME.*.partial` sibling, removed by the next generation).
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from compressor.data import DATASETS, DataBundle
from compressor.errors import CompressorError

VERSION = 1
SEED = 20240917  # fixed: the dataset never depends on a recipe's seed
TRAIN, VAL, SIZE = 2000, 500, 160
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MARKER = "fmnist-detect.json"
OBJECTS = (1, 6)  # per canvas
OBJECT_SIDE = (16, 96)  # px, the longer side of an item, drawn log-uniformly
FRAGMENTS = (2, 7)  # unlabelled clutter fragments per canvas (upper bound exclusive)
INK = 10  # Fashion-MNIST pixels at or below this are background
JPEG_QUALITY = 90
STALE_PARTIAL_S = 3600


def default_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "compressor" / f"fmnist-detect-v{VERSION}"


# drawing ---------------------------------------------------------------------------------------


def _resize(item: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((width, height), Image.BILINEAR))


def _ink_box(mask: np.ndarray):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _item(items: np.ndarray, index: int, side: int, flip: bool) -> np.ndarray:
    """Item `index` cropped to its ink, flipped or not, scaled so its longer side is `side` px,
    with the faint resampling halo cut so the box is tight around what is drawn."""
    g = np.where(items[index] > INK, items[index], 0).astype(np.uint8)
    y0, y1, x0, x1 = _ink_box(g > 0)
    g = g[y0:y1, x0:x1]
    g = g[:, ::-1] if flip else g
    scale = side / max(g.shape)
    g = _resize(np.ascontiguousarray(g), max(1, round(g.shape[0] * scale)), max(1, round(g.shape[1] * scale)))
    g = np.where(g > INK, g, 0)
    y0, y1, x0, x1 = _ink_box(g > 0)
    return g[y0:y1, x0:x1]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0.0, amplitude, (cells + 1, cells + 1, 3))
    t = np.linspace(0, cells, size, endpoint=False)
    i, f = t.astype(int), (t - t.astype(int))[:, None]
    rows = coarse[i] * (1 - f[:, :, None]) + coarse[i + 1] * f[:, :, None]  # size, cells+1, 3
    return rows[:, i] * (1 - f[None, :, :]) + rows[:, i + 1] * f[None, :, :]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    canvas = c0 + (c1 - c0) * t[:, :, None]
    return canvas + _smooth_noise(rng, size, int(rng.integers(3, 7)), rng.uniform(8, 30))


def _blend(canvas: np.ndarray, ink: np.ndarray, top: int, left: int, colour: np.ndarray, opacity: float,
           shade: float) -> None:
    """Paint `ink` (uint8 intensities, 0 = transparent) at (top, left), clipped to the canvas."""
    h, w = ink.shape
    size = canvas.shape[0]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    if y0 >= y1 or x0 >= x1:
        return
    g = ink[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.float64) / 255
    alpha = (np.clip(g * 3, 0, 1) * opacity)[:, :, None]
    paint = colour * ((1 - shade) + shade * g)[:, :, None]
    region = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = region * (1 - alpha) + paint * alpha


def _luma(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area (a small box inside a big one counts as fully overlapped)."""
    iy = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ix = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iy * ix / smaller


def render(rng: np.random.Generator, items: np.ndarray, classes: np.ndarray, size: int = SIZE):
    """One canvas (uint8 H×W×3 RGB) and its objects as (class, y0, x0, y1, x1) in pixels."""
    canvas = _background(rng, size)
    for _ in range(int(rng.integers(*FRAGMENTS))):  # clutter: faint partial items, unlabelled
        g = _item(items, int(rng.integers(len(items))), int(rng.integers(20, 64)), bool(rng.integers(2)))
        h, w = g.shape
        fh, fw = max(1, int(h * rng.uniform(0.3, 0.6))), max(1, int(w * rng.uniform(0.3, 0.6)))
        fy, fx = (0, h - fh)[int(rng.integers(2))], int(rng.integers(0, w - fw + 1))  # a piece of the outline
        piece = g[fy:fy + fh, fx:fx + fw]
        _blend(canvas, piece, int(rng.integers(-fh // 2, size - fh // 2)), int(rng.integers(-fw // 2, size - fw // 2)),
               rng.uniform(0, 255, 3), rng.uniform(0.15, 0.35), 0.5)
    count = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    sides = np.exp(rng.uniform(np.log(OBJECT_SIDE[0]), np.log(OBJECT_SIDE[1]), count))
    boxes = []
    for side in sorted(sides.round().astype(int), reverse=True):  # the large ones first, while there is room
        index = int(rng.integers(len(items)))
        g = _item(items, index, int(side), bool(rng.integers(2)))
        h, w = g.shape
        limit = 0.4 if rng.uniform() < 0.15 else 0.1  # mostly apart, sometimes overlapping
        for _ in range(30):
            top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            box = (top, left, top + h, left + w)
            if all(_overlap(box, other[1:]) <= limit for other in boxes):
                break
        else:
            continue
        colour = rng.uniform(0, 255, 3)
        under = canvas[top:top + h, left:left + w].reshape(-1, 3).mean(0)
        if abs(_luma(colour) - _luma(under)) < 60:  # keep it visible: push it away from the background
            colour = np.clip(colour + (120 if _luma(under) < 128 else -120), 0, 255)
        _blend(canvas, g, top, left, colour, rng.uniform(0.85, 1.0), rng.uniform(0.3, 0.7))
        boxes.append((int(classes[index]), *box))
    canvas += rng.normal(0.0, rng.uniform(2, 10), canvas.shape)
    return np.clip(canvas, 0, 255).round().astype(np.uint8), boxes


# writing ---------------------------------------------------------------------------------------


def _label_text(boxes, size: int) -> str:
    lines = []
    for cls, y0, x0, y1, x1 in boxes:
        lines.append(f"{cls} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                     f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
    return "".join(line + "\n" for line in lines)


def _marker(train: int, val: int, size: int) -> dict:
    return {"generator": "fmnist-detect", "version": VERSION, "seed": SEED, "train": train, "val": val,
            "size": size}


def is_complete(root: Path, train: int, val: int, size: int) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == _marker(train, val, size)
    except (OSError, ValueError):
        return False


def _ours_or_empty(root: Path) -> bool:
    return not root.exists() or (root.is_dir() and (not any(root.iterdir()) or (root / MARKER).is_file()))


def _write(folder: Path, train: int, val: int, size: int) -> None:
    from PIL import Image

    from compressor.data.fashion_mnist import FILES, _read_idx, find_fashion_mnist

    source = find_fashion_mnist(None)
    for split_id, (split, count, files) in enumerate((("train", train, FILES["train"]), ("val", val, FILES["test"]))):
        items, classes = _read_idx(source / files[0]), _read_idx(source / files[1])
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image, boxes = render(np.random.default_rng([SEED, split_id, i]), items, classes, size)
            Image.fromarray(image).save(folder / "images" / split / f"{i:06d}.jpg", "JPEG", quality=JPEG_QUALITY)
            (folder / "labels" / split / f"{i:06d}.txt").write_text(_label_text(boxes, size))
    data = {"train": "images/train", "val": "images/val", "nc": len(NAMES), "names": dict(enumerate(NAMES))}
    (folder / "data.yaml").write_text(  # no `path:`: Ultralytics and `yolo:` both read the splits from here
        "# fmnist-detect: Fashion-MNIST items composed onto cluttered canvases (compressor.data.fmnist_detect)\n"
        + yaml.safe_dump(data, sort_keys=False))
    (folder / MARKER).write_text(json.dumps(_marker(train, val, size), indent=1) + "\n")


def _remove_stale_partials(root: Path) -> None:
    for partial in root.parent.glob(f".{root.name}.*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass


def generate(root: Path, train: int = TRAIN, val: int = VAL, size: int = SIZE) -> Path:
    """The data.yaml of an fmnist-detect dataset of `train` / `val` canvases of `size` px in `root`,
    generated there unless it already holds exactly that one. Safe against a kill at any point and
    against two processes generating at once (the second to finish keeps the first's)."""
    from compressor.console import console

    root = Path(root).expanduser().absolute()
    if is_complete(root, train, val, size):
        return root / "data.yaml"
    if not _ours_or_empty(root):
        raise CompressorError(f"'{root}' exists and is not an fmnist-detect dataset; set data.root to a new or "
                              "empty folder (fmnist-detect writes its images and labels there)")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    console.print(f"generating fmnist-detect ({train} train / {val} val, {size} px) in {root} …")
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        _write(partial, train, val, size)
        if root.exists() and not is_complete(root, train, val, size):  # ours, older or other counts: replace
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
            os.replace(root, old / "old")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(partial, root)
        except OSError:
            if not is_complete(root, train, val, size):  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root / "data.yaml"


@DATASETS.register("fmnist-detect")
def fmnist_detect(spec, arg: str, seed: int) -> DataBundle:
    from compressor.data.yolo import load_yolo

    if arg:
        raise CompressorError(f"dataset 'fmnist-detect' takes no argument (got 'fmnist-detect:{arg}'); set "
                              "data.root to choose where it is written")
    root = Path(spec.root).expanduser() if spec.root else default_root()
    return load_yolo(spec, generate(root, TRAIN, VAL, SIZE), seed, default_size=SIZE)
