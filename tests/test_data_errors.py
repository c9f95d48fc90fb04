"""Every mistake in an `imagefolder:` dataset gets one line naming the folder or file, exit
code 2, and no traceback — including a broken image met inside a DataLoader worker."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from tests.conftest import write_recipe

runner = CliRunner()
CLASSES = ("ant", "bee")


def image(path, fmt="PNG", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def image_folder(root, train=CLASSES, val=CLASSES, per_class=2):
    """A tiny real dataset: per_class 8×8 images of each class, half PNG and half JPEG."""
    for split, classes in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for c, name in enumerate(classes):
            for i in range(per_class):
                fmt = ("PNG", "JPEG")[i % 2]
                image(root / split / name / f"{i}.{fmt.lower().replace('jpeg', 'jpg')}", fmt, seed=10 * c + i)
    return root


def recipe(tmp_path, root, num_classes=len(CLASSES), workers=0, passes=({"type": "evaluate"},)):
    doc = {
        "name": "folder",
        "seed": 0,
        "model": {"source": "zoo:resnet20", "num_classes": num_classes, "kwargs": {"in_channels": 3, "width": 8}},
        "data": {"dataset": f"imagefolder:{root}", "image_size": 16, "batch_size": 4, "eval_batch_size": 4,
                 "workers": workers},
        "passes": list(passes),
    }
    return str(write_recipe(tmp_path / "r.yaml", doc))


def run(tmp_path, root, **kw):
    return runner.invoke(app, ["run", recipe(tmp_path, root, **kw), "--out", str(tmp_path / "run")])


PASS_RULE = re.compile(r"^─+ \d+/\d+ \w+ ─+$")  # the pipeline's header above each pass


def one_error_line(result, *expected):
    """Exit code 2, no traceback, and one line starting 'error: ' — the last; before it only the
    rules the pipeline prints as each pass starts (images are read, so found broken, in a pass)."""
    return error_line(result.exit_code, result.output, *expected)


def error_line(code, output, *expected):
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    rules = next((i for i, line in enumerate(lines) if PASS_RULE.match(line)), len(lines) - 1)  # after the run header
    assert all(PASS_RULE.match(line) for line in lines[rules:-1]), output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_good_folder_runs(tmp_path):
    root = image_folder(tmp_path / "data")
    result = run(tmp_path, root, passes=({"type": "evaluate"}, {"type": "train", "epochs": 1}))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("split", ["train", "val"])
def test_split_without_class_folders(tmp_path, split):
    root = image_folder(tmp_path / "data")
    for path in sorted((root / split).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / split / "stray.png").write_bytes(b"")  # a file, not a class folder
    one_error_line(run(tmp_path, root), f"'{root / split}' has no class folders")


def test_class_folders_without_images(tmp_path):
    root = image_folder(tmp_path / "data", train=(*CLASSES, "cat", "dog"))
    for name in ("cat", "dog"):
        for path in (root / "train" / name).iterdir():
            path.unlink()
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    line = one_error_line(run(tmp_path, root), str(root / "train"), "'cat', 'dog'", "no images")
    assert "'ant'" not in line


@pytest.mark.parametrize("kind", ["truncated jpeg", "truncated png", "garbage png"])
def test_corrupt_image_is_named(tmp_path, kind):
    root = image_folder(tmp_path / "data")
    if kind == "garbage png":
        bad = root / "val" / "bee" / "0.png"
        bad.write_bytes(b"this is not a picture" * 4)
    else:
        bad = root / "val" / "bee" / ("1.jpg" if kind == "truncated jpeg" else "0.png")
        image(bad, "JPEG" if kind == "truncated jpeg" else "PNG", seed=99)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    one_error_line(run(tmp_path, root), f"image '{bad}' cannot be read", "replace it")


def test_corrupt_image_in_a_worker_process(tmp_path):
    """DataLoader re-raises a worker's exception with the worker's traceback as its message; the
    user still reads the one line naming the file."""
    root = image_folder(tmp_path / "data", per_class=4)
    bad = root / "train" / "ant" / "2.png"
    bad.write_bytes(bad.read_bytes()[:30])
    line = one_error_line(run(tmp_path, root, workers=2, passes=({"type": "train", "epochs": 1},)),
                          f"image '{bad}' cannot be read")
    assert "Caught" not in line and "Original Traceback" not in line and "DataLoader worker" not in line


def test_val_classes_differ_from_train(tmp_path):
    root = image_folder(tmp_path / "data", train=("ant", "bee", "cat"), val=("ant", "bee", "dog"))
    one_error_line(run(tmp_path, root, num_classes=3), "val/ lacks 'cat'", "train/ lacks 'dog'")


def test_real_console_script_with_workers(tmp_path):
    """The installed entry point, with loader processes: one line on stdout, nothing on stderr."""
    root = image_folder(tmp_path / "data")
    bad = root / "val" / "ant" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    done = subprocess.run([sys.executable, "-m", "compressor", "run", recipe(tmp_path, root, workers=2),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert not done.stderr.strip(), done.stderr
    error_line(done.returncode, done.stdout, f"image '{bad}' cannot be read")
