"""torchrun with 2 CPU processes (gloo): every rank ends identical, rank 0 writes one run folder."""

import json
import subprocess
import sys

import pytest

from tests.conftest import write_recipe


def ddp_recipe(doc: dict) -> dict:
    doc["data"]["train_samples"] = 512
    doc["passes"] = [{"type": "train", "epochs": 1}, {"type": "prune", "ratio": 0.4}, {"type": "train", "epochs": 1},
                     {"type": "evaluate"}]
    return doc


def torchrun(recipe, out, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "compressor", "run", str(recipe), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_cpu_ranks_match_and_write_one_run(tmp_path, synthetic_recipe):
    recipe = write_recipe(tmp_path / "r.yaml", ddp_recipe(synthetic_recipe))
    done = torchrun(recipe, tmp_path / "ddp", 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = json.loads((tmp_path / "ddp" / "report.json").read_text())["passes"]
    trained = [r for r in records if r["type"] == "train"]
    # fit() all-gathers a hash of every rank's weights and fails the run if they differ.
    assert all(r["metrics"]["world_size"] == 2 for r in trained)
    assert sorted(p.name for p in (tmp_path / "ddp").glob("0*")) == ["00-train", "01-prune", "02-train", "03-evaluate"]
    assert not list((tmp_path / "ddp").glob(".*partial"))

    single = subprocess.run([sys.executable, "-m", "compressor", "run", str(recipe), "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())["passes"]
    assert [r["macs"] for r in one] == [r["macs"] for r in records]
