"""Prunes each torchvision classifier of the issue's list at one ratio (whole attention heads and
MLP width in the transformers), checks that it runs, loses MACs, exports to ONNX and matches
onnxruntime, and prints the Markdown table of docs/pruning.md.

    python examples/prune_zoo_sweep.py --size 64 --ratio 0.5 > /tmp/sweep.md
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from compressor.pruning.sweep import MODELS, check


def cells(row: dict) -> list[str]:
    if not row["ok"]:
        return [row["model"], row["input"], "**no**", "", "", "", "", row["error"].replace("|", "\\|")]
    heads = f"{row['heads_before']} → {row['heads_after']}" if row["heads_before"] else ""
    return [row["model"], row["input"], "yes", f"×{row['macs_kept']:.3f}", f"×{row['params_kept']:.3f}", heads,
            f"{row['exporter']}: max diff {row['max_abs_diff']:.1e} on logits up to {row['output_scale']:.2g}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input height and width (ViT gets image_size=SIZE)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(check(name, args.size, args.ratio, Path(tmp)))
            print(f"{name}: {'ok' if rows[-1]['ok'] else rows[-1]['error']} ({rows[-1]['seconds']:.0f}s)",
                  file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"| model | input | pruned, runs, exports, matches | MACs | params | heads | ONNX vs torch | why not |")
    print("|---|---|---|---:|---:|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cells(row)) + " |")


if __name__ == "__main__":
    main()
