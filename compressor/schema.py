"""The building blocks of a recipe's schema: strict models, the model and data sections, the
base of every pass's parameters, and tagged unions whose variants list only their own keys.
Passes build their parameters from these; `compressor.recipe` assembles the whole recipe."""

import re
import types
import typing
from typing import Annotated, Any, Callable, ClassVar, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, NonNegativeInt, StringConstraints, Tag,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from compressor.errors import did_you_mean, excerpt

TAG_ERROR = "tag_invalid"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _plain_name(value: str) -> str:
    if not _PLAIN.fullmatch(value) or ".." in value:
        raise ValueError("must be a plain name (letters, digits, '.', '_', '-'; no folders): it names a file or "
                         "folder inside the run folder")
    return value


# A name the tool joins to a folder: a stranger's recipe cannot point it anywhere else.
PlainName = Annotated[str, AfterValidator(_plain_name)]


class Strict(BaseModel):
    # A number is a number: .inf and .nan in a recipe are mistakes, not settings.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(Strict):
    source: str = Field(description="zoo:NAME | torchvision:NAME | timm:NAME | ultralytics:MODEL.yaml | "
                                    "ultralytics:WEIGHTS.pt | python:pkg.module:factory")
    checkpoint: str | None = Field(None, description="weights: .safetensors or a state_dict file")
    num_classes: int | None = Field(None, description="passed to the model factory")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="more factory arguments")
    trust_pickle: bool = Field(False, description="allow loading an Ultralytics .pt file, which is a pickle "
                                                  "and can run code: only for files you trust")

    def factory_kwargs(self) -> dict[str, Any]:
        extra = {} if self.num_classes is None else {"num_classes": self.num_classes}
        return {**self.kwargs, **extra}


class DataSpec(Strict):
    dataset: str = Field("fashion-mnist", description="fashion-mnist | imagefolder:PATH | yolo:PATH/data.yaml | "
                                                       "fmnist-detect | synthetic")
    root: str | None = Field(None, description="directory holding the data files")
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(500, gt=0)
    image_size: int | None = Field(None, gt=0, description="resize to this (default: native)")
    channels: int | None = Field(None, gt=0, description="repeat grey images to this many channels")
    num_classes: int | None = Field(None, gt=0, description="synthetic only")
    val_split: int | float | None = Field(
        None, description="training images held out as the validation split that choices are made on (int8 "
                          "calibration, sensitivities): a count, or a fraction such as 0.1; 0: none. Default: 5000 for "
                          "fashion-mnist (top-1 ±0.4 points at 90%, 1 sigma, while 55,000 images still train), "
                          "none where the dataset has its own val split (yolo, imagefolder) or for synthetic")
    train_samples: int | None = Field(None, gt=0, description="use only the first N training images (after the "
                                                              "val_split hold-out)")
    eval_samples: int | None = Field(None, gt=0, description="use only the first N evaluation images (test and "
                                                             "val splits)")
    augment: bool = Field(True, description="random shift and flip while training (detection: Ultralytics' "
                                            "mosaic, affine, HSV and flip)")
    workers: int = Field(2, ge=0, description="loader processes (imagefolder, yolo)")

    @field_validator("val_split", mode="before")
    @classmethod
    def count_or_fraction(cls, value):
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if value is not None and not whole and not (isinstance(value, float) and 0 <= value < 1):
            raise ValueError("must be a count of training images (5000) or a fraction of them below 1 (0.1); "
                             "0 for no validation split")
        return value


class Loose(BaseModel):
    """What the tool reads back from its own files: extra keys are ignored, but what it uses is checked."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


PassFolder = Annotated[str, StringConstraints(pattern=r"^[0-9][0-9]-[a-z_]+$")]


class Record(Loose):
    """One finished pass as state.json and report.json keep it."""

    model_config = ConfigDict(extra="allow")
    index: int
    type: str
    dir: PassFolder | None
    params: NonNegativeInt
    macs: NonNegativeInt
    seconds: float
    metrics: dict[str, Any]


class PassParams(Strict):
    """Base of every pass's parameters; each pass narrows `type` to its own name."""

    type: str


class Variant(Strict):
    """One variant of a tagged union made by `tagged`. A key that only another variant takes
    is named as such ("method bn_l1 takes no pattern: pattern only applies to method nm"),
    which says more than "unknown key"."""

    _tag: ClassVar[str] = ""
    _tagger: ClassVar["Tagger | None"] = None

    @model_validator(mode="before")
    @classmethod
    def _keys_of_other_variants(cls, data):
        tagger = cls._tagger
        if not isinstance(data, dict) or tagger is None:
            return data
        own = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        stray = [k for k in data if k not in own and k in tagger.owners]
        if stray:
            others = list(dict.fromkeys(t for k in stray for t in tagger.owners[k]))
            keys = ", ".join(map(str, stray))
            verb = "applies" if len(stray) == 1 else "apply"
            mine = data.get(tagger.key, cls._tag) if tagger.key else cls._tag
            text = f"{tagger.describe([str(mine)])} takes no {keys}: {keys} only {verb} to {tagger.describe(others)}"
            raise PydanticCustomError("key_of_other_variant", "{text}", {"text": text})
        return data


