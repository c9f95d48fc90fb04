"""Which layers run in INT8: every Conv2d and Linear (the layers onnxruntime and TensorRT have
int8 kernels for), less those `keep_float` names and those whose measured error is too large."""

from fnmatch import fnmatchcase

import torch.nn as nn

from compressor.errors import CompressorError

QUANTISABLE = (nn.Conv2d, nn.Linear)


def quantisable_layers(model: nn.Module) -> dict[str, nn.Module]:
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QUANTISABLE)}
    if not layers:
        kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise CompressorError(f"the model has no layer INT8 quantises (Conv2d or Linear; it has "
                              f"{', '.join(kinds[:8]) or 'no layers'}): leave out the quantize pass")
    return layers


def kept_by_globs(model: nn.Module, layers: dict[str, nn.Module], globs: list[str]) -> list[str]:
    """The quantisable layers `globs` name; a glob that names none of them is a mistake."""
    modules = dict(model.named_modules())
    kept = []
    for glob in globs:
        found = [name for name in layers if fnmatchcase(name, glob)]
        if not found:
            other = [f"{name} ({type(modules[name]).__name__})" for name in modules if name and fnmatchcase(name, glob)]
            what = (f"only {', '.join(other[:3])}, which INT8 leaves float anyway" if other
                    else f"no layer (quantised layers: {', '.join(list(layers)[:6])}{', …' * (len(layers) > 6)})")
            raise CompressorError(f"keep_float '{glob}' matches {what}; name Conv2d or Linear layers, e.g. "
                                  f"'{next(iter(layers))}'")
        kept += [name for name in found if name not in kept]
    return kept
