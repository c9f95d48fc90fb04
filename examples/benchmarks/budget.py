"""The Fashion-MNIST teacher compressed to one MACs budget, with the same total training epochs,
by the standard flows and by ours. Writes a Markdown table and a plot.

    python examples/benchmarks/fmnist_budget.py                 # the full table (~1 h on 2 CPU cores)
    python examples/benchmarks/fmnist_budget.py --quick         # a smoke test on a slice of the data

Each row is a recipe in recipes/budget/, so any row can be run on its own model with `compress run`.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from compressor.pipeline import Pipeline  # noqa: E402
from compressor.recipe import load_recipe  # noqa: E402
from compressor.process import keep_freed_memory  # noqa: E402
from compressor.runtime.latency import device_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "a": ("magnitude + CE fine-tune (Torch-Pruning flow)", "a-magnitude-ce.yaml"),
    "b": ("network slimming + CE", "b-slim-ce.yaml"),
    "c": ("slimming + KD + CWD (full pipeline)", "c-slim-kd-cwd.yaml"),
    "d": ("(c) with logit standardisation", "d-slim-lskd-cwd.yaml"),
    "e": ("(c) + 2:4 semi-structured", "e-slim-kd-cwd-2to4.yaml"),
    "f": ("magnitude + KD + CWD on every stage", "f-magnitude-kd-cwd.yaml"),
}


def run_row(recipe_file: Path, budget: float, seed: int, out: Path, quick: bool) -> dict:
    import yaml

    raw = yaml.safe_load(recipe_file.read_text())
    prune = next(i for i, p in enumerate(raw["passes"]) if p["type"] == "prune")
    overrides = [f"seed={seed}", f"passes.{prune}.target.macs={budget}"]
    if quick:
        overrides += ["data.train_samples=512", "data.eval_samples=500", f"passes.{len(raw['passes']) - 1}.iters=3"]
    recipe = load_recipe(recipe_file, overrides)
    records = Pipeline(recipe, out).run(fresh=True).records
    tops = [r["metrics"]["top1"] for r in records if "top1" in r["metrics"]]
    latency = {r["batch_size"]: r for r in records[-1]["metrics"]["latency"]}
    return {"teacher": tops[0], "after_prune": tops[1], "final": tops[-1], "macs": records[-1]["macs"],
            "macs_ratio": records[0]["macs"] / records[-1]["macs"], "params": records[-1]["params"],
            "speedup": {str(b): r["speedup"] for b, r in latency.items()},
            "latency_ms": {str(b): r["compressed_ms"] for b, r in latency.items()}}


def table(results: dict, budgets: list[float], seeds: list[int]) -> list[str]:
    lines = ["| budget | flow | top-1 (mean ± std of seeds) | after pruning, before recovery | Δ vs teacher | MACs | params "
             "| ORT speedup b1 / b32 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for budget in budgets:
        for key, (label, _) in ROWS.items():
            runs = results.get(f"{key}@{budget}")
            if not runs:
                continue
            final = statistics.fmean(r["final"] for r in runs)
            teacher = runs[0]["teacher"]
            spread = f" ± {statistics.pstdev([r['final'] for r in runs]):.2f}" if len(runs) > 1 else ""
            speed = " / ".join(f"{statistics.fmean(r['speedup'][b] for r in runs):.2f}×" for b in sorted(runs[0]["speedup"]))
            lines.append(f"| ≤{budget:.0%} MACs | ({key}) {label} | {final:.2f}%{spread} | "
                         f"{statistics.fmean(r['after_prune'] for r in runs):.2f}% | {final - teacher:+.2f} | "
                         f"{spread_of(runs, 'macs', 1e6, 'M')} ({spread_of(runs, 'macs_ratio', 1, '× fewer')}) | "
                         f"{spread_of(runs, 'params', 1e3, 'k')} | {speed} |")
    return lines


def verdict(results: dict, budgets: list[float]) -> list[str]:
    """The target, checked: the full pipeline within 0.3 points of the teacher and ahead of (a)."""
    lines = []
    for budget in budgets:
        mean = {key: statistics.fmean(r["final"] for r in results[f"{key}@{budget}"])
                for key in ROWS if results.get(f"{key}@{budget}")}
        if "a" not in mean:
            continue
        teacher = results[f"a@{budget}"][0]["teacher"]
        for key in ("c", "f"):
            if key in mean:
                gap, lead = mean[key] - teacher, mean[key] - mean["a"]
                met = "met" if gap >= -0.3 and lead > 0 else "not met"
                lines.append(f"- ≤{budget:.0%} MACs, ({key}): {gap:+.2f} points vs the teacher, {lead:+.2f} vs (a) — "
                             f"target (within 0.3 of the teacher and ahead of (a)) {met}.")
    return lines + ["- Why, and what was tried to close the gap: README.md, section Results."] if lines else []


def spread_of(runs: list[dict], key: str, scale: float, unit: str) -> str:
    """One value, or the range when the seeds' models differ (a global threshold can land differently)."""
    values = sorted({round(r[key] / scale, 2) for r in runs})
    return f"{values[0]:.2f}{unit}" if len(values) == 1 else f"{values[0]:.2f}–{values[-1]:.2f}{unit}"


def plot(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for key, (label, _) in ROWS.items():
        points = [(runs[0]["macs"] / 1e6, statistics.fmean(r["final"] for r in runs))
                  for name, runs in results.items() if name.startswith(f"{key}@")]
        if points:
            ax.plot(*zip(*sorted(points)), marker="o", label=f"({key}) {label}")
    teacher = next(iter(results.values()))[0]["teacher"]
    ax.axhline(teacher, color="grey", linestyle="--", label=f"teacher {teacher:.2f}%")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    ax.set_title("Same MACs budget, same training epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    keep_freed_memory()  # as the compress command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a slice of the data, one seed, one budget")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.33], help="fractions of MACs kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "budget")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "fmnist-budget.md")
    parser.add_argument("--resume", action="store_true", help="reuse the rows an interrupted run finished")
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.seeds = args.budgets[:1], args.seeds[:1]
    results: dict[str, list[dict]] = {}
    for budget in args.budgets:
        for key in args.rows:
            for seed in args.seeds:
                out = args.out / f"{key}-{budget}-s{seed}"
                done = out / "result.json"
                if args.resume and done.exists():
                    row = json.loads(done.read_text())
                else:
                    row = run_row(ROOT / "recipes" / "budget" / ROWS[key][1], budget, seed, out, args.quick)
                    done.write_text(json.dumps(row))
                results.setdefault(f"{key}@{budget}", []).append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    png = args.doc.with_suffix(".png")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    command = "python examples/benchmarks/fmnist_budget.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Fashion-MNIST: same MACs budget, same epochs", "",
             f"Machine: {device_name(torch.device('cpu'))}, {platform.system()}, {torch.get_num_threads()} CPU "
             f"thread(s) per run for training and timing; "
             f"date {datetime.date.today()}; command `{command.strip()}`; seeds {args.seeds}. Each row is cached "
             f"in `{args.out.name}/<row>/result.json` and `--resume` reuses it, so seeds can run side by side "
             "(`--seeds 0` and `--seeds 1` in two processes, each with OMP_NUM_THREADS=1).", "",
             *table(results, args.budgets, args.seeds), "", *verdict(results, args.budgets), "",
             f"![accuracy vs MACs]({png.name})", ""]
    args.doc.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
