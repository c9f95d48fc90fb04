"""Model sources: `zoo:NAME`, `torchvision:NAME`, `timm:NAME`, `ultralytics:MODEL.yaml|WEIGHTS.pt`,
`python:pkg.module:factory`.

A model may carry `native_input_shape` (one sample's shape, e.g. (3, 640, 640) for a YOLO detector):
what `compress inspect` measures a bare model source at when no --input-shape is given."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from compressor.errors import CompressorError, did_you_mean, excerpt
from compressor.models.zoo import ZOO
from compressor.registry import Registry

SOURCES: Registry = Registry("model source")


@SOURCES.register("zoo")
def _zoo(name: str, kwargs: dict) -> nn.Module:
    return ZOO.get(name)(**kwargs)


@SOURCES.register("torchvision")
def _torchvision(name: str, kwargs: dict) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise CompressorError(f"unknown torchvision model '{name}'{did_you_mean(name, known)}")
    return torchvision.models.get_model(name, **kwargs)


@SOURCES.register("timm")
def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise CompressorError("model source 'timm:' needs timm: pip install timm") from None
    return timm.create_model(name, **kwargs)


@SOURCES.register("python")
def _python(name: str, kwargs: dict) -> nn.Module:
    module_name, _, factory = name.partition(":")
    if not factory:
        raise CompressorError(f"'python:{name}' needs the form python:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CompressorError(f"cannot import '{module_name}' for python:{name}: {e}") from None
    if not hasattr(module, factory):
        raise CompressorError(f"module '{module_name}' has no '{factory}' (python:{name})")
    return getattr(module, factory)(**kwargs)


# Sources whose name is code to import and run, rather than a model to look up.
RUNS_CODE = {"python"}
# Sources some of whose names are pickled files, which run code when loaded: kind -> whether a name is one.
UNPICKLES: dict[str, Callable[[str], bool]] = {}
# Sources that load from the whole ModelSpec (a pickle needs its trust_pickle) and say how to rebuild
# what they loaded: kind -> loader(spec) -> (model, source record), or None for the plain build.
SPEC_LOADERS: dict[str, Callable] = {}


def runs_code(source: str) -> bool:
    """Whether building `source` imports and runs code, or unpickles a file (which can run code)."""
    kind, _, name = source.partition(":")
    return kind in RUNS_CODE or (kind in UNPICKLES and UNPICKLES[kind](name))


@dataclass(frozen=True)
class Trust:
    """Which model sources that run code may be built: those of a recipe the user gave on the
    command line (they wrote or chose it), or any with --trust-code. A run folder or checkpoint
    may come from a stranger, and what it names is built only if trusted here."""

    sources: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def of(cls, *specs) -> "Trust":
        return cls(frozenset(spec.source for spec in specs if spec is not None))

    def allows(self, source: str) -> bool:
        return self.everything or not runs_code(source) or source in self.sources


NO_TRUST = Trust()
TRUST_ALL = Trust(everything=True)


def _check_trust(source: str, trust: Trust) -> None:
    if not trust.allows(source):
        how = ("imports and runs code" if source.partition(":")[0] in RUNS_CODE
               else "unpickles a file, which can run code")
        raise CompressorError(
            f"model source {excerpt(source)} {how}, and it comes from a run folder or checkpoint, "
            "which may not be yours; if you trust where it came from, run again with --trust-code")


def build_model(source: str, kwargs: dict | None = None, trust: Trust = TRUST_ALL) -> nn.Module:
    """Builds an untrained model from its source string, e.g. 'zoo:resnet20'. `trust` says
    whether a source that runs code may run (callers building from a file on disk narrow it)."""
    kind, sep, name = source.partition(":")
    if not sep or not name:
        raise CompressorError(
            f"model source {excerpt(source)} needs a prefix: one of {', '.join(SOURCES.names())} "
            "(e.g. zoo:resnet20, torchvision:resnet18)"
        )
    _check_trust(source, trust)
    factory = SOURCES.get(kind)
    try:
        model = factory(name, dict(kwargs or {}))
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise CompressorError(f"model source '{source}' does not take these arguments ({str(e).splitlines()[0]}); "
                              "check model.kwargs and num_classes") from None
    if not isinstance(model, nn.Module):
        raise CompressorError(f"model source '{source}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads weights from safetensors, or from a torch state_dict file without unpickling code."""
    if not path.is_file():
        raise CompressorError(f"checkpoint '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse failure of a user file is a user error
        raise CompressorError(f"cannot read checkpoint '{path}': {str(e).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CompressorError(f"checkpoint '{path}' holds a {type(state).__name__}, not a state_dict")
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Loads a state_dict strictly; a mismatch names the first offending keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:2])})")
    if problems:
        raise CompressorError(
            f"checkpoint {origin} does not match the model: {', '.join(problems)}; "
            "check model.source/kwargs/num_classes against the checkpoint"
        )
    model.load_state_dict(state, strict=True)


def load_source(spec, trust: Trust = TRUST_ALL) -> tuple[nn.Module, dict]:
    """The model a ModelSpec describes (source, factory arguments, optional weights), in eval mode,
    and its source record {"source", "kwargs"}: what a checkpoint stores, from which `build_model`
    rebuilds the architecture with no file but the weights (a trained .pt records its architecture,
    never its pickle)."""
    kind = spec.source.partition(":")[0]
    loaded = None
    if kind in SPEC_LOADERS:
        _check_trust(spec.source, trust)
        loaded = SPEC_LOADERS[kind](spec)
    if loaded is None:
        loaded = build_model(spec.source, spec.factory_kwargs(), trust), {"source": spec.source,
                                                                          "kwargs": spec.factory_kwargs()}
    model, record = loaded
    if spec.checkpoint:
        load_weights(model, read_state_dict(Path(spec.checkpoint)), f"'{spec.checkpoint}'")
    return model.eval(), record


def load_model(spec, trust: Trust = TRUST_ALL) -> nn.Module:
    """The model a ModelSpec describes (source, factory arguments, optional weights), in eval mode."""
    return load_source(spec, trust)[0]


# Registers ultralytics: (it imports Ultralytics, an optional extra, only when such a model is built).
from compressor.models import ultralytics as _ultralytics  # noqa: E402
