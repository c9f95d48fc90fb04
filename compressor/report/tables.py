"""The report's tables as plain rows of text, so the console and report.md show the same numbers."""

from dataclasses import dataclass

from compressor.measure import human
from compressor.runtime.latency import unsteady
from compressor.tasks import QUALITY


@dataclass
class TableData:
    title: str
    columns: list[str]
    rows: list[list[str]]
    right: set[str]  # columns aligned right (numbers)
    note: str = ""  # how to read the table
    detail: tuple[str, ...] = ()  # columns report.md shows but the console leaves out, to fit a terminal


def benchmark_metrics(records: list[dict]) -> dict | None:
    """The last benchmark's metrics: the one that timed the run as it ended."""
    return next((r["metrics"] for r in reversed(records) if r["metrics"].get("latency") is not None), None)


def notes(records: list[dict]) -> list[str]:
    """What a pass says about itself that no column shows (e.g. '2:4 sparse: 18 layers, …'), and
    what it could not do here (e.g. 'skipped: no TensorRT here')."""
    out = []
    for r in records:
        skipped = r["metrics"].get("skipped") or []
        out += [f"{r['dir']}: {r['metrics']['note']}"] if r["metrics"].get("note") else []
        out += [f"{r['dir']}: skipped: {text}" for text in ([skipped] if isinstance(skipped, str) else skipped)]
    return out


def _percent(value, split: str | None = None) -> str:
    """A quality number, with the split it was measured on where the pass says ('94.60% (val)')."""
    if value is None:
        return ""
    return f"{value:.2f}%" + (f" ({split})" if split else "")


def quality_label(key: str, caveat: str | None) -> str:
    """A quality column's name, marked where the report's accuracy means nothing (see caveat)."""
    return QUALITY[key] + (" (meaningless)" if caveat else "")


def quality_keys(rows: list[dict]) -> list[str]:
    """The quality metrics (tasks.QUALITY) any of `rows` holds, top-1 where none does."""
    found = [k for k in QUALITY if any(row.get(k) is not None for row in rows)]
    return found or ["top1"]


def passes_table(records: list[dict], caveat: str | None = None) -> TableData:
    keys = quality_keys([r["metrics"] for r in records])
    labels = [quality_label(k, caveat) for k in keys]
    rows = [[str(r["index"]) if r["index"] >= 0 else "", r["type"], human(r["params"]), human(r["macs"]),
             *(_percent(r["metrics"].get(k), r["metrics"].get("split")) for k in keys),
             f"{r['seconds']:.1f}s" if r["index"] >= 0 else ""] for r in records]
    return TableData("passes", ["#", "pass", "params", "MACs", *labels, "time"], rows,
                     {"#", "params", "MACs", *labels, "time"})


def _stage_split(records: list[dict], stage: dict, key: str, first: bool) -> str | None:
    """The split of the record a stage's quality was quoted from (benchmark.Stage.summary's choice)."""
    measured = [r["metrics"] for r in records if r["dir"] in stage["passes"] and key in r["metrics"]]
    return (measured[0] if first else measured[-1]).get("split") if measured else None


def stages_table(bench: dict, records: list[dict], caveat: str | None = None) -> TableData:
    base = bench["stages"][0]
    keys = quality_keys(bench["stages"])
    labels = [quality_label(k, caveat) for k in keys]
    rows = [[s["name"], ", ".join(s["passes"]) or "—", human(s["params"]),
             f"{human(s['macs'])} ({base['macs'] / s['macs']:.2f}× fewer)" if s is not base else human(s["macs"]),
             *(_percent(s.get(k), _stage_split(records, s, k, s is base)) for k in keys)] for s in bench["stages"]]
    return TableData("stages", ["stage", "passes", "params", "MACs", *labels], rows, {"params", "MACs", *labels},
                     f"Consecutive passes that keep the architecture form one stage; its {' and '.join(labels)} "
                     f"{'are the last ones' if len(labels) > 1 else 'is the last one'} measured in it (the first, "
                     "for the unmodified model).")


def latency_points(bench: dict) -> list[dict]:
    """Every stage's timing on every backend and batch, the reference first in each group: the
    rows of the benchmark compare stages with the reference, which they each carry."""
    reference = bench["stages"][0]["name"]
    points, seen = [], set()
    for r in bench["latency"]:
        group = {"backend": r["backend"], "device": r["device"], "batch_size": r["batch_size"]}
        if (r["backend"], r["batch_size"]) not in seen:
            seen.add((r["backend"], r["batch_size"]))
            points.append({**group, "stage": reference, **r["baseline"], "speedup": 1.0, "speedup_iqr": None,
                           "p50_ratio": 1.0})
        if r["stage"] != reference:
            points.append({**group, "stage": r["stage"], **r["compressed"], "speedup": r["speedup"],
                           "speedup_iqr": r["speedup_iqr"], "p50_ratio": r["baseline_ms"] / r["compressed_ms"]})
    return points


def _speedup_cells(point: dict) -> list[str]:
    """The speedup (marked when the rounds disagreed) and the rounds' quartiles."""
    if point["speedup_iqr"] is None:
        return [f"{point['speedup']:.2f}×", ""]
    q1, q3 = point["speedup_iqr"]
    return [f"{point['speedup']:.2f}×{' unsteady' if unsteady(point) else ''}", f"{q1:.2f}–{q3:.2f}"]


