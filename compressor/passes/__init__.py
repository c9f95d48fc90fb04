"""Passes: one file each, found through the registry by their recipe `type`."""

from compressor.recipe import PassParams
from compressor.registry import Registry


class Pass:
    """A step of a recipe: `run` takes the State and returns it, writing what it measured
    into `ctx.metrics`. Under torchrun, passes with `trains = True` run on every rank (through
    the one training loop, which wraps DDP); the others run on rank 0 alone."""

    name = ""
    trains = False
    Params: type[PassParams] = PassParams

    def __init__(self, params: PassParams):
        self.params = params

    def run(self, state, ctx):
        raise NotImplementedError


PASSES: Registry[type[Pass]] = Registry("pass type")


def register_pass(name: str):
    def add(cls: type[Pass]) -> type[Pass]:
        cls.name = name
        return PASSES.register(name)(cls)

    return add


def _import_all() -> None:
    """Every module in this package registers its pass on import: adding a pass is adding a file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()
