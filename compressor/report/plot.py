"""report.png: accuracy against latency across the stages, and latency bars per batch size."""

import io
import textwrap
from pathlib import Path

from compressor.files import atomic_write
from compressor.report.tables import latency_points, quality_keys, quality_label
from compressor.tasks import QUALITY
from compressor.runtime.latency import unsteady


def _wide(values) -> bool:
    """Values spanning more than 10x read better on a log axis."""
    values = [v for v in values if v > 0]
    return bool(values) and max(values) > 10 * min(values)


def _accuracy_vs_latency(ax, bench: dict, batch: int, caveat: str | None) -> None:
    key = quality_keys(bench["stages"])[-1]
    quality = {s["name"]: s.get(key) for s in bench["stages"]}
    backends = list(dict.fromkeys(r["backend"] for r in bench["latency"]))
    latencies = []
    for backend in backends:
        points = [(p["p50_ms"], quality[p["stage"]], p["stage"]) for p in latency_points(bench)
                  if p["backend"] == backend and p["batch_size"] == batch and quality.get(p["stage"]) is not None]
        if not points:
            continue
        xs, ys, _ = zip(*points)
        latencies += xs
        ax.plot(xs, ys, marker="o", label=backend)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if not latencies:
        ax.text(0.5, 0.5, f"no stage has a measured {QUALITY[key]}\n(add an evaluate pass after each change)",
                ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
        ax.margins(x=0.2, y=0.25)
        if _wide(latencies):
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel(f"p50 latency at batch {batch} (ms)")
    ax.set_ylabel(f"{quality_label(key, caveat)} (%)")
    title = "accuracy vs latency across stages (up-left is better)"
    if caveat:
        title += "\n" + textwrap.fill(f"accuracy meaningless: {caveat}", 70)
    ax.set_title(title, fontsize=10, color="firebrick" if caveat else "black")
    ax.grid(alpha=0.3, which="both")


def _bar_label(point: dict) -> str:
    """The bar's own height and the reference's height over it: what a reader checks against the
    bars. The table's speedup, a median over paired rounds, can differ from that ratio of medians,
    and on a bar it looked wrong."""
    if point["speedup_iqr"] is None:  # the reference
        return f"{point['p50_ms']:.3g} ms"
    return f"{point['p50_ms']:.3g} ms\n{point['p50_ratio']:.2f}× as fast" + ("\nunsteady" if unsteady(point) else "")


def _latency_bars(ax, bench: dict, backend: str, batch: int) -> None:
    points = {p["stage"]: p for p in latency_points(bench) if p["backend"] == backend and p["batch_size"] == batch}
    stages = [s["name"] for s in bench["stages"] if s["name"] in points]
    colors = [f"C{i}" for i, s in enumerate(bench["stages"]) if s["name"] in points]
    bars = ax.bar(range(len(stages)), [points[s]["p50_ms"] for s in stages], color=colors)
    ax.bar_label(bars, labels=[_bar_label(points[s]) for s in stages], fontsize=7, padding=2)
    ax.set_xticks(range(len(stages)), stages, fontsize=8, rotation=15)
    ax.set_ylabel("p50 latency (ms)", fontsize=8)
    ax.set_title(f"{backend}, batch {batch}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.3)


def figure(title: str, bench: dict, caveat: str | None = None):
    """`caveat`: why the accuracy means nothing (provenance.caveat), said on its plot."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    backends = list(dict.fromkeys(r["backend"] for r in bench["latency"]))
    batches = sorted({r["batch_size"] for r in bench["latency"]})
    width = 6 + 3 * len(batches)
    fig = Figure(figsize=(width, 1 + 2.8 * max(2, len(backends))), layout="constrained")
    grid = fig.add_gridspec(len(backends), 1 + len(batches), width_ratios=[2] + [1] * len(batches))
    _accuracy_vs_latency(fig.add_subplot(grid[:, 0]), bench, batches[0], caveat)
    for i, backend in enumerate(backends):
        for j, batch in enumerate(batches):
            _latency_bars(fig.add_subplot(grid[i, j + 1]), bench, backend, batch)
    devices = "; ".join(sorted({f"{r['backend']} on {r['device']}" for r in bench["latency"]}))
    heading = (f"{title} — {devices}; CPU threads: {bench['threads']}; stages timed interleaved (bar labels: p50, "
               f"and {bench['stages'][0]['name']}'s p50 ÷ that p50)")
    # About 13 characters an inch at 10 points: wrapped to the figure's width, the title is never cut off.
    fig.suptitle(textwrap.fill(heading, int(13 * width)), fontsize=10)
    return fig


def write_png(path: Path, title: str, bench: dict, caveat: str | None = None) -> None:
    buffer = io.BytesIO()
    figure(title, bench, caveat).savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())