def latency_table(bench: dict) -> TableData:
    reference = bench["stages"][0]
    macs = {s["name"]: s["macs"] for s in bench["stages"]}  # None for a bare ONNX file or engine
    rows = []
    for p in latency_points(bench):
        known = p["speedup_iqr"] is not None and reference["macs"] and macs[p["stage"]]
        fraction = f"{p['speedup'] / (reference['macs'] / macs[p['stage']]):.0%}" if known else ""
        rows.append([p["backend"], str(p["batch_size"]), p["stage"], f"{p['p50_ms']:.3f}", f"{p['p90_ms']:.3f}",
                     f"{p['mean_ms']:.3f} ± {p['std_ms']:.3f}", f"{p['throughput']:.0f}", *_speedup_cells(p),
                     f"{p['p50_ratio']:.2f}×", fraction])
    where = "; ".join(sorted({f"{r['backend']} on {r['device']}" for r in bench["latency"]}))
    name = reference["name"]
    note = (f"{where}; CPU threads: {bench['threads']}; GPU backends in {bench['precision']}. The stages of a backend "
            "and batch were timed interleaved in one process, in rounds of a few calls each. "
            f"speedup = {name} time ÷ stage time: the median over rounds of the ratio of each round's fastest "
            "calls, which holds on a busy machine; 'unsteady' where the rounds' quartiles differ by more than 25% "
            "(time again; threads: 1 helps on a shared machine). "
            f"p50 ratio = {name} p50 ÷ stage p50, which a busy spell can move. "
            f"of MACs ratio = speedup ÷ ({name} MACs ÷ stage MACs): 100% when latency falls as fast as MACs.")
    return TableData("latency", ["backend", "batch", "stage", "p50 ms", "p90 ms", "mean ± std", "img/s", "speedup",
                                 "rounds' quartiles", "p50 ratio", "of MACs ratio"], rows,
                     {"batch", "p50 ms", "p90 ms", "mean ± std", "img/s", "speedup", "rounds' quartiles", "p50 ratio",
                      "of MACs ratio"}, note, detail=("mean ± std", "img/s", "rounds' quartiles"))


def single_latency_table(bench: dict, input_shape) -> TableData:
    """One model alone, as trtexec's performance summary puts it: throughput and the spread of latency."""
    rows = [[p["backend"], str(p["batch_size"]), f"{p['throughput']:.0f}",
             *(f"{p[k]:.3f}" for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms")), str(p["iters"])]
            for p in latency_points(bench)]
    where = "; ".join(sorted({f"{r['backend']} on {r['device']}" for r in bench["latency"]}))
    numbers = ["img/s", "min ms", "mean ms", "median ms", "p90 ms", "p99 ms", "runs"]
    return TableData(f"latency of {bench['stages'][0]['name']}, input batch×{'×'.join(map(str, input_shape))}",
                     ["backend", "batch", *numbers], rows, {"batch", *numbers},
                     f"{where}; CPU threads: {bench['threads']}; GPU backends in {bench['precision']}. img/s = batch ÷ "
                     "median latency; runs: timed after a warm-up.")


def latency_search_tables(records: list[dict]) -> list[TableData]:
    """The trials of each prune pass that aimed at a latency: how the device answered each ratio."""
    out = []
    for r in records:
        trials = r["metrics"].get("latency_trials")
        if not trials:
            continue
        counts: dict[int, int] = {}
        rows = []
        for t in trials:
            counts[t["step"]] = counts.get(t["step"], 0) + 1
            rows.append([str(t["step"]), str(counts[t["step"]]), f"{t['ratio']:.3f}", f"{t['macs_kept']:.3f}",
                         f"{t['latency_ms']:.3f}", f"{t['reference_ms']:.3f}", f"{t['speedup']:.2f}×",
                         "✓" if t["met"] else ""])
        out.append(TableData(f"latency search in {r['dir']}", ["step", "trial", "ratio", "MACs kept", "p50 ms",
                                                               "reference ms", "speedup", "met"], rows,
                             {"step", "trial", "ratio", "MACs kept", "p50 ms", "reference ms", "speedup"},
                             "Each trial pruned a copy at `ratio` and timed it interleaved with the model the pass "
                             "started from; the pass kept the least-pruned copy that met the target."))
    return out


def headline(records: list[dict], caveat: str | None = None) -> list[str]:
    """The few numbers a user asks for: accuracy before/after (marked where `caveat` says it means
    nothing), MACs ratio, measured speedup."""
    base, last = records[0], records[-1]
    lines = [f"MACs {human(base['macs'])} → {human(last['macs'])} ({base['macs'] / last['macs']:.2f}× fewer), "
             f"params {human(base['params'])} → {human(last['params'])} ({base['params'] / last['params']:.2f}× fewer)"]
    for key in QUALITY:
        evaluated = [r["metrics"] for r in records if key in r["metrics"]]
        if len(evaluated) >= 2:
            first, final = evaluated[0], evaluated[-1]
            splits = " → ".join(dict.fromkeys(m["split"] for m in (first, final) if m.get("split")))
            lines.append(f"{quality_label(key, caveat)} {first[key]:.2f}% → {final[key]:.2f}% "
                         f"({final[key] - first[key]:+.2f} points{f', on {splits}' if splits else ''})")
    bench = benchmark_metrics(records)
    if bench and len(bench["stages"]) > 1:
        first, final = bench["stages"][0]["name"], bench["stages"][-1]["name"]
        for r in bench["latency"]:
            if r["stage"] == final:
                lines.append(f"{r['backend']} batch {r['batch_size']}: {r['speedup']:.2f}× faster than {first} "
                             f"(p50 {r['baseline_ms']:.3f} → {r['compressed_ms']:.3f} ms, "
                             f"{r['baseline_ms'] / r['compressed_ms']:.2f}× as a ratio of p50s)"
                             + (" — unsteady, the machine was busy: time again" if unsteady(r) else ""))
    return lines + notes(records)
