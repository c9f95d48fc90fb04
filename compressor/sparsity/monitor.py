"""Watches BatchNorm scales during sparsity training, so a user sees whether sparsity emerges:
per epoch, the fraction of |γ| under each threshold (logged and recorded) and a histogram PNG."""

from pathlib import Path

import torch
import torch.nn as nn

from compressor.sparsity.regularizers import batchnorm_scales
from compressor.training import Term

FLOOR = 1e-6  # |γ| is drawn on a log axis; exact zeros are shown at this floor


class ScaleMonitor(Term):
    name = "scales"

    def __init__(self, thresholds: list[float], png: Path):
        self.thresholds, self.png = sorted(thresholds), png
        self.history: list[dict] = []
        self._values: list[torch.Tensor] = []  # |γ| per recorded epoch, for the histogram

    def snapshot(self, model: nn.Module, epoch: int) -> dict:
        """Records the scales as they are now (epoch -1: before training)."""
        scales = batchnorm_scales(model)
        if not scales:
            return {}
        values = torch.cat([w.detach().abs().flatten().float().cpu() for w in scales])
        quantiles = values.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist()
        below = {f"{t:g}": (values < t).float().mean().item() for t in self.thresholds}
        self.history.append({"epoch": epoch + 1, "channels": len(values), "below": below,
                             "p10": quantiles[0], "median": quantiles[1], "p90": quantiles[2]})
        self._values.append(values)
        self.draw()
        return {f"γ<{t}": share for t, share in below.items()}

    def attach(self, model: nn.Module) -> None:
        self.snapshot(model, -1)

    def end_epoch(self, model: nn.Module, epoch: int) -> dict:
        return self.snapshot(model, epoch)

    def state_dict(self) -> dict:
        return {"history": self.history, **{f"values.{i}": v for i, v in enumerate(self._values)}}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"]
        self._values = [state[f"values.{i}"] for i in range(len(self.history))]
        self.draw()

    def draw(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        bins = torch.logspace(-6, 1, 57).numpy()
        colours = plt.cm.viridis(torch.linspace(0, 1, len(self._values)).numpy())
        for record, values, colour in zip(self.history, self._values, colours):
            label = "before" if record["epoch"] == 0 else f"epoch {record['epoch']}"
            ax.hist(values.clamp(min=FLOOR).numpy(), bins=bins, histtype="step", color=colour, label=label)
        for t in self.thresholds:
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("|BatchNorm scale γ|")
        ax.set_ylabel("channels")
        ax.set_title("BatchNorm scales during sparsity training")
        ax.legend(fontsize=8)
        fig.tight_layout()
        self.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.png, dpi=100)
        plt.close(fig)
