"""Passes: one file each, found through the registry by their recipe `type`."""

from typing import Any

from pydantic import TypeAdapter

from compressor.registry import Registry
from compressor.schema import PassParams, pass_type


class Pass:
    """A step of a recipe: `run` works on the State in place and returns what it measured (a
    dict the pipeline records beside the pass's checkpoint). Under torchrun, passes with
    `trains = True` run on every rank (through the one training loop, which wraps DDP); the
    others run on rank 0 alone. `Params` is a pydantic model whose `type` is the pass's name,
    or a tagged union of such models (schema.tagged) where variants take different keys."""

    name = ""
    trains = False
    snapshots_teacher = False  # keeps the model as it was before changing it: a later distill's teacher
    Params: Any = PassParams

    def __init__(self, params: PassParams):
        self.params = params

    @classmethod
    def order_problem(cls, params: PassParams, before: list[PassParams]) -> str | None:
        """What is wrong with this pass coming after the passes `before` it in a recipe, or None.
        Every run checks it before the first pass (and `compress validate` does); a pass that
        meets the same mistake in its State while running says it in the same words."""
        return None

    @classmethod
    def leaves_masks(cls, params: PassParams) -> bool:
        """Whether the pass leaves N:M masks, which every later pass keeps."""
        return False

    @classmethod
    def parse(cls, params: dict) -> PassParams:
        """This pass's parameters from a mapping (pydantic's ValidationError where they are wrong)."""
        return TypeAdapter(cls.Params).validate_python(params)

    def run(self, state, ctx) -> dict:
        raise NotImplementedError


PASSES: Registry[type[Pass]] = Registry("pass type")


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Registers a pass under the `type` its parameters declare."""
    cls.name = pass_type(cls.Params)
    return PASSES.register(cls.name)(cls)


def _import_all() -> None:
    """Every module in this package registers its pass on import: adding a pass is adding a file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()
