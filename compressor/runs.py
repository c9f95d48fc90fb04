"""The run folder, in one place: its layout, what a path on the command line is, and what
commands read back from a finished run.

    runs/<name>/
      recipe.yaml          the recipe as run
      NN-type/             one folder a finished pass: state.json (complete once present),
                           model.safetensors, masks.safetensors, the pass's own files
      .NN-type.partial/    the pass being run; train-K/ in it, the K-th training's checkpoint
                           after its last finished epoch (training/resume.py), lets an
                           interrupted pass continue with --resume
"""

import fnmatch
import os
from pathlib import Path

from compressor.errors import CompressorError
from compressor.state import STATE_FILE

RECIPE_FILE = "recipe.yaml"
MARKER = ".compress-run"  # written into every run folder: --fresh deletes only folders that hold it
PASS_GLOB = "[0-9][0-9]-*"
ENGINE_SUFFIXES = (".engine", ".plan")
# What compress writes at the top of a run folder: anything else there is someone else's.
OWN_ENTRIES = (RECIPE_FILE, MARKER, PASS_GLOB, ".[0-9][0-9]-*.partial", "report.json", "report.md", "report.png",
               "*.onnx", "*.engine", "*.plan", "*.cache", "build_engine.sh", "check_engine.sh", "README.md",
               ".*.????????*")


def mark(run_dir: Path) -> None:
    (run_dir / MARKER).touch()


def is_marked(run_dir: Path) -> bool:
    return (run_dir / MARKER).is_file()


def check_deletable(run_dir: Path) -> None:
    """Refuses unless `run_dir` is recognisably a compress run: marked, and holding nothing else."""
    if not is_marked(run_dir):
        raise CompressorError(f"--fresh deletes only a run folder compress made, and {run_dir} is not one (it has "
                              f"no {MARKER}); delete it yourself, or choose another --out")
    foreign = [e.name for e in sorted(run_dir.iterdir())
               if not any(fnmatch.fnmatchcase(e.name, pattern) for pattern in OWN_ENTRIES)]
    if foreign:
        raise CompressorError(f"--fresh would delete {run_dir}, which also holds what compress did not write "
                              f"({', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}); move that away, "
                              "or choose another --out")


def check_writable(folder: Path) -> None:
    """`folder` is, or can become, a folder this process can write into."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise CompressorError(f"{existing} is a file, and the run needs a folder there; choose another --out")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise CompressorError(f"cannot write into {existing} (permission denied); choose another --out")


def pass_folder(index: int, kind: str) -> str:
    return f"{index:02d}-{kind}"


def partial_folder(index: int, kind: str) -> str:
    return f".{pass_folder(index, kind)}.partial"


def pass_folders(run_dir: Path) -> list[Path]:
    """Every pass folder of the run, finished or not, in order."""
    return sorted(Path(run_dir).glob(PASS_GLOB))


def is_checkpoint(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def checkpoints(run_dir: Path) -> list[Path]:
    """The finished passes' folders, in order."""
    return [f for f in pass_folders(run_dir) if is_checkpoint(f)]


def locate(path: Path) -> str:
    """What `path` is: run | checkpoint | onnx | engine."""
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if is_checkpoint(path):
        return "checkpoint"
    if path.is_dir() and checkpoints(path):
        return "run"
    raise CompressorError(f"'{path}' is not an .onnx file, a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}), "
                          f"a checkpoint folder (with {STATE_FILE}) or a run folder")


def last_checkpoint(run_dir: Path) -> Path:
    found = checkpoints(run_dir)
    if not found:
        raise CompressorError(f"'{run_dir}' holds no finished pass (no {PASS_GLOB}/{STATE_FILE})")
    return found[-1]


def run_folder_of(path: Path, kind: str) -> Path:
    """The run folder a run or checkpoint path belongs to."""
    return path if kind == "run" else path.parent


def run_recipe(run_dir: Path, passes: list[dict] = (), origin: str | None = None):
    """The recipe a run was made with: its model and data, with `passes` in place of its own
    (errors in them are reported as coming from `origin`)."""
    from compressor.recipe import parse_recipe, read_yaml

    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise CompressorError(f"{run_dir} has no {RECIPE_FILE}: its model and data are unknown")
    return parse_recipe({**read_yaml(path), "passes": list(passes)}, origin or str(path))


# What a model source without a native input size (`native_input_shape`, e.g. a YOLO detector's
# 640×640) is inspected at when no --input-shape is given.
INSPECT_DEFAULT_SHAPE = (3, 224, 224)


def load_target(target: str, input_shape: tuple[int, ...] | None, kwargs: dict, trust):
    """A model named on the command line, from a model source, a recipe or a run folder:
    (model, input shape, title, the ignore patterns of the recipe's prune pass). What the user
    typed or a recipe they gave is theirs; a run folder's sources run code only if `trust` says.
    For a model source, `input_shape` None means the model's native one."""
    from compressor.models import SOURCES, Trust, build_model, load_model

    path = Path(target)
    named = target.partition(":")[0] in SOURCES  # ultralytics:yolov8n.yaml names a model, not a recipe
    if not named and path.suffix in (".yaml", ".yml"):
        from compressor.data import load_data
        from compressor.recipe import load_recipe

        recipe = load_recipe(path)
        shape = load_data(recipe.data, recipe.seed).input_shape
        prune = next((p for p in recipe.passes if p.type == "prune"), None)
        return (load_model(recipe.model, Trust.of(recipe.model)), tuple(shape), f"{recipe.model.source} (recipe {path})",
                list(getattr(prune, "ignore", [])))
    if not named and path.is_dir():
        from compressor.state import load_checkpoint

        folders = [path] if is_checkpoint(path) else checkpoints(path)
        if not folders:
            raise CompressorError(f"'{path}' holds no checkpoint (no {STATE_FILE} in it or in its pass folders)")
        state = load_checkpoint(folders[-1], trust)
        return state.model, state.input_shape, f"{state.source['source']} after {folders[-1]}", []
    if ":" not in target:
        raise CompressorError(f"'{target}' is neither a model source (torchvision:resnet50, zoo:resnet20 …), "
                              "a recipe (.yaml), a run folder nor an .onnx file")
    model = build_model(target, kwargs)
    native = getattr(model, "native_input_shape", None)
    return model, tuple(input_shape or native or INSPECT_DEFAULT_SHAPE), target, []
