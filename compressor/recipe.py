"""The recipe: YAML -> validated pydantic models, `--set` overrides, one-line errors."""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from compressor.errors import CompressorError, Problems, did_you_mean, excerpt
from compressor.passes import PASSES
from compressor.preflight import model_specs, recipe_problems
from compressor.schema import TAG_ERROR, DataSpec, ModelSpec, PlainName, Strict, suggestion, tagged, walk


def _pass_union():
    """Every registered pass's parameters, told apart by `type`."""
    variants = {name: PASSES.get(name).Params for name in PASSES.names()}
    return tagged(variants, key="type", missing="each pass is a mapping with a 'type' key",
                  unknown=lambda got, tags: f"unknown pass type {excerpt(got)}{did_you_mean(got, tags)}; "
                                            f"choose one of: {', '.join(tags)}")


class Recipe(Strict):
    name: PlainName = Field(description="the run folder's name: runs/<name>")
    seed: int = Field(0, description="seeds initial weights, data order and augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda where a GPU is visible, else cpu")
    threads: int | None = Field(None, gt=0, description="CPU threads for training, evaluation and export "
                                "(default: OMP_NUM_THREADS, else the CPUs this process may use; benchmark "
                                "times with its own)")
    model: ModelSpec = Field(description="the model to compress")
    data: DataSpec = Field(default_factory=DataSpec, description="training and evaluation data")
    passes: list[_pass_union()] = Field(default_factory=list, description="run in order, one checkpoint each")

    @model_validator(mode="after")
    def _synthetic_images_of_the_models_size(self):
        # Random images for a torchvision or timm model default to the size it is made for (224×224
        # for most), not synthetic's small default, at which many of them cannot run.
        if self.data.dataset == "synthetic" and self.data.image_size is None:
            from compressor.models import native_input_shape

            native = native_input_shape(self.model.source)
            if native:
                self.data.image_size = native[-1]
        return self

    def fingerprint(self, upto: int) -> str:
        """Hash of everything that decides the result of passes[0..upto]."""
        head = self.model_dump(mode="json", exclude={"passes", "name", "threads"})  # threads: speed, not results
        head["passes"] = [p.model_dump(mode="json") for p in self.passes[: upto + 1]]
        return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:16]


