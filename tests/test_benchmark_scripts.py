"""The scripts behind the published tables, in their smoke-test modes: they run our real
pipeline end to end and write the Markdown they promise. budget.py's Fashion-MNIST suite runs the
same code as its detection suite below, on six recipes: its smoke run (`budget.py --quick`, about
4 min) stays out of CI's time."""

import importlib.util

import pytest

from tests.conftest import ROOT, needs_fmnist

DETECT_TEACHER = ROOT / "recipes" / "fmnist-detect-yolov8-pico.safetensors"
needs_detect_teacher = pytest.mark.skipif(not DETECT_TEACHER.is_file(), reason="detection teacher weights missing: "
                                          "run recipes/fmnist-detect-teacher.yaml")


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_fmnist
@needs_detect_teacher
@pytest.mark.slow  # ~10 s: both detection flows on 16 generated 64-px canvases, no export or timing
def test_detect_budget_quick_writes_a_row_per_flow_with_map(tmp_path):
    pytest.importorskip("ultralytics")
    budget = script("budget")
    doc = tmp_path / "detect.md"
    assert budget.main(["--suite", "detect", "--quick", "--out", str(tmp_path / "runs"), "--doc", str(doc)]) == 0
    text = doc.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ≤50% MACs |")]
    assert [row[1][:3] for row in rows] == ["(a)", "(b)"]
    for row in rows:  # mAP50, mAP50-95 and mAP50 after pruning are numbers in 0-100
        assert all(0 <= float(cell.split(" ± ")[0]) <= 100 for cell in row[2:5])
    assert "≤50% MACs: (b)" in text and "(b) − (a) =" in text  # the verdict line
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
