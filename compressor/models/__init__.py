"""Model sources: `zoo:NAME`, `torchvision:NAME`, `timm:NAME`, `ultralytics:MODEL.yaml|WEIGHTS.pt`,
`python:pkg.module:factory`.

A model may carry `native_input_shape` (one sample's shape, e.g. (3, 640, 640) for a YOLO detector):
what `compress inspect` measures a bare model source at when no --input-shape is given, and (for
torchvision and timm, from the source name alone) the image size of `synthetic` data."""

import contextlib
import importlib
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from compressor.errors import CompressorError, bounded, did_you_mean, excerpt
from compressor.models.zoo import ZOO
from compressor.registry import Registry

SOURCES: Registry = Registry("model source")
# What can be known of a source's name without building the model (for `compress validate` and
# the check before a run): kind -> check(name, kwargs), raising CompressorError.
CHECKS: dict[str, Callable[[str, dict], object]] = {}


@SOURCES.register("zoo")
def _zoo(name: str, kwargs: dict) -> nn.Module:
    return ZOO.get(name)(**kwargs)


CHECKS["zoo"] = lambda name, kwargs: ZOO.get(name)


def _torchvision_weights(name: str, kwargs: dict):
    """The weights enum member that kwargs.weights names (DEFAULT, IMAGENET1K_V1 …), or None."""
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise CompressorError(f"unknown torchvision model '{name}'{did_you_mean(name, known)}")
    if kwargs.get("weights") is None:
        return None
    options = torchvision.models.get_model_weights(name)
    try:
        return options.verify(kwargs["weights"])
    except (KeyError, TypeError, ValueError):
        raise CompressorError(f"torchvision:{name} has no weights {excerpt(kwargs['weights'])} (kwargs.weights); "
                              f"choose DEFAULT or one of: {', '.join(w.name for w in options)}") from None


CHECKS["torchvision"] = _torchvision_weights


@SOURCES.register("torchvision")
def _torchvision(name: str, kwargs: dict) -> nn.Module:
    import torchvision

    weights = _torchvision_weights(name, kwargs)
    if weights is None:
        return torchvision.models.get_model(name, **kwargs)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        # torch prints "Downloading: …" on stdout (its progress bar stays on stderr); the error below says more
        with contextlib.nullcontext() if cached.is_file() else contextlib.redirect_stdout(io.StringIO()):
            return torchvision.models.get_model(name, **kwargs)
    except OSError as e:  # offline, or the download failed: a traceback of urllib would say nothing more
        raise CompressorError(f"torchvision:{name} weights {weights.name} could not be downloaded from {weights.url} "
                              f"({getattr(e, 'reason', None) or e}); put {cached.name} in {cached.parent} (the torch "
                              "hub cache), or give the weights file as model.checkpoint and drop "
                              "model.kwargs.weights") from None
    except ValueError as e:  # e.g. num_classes 10 with ImageNet weights
        raise CompressorError(f"torchvision:{name}: {str(e).splitlines()[0].rstrip('.')}; check model.kwargs and "
                              "num_classes") from None


def _timm_module():
    try:
        import timm
    except ImportError:
        raise CompressorError("model source 'timm:' needs timm: pip install timm") from None
    return timm


def _timm_name(name: str, kwargs: dict) -> None:
    timm = _timm_module()
    if not timm.is_model(name):
        raise CompressorError(f"unknown timm model '{name}'{did_you_mean(name, timm.list_models())}")


CHECKS["timm"] = _timm_name


@SOURCES.register("timm")
def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        return _timm_module().create_model(name, **kwargs)
    except OSError as e:  # pretrained weights offline: Hugging Face Hub's retries end in this
        if not kwargs.get("pretrained"):
            raise
        raise CompressorError(f"timm:{name} pretrained weights could not be fetched from the Hugging Face Hub "
                              f"({bounded(str(e), 120)}); put them in the Hub cache ({hub_cache()}), or give the "
                              "weights file as model.checkpoint and drop pretrained") from None


def hub_cache() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


