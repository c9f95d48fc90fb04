"""Where a report came from, so a reader can judge it: when, by which version and command, and
whether its accuracy numbers can mean anything at all."""

import shlex
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

# Factory arguments that load trained weights: torchvision's `weights`, timm's `pretrained`.
WEIGHT_KWARGS = ("weights", "pretrained")
WEIGHT_FILES = (".pt", ".pth")  # a source naming a weights file (ultralytics:best.pt) is trained


def tool_version() -> str:
    try:
        return version("compressor")
    except PackageNotFoundError:  # run from a source tree that was not installed
        from compressor import __version__

        return __version__


def provenance() -> dict:
    """What report.json records of this process: the time (UTC), the version, the command as typed."""
    return {"created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": tool_version(),
            "command": shlex.join(["compress", *sys.argv[1:]])}


def trained_weights(recipe) -> bool:
    """Whether the run's model learnt anything: given weights, pretrained ones, or a train pass that
    fits it to the labels (sparse training and distillation only refine what a model knows)."""
    spec = recipe.model
    return bool(spec.checkpoint or any(spec.kwargs.get(k) for k in WEIGHT_KWARGS)
                or spec.source.endswith(WEIGHT_FILES) or any(p.type == "train" for p in recipe.passes))


def caveat(doc: dict) -> str | None:
    """Why the report's accuracy numbers mean nothing, or None where they may mean something."""
    reasons = []
    if doc.get("dataset") == "synthetic":
        reasons.append("the data is synthetic (random images and labels)")
    if doc.get("trained_weights") is False:
        reasons.append("the model has no trained weights (no model.checkpoint, no pretrained weights, no train pass)")
    return "; ".join(reasons) or None
