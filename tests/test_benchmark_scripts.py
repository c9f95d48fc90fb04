"""The scripts behind the published tables, in their smoke-test modes: they run our real
pipeline end to end and write the Markdown they promise."""

import importlib.util

import pytest

from tests.conftest import ROOT, needs_fmnist, needs_teacher


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_fmnist
@needs_teacher
@pytest.mark.slow  # ~1 min: six recipes on a slice of Fashion-MNIST
def test_fmnist_budget_quick_writes_a_row_per_flow(tmp_path):
    budget = script("fmnist_budget")
    doc = tmp_path / "budget.md"
    assert budget.main(["--quick", "--out", str(tmp_path / "runs"), "--doc", str(doc)]) == 0
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| ≤50% MACs |")]
    assert [row.split(" | ")[1][:3] for row in rows] == [f"({key})" for key in budget.ROWS]
    assert doc.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.slow  # ~30 s: one small model at two budgets
def test_zoo_speedup_smoke_measures_both_budgets(tmp_path):
    zoo = script("zoo_speedup")
    doc = tmp_path / "zoo.md"
    assert zoo.main(["--models", "resnet18", "--size", "32", "--iters", "3", "--threads", "1",
                     "--out", str(tmp_path / "runs"), "--doc", str(doc)]) == 0
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| resnet18 |")]
    assert [row.split(" | ")[1] for row in rows] == ["≤50%", "≤33%"]
    assert all(row.count("×") >= 3 for row in rows)  # MACs ratio and both speedups, measured
