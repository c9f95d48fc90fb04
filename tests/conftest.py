import os
from pathlib import Path

import pytest
import torch
import yaml

from compressor.data.fashion_mnist import DEBIAN_DIR

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "recipes" / "fmnist-resnet20.safetensors"

torch.set_num_threads(min(2, os.cpu_count() or 1))

def _has_ultralytics() -> bool:
    # Imported through compressor.ultra before any test imports it: offline, and PIL left as it was.
    from compressor.errors import CompressorError
    from compressor.ultra import require

    try:
        require()
    except CompressorError:
        return False
    return True


HAS_ULTRALYTICS = _has_ultralytics()
WITHOUT_ULTRALYTICS = "Ultralytics not installed (the detect extra: pip install -e '.[detect]')"
needs_ultralytics = pytest.mark.skipif(not HAS_ULTRALYTICS, reason=WITHOUT_ULTRALYTICS)


def skip_module_without_ultralytics() -> None:
    """For a test module that imports Ultralytics itself: skipped whole where it is missing."""
    if not HAS_ULTRALYTICS:
        pytest.skip(WITHOUT_ULTRALYTICS, allow_module_level=True)
needs_fmnist = pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
needs_teacher = pytest.mark.skipif(not TEACHER.is_file(), reason="teacher weights missing: run recipes/fmnist-teacher.yaml")


def write_recipe(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def synthetic_recipe() -> dict:
    """A seconds-long recipe on random data: for the pipeline's mechanics, not for accuracy."""
    return {
        "name": "tiny",
        "seed": 0,
        "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}},
        "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 256,
                 "eval_samples": 64, "batch_size": 32},
        "passes": [
            {"type": "evaluate"},
            {"type": "prune", "ratio": 0.5},
            {"type": "train", "epochs": 1},
            {"type": "evaluate"},
        ],
    }
