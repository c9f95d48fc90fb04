"""Which student layer learns from which teacher layer. `auto` pairs the same-named blocks of
both models; an explicit list is checked name by name against both."""

import difflib
from dataclasses import dataclass

import torch
import torch.nn as nn

from compressor.errors import CompressorError


@dataclass
class Pair:
    student: str
    teacher: str
    student_channels: int
    teacher_channels: int
    adapter: nn.Conv2d | None = None  # maps student channels to teacher channels where they differ


def output_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The output shape of every named module, from one forward pass in eval mode."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(module, inputs, output):
            if torch.is_tensor(output):
                shapes[name] = tuple(output.shape)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def _is_map(shape) -> bool:
    return shape is not None and len(shape) == 4


def auto_names(student: nn.Module, student_shapes: dict, teacher_shapes: dict) -> list[str]:
    """Block outputs: children of the model that hold submodules and give a feature map of the
    same size in both models. A lone such container (mobilenet's `features`) is opened, so its
    blocks are paired rather than only its end."""
    modules = dict(student.named_modules())

    def blocks(prefix: str) -> list[str]:
        parent = modules[prefix[:-1]] if prefix else student
        names = [prefix + name for name, child in parent.named_children() if next(child.children(), None) is not None]
        return [n for n in names if _is_map(student_shapes.get(n)) and _is_map(teacher_shapes.get(n))
                and student_shapes[n][2:] == teacher_shapes[n][2:]]

    found = blocks("")
    while len(found) == 1 and blocks(found[0] + "."):
        found = blocks(found[0] + ".")
    return found


def _check_name(name: str, shapes: dict, role: str, where: str) -> None:
    if name not in shapes:
        nearest = difflib.get_close_matches(name, list(shapes), n=3, cutoff=0.0)
        raise CompressorError(f"{where}: the {role} has no layer '{name}' (nearest: {', '.join(nearest)})")
    if not _is_map(shapes[name]):
        raise CompressorError(f"{where}: the {role}'s '{name}' outputs shape {shapes[name]}; "
                              "feature distillation pairs (N, C, H, W) feature maps")


def pair_layers(student: nn.Module, teacher: nn.Module, example: torch.Tensor,
                layers: str | list[tuple[str, str]]) -> list[Pair]:
    """`layers` is "auto" or a list of (student name, teacher name)."""
    s_shapes, t_shapes = output_shapes(student, example), output_shapes(teacher, example)
    if layers == "auto":
        names = auto_names(student, s_shapes, t_shapes)
        if not names:
            raise CompressorError("features.layers: auto found no block whose output is a feature map in both "
                                  "student and teacher; list pairs, e.g. [{student: layer2, teacher: layer2}]")
        layers = [(n, n) for n in names]
    pairs = []
    for i, (s, t) in enumerate(layers):
        _check_name(s, s_shapes, "student", f"features.layers[{i}].student")
        _check_name(t, t_shapes, "teacher", f"features.layers[{i}].teacher")
        if s_shapes[s][2:] != t_shapes[t][2:]:
            raise CompressorError(f"features.layers[{i}]: student '{s}' gives {s_shapes[s][2:]} maps but teacher "
                                  f"'{t}' gives {t_shapes[t][2:]}; pair layers of the same spatial size")
        pairs.append(Pair(s, t, s_shapes[s][1], t_shapes[t][1]))
    return pairs
