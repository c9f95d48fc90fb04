"""Layers whose output width the model fixes, declared by the model itself.

The survey protects the groups whose channels are the model's output by finding the graph's
sinks. A model whose output is computed from its layers' channels (a detector's decoded boxes
and class scores) has no such sink at the layers that matter, so it says which layers they are,
and why, on the module that owns them:

    declare(detect_head, {"cv2.0.2": "its channels are the Detect head's box/DFL outputs (64 = 4×reg_max)"})

Any module may declare its own children ("" for itself); the survey gathers them by walking the
model, so the declaration travels with the module through copies, wrappers and rebuilds."""

import torch.nn as nn

ATTRIBUTE = "fixed_output_widths"  # {child module name relative to the declaring module: reason}


def declare(module: nn.Module, widths: dict[str, str]) -> None:
    """`module` says that these children's output channels may not be pruned, each for its reason."""
    for child in widths:
        module.get_submodule(child)  # a typo fails here, not silently in the survey
    setattr(module, ATTRIBUTE, dict(widths))


def fixed_widths(model: nn.Module) -> dict[str, str]:
    """Module name (in `model`) -> why its output width is fixed, for every declared layer."""
    found = {}
    for name, module in model.named_modules():
        for child, reason in getattr(module, ATTRIBUTE, {}).items():
            found[".".join(part for part in (name, child) if part)] = reason
    return found
