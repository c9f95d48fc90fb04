"""torchrun with 2 CPU processes (gloo): every rank ends identical, rank 0 writes one run folder."""

import json
import subprocess
import sys

import pytest

from tests.conftest import write_recipe


def ddp_recipe(doc: dict) -> dict:
    doc["data"]["train_samples"] = 512
    doc["passes"] = [{"type": "sparse_train", "method": "bn_l1", "epochs": 1},
                     # per-layer ratios: the structure must not depend on which ranks trained the weights
                     {"type": "prune", "importance": "bn_scale", "ratio": 0.4},
                     {"type": "distill", "epochs": 1, "features": {"loss": "cwd", "layers": "auto"}},
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
    trained = [r for r in records if r["type"] in ("sparse_train", "distill")]
    # fit() all-gathers a hash of every rank's weights and fails the run if they differ.
    assert len(trained) == 2 and all(r["metrics"]["world_size"] == 2 for r in trained)
    assert sorted(p.name for p in (tmp_path / "ddp").glob("0*")) == ["00-sparse_train", "01-prune", "02-distill", "03-evaluate"]
    assert not list((tmp_path / "ddp").glob(".*partial"))

    single = subprocess.run([sys.executable, "-m", "compressor", "run", str(recipe), "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())["passes"]
    assert [r["macs"] for r in one] == [r["macs"] for r in records]
