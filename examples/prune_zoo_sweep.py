"""Prunes each classifier of a zoo at one ratio (whole attention heads and MLP width in the
transformers), checks that it runs, loses MACs, rebuilds from its pruning history, exports to
ONNX and matches onnxruntime, and prints the Markdown table of docs/pruning.md. Where pruning
stops with an error naming layers to ignore, the model is pruned again with them ignored.

    python examples/prune_zoo_sweep.py --zoo torchvision --size 64 > /tmp/torchvision.md
    python examples/prune_zoo_sweep.py --zoo timm > /tmp/timm.md     # each at the size TIMM_MODELS gives
    python examples/prune_zoo_sweep.py --zoo issue > /tmp/issue.md   # the models the issue found broken
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from compressor.pruning.sweep import ISSUE_MODELS, MODELS, TIMM_MODELS, check


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cells(row: dict) -> list[str]:
    start = [row["model"], row["input"], f"{row['ratio']:g}"]
    if not row["ok"]:
        return [*start, "**no**", "", "", "", "", f"{row['seconds']:.0f}", _cell(row["error"])]
    heads = f"{row['heads_before']} → {row['heads_after']}" if row["heads_before"] else ""
    result = f"yes, {len(row['ignore'])} ignored" if row["ignore"] else "yes"
    skipped = f"torch-pruning left {len(row['skipped'])} groups whole. " if row["skipped"] else ""
    why = f"{skipped}First run: {row['error']}" if row["ignore"] else skipped
    return [*start, result, f"×{row['macs_kept']:.3f}", f"×{row['params_kept']:.3f}", heads,
            f"{row['exporter']}: max diff {row['max_abs_diff']:.1e} on logits up to {row['output_scale']:.2g}",
            f"{row['seconds']:.0f}", _cell(why.strip())]


def zoo(name: str, size: int) -> dict[str, int]:
    return {"torchvision": dict.fromkeys(MODELS, size), "timm": TIMM_MODELS, "issue": ISSUE_MODELS}[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", choices=("torchvision", "timm", "issue"), default="torchvision")
    parser.add_argument("--size", type=int, default=64, help="torchvision: input height and width (ViT gets "
                                                               "image_size=SIZE)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--models", nargs="*", help="only these, of the zoo")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = {name: size for name, size in zoo(args.zoo, args.size).items() if not args.models or name in args.models}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in models.items():
            rows.append(check(name, size, args.ratio, Path(tmp)))
            print(f"{name}: {'ok' if rows[-1]['ok'] else rows[-1]['error']} ({rows[-1]['seconds']:.0f}s)",
                  file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| model | input | ratio | pruned, rebuilt, exported, matches | MACs | params | heads | ONNX vs torch "
          "| s | why not, what was ignored |")
    print("|---|---|---:|---|---:|---:|---|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(cells(row)) + " |")


if __name__ == "__main__":
    main()
