"""What can be checked of a recipe before anything runs, without building a model or reading a
dataset: each model's source (the kind, the name, a python: factory importable), its checkpoint
(the file, a safetensors header), the data's files, and where each pass stands (its order rule,
e.g. export_tensorrt after export_onnx). Every problem is found, one line each, so that
`compress validate` and the start of `compress run` name them all at once."""

from collections.abc import Callable
from pathlib import Path

from compressor.data import DATASETS
from compressor.errors import CompressorError
from compressor.models import check_source, find_own_code
from compressor.passes import PASSES
from compressor.schema import DataSpec, ModelSpec


def model_specs(recipe) -> list[tuple[str, ModelSpec]]:
    """Every model a recipe names, by where it stands: the model, and each pass's teacher."""
    teachers = [(f"passes[{i}].teacher", p.teacher) for i, p in enumerate(recipe.passes)
                if isinstance(getattr(p, "teacher", None), ModelSpec)]
    return ([("model", recipe.model)] if recipe.model else []) + teachers


def recipe_problems(recipe, path: Path) -> list[str]:
    """Every problem found in the parsed `recipe` (compressor.recipe.Recipe) read from `path`, as
    '<path>: <where>: <what>' lines. A python: model source of the recipe is imported (it is the
    user's own code), and may live beside the recipe or in the current folder."""
    found = []
    for where, spec in model_specs(recipe):
        found += model_problems(spec, where, path)
    if recipe.data is not None:
        found += data_problems(recipe.data)
    for index, params in enumerate(recipe.passes):
        problem = PASSES.get(params.type).order_problem(params, recipe.passes[:index])
        if problem:
            found.append((f"passes[{index}] ({params.type})", problem))
    return [f"{path}: {where}: {what}" for where, what in found]


def model_problems(spec: ModelSpec, where: str, recipe_path: Path) -> list[tuple[str, str]]:
    found = []
    if spec.source.startswith("python:"):
        find_own_code(recipe_path.parent, Path.cwd())
    try:
        check_source(spec.source, spec.factory_kwargs())
    except CompressorError as e:
        found.append((where, str(e)))
    if spec.checkpoint:
        problem = checkpoint_problem(Path(spec.checkpoint))
        if problem:
            found.append((f"{where}.checkpoint", problem))
    return found


def checkpoint_problem(path: Path) -> str | None:
    if not path.is_file():
        beside = "" if path.is_absolute() else " (a relative path is found from the current folder or the recipe's)"
        return f"file '{path}' does not exist{beside}"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:  # reads the header only
                f.keys()
        except Exception as e:  # any parse failure of a user file is a user error
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f"'{path}' is not a readable safetensors file ({why})"
    return None


def data_problems(spec: DataSpec) -> list[tuple[str, str]]:
    kind, _, arg = spec.dataset.partition(":")
    try:
        DATASETS.get(kind)
        if kind in DATA_CHECKS:
            DATA_CHECKS[kind](spec, arg)
    except CompressorError as e:
        return [("data", str(e))]
    return []


def _fashion_mnist(spec: DataSpec, arg: str) -> None:
    from compressor.data.fashion_mnist import find_fashion_mnist

    if spec.root:  # without a root it is found in the usual places, or downloaded once the run starts
        find_fashion_mnist(spec.root)


def _imagefolder(spec: DataSpec, arg: str) -> None:
    root = Path(arg or spec.root or "")
    if not root.is_dir():
        raise CompressorError(f"imagefolder '{root}' is no folder; give imagefolder:PATH, PATH holding train/ and "
                              "val/ with one subfolder per class in each")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise CompressorError(f"imagefolder '{root}' needs a '{split}/' folder with one subfolder per class")
        if not any(entry.is_dir() for entry in folder.iterdir()):
            raise CompressorError(f"imagefolder '{folder}' has no class folders: put each class's images in a "
                                  f"subfolder of its own, e.g. {folder / '<class>'}/")


def _yolo(spec: DataSpec, arg: str) -> None:
    from compressor.data.yolo import class_names, dataset_root, find_yaml, read_yaml

    path = find_yaml(arg or spec.root or "")
    doc = read_yaml(path)
    class_names(doc, path)
    root = dataset_root(doc, path)
    for split in ("train", "val"):
        for entry in doc[split] if isinstance(doc[split], list) else [doc[split]]:
            if not (root / str(entry)).exists():
                raise CompressorError(f"data.yaml '{path}': {split} '{entry}' does not exist in {root}; "
                                      "fix the path (it is relative to the yaml's path: key, else its folder)")


# dataset kind -> a check of the files it reads, cheap (no image is opened); kinds not here need no files
DATA_CHECKS: dict[str, Callable[[DataSpec, str], None]] = {
    "fashion-mnist": _fashion_mnist, "imagefolder": _imagefolder, "yolo": _yolo}
