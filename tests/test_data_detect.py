"""Detection data: the `yolo:` source (Ultralytics layout, read by Ultralytics' YOLODataset) and
the `fmnist-detect` generator. Every bad-data case is one CompressorError line naming the file
(and line), raised while loading; nothing touches the network."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from compressor.errors import CompressorError  # noqa: E402
from compressor.ultra import require  # noqa: E402

try:  # through the one door, so Ultralytics is imported offline and quiet, as the tool imports it
    require("tests/test_data_detect.py")
except CompressorError as e:
    pytest.skip(str(e), allow_module_level=True)

from compressor.data import load_data  # noqa: E402
from compressor.data import fmnist_detect  # noqa: E402
from compressor.schema import DataSpec  # noqa: E402
from tests.conftest import ROOT, needs_fmnist  # noqa: E402

NAMES = ["circle", "square", "line"]
TARGET_KEYS = {"batch_idx", "cls", "bboxes", "im_file", "ori_shape", "resized_shape", "ratio_pad"}


def write_image(path: Path, seed: int, shape=(64, 64), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    pixels[:, : shape[1] // 2, 0] = 250  # a colour Ultralytics must hand back as RGB, not BGR
    Image.fromarray(pixels).save(path, fmt or ("JPEG" if path.suffix == ".jpg" else "PNG"))
    return path


def yolo_dataset(root: Path, train: int = 6, val: int = 3, names=NAMES) -> Path:
    """A tiny real dataset in the Ultralytics layout: random images (PNG and JPEG), 1-2 boxes each;
    the last val image is 64×40, so letterboxing shows."""
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            suffix = (".png", ".jpg")[i % 2]
            shape = (40, 64) if split == "val" and i == count - 1 else (64, 64)
            write_image(root / "images" / split / f"{i:03d}{suffix}", seed=100 * (split == "val") + i, shape=shape)
            label = root / "labels" / split / f"{i:03d}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"{i % len(names)} 0.5 0.5 0.4 0.3"]
            lines += [f"{(i + 1) % len(names)} 0.25 0.3 0.2 0.2"] if i % 2 else []
            label.write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": list(names)}))
    return root / "data.yaml"


def spec(data_yaml, **kw) -> DataSpec:
    fields = dict(dataset=f"yolo:{data_yaml}", batch_size=4, eval_batch_size=2, image_size=64, workers=0)
    return DataSpec(**{**fields, **kw})


def load(data_yaml, seed=0, **kw):
    return load_data(spec(data_yaml, **kw), seed)


def error(data_yaml, *expected, **kw) -> str:
    with pytest.raises(CompressorError) as caught:
        load(data_yaml, **kw)
    message = str(caught.value)
    assert "\n" not in message, message
    for text in expected:
        assert str(text) in message, message
    return message


# the loader ------------------------------------------------------------------------------------


def test_batches_are_float_rgb_images_and_ultralytics_targets(tmp_path):
    data = load(yolo_dataset(tmp_path / "d"))
    assert data.task == "detect" and data.names == NAMES and data.num_classes == 3
    assert data.input_shape == (3, 64, 64)
    assert data.preprocessing["scale"] == "1/255" and data.preprocessing["channels"] == "RGB"
    assert len(data.train) == 2 and data.train.num_samples == 6
    assert len(data.eval) == 2 and data.eval.num_samples == 3
    for loader, total in ((data.train, 6), (data.eval, 3)):
        seen = 0
        for images, targets in loader:
            n = len(images)
            seen += n
            assert images.dtype == torch.float32 and images.shape == (n, 3, 64, 64)
            assert 0 <= images.min() and images.max() <= 1
            assert set(targets) == TARGET_KEYS, set(targets)
            assert "img" not in targets
            m = len(targets["cls"])
            assert targets["bboxes"].shape == (m, 4) and targets["batch_idx"].shape == (m,)
            assert ((targets["bboxes"] >= 0) & (targets["bboxes"] <= 1)).all()
            assert set(targets["batch_idx"].long().tolist()) <= set(range(n))
            assert torch.equal(targets["cls"], targets["cls"].round()) and targets["cls"].max() < 3
            assert len(targets["im_file"]) == n
        assert seen == total


def test_eval_images_are_letterboxed_rgb(tmp_path):
    data = load(yolo_dataset(tmp_path / "d"))
    images, targets = list(data.eval)[-1]  # the 64×40 image, padded to 64×64 with grey 114
    assert images.shape[-2:] == (64, 64)
    assert targets["ori_shape"][-1] == (40, 64)
    assert torch.allclose(images[-1, :, 0, :], torch.full((3, 64), 114 / 255))
    first, _ = next(iter(data.eval))
    reference = np.asarray(Image.open(tmp_path / "d/images/val/000.png").convert("RGB"), dtype=np.float32) / 255
    assert np.allclose(first[0].permute(1, 2, 0).numpy(), reference, atol=1e-6)  # RGB, same pixels


def test_train_images_are_square_with_augmentation(tmp_path):
    data = load(yolo_dataset(tmp_path / "d"), augment=True)
    for images, targets in data.train:
        assert images.shape[1:] == (3, 64, 64)
        assert ((targets["bboxes"] >= 0) & (targets["bboxes"] <= 1)).all()


def files_of(loader):
    return [f for _, targets in loader for f in targets["im_file"]]


def test_shards_are_disjoint_and_equal(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d", train=7)
    parts = []
    for rank in range(2):
        data = load(data_yaml)
        data.train.shard(rank, 2)
        data.train.set_epoch(3)
        assert data.train.num_samples == 3 and len(data.train) == 1
        parts.append(files_of(data.train))
    assert len(parts[0]) == len(parts[1]) == 3
    assert not set(parts[0]) & set(parts[1])


def test_shuffle_and_augmentation_repeat_for_a_seed_and_epoch(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d", train=8)

    def epoch(seed, number, workers=0):
        loader = load(data_yaml, seed=seed, workers=workers).train
        loader.set_epoch(number)
        return [(images, targets["bboxes"], targets["im_file"]) for images, targets in loader]

    def same(a, b):
        return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b))

    first = epoch(0, 1)
    assert same(first, epoch(0, 1))
    assert not same(first, epoch(0, 2))
    assert not same(first, epoch(1, 1))
    with_workers = epoch(0, 1, workers=1)
    assert same(with_workers, epoch(0, 1, workers=1))
    assert [x[2] for x in with_workers] == [x[2] for x in first]  # the order does not depend on workers


def test_samples_keep_the_first_images(tmp_path):
    data = load(yolo_dataset(tmp_path / "d"), train_samples=3, eval_samples=2)
    assert data.train.num_samples == 3 and data.eval.num_samples == 2
    assert sorted(Path(f).name for f in files_of(data.train)) == ["000.png", "001.jpg", "002.png"]
    assert [Path(f).name for f in files_of(data.eval)] == ["000.png", "001.jpg"]


def test_txt_lists_folder_yaml_and_polygon_lines(tmp_path):
    root = tmp_path / "d"
    yolo_dataset(root)
    (root / "train.txt").write_text("./images/train/000.png\nimages/train/001.jpg\n")
    (root / "labels/train/001.txt").write_text("2 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n")  # a polygon: its box is used
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": ["images/val"],
                                                    "names": dict(enumerate(NAMES)), "nc": 3}))
    data = load_data(spec(root), 0)  # the folder holding data.yaml names it too
    assert sorted(Path(f).name for f in files_of(data.train)) == ["000.png", "001.jpg"]
    train = load(root / "data.yaml", augment=False, batch_size=2).train
    train.shuffle = False
    _, targets = next(iter(train))
    second = targets["bboxes"][targets["batch_idx"] == 1]
    assert torch.allclose(second, torch.tensor([[0.3, 0.35, 0.4, 0.5]]), atol=1e-4)


def test_roboflow_export_layout(tmp_path):
    """Roboflow writes train: ../train/images beside data.yaml; Ultralytics retries without ../."""
    root = tmp_path / "export"
    yolo_dataset(tmp_path / "made")
    for split, folder in (("train", "train"), ("val", "valid")):
        (root / folder).mkdir(parents=True)
        (tmp_path / "made/images" / split).rename(root / folder / "images")
        (tmp_path / "made/labels" / split).rename(root / folder / "labels")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\nnames: [a, b, c]\n")
    data = load(root / "data.yaml")
    assert data.train.num_samples == 6 and data.eval.num_samples == 3


def test_nothing_touches_the_network(tmp_path):
    """In a fresh interpreter (so importing Ultralytics is covered too), with every way out refused."""
    data_yaml = yolo_dataset(tmp_path / "d")
    bad_yaml = yolo_dataset(tmp_path / "bad")
    (tmp_path / "bad/images/val/000.png").write_bytes(b"this is not a picture" * 8)
    script = f"""
