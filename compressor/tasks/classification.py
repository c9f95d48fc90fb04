"""Image classification: labels are class indices, the loss cross-entropy, the metric top-1."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.console import progress
from compressor.errors import CompressorError
from compressor.tasks import TASKS, Task


@TASKS.register("classify")
class Classification(Task):
    name, metric, metric_label, output_name = "classify", "top1", "top-1", "logits"

    def move(self, targets, device):
        return targets.to(device, non_blocking=True)

    def criterion(self, model, label_smoothing=0.0):
        def loss(outputs, targets):
            return {"ce": F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)}
        return loss

    def check_model(self, model, outputs, data):
        if not (torch.is_tensor(outputs) and outputs.ndim == 2):
            got = tuple(outputs.shape) if torch.is_tensor(outputs) else type(outputs).__name__
            raise CompressorError(f"classification data needs a model that outputs (batch, classes) logits, and this "
                                  f"one outputs {got}; a detector needs detection data (yolo:PATH/data.yaml or "
                                  "fmnist-detect)")

    def correct(self, outputs, targets) -> int:
        return (outputs.argmax(1) == targets).sum().item()

    @torch.no_grad()
    def evaluate(self, forward, loader, device, desc="evaluate") -> dict:
        if isinstance(forward, nn.Module):
            forward.eval().to(device)
        correct1 = correct5 = total = 0
        loss_sum = 0.0
        with progress() as bar:
            task = bar.add_task(desc, total=len(loader), info="")
            for inputs, targets in loader:
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits = forward(inputs)
                loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hits = top.eq(targets.view(-1, 1))
                correct1 += hits[:, 0].sum().item()
                correct5 += hits.any(dim=1).sum().item()
                total += len(targets)
                bar.update(task, advance=1, info=f"top-1 {100 * correct1 / total:.2f}%")
        return {"top1": 100 * correct1 / total, "top5": 100 * correct5 / total, "loss": loss_sum / total,
                "samples": total}
