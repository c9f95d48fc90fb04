"""The recipe: YAML -> validated pydantic models, `--set` overrides, one-line errors."""

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from compressor.errors import CompressorError, did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Strict):
    source: str = Field(description="zoo:NAME | torchvision:NAME | timm:NAME | python:pkg.module:factory")
    checkpoint: str | None = Field(None, description="weights: .safetensors or a state_dict file")
    num_classes: int | None = Field(None, description="passed to the model factory")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="more factory arguments")

    def factory_kwargs(self) -> dict[str, Any]:
        extra = {} if self.num_classes is None else {"num_classes": self.num_classes}
        return {**self.kwargs, **extra}


class DataSpec(Strict):
    dataset: str = Field("fashion-mnist", description="fashion-mnist | imagefolder:PATH | synthetic")
    root: str | None = Field(None, description="directory holding the data files")
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(500, gt=0)
    image_size: int | None = Field(None, gt=0, description="resize to this (default: native)")
    channels: int | None = Field(None, gt=0, description="repeat grey images to this many channels")
    num_classes: int | None = Field(None, gt=0, description="synthetic only")
    train_samples: int | None = Field(None, gt=0, description="use only the first N training images")
    eval_samples: int | None = Field(None, gt=0, description="use only the first N evaluation images")
    augment: bool = Field(True, description="random shift and flip while training")
    workers: int = Field(2, ge=0, description="loader processes (imagefolder)")


class PassParams(Strict):
    """Base of every pass's parameters; `type` picks the pass."""

    type: str


class Recipe(Strict):
    name: str
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    passes: list[SerializeAsAny[PassParams]] = Field(default_factory=list)

    def fingerprint(self, upto: int) -> str:
        """Hash of everything that decides the result of passes[0..upto]."""
        head = self.model_dump(mode="json", exclude={"passes", "name"})
        head["passes"] = [p.model_dump(mode="json") for p in self.passes[: upto + 1]]
        return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:16]


def _loc(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _model_at(cls: type[BaseModel], loc) -> type[BaseModel] | None:
    """The pydantic model found by walking `loc` from `cls` (to list valid keys in errors)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if cls else None
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return cls


def _friendly(err: ValidationError, cls: type[BaseModel], origin: str, prefix=()) -> CompressorError:
    first = err.errors()[0]
    loc = tuple(prefix) + tuple(first["loc"])
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if first["type"] == "extra_forbidden":
        owner = _model_at(cls, first["loc"][:-1])
        valid = sorted(owner.model_fields) if owner else []
        key = first["loc"][-1]
        hint = did_you_mean(key, valid) or (f"; valid keys: {', '.join(valid)}" if valid else "")
        msg = f"unknown key '{key}'{hint}"
        loc = loc[:-1]
    else:
        got = first.get("input")
        shown = "" if isinstance(got, dict) or first["type"] == "missing" else f" (got {got!r})"
        msg = first["msg"][0].lower() + first["msg"][1:] + shown
    where = _loc(loc) or "recipe"
    return CompressorError(f"{origin}: {where}: {msg}{tail}")


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict, assignment: str) -> None:
    """`passes.2.ratio=0.6` -> raw['passes'][2]['ratio'] = 0.6."""
    path, sep, value = assignment.partition("=")
    if not sep or not path:
        raise CompressorError(f"--set '{assignment}' must look like key.path=value (e.g. passes.2.ratio=0.6)")
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
            node[key] = parse_value(value)
        else:
            node = node[key]


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise CompressorError(f"recipe '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CompressorError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise CompressorError(f"{path}: a recipe is a YAML mapping with name, model, data and passes")
    return raw


def parse_recipe(raw: dict, origin: str = "recipe") -> Recipe:
    from compressor.passes import PASSES

    entries = raw.get("passes") or []
    if not isinstance(entries, list):
        raise CompressorError(f"{origin}: passes: must be a list of passes, each with a 'type'")
    try:
        recipe = Recipe.model_validate({**raw, "passes": []})
    except ValidationError as e:
        raise _friendly(e, Recipe, origin) from None
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "type" not in entry:
            raise CompressorError(f"{origin}: passes[{i}]: each pass is a mapping with a 'type' key")
        try:
            params_cls = PASSES.get(str(entry["type"])).Params
        except CompressorError as e:
            raise CompressorError(f"{origin}: passes[{i}].type: {e}") from None
        try:
            recipe.passes.append(params_cls.model_validate(entry))
        except ValidationError as e:
            raise _friendly(e, params_cls, origin, ("passes", i)) from None
    return recipe


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    recipe = parse_recipe(raw, str(path))
    specs = [("model", recipe.model)] + [(f"passes[{i}].teacher", p.teacher) for i, p in enumerate(recipe.passes)
                                         if isinstance(getattr(p, "teacher", None), ModelSpec)]
    for key, spec in specs:
        if spec.checkpoint:
            spec.checkpoint = _checkpoint_near(path, spec.checkpoint, key)
    return recipe


def _checkpoint_near(recipe_path: Path, given: str, key: str) -> str:
    checkpoint = Path(given)
    if not checkpoint.is_absolute() and not checkpoint.exists():
        # A checkpoint path may be relative to the recipe, so recipes travel with their weights.
        checkpoint = recipe_path.parent / checkpoint
    if not checkpoint.is_file():
        raise CompressorError(f"{recipe_path}: {key}.checkpoint: file '{given}' does not exist")
    return str(checkpoint)


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as run (after --set), in the user's own keys, so that it parses again."""
    doc = recipe.model_dump(mode="json", by_alias=True, exclude_unset=True)
    doc["passes"] = [p.model_dump(mode="json", by_alias=True, exclude_unset=True) for p in recipe.passes]
    return yaml.safe_dump(doc, sort_keys=False)