import socket
def refuse(*a, **k):
    raise AssertionError("network touched")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = socket.gethostbyname = refuse
from compressor.data import load_data
from compressor.schema import DataSpec
data = load_data(DataSpec(dataset="yolo:{data_yaml}", batch_size=4, image_size=64, workers=0), 0)
for loader in (data.train, data.eval):
    for images, targets in loader:
        pass
from compressor.errors import CompressorError
try:  # an unidentifiable image makes Ultralytics look for a HEIF plugin (check_requirements): still offline
    load_data(DataSpec(dataset="yolo:{bad_yaml}", image_size=64, workers=0), 0)
except CompressorError as e:
    assert "cannot be used (not an image PIL can identify)" in str(e), str(e)
    print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: permission bits do not stop writes")
def test_read_only_dataset_loads(tmp_path):
    root = tmp_path / "d"
    data_yaml = yolo_dataset(root)
    folders = [p for p in root.rglob("*") if p.is_dir()] + [root]
    for folder in folders:
        folder.chmod(0o555)
    try:
        data = load(data_yaml)
        assert len(files_of(data.eval)) == 3
        assert not list(root.rglob("*.cache"))
    finally:
        for folder in folders:
            folder.chmod(0o755)


# bad data: one line naming the file --------------------------------------------------------------


