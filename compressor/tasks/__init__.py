"""Tasks: what differs between classification and detection, behind one small interface. A pass
asks the task of its data how to move a batch, what the loss and the metric are, which layers
distillation pairs by default and how exported outputs are compared; it never asks which task
it is."""

from typing import Callable

import torch
import torch.nn as nn

from compressor.registry import Registry

Loss = Callable[[object, object], dict[str, torch.Tensor]]  # (outputs, targets) -> named loss terms


class Task:
    name = ""
    metric = ""  # the headline metric's key in what `evaluate` returns (higher is better)
    metric_label = ""  # how tables name it
    output_name = ""  # the exported model's output

    def move(self, targets, device: torch.device):
        """A batch's targets on `device`."""
        raise NotImplementedError

    def criterion(self, model: nn.Module, label_smoothing: float = 0.0) -> Loss:
        """The training loss of `model` (the unwrapped model; built once per training run)."""
        raise NotImplementedError

    def check_model(self, model: nn.Module, outputs, data) -> None:
        """Raises where `model` (whose eval output on one example is `outputs`) cannot learn or
        be scored on `data`."""

    def correct(self, outputs, targets) -> int | None:
        """Right answers in a training batch, where the task has such a count."""
        return None

    def evaluate(self, forward: Callable, loader, device: torch.device, desc: str = "evaluate") -> dict:
        """The metrics of `forward` (a model, or any callable from inputs to the model's eval
        outputs, e.g. an ONNX session) on `loader`."""
        raise NotImplementedError

    def feature_layers(self, model: nn.Module) -> list[str] | None:
        """The layers `features.layers: auto` pairs, where the task knows them (None: same-named blocks)."""
        return None

    def logit_distillation(self) -> str | None:
        """Why logit distillation does not apply to this task's outputs, or None where it does."""
        return None

    def parity(self, model: nn.Module, path, inputs: torch.Tensor, atol: float, rtol: float, data) -> dict:
        """Whether the ONNX file at `path` computes what `model` does: outputs on `inputs` within
        the tolerances (a mismatch raises), and whatever else the task holds an export to."""
        from compressor.runtime import onnx as ox

        return ox.parity(model, path, inputs, atol, rtol)

    def metadata(self, data) -> dict:
        """What an exported model carries so a deployer can decode its output."""
        return {}


TASKS: Registry[type[Task]] = Registry("task")

# The quality numbers reports show, by their key in a pass's metrics, in percent: any task's.
QUALITY = {"top1": "top-1", "map50": "mAP50", "map50_95": "mAP50-95"}


def task_of(data) -> Task:
    return TASKS.get(data.task)()


from compressor.tasks import classification, detection  # noqa: E402,F401  (each registers itself)