def _loc(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_problems(err: ValidationError, root, origin: str) -> list[str]:
    """Every problem of a validation error, one line each: where (as the user wrote it), what,
    and the nearest valid key or value."""
    return [f"{origin}: {_problem(error, root)}" for error in err.errors()]


def _problem(error: dict, root) -> str:
    if error["type"] == "extra_forbidden":
        loc, owner, _ = walk(root, error["loc"][:-1])
        key = error["loc"][-1]
        msg = f"unknown key '{key}'{suggestion(key, owner)}"
    elif error["type"] == TAG_ERROR:
        loc, _, tagger = walk(root, error["loc"])
        got = error["input"].get(tagger.key) if isinstance(error["input"], dict) and tagger.key else None
        loc = loc + [tagger.key] if got is not None else loc
        msg = tagger.message(error["input"])
    else:
        loc, _, _ = walk(root, error["loc"])
        got = error.get("input")
        shown = "" if isinstance(got, dict) or error["type"] in ("missing", "key_of_other_variant") \
            else f" (got {excerpt(got)})"
        text = error["msg"].removeprefix("Value error, ")
        msg = text[0].lower() + text[1:] + shown
    return f"{_loc(loc) or 'recipe'}: {msg}"


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignment(assignment: str, option: str, shape: str, example: str) -> tuple[str, Any]:
    """`key=value` from the command line: the key and the value read as YAML (`0.6`, `true`, `[1, 2]`)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise CompressorError(f"{option} '{assignment}' must look like {shape}=value (e.g. {example})")
    return key, parse_value(value)


def parse_assignments(assignments, option: str, shape: str, example: str) -> dict[str, Any]:
    return dict(parse_assignment(a, option, shape, example) for a in assignments or [])


def apply_override(raw: dict, assignment: str) -> None:
    """`passes.2.ratio=0.6` -> raw['passes'][2]['ratio'] = 0.6."""
    path, value = parse_assignment(assignment, "--set", "key.path", "passes.2.ratio=0.6")
    parts = path.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[:depth]) or "the recipe"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise CompressorError(
                    f"--set {path}: '{part}' is not an index of {here}, which has {len(node)} entries (0-{len(node) - 1})"
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            if not last and part not in node:
                raise CompressorError(f"--set {path}: {here} has no key '{part}'{did_you_mean(part, node)}")
            key = part
        else:
            raise CompressorError(f"--set {path}: {here} is a value, not a section, so it has no '{part}'")
        if last:
            node[key] = value
        else:
            node = node[key]


MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # after anchors and aliases are expanded


class _RecipeLoader(yaml.SafeLoader):
    """safe_load, and also: a key given twice is an error (not "the last one wins")."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {excerpt(key)} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict) -> int:
    """How many nodes `node` stands for once every alias in it is expanded (a few hundred bytes
    of aliases can stand for billions)."""
    if id(node) not in sizes:
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_yaml(text: str, origin: str):
    """A YAML document from a file a stranger may have written: one-line errors, no duplicate
    keys, and no alias expansion beyond MAX_YAML_NODES."""
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise CompressorError(f"{origin}: its anchors and aliases expand to more than {MAX_YAML_NODES:,} "
                                  "values; write the recipe out, or use fewer aliases")
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CompressorError(f"{origin}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise CompressorError(f"recipe '{path}' is a folder; give the recipe's .yaml file")
    if not path.is_file():
        raise CompressorError(f"recipe '{path}' does not exist")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise CompressorError(f"recipe '{path}' is {size / 2**20:.1f} MB; a recipe is a small YAML file "
                              f"(at most {MAX_RECIPE_BYTES >> 20} MB)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CompressorError(f"recipe '{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    raw = load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise CompressorError(f"{path}: a recipe is a YAML mapping with name, model, data and passes")
    return raw


def parse_recipe(raw: dict, origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise Problems(schema_problems(e, Recipe, origin)) from None


def _checkable_part(raw: dict) -> Recipe:
    """Of a recipe that does not validate, the model and data sections that do on their own (as a
    recipe without passes), so that their files are checked in the same go as its schema."""
    parts = {"model": None, "data": None}
    for key, cls in (("model", ModelSpec), ("data", DataSpec)):
        try:
            parts[key] = cls.model_validate(raw.get(key, {}))
        except ValidationError:
            pass
    return Recipe.model_construct(passes=[], **parts)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """A recipe given on the command line: parsed, the files it names found beside it, and checked
    before anything runs (compressor.preflight); every problem at once, one line each."""
    path = Path(path)
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        recipe, problems = Recipe.model_validate(raw), []
    except ValidationError as e:
        recipe, problems = _checkable_part(raw), schema_problems(e, Recipe, str(path))
    for _, spec in model_specs(recipe):
        if spec.checkpoint:
            spec.checkpoint = _checkpoint_near(path, spec.checkpoint)
        spec.source = _source_near(path, spec.source)
    problems += recipe_problems(recipe, path)
    if problems:
        raise Problems(problems)
    return recipe


def _source_near(recipe_path: Path, source: str) -> str:
    """A source that names a file (ultralytics:models/net.yaml) may name it relative to the recipe,
    as a checkpoint may; a name that is no file beside the recipe stays as it is."""
    kind, sep, name = source.partition(":")
    if not sep or not name or Path(name).is_absolute() or Path(name).exists():
        return source
    near = recipe_path.parent / name
    return f"{kind}:{near}" if near.is_file() else source


def _checkpoint_near(recipe_path: Path, given: str) -> str:
    """A checkpoint path may be relative to the recipe, so recipes travel with their weights; one
    found nowhere stays as given (preflight names it)."""
    checkpoint = Path(given)
    if not checkpoint.is_absolute() and not checkpoint.exists() and (recipe_path.parent / checkpoint).is_file():
        return str(recipe_path.parent / checkpoint)
    return given


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as run (after --set), in the user's own keys, so that it parses again."""
    doc = recipe.model_dump(mode="json", by_alias=True, exclude_unset=True)
    doc["passes"] = [p.model_dump(mode="json", by_alias=True, exclude_unset=True) for p in recipe.passes]
    return yaml.safe_dump(doc, sort_keys=False)
