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
    Params: Any = PassParams

    def __init__(self, params: PassParams):
        self.params = params

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
