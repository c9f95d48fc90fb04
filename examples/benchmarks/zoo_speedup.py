"""What pruning to a MACs budget buys on a real runtime: torchvision models pruned by the
`prune` pass at two budgets, then timed in onnxruntime (CPU) against the unpruned model,
interleaved in one process, at batch 1 and 32. Writes a Markdown table.

    python examples/benchmarks/zoo_speedup.py                     # ~20 min on 2 CPU cores
    python examples/benchmarks/zoo_speedup.py --models resnet18 --size 128 --iters 5   # a smoke test

Weights are torchvision's initialisation (this machine has no internet): latency does not depend
on the values, and the channels magnitude pruning keeps are as arbitrary as any.
"""

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

from compressor.measure import human
from compressor.pipeline import Pipeline
from compressor.recipe import parse_recipe
from compressor.runtime.latency import device_name, unsteady

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16"]


def recipe(name: str, size: int, budgets: list[float], iters: int, threads: int, round_to: int) -> dict:
    """Prune twice, each pass taking the model to the next budget, then time all three stages."""
    kept, passes = 1.0, []
    for budget in budgets:
        passes.append({"type": "prune", "target": {"macs": budget / kept}, "round_to": round_to})
        kept = budget
    passes.append({"type": "benchmark", "backends": ["onnxruntime"], "batch_sizes": [1, 32], "iters": iters,
                   "warmup": 2, "threads": threads})
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    return {"name": f"zoo-{name}", "seed": 0, "device": "cpu",
            "model": {"source": f"torchvision:{name}", "num_classes": 1000, "kwargs": kwargs},
            "data": {"dataset": "synthetic", "channels": 3, "image_size": size, "train_samples": 16,
                     "eval_samples": 16, "batch_size": 16},
            "passes": passes}


def rows(name: str, state, budgets: list[float]) -> list[str]:
    bench = state.records[-1]["metrics"]
    stages = bench["stages"]
    out = []
    for stage, budget in zip(stages[1:], budgets):
        ratio = stages[0]["macs"] / stage["macs"]
        timed = {r["batch_size"]: r for r in bench["latency"] if r["stage"] == stage["name"]}

        def cell(batch: int) -> str:
            r = timed[batch]
            return f"{r['speedup']:.2f}× ({r['speedup'] / ratio:.0%}){' unsteady' if unsteady(r) else ''}"

        out.append(f"| {name} | ≤{budget:.0%} | {human(stages[0]['macs'])} → {human(stage['macs'])} | {ratio:.2f}× | "
                   f"{human(stage['params'])} | {cell(1)} | {cell(32)} |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--budgets", type=float, nargs=2, default=[0.5, 0.33], help="fractions of MACs kept")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per model and batch, at least")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--round-to", type=int, default=8, help="channel counts stay multiples of this")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "zoo-speedup")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "zoo-speedup.md")
    args = parser.parse_args(argv)
    lines = []
    for name in args.models:
        state = Pipeline(parse_recipe(recipe(name, args.size, args.budgets, args.iters, args.threads, args.round_to)),
                         args.out / name).run(fresh=True)
        lines += rows(name, state, args.budgets)
    command = "python examples/benchmarks/zoo_speedup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = ["# Pruned torchvision models: MACs ratio against measured onnxruntime speedup", "",
           f"Machine: {device_name(torch.device('cpu'))}, {platform.system()}, onnxruntime CPU with {args.threads} "
           f"threads; input {args.size}×{args.size}; date {datetime.date.today()}; command `{command.strip()}`.", "",
           f"Each model was pruned by the `prune` pass (magnitude, `round_to: {args.round_to}`) to each MACs budget and timed "
           "against the unpruned model, interleaved in one process. In brackets: the speedup as a fraction of "
           "the MACs ratio (100% when latency falls as fast as MACs).", "",
           "| model | MACs kept | MACs | MACs ratio | params | ORT speedup, batch 1 | ORT speedup, batch 32 |",
           "|---|---:|---:|---:|---:|---:|---:|", *lines, ""]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(doc))
    print("\n".join(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