def native_input_shape(source: str) -> tuple[int, ...] | None:
    """One sample's shape the model is made for, known from its source name alone: a timm model's
    pretrained input_size, 3×224×224 for a torchvision classification model; None where the name
    does not say (a zoo model takes any size; a YOLO detector carries its own once built)."""
    kind, _, name = source.partition(":")
    if kind == "torchvision":
        import torchvision

        return (3, 224, 224) if name in torchvision.models.list_models(module=torchvision.models) else None
    if kind == "timm":
        try:
            from timm.models import get_pretrained_cfg
        except ImportError:
            return None
        cfg = get_pretrained_cfg(name)
        return tuple(cfg.input_size) if cfg and cfg.input_size else None
    return None


def find_own_code(*folders: Path) -> None:
    """Lets a recipe's own python: module be imported from `folders` (the recipe's folder, the
    current one) without PYTHONPATH. Only for a recipe given on the command line: building a run
    folder's source adds no folder, so a stranger's folder cannot bring its own modules."""
    for folder in reversed(folders):
        path = str(Path(folder).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)


def _python_factory(name: str) -> Callable:
    """The factory `python:package.module:factory` names, imported (which runs the module)."""
    module_name, _, factory = name.partition(":")
    if not module_name or not factory:
        raise CompressorError(f"'python:{name}' needs the form python:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name.partition(".")[0]:
            raise CompressorError(f"importing '{module_name}' for python:{name} fails: {e}") from None
        raise CompressorError(f"cannot import '{module_name}' for python:{name}: no such module beside the recipe, "
                              "in the current folder or on PYTHONPATH; put its file in one of them") from None
    except SyntaxError as e:
        raise CompressorError(f"'{e.filename}' line {e.lineno}: {e.msg} (importing python:{name})") from None
    except Exception as e:  # the module is the user's code: a failure in it is theirs to fix, in one line
        raise CompressorError(f"importing '{module_name}' for python:{name} fails: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'}") from None
    if not callable(getattr(module, factory, None)):
        raise CompressorError(f"module '{module_name}' ({module.__file__}) has no function '{factory}'"
                              f"{did_you_mean(factory, [n for n in vars(module) if not n.startswith('_')])}")
    return getattr(module, factory)


CHECKS["python"] = lambda name, kwargs: _python_factory(name)


@SOURCES.register("python")
def _python(name: str, kwargs: dict) -> nn.Module:
    return _python_factory(name)(**kwargs)


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
    may come from a stranger, and what it names is built only if trusted here. A recipe's own
    python: module is also found beside the recipe or in the current folder (`find_own_code`, from
    the check before a run); a run folder's is looked for nowhere beyond sys.path as it is."""

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


def _kind_and_name(source: str) -> tuple[str, str]:
    kind, sep, name = source.partition(":")
    if not sep or not name:
        raise CompressorError(
            f"model source {excerpt(source)} needs a prefix: one of {', '.join(SOURCES.names())} "
            "(e.g. zoo:resnet20, torchvision:resnet18)"
        )
    SOURCES.get(kind)  # an unknown kind is named here, with the nearest one
    return kind, name


def check_source(source: str, kwargs: dict | None = None) -> None:
    """What can be told of `source` without building its model: the kind, the name (a zoo,
    torchvision or timm model; an Ultralytics YAML), a python: factory importable. Raises
    CompressorError; imports a python: module, so only for sources the user gave."""
    kind, name = _kind_and_name(source)
    if kind in CHECKS:
        CHECKS[kind](name, dict(kwargs or {}))


def build_model(source: str, kwargs: dict | None = None, trust: Trust = TRUST_ALL) -> nn.Module:
    """Builds an untrained model from its source string, e.g. 'zoo:resnet20'. `trust` says
    whether a source that runs code may run (callers building from a file on disk narrow it)."""
    kind, name = _kind_and_name(source)
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
    native = native_input_shape(source)
    if native and not hasattr(model, "native_input_shape"):
        model.native_input_shape = native
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


def _ultralytics_name(name: str, kwargs: dict) -> None:
    """A trained .pt file exists; a YAML (a file, or a name Ultralytics ships) reads as a model cfg."""
    if _ultralytics.unpickles(name):
        if not Path(name).is_file():
            raise CompressorError(f"ultralytics:{name}: file '{name}' does not exist")
    elif name != _ultralytics.CFG:  # ultralytics:cfg is what a checkpoint records, its cfg in kwargs
        _ultralytics.check_cfg(_ultralytics.read_cfg(name), f"ultralytics:{name}")


CHECKS[_ultralytics.SOURCE] = _ultralytics_name