def test_data_yaml_not_found(tmp_path):
    error(tmp_path / "nope.yaml", "data not found", tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, expected", [
    ("- a\n- b\n", "must be a mapping"),
    ("train: images/train\nval: images/val\n", "lacks names"),
    ("val: images/val\nnames: [a]\n", "lacks train"),
    ("train: images/train\nnames: [a]\n", "lacks val"),
    ("train: images/train\nval: images/val\nnames: [a, b]\nnc: 3\n", "nc is 3 but names lists 2"),
    ("train: images/train\nval: [images/val\nnames: [a]\n", "line 3"),
])
def test_bad_data_yaml(tmp_path, text, expected):
    data_yaml = yolo_dataset(tmp_path / "d")
    data_yaml.write_text(text)
    error(data_yaml, data_yaml, expected)


def test_split_folder_missing(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    data_yaml.write_text(yaml.safe_dump({"train": "images/training", "val": "images/val", "names": NAMES}))
    error(data_yaml, "train folder", tmp_path / "d/images/training", "does not exist")


def test_split_without_images(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    for image in (tmp_path / "d/images/val").iterdir():
        image.unlink()
    (tmp_path / "d/images/val/readme.md").write_text("no pictures here")
    error(data_yaml, data_yaml, "no images in val")


def test_labels_folder_missing(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    for label in (tmp_path / "d/labels/val").iterdir():
        label.unlink()
    (tmp_path / "d/labels/val").rmdir()
    error(data_yaml, "no labels folder", tmp_path / "d/labels/val")


def test_no_objects_at_all(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    for label in (tmp_path / "d/labels/val").iterdir():
        label.write_text("")
    error(data_yaml, "val has no objects", tmp_path / "d/labels/val")


def test_images_without_label_files_are_backgrounds(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    (tmp_path / "d/labels/train/002.txt").unlink()
    (tmp_path / "d/labels/train/003.txt").write_text("")
    assert len(files_of(load(data_yaml).train)) == 6


def test_no_label_files_at_all(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    for label in (tmp_path / "d/labels/train").iterdir():
        label.unlink()
    error(data_yaml, "train has no label files", tmp_path / "d/labels/train")


@pytest.mark.parametrize("line, expected", [
    ("1 0.5 0.5 0.2", "4 numbers where a box is 5"),
    ("1 0.5 0.5 0.2 0.2 0.9", "6 numbers"),
    ("1 0.5 half 0.2 0.2", "'half' is not a number"),
    ("1 0.5 nan 0.2 0.2", "not finite"),
    ("1.5 0.5 0.5 0.2 0.2", "class '1.5' is not a whole number"),
    ("-1 0.5 0.5 0.2 0.2", "class '-1' is not a whole number"),
    ("3 0.5 0.5 0.2 0.2", "class 3 is out of range, data.yaml names has 3 classes"),
    ("1 32 40 10 12", "not normalised to 0-1"),
    ("1 0.5 0.5 1.2 0.2", "not normalised to 0-1"),
    ("1 0.5 0.5 -0.2 0.2", "not normalised to 0-1"),
    ("1 0.1 0.1 0.5 0.1 0.5 1.6 0.1 0.6", "not normalised to 0-1"),
])
def test_bad_label_line_names_file_and_line(tmp_path, line, expected):
    data_yaml = yolo_dataset(tmp_path / "d")
    label = tmp_path / "d/labels/train/004.txt"
    first = "0 0.5 0.5 0.4 0.3" if len(line.split()) <= 6 else "0 0.1 0.1 0.5 0.1 0.5 0.6"  # same kind of line
    label.write_text(f"{first}\n\n{line}\n")
    error(data_yaml, f"label file '{label}' line 3", expected)


def test_mixed_box_and_polygon_lines(tmp_path):
    data_yaml = yolo_dataset(tmp_path / "d")
    label = tmp_path / "d/labels/val/001.txt"
    label.write_text("0 0.5 0.5 0.4 0.3\n1 0.1 0.1 0.5 0.1 0.5 0.6\n")
    error(data_yaml, f"label file '{label}' line 2", "mixes box lines")


@pytest.mark.parametrize("kind", ["garbage png", "truncated png", "truncated jpeg", "empty file", "tiny image"])
def test_unreadable_image_is_named(tmp_path, kind):
    data_yaml = yolo_dataset(tmp_path / "d")
    bad = tmp_path / "d/images/val" / ("001.jpg" if kind == "truncated jpeg" else "000.png")
    if kind == "garbage png":
        bad.write_bytes(b"this is not a picture" * 8)
    elif kind == "empty file":
        bad.write_bytes(b"")
    elif kind == "tiny image":
        write_image(bad, seed=5, shape=(6, 6))
    else:
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    before = bad.read_bytes()
    message = error(data_yaml, f"image '{bad}'")
    if kind == "garbage png":
        assert "not an image PIL can identify" in message
    assert bad.read_bytes() == before  # named, never "restored" in place


def test_image_size_must_be_a_multiple_of_32(tmp_path):
    error(yolo_dataset(tmp_path / "d"), "data.image_size 100 must be a multiple of 32", "use 96 or 128",
          image_size=100)
    error(tmp_path / "d/data.yaml", "data.image_size 20 must be a multiple of 32", "use 32", image_size=20)


# fmnist-detect ---------------------------------------------------------------------------------


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_fmnist
def test_generator_is_byte_identical_and_well_formed(tmp_path, capsys):
    a = fmnist_detect.generate(tmp_path / "a", 12, 4)
    b = fmnist_detect.generate(tmp_path / "b", 12, 4)
    assert "generating fmnist-detect (12 train / 4 val, 160 px)" in capsys.readouterr().out
    files = tree(a.parent)
    assert files == tree(b.parent)
    assert len([f for f in files if f.startswith("images/train/")]) == 12
    assert len([f for f in files if f.startswith("labels/val/")]) == 4
    assert yaml.safe_load(files["data.yaml"])["names"][9] == "Ankle boot"
    for name, content in files.items():
        if name.startswith("labels/"):
            rows = np.array([line.split() for line in content.decode().splitlines()], dtype=float)
            assert 1 <= len(rows) <= 6, name
            assert ((rows[:, 0] >= 0) & (rows[:, 0] <= 9)).all()
            assert ((rows[:, 1:] > 0) & (rows[:, 1:] <= 1)).all()
            assert (rows[:, 3:].max(1) * 160 >= 15).all() and (rows[:, 3:].max(1) * 160 <= 97).all()
    with Image.open(a.parent / "images/train/000000.jpg") as im:
        assert im.size == (160, 160) and im.mode == "RGB"
    # canvas i does not depend on how many there are
    c = fmnist_detect.generate(tmp_path / "c", 3, 1)
    assert tree(c.parent)["images/train/000002.jpg"] == files["images/train/000002.jpg"]
    assert not list(tmp_path.glob(".*.partial"))


@needs_fmnist
def test_generator_reuses_a_complete_dataset_and_replaces_its_own(tmp_path, capsys):
    data_yaml = fmnist_detect.generate(tmp_path / "g", 2, 1)
    stamp = data_yaml.stat().st_mtime_ns
    capsys.readouterr()
    assert fmnist_detect.generate(tmp_path / "g", 2, 1) == data_yaml
    assert data_yaml.stat().st_mtime_ns == stamp and capsys.readouterr().out == ""
    fmnist_detect.generate(tmp_path / "g", 3, 1)  # other counts: regenerated in place
    assert len(list((tmp_path / "g/images/train").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "g"]


def test_generator_refuses_a_folder_that_is_not_its_own(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(CompressorError, match="is not an fmnist-detect dataset"):
        fmnist_detect.generate(tmp_path / "mine", 2, 1)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@needs_fmnist
def test_fmnist_detect_source_loads_through_yolo(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_detect, "TRAIN", 8)
    monkeypatch.setattr(fmnist_detect, "VAL", 4)
    data = load_data(DataSpec(dataset="fmnist-detect", root=str(tmp_path / "fd"), batch_size=4, eval_batch_size=4,
                              workers=0), 0)
    assert data.task == "detect" and data.input_shape == (3, 160, 160) and data.num_classes == 10
    assert data.names[0] == "T-shirt/top"
    images, targets = next(iter(data.eval))
    assert images.shape == (4, 3, 160, 160) and len(targets["cls"]) >= 4
    assert (tmp_path / "fd" / "fmnist-detect.json").is_file()
    with pytest.raises(CompressorError, match="takes no argument"):
        load_data(DataSpec(dataset="fmnist-detect:big", root=str(tmp_path / "fd")), 0)
