"""Every key a recipe takes, with its type, default and help, read from the pydantic schema: what
`compress passes` prints, and docs/recipes.md (`compress passes --markdown`)."""

import types
import typing
from dataclasses import dataclass, field

from pydantic import BaseModel

from compressor.schema import field_annotation, members, unwrap

COLUMNS = ("key", "type", "default", "help")


@dataclass
class KeyTable:
    title: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # one per key, as COLUMNS


def type_name(annotation) -> str:
    """A reader's name for a parameter type: choices spelt out, nested models as 'mapping'."""
    annotation, tagger = unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if tagger is not None or members(annotation) and all(a is type(None) or members(a) for a in args):
        return "mapping"
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " (optional)" * (type(None) in args)
    if origin is not None:
        return f"{origin.__name__} of {type_name(args[-1])}" if args else origin.__name__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def key_tables(title: str, annotation, path: str | None = None) -> list[KeyTable]:
    """One table of keys per model: a tagged union gives one per variant, and a nested mapping (a
    prune target, its fine-tuning) gets tables of its own after its owner's, titled by `path`
    (default: `title`) and its key."""
    _, tagger = unwrap(annotation)
    path = title if path is None else path
    variants = ({cls: [t for t, m in tagger.variants.items() if cls in members(m)] for cls in members(annotation)}
                if tagger else {cls: [] for cls in members(annotation)})
    tables, nested = [], []
    for cls, tags in variants.items():
        table = KeyTable(f"{title} ({tagger.describe(tags)})" if tags else title)
        for name, info in cls.model_fields.items():
            if name == "type" or (tagger and name == tagger.key):
                continue
            key, inner = info.alias or name, field_annotation(cls, name)
            default = ("required" if info.is_required() else "see below" if members(inner) and info.default_factory
                       else repr(info.get_default(call_default_factory=True)))
            table.rows.append((key, type_name(info.annotation), default, info.description or ""))
            if members(inner):
                nested.append((f"{path}.{key}" if path else key, inner))
        tables.append(table)
    for sub_title, sub in dict.fromkeys(nested):
        tables += key_tables(sub_title, sub)
    return tables


def summary(cls) -> str:
    """The first paragraph of a pass's docstring, as one line."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: KeyTable, level: int) -> list[str]:
    return [f"{'#' * level} {table.title}", "", "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|",
            *("| " + " | ".join(_cell(c if i else f"`{c}`") for i, c in enumerate(row)) + " |" for row in table.rows),
            ""]


def recipe_markdown() -> str:
    """docs/recipes.md: the recipe's own keys, model, data, then every pass's."""
    from compressor.passes import PASSES
    from compressor.recipe import Recipe

    lines = ["# Recipe keys", "",
             "Every key a recipe takes, with its type, default and help. Generated from the recipe schema by "
             "`compress passes --markdown > docs/recipes.md`: edit the schema, not this file "
             "(a test checks that the two agree).", ""]
    for table in key_tables("recipe", Recipe, path=""):
        lines += markdown_table(table, 2)
    lines += ["## passes", "", "Each entry of `passes` is a mapping whose `type` names the pass.", ""]
    for kind in PASSES.names():
        cls = PASSES.get(kind)
        tables = key_tables(kind, cls.Params)
        lines += [f"### {kind}", "", summary(cls), ""]
        for table in tables:
            block = markdown_table(table, 4)
            lines += block[2:] if table.title == kind else block  # the pass's own keys sit under its heading
    return "\n".join(lines).rstrip() + "\n"