class Tagger:
    """Picks a tagged union's variant from the input, and words the errors about it."""

    def __init__(self, key: str | None, variants: dict[str, Any], pick: Callable[[dict], str | None],
                 describe: Callable[[list[str]], str], missing: str, unknown: Callable[[str, list[str]], str]):
        self.__name__ = key or "variant"  # pydantic names the discriminator by it
        self.key, self.variants, self.pick = key, variants, pick
        self.describe, self.missing, self.unknown = describe, missing, unknown
        self.owners: dict[str, list[str]] = {}  # key -> tags of the variants that take it
        for tag, member in variants.items():
            for cls in members(member):
                for name, field in cls.model_fields.items():
                    for key_name in {name, field.alias} - {None}:
                        self.owners.setdefault(key_name, []).append(tag)

    def __call__(self, value):
        return self.pick(value if isinstance(value, dict) else dict(value))

    def message(self, value) -> str:
        got = value.get(self.key) if isinstance(value, dict) and self.key else None
        return self.unknown(got, list(self.variants)) if got is not None else self.missing


def choices(tags: list[str]) -> str:
    quoted = [f"'{t}'" for t in tags]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def tagged(variants: dict[str, Any], key: str | None = None, default: str | None = None,
           pick: Callable[[dict], str | None] | None = None, describe: Callable[[list[str]], str] | None = None,
           missing: str = "", unknown: Callable[[str, list[str]], str] | None = None):
    """A union of `variants` (tag -> Variant class, or a union made here) told apart by the value
    of `key` (or `default` where it is absent), or by `pick` for unions told apart otherwise."""
    tagger = Tagger(key, variants, pick or (lambda d: d.get(key, default)),
                    describe or (lambda tags: f"{key} {' or '.join(tags)}"),
                    missing or f"give {key}",
                    unknown or (lambda got, tags: f"input should be {choices(tags)} (got {excerpt(got)})"))
    for tag, member in variants.items():
        for cls in members(member):
            if issubclass(cls, Variant) and cls._tagger is None:
                cls._tag, cls._tagger = tag, tagger
    union = Union[tuple(Annotated[member, Tag(tag)] for tag, member in variants.items())]
    return Annotated[union, Discriminator(tagger, custom_error_type=TAG_ERROR, custom_error_message=missing or
                                          f"{key} should be one of {choices(list(variants))}")]


def unwrap(annotation) -> tuple[Any, Tagger | None]:
    """`annotation` without Annotated and Optional, and the Tagger of the union it is, if any."""
    tagger = None
    while True:
        if typing.get_origin(annotation) is Annotated:
            found = [m.discriminator for m in annotation.__metadata__ if isinstance(m, Discriminator)]
            tagger = next((d for d in found if isinstance(d, Tagger)), tagger)
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, tagger


def members(annotation) -> list[type[BaseModel]]:
    """The model classes a field's annotation may hold (every variant of a union)."""
    annotation, _ = unwrap(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [cls for arg in typing.get_args(annotation) for cls in members(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def field_annotation(cls: type[BaseModel], name: str):
    field = cls.model_fields[name]
    extra = [m for m in field.metadata if isinstance(m, Discriminator)]
    if field.discriminator is not None and not extra:
        extra = [field.discriminator if isinstance(field.discriminator, Discriminator) else
                 Discriminator(field.discriminator)]
    return Annotated[(field.annotation, *extra)] if extra else field.annotation


def walk(root, loc) -> tuple[list, Any, Tagger | None]:
    """Follows a pydantic error location from `root`: the location as the user wrote it (the
    tags pydantic inserts for unions dropped), the model found there, and its union's Tagger."""
    annotation, clean = root, []
    for part in loc:
        annotation, tagger = unwrap(annotation)
        if tagger is not None and part in tagger.variants:
            annotation = tagger.variants[part]
            continue
        origin = typing.get_origin(annotation)
        if isinstance(part, int) and origin in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[-1]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            annotation = field_annotation(annotation, part)
        else:
            annotation = None
        clean.append(part)
    annotation, tagger = unwrap(annotation)
    return clean, annotation, tagger


def pass_type(params) -> str:
    """The recipe `type` a pass's parameters stand for."""
    cls = members(params)[0]
    (name,) = typing.get_args(cls.model_fields["type"].annotation)
    return name


def keys_of(cls: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in cls.model_fields.items()]


def suggestion(key: str, cls: type[BaseModel] | None) -> str:
    valid = sorted(keys_of(cls)) if cls else []
    return did_you_mean(key, valid) or (f"; valid keys: {', '.join(valid)}" if valid else "")
