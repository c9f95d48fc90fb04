"""`data.val_split`: a validation split held out of the training images, so that choices are not
made on the test split the results report. On real Fashion-MNIST, a tiny image folder and a tiny
YOLO dataset."""

from collections import Counter

import pytest
import torch

from compressor.data import load_data
from compressor.data.fashion_mnist import FILES, _read_idx, find_fashion_mnist
from compressor.data.split import held_out_count
from compressor.errors import CompressorError
from compressor.passes.evaluate import Evaluate, EvaluateParams
from compressor.pipeline import RunContext
from compressor.recipe import parse_recipe
from compressor.schema import DataSpec
from compressor.state import State
from tests.conftest import TEACHER, needs_fmnist, needs_teacher, needs_ultralytics


def fmnist(seed=0, **kw):
    return load_data(DataSpec(dataset="fashion-mnist", **kw), seed)


def image_bytes(images: torch.Tensor) -> Counter:
    return Counter(bytes(row) for row in images.flatten(1).numpy())


@pytest.fixture(scope="module")
def default():
    return fmnist()


@needs_fmnist
def test_fashion_mnist_holds_out_5000_stratified_images_the_training_loader_lacks(default):
    assert (default.train.num_samples, default.val.num_samples, default.eval.num_samples) == (55000, 5000, 10000)
    assert torch.bincount(default.val.labels).tolist() == [500] * 10
    # Together the two loaders hold exactly the 60,000 training images, each once (as a multiset:
    # Fashion-MNIST has a few duplicate images, which must not count as a leak).
    full = torch.from_numpy(_read_idx(find_fashion_mnist(None) / FILES["train"][0]).copy())
    assert image_bytes(default.train.images) + image_bytes(default.val.images) == image_bytes(full)
    assert default.decision_split() is default.val


@needs_fmnist
def test_the_split_follows_the_seed(default):
    assert torch.equal(fmnist(0).val.images, default.val.images)
    assert not torch.equal(fmnist(1).val.images, default.val.images)


@needs_fmnist
def test_counts_fractions_samples_and_zero(default, capsys):
    tenth = fmnist(val_split=0.1)
    assert (tenth.train.num_samples, tenth.val.num_samples) == (54000, 6000)
    assert torch.bincount(tenth.val.labels).tolist() == [600] * 10
    sliced = fmnist(train_samples=1000, eval_samples=300)  # the first 1000 of those left to train on
    assert (sliced.train.num_samples, sliced.val.num_samples, sliced.eval.num_samples) == (1000, 300, 300)
    assert not set(image_bytes(sliced.train.images)) & set(image_bytes(default.val.images))
    off = fmnist(val_split=0)
    assert off.val is None and off.train.num_samples == 60000
    assert off.decision_split() is off.eval
    assert "choices are made on the test split" in capsys.readouterr().out


@pytest.mark.parametrize("value", [1.5, -1, True, "half"])
def test_a_bad_val_split_is_one_line(synthetic_recipe, value):
    synthetic_recipe["data"]["val_split"] = value
    with pytest.raises(CompressorError, match=r"^r.yaml: data.val_split: must be a count .* or a fraction"):
        parse_recipe(synthetic_recipe, "r.yaml")


def test_holding_out_every_training_image_or_none_is_refused():
    with pytest.raises(CompressorError, match="holds out 60000 of the 60000 training images"):
        held_out_count(60000, 60000)
    with pytest.raises(CompressorError, match="is no image"):
        held_out_count(1e-6, 60000)
    with pytest.raises(CompressorError, match="dataset 'synthetic' cannot hold out"):
        load_data(DataSpec(dataset="synthetic", val_split=10), 0)


def evaluations(data: dict, model: dict, tmp_path, *splits: str) -> list[dict]:
    ctx = RunContext(parse_recipe({"name": "splits", "model": model, "data": data}), tmp_path, torch.device("cpu"))
    state = State(ctx.baseline(), {}, ctx.data.input_shape)
    return [Evaluate(EvaluateParams(split=split)).run(state, ctx) for split in splits]


@needs_fmnist
@needs_teacher
def test_evaluate_names_its_split(synthetic_recipe, tmp_path):
    teacher = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16},
               "checkpoint": str(TEACHER)}
    data = {"dataset": "fashion-mnist", "eval_samples": 200, "train_samples": 64}
    test, val = evaluations(data, teacher, tmp_path, "test", "val")
    assert test["split"] == "test" and test["top1"] > 85
    assert val["split"] == "val" and val["val_top1"] > 85 and "top1" not in val  # not a number reports quote
    with pytest.raises(CompressorError, match="evaluate split: val needs a validation split"):
        evaluations(synthetic_recipe["data"], synthetic_recipe["model"], tmp_path, "val")


def test_an_image_folder_keeps_val_unless_asked_to_hold_out(tmp_path):
    from tests.test_data_errors import image_folder

    root = image_folder(tmp_path / "folder", per_class=4)
    spec = dict(dataset=f"imagefolder:{root}", image_size=16, workers=0)
    own = load_data(DataSpec(**spec), 0)
    assert own.val is own.eval and own.train.num_samples == 8
    carved = load_data(DataSpec(**spec, val_split=0.25), 0)
    held = {carved.val.dataset.dataset.samples[i][0] for i in carved.val.dataset.indices}
    kept = {carved.train.dataset.dataset.samples[i][0] for i in carved.train.dataset.indices}
    assert len(held) == 2 and len(kept) == 6 and not held & kept
    assert sorted(carved.val.dataset.dataset.targets[i] for i in carved.val.dataset.indices) == [0, 1]  # stratified
    assert carved.eval.num_samples == 8 and next(iter(carved.val))[0].shape == (2, 3, 16, 16)


@needs_ultralytics
def test_a_yolo_dataset_keeps_its_val_unless_asked_to_hold_out(tmp_path):
    from tests.test_data_detect import files_of, load, yolo_dataset

    data_yaml = yolo_dataset(tmp_path / "d")
    own = load(data_yaml)
    assert own.val is own.eval and own.train.num_samples == 6
    carved = load(data_yaml, val_split=2, augment=False)
    held, kept = set(files_of(carved.val)), set(files_of(carved.train))
    assert len(held) == 2 and len(kept) == 4 and not held & kept
    assert all("/images/train/" in f for f in held)
    assert files_of(carved.eval) == files_of(own.eval)
