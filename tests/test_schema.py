"""Tagged unions in the recipe schema: each variant takes its own keys, an error names the key as
the user wrote it, and `compress passes` lists every variant."""

import pytest
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import CompressorError
from compressor.passes.sparse_train import NMSparsityParams, ScaleSparsityParams
from compressor.recipe import dump_recipe, parse_recipe


def prune_with(synthetic_recipe, **keys) -> dict:
    synthetic_recipe["passes"][1] = {"type": "prune", **keys}
    return synthetic_recipe


@pytest.mark.parametrize("keys, message", [
    ({"target": {"macs": 0.5, "tolerance": 0.1}},
     r"passes\[1\]\.target: macs target takes no tolerance: tolerance only applies to speedup and latency_ms targets"),
    ({"target": {"macz": 0.5}}, r"passes\[1\]\.target: give exactly one of macs, params, speedup or latency_ms"),
    ({"target": {"speedup": 2.0, "iterz": 3}}, r"passes\[1\]\.target: unknown key 'iterz' \(did you mean 'iters'\?\)"),
    ({"target": {"latency_ms": -1}}, r"passes\[1\]\.target\.latency_ms: input should be greater than 0"),
    ({"steps": 2, "finetune": {"lrr": 0.1}}, r"passes\[1\]\.finetune: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"finetune_epochs": 1}, r"passes\[1\]: unknown key 'finetune_epochs'"),
])
def test_errors_inside_variants_name_the_key_where_the_user_wrote_it(synthetic_recipe, keys, message):
    with pytest.raises(CompressorError, match=message):
        parse_recipe(prune_with(synthetic_recipe, **keys), "r.yaml")


def test_each_variant_gets_its_own_defaults_and_survives_a_dump(synthetic_recipe):
    synthetic_recipe["passes"] = [{"type": "sparse_train"}, {"type": "sparse_train", "method": "nm"},
                                  {"type": "prune", "target": {"speedup": 1.5}, "steps": 2, "finetune": {"epochs": 0}}]
    recipe = parse_recipe(synthetic_recipe)
    slim, nm, prune = recipe.passes
    assert isinstance(slim, ScaleSparsityParams) and slim.strength == 1e-4 and slim.method == "bn_l1"
    assert isinstance(nm, NMSparsityParams) and nm.strength == 2e-4 and nm.pattern == "2:4"
    assert prune.target.speedup == 1.5 and prune.target.backend == "onnxruntime" and prune.finetune.epochs == 0
    again = parse_recipe(yaml.safe_load(dump_recipe(recipe)))
    assert [type(p) for p in again.passes] == [type(p) for p in recipe.passes]
    assert again.fingerprint(2) == recipe.fingerprint(2)


def test_passes_lists_every_variant_with_only_its_own_keys():
    result = CliRunner().invoke(app, ["passes", "sparse_train"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    scales, nm = result.output.split("sparse_train (method nm)")
    assert "sparse_train (method bn_l1 or group_norm)" in scales
    assert "report_below" in scales and "pattern" not in scales
    assert "pattern" in nm and "report_below" not in nm
    prune = CliRunner().invoke(app, ["passes", "prune"], env={"COLUMNS": "200"}).output
    for title in ("prune.target (macs target)", "prune.target (latency_ms target)", "prune.finetune"):
        assert title in prune, prune
