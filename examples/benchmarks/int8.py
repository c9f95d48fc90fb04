"""INT8 results: fp32, PTQ and QAT+KD × {unpruned, pruned} for the Fashion-MNIST quickstart model
(the metric measured by running each ONNX in onnxruntime on the 10k test split), and onnxruntime
CPU latency of float vs INT8 ONNX, interleaved, at batch 1 and 32, for those and for torchvision
resnet18/resnet50 (unpruned and pruned to half the MACs; initial weights: latency does not depend
on the values, and this machine has no internet). Replaces what follows RESULTS in docs/int8.md.

    python examples/benchmarks/int8.py                                   # ~40 min on 2 CPU cores
    python examples/benchmarks/int8.py --distill-epochs 0.2 --qat-epochs 0.1 --eval-samples 1000 \\
        --zoo resnet18 --size 96                                         # a smoke test
"""

import argparse
import datetime
import platform
import sys
from pathlib import Path

from compressor.pipeline import Pipeline
from compressor.recipe import parse_recipe
from compressor.runtime.latency import device_name

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "recipes" / "fmnist-resnet20.safetensors"
RESULTS = "<!-- results: written by examples/benchmarks/int8.py -->"
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2")


def cpu_flags() -> list[str]:
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return [flag for flag in INT8_FLAGS if flag in flags]


def fmnist_recipe(pruned: bool, args) -> dict:
    """PTQ, then QAT+KD from the same float model and a second quantize: one run gives all three rows."""
    shrink = [{"type": "prune", "importance": "magnitude", "target": {"macs": 0.5}, "round_to": 8},
              {"type": "distill", "epochs": args.distill_epochs, "lr": 0.02,
               "logit": {"loss": "kd", "temperature": 4.0},
               "features": {"loss": "cwd", "layers": [{"student": "layer3", "teacher": "layer3"}]}}] if pruned else []
    quantize = {"type": "quantize", "batch_sizes": [1, 32], "threads": args.threads}
    return {"name": f"int8-fmnist-{'pruned' if pruned else 'unpruned'}", "seed": 0, "device": "cpu",
            "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16},
                      "checkpoint": str(TEACHER)},
            "data": {"dataset": "fashion-mnist", "batch_size": 128, "eval_samples": args.eval_samples},
            "passes": [*shrink, quantize, {"type": "qat", "epochs": args.qat_epochs, "lr": 0.002}, quantize]}


def zoo_recipe(name: str, pruned: bool, args) -> dict:
    shrink = [{"type": "prune", "target": {"macs": 0.5}, "round_to": 8}] if pruned else []
    return {"name": f"int8-{name}-{'pruned' if pruned else 'unpruned'}", "seed": 0, "device": "cpu",
            "model": {"source": f"torchvision:{name}", "num_classes": 1000},
            "data": {"dataset": "synthetic", "channels": 3, "image_size": args.size, "train_samples": 64,
                     "eval_samples": 16, "batch_size": 16},
            "passes": [*shrink, {"type": "quantize", "calibration_batches": 4, "error_samples": 0, "evaluate": False,
                                 "batch_sizes": [1, 32], "threads": args.threads}]}


def latency_cells(metrics: dict) -> str:
    cells = []
    for r in metrics["onnx_latency"]:
        cells += [f"{r['baseline_ms']:.3g} → {r['compressed_ms']:.3g}", f"{r['speedup']:.2f}×"]
    return " | ".join(cells)


def run(doc: dict, out: Path):
    return Pipeline(parse_recipe(doc), out / doc["name"]).run(fresh=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill-epochs", type=float, default=3)
    parser.add_argument("--qat-epochs", type=float, default=1)
    parser.add_argument("--eval-samples", type=int, default=None, help="default: the whole 10k test split")
    parser.add_argument("--zoo", nargs="*", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "int8")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "int8.md")
    args = parser.parse_args(argv)

    head = "| batch 1 ms (fp32 → INT8) | speedup | batch 32 ms (fp32 → INT8) | speedup |"
    fmnist = ["| model | stage | top-1 fp32 ONNX | top-1 INT8 ONNX | Δ | size MB (fp32 → INT8) " + head,
              "|---|---|---|---|---|---|---|---|---|---|"]
    for pruned in (False, True):
        state = run(fmnist_recipe(pruned, args), args.out)
        ptq, qat = (r["metrics"] for r in state.records if r["type"] == "quantize")
        name = "ResNet-20 " + ("pruned ½ MACs + KD" if pruned else "unpruned")
        fmnist.append(f"| {name} | fp32 | {ptq['fp32_onnx']['top1']:.2f} | | | {ptq['fp32_size_mb']:.3g} | | | | |")
        for stage, m in (("PTQ", ptq), ("QAT+KD", qat)):
            delta = m["top1"] - m["fp32_onnx"]["top1"]
            fmnist.append(f"| {name} | {stage} | {m['fp32_onnx']['top1']:.2f} | {m['top1']:.2f} | {delta:+.2f} | "
                          f"{m['fp32_size_mb']:.3g} → {m['size_mb']:.3g} | {latency_cells(m)} |")
    zoo = ["| model | pruned | size MB (fp32 → INT8) " + head, "|---|---|---|---|---|---|---|"]
    for name in args.zoo:
        for pruned in (False, True):
            m = run(zoo_recipe(name, pruned, args), args.out).records[-1]["metrics"]
            zoo.append(f"| {name} | {'½ MACs' if pruned else 'no'} | {m['fp32_size_mb']:.3g} → {m['size_mb']:.3g} | "
                       f"{latency_cells(m)} |")
    command = "python examples/benchmarks/int8.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [RESULTS, "",
             f"Machine: {device_name(__import__('torch').device('cpu'))}, int8-relevant flags "
             f"{', '.join(cpu_flags()) or 'none'}; onnxruntime {__import__('onnxruntime').__version__}, "
             f"{args.threads} thread(s), Python {platform.python_version()}. Command: `{command.strip()}`. "
             f"Date: {datetime.date.today()}.", "",
             "Accuracy: each ONNX file run by onnxruntime on the test split "
             f"({args.eval_samples or 10000} images); the QAT rows' fp32 column is the model after QAT, in float.",
             "Latency: onnxruntime CPU, float and INT8 ONNX interleaved in one process, speedup the median of "
             "paired rounds (docs/measurements.md).", "", "## Fashion-MNIST quickstart model", "", *fmnist, "",
             f"## torchvision models at {args.size}×{args.size} (latency only)", "", *zoo, ""]
    text = args.doc.read_text() if args.doc.is_file() else ""
    kept = text.split(RESULTS)[0] if RESULTS in text else text
    args.doc.write_text(kept + "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
