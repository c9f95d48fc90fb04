"""Top-1, top-5 and loss on an evaluation split."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.console import progress


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, desc: str = "evaluate") -> dict:
    model.eval().to(device)
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    with progress() as bar:
        task = bar.add_task(desc, total=len(loader), info="")
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = model(inputs)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top.eq(targets.view(-1, 1))
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            total += len(targets)
            bar.update(task, advance=1, info=f"top-1 {100 * correct1 / total:.2f}%")
    return {"top1": 100 * correct1 / total, "top5": 100 * correct5 / total, "loss": loss_sum / total,
            "samples": total}
