import pytest
import torch
from safetensors.torch import save_file

from compressor.errors import CompressorError
from compressor.recipe import apply_override, load_recipe, parse_recipe
from tests.conftest import write_recipe


def test_valid_recipe_gets_typed_pass_params(synthetic_recipe):
    recipe = parse_recipe(synthetic_recipe)
    assert [p.type for p in recipe.passes] == ["evaluate", "prune", "train", "evaluate"]
    assert recipe.passes[1].ratio == 0.5 and recipe.passes[1].importance == "magnitude"
    assert recipe.passes[2].lr == 0.05  # a default filled in from TrainParams


def test_set_overrides_one_key(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    recipe = load_recipe(path, ["passes.1.ratio=0.3", "data.batch_size=16", "passes.1.global=true"])
    assert recipe.passes[1].ratio == 0.3 and recipe.passes[1].global_ is True
    assert recipe.data.batch_size == 16


def test_fingerprint_changes_only_from_the_changed_pass_on(synthetic_recipe):
    a = parse_recipe(synthetic_recipe)
    apply_override(synthetic_recipe, "passes.2.epochs=3")
    b = parse_recipe(synthetic_recipe)
    assert a.fingerprint(1) == b.fingerprint(1)
    assert a.fingerprint(2) != b.fingerprint(2)


@pytest.mark.parametrize("assignment, message", [
    ("passes.9.ratio=1", "'9' is not an index of passes, which has 4 entries"),
    ("model.nope.x=1", "model has no key 'nope'"),
    ("seed.x=1", "seed is a value, not a section"),
    ("noequals", "must look like key.path=value"),
])
def test_bad_set_paths(synthetic_recipe, assignment, message):
    with pytest.raises(CompressorError, match=message):
        apply_override(synthetic_recipe, assignment)


def test_pass_params_are_validated_against_their_own_model(synthetic_recipe):
    synthetic_recipe["passes"][1]["ratio"] = 1.5
    with pytest.raises(CompressorError, match=r"passes\[1\]\.ratio: input should be less than 1"):
        parse_recipe(synthetic_recipe, "r.yaml")


def test_dumped_recipe_parses_again(tmp_path, synthetic_recipe):
    from compressor.recipe import dump_recipe

    synthetic_recipe["passes"][1].update({"global": True, "target": {"macs": 0.5}})
    del synthetic_recipe["passes"][1]["ratio"]
    recipe = parse_recipe(synthetic_recipe)
    path = tmp_path / "again.yaml"
    path.write_text(dump_recipe(recipe))
    again = load_recipe(path)
    assert again.fingerprint(3) == recipe.fingerprint(3)
    assert again.passes[1].global_ is True


def test_checkpoints_of_the_model_and_of_a_teacher_resolve_next_to_the_recipe(tmp_path, synthetic_recipe):
    folder = tmp_path / "recipes"
    folder.mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "w.safetensors"))  # only the path and the header are read here
    model = {**synthetic_recipe["model"], "checkpoint": "w.safetensors"}
    doc = {**synthetic_recipe, "model": model, "passes": [{"type": "distill", "teacher": model}]}
    recipe = load_recipe(write_recipe(folder / "r.yaml", doc))
    assert recipe.model.checkpoint == recipe.passes[0].teacher.checkpoint == str(folder / "w.safetensors")


def test_committed_recipe_reference_is_up_to_date():
    """docs/recipes.md is generated: after a schema change, run `compress passes --markdown > docs/recipes.md`."""
    from compressor.reference import recipe_markdown
    from tests.conftest import ROOT

    assert (ROOT / "docs" / "recipes.md").read_text() == recipe_markdown()


@pytest.mark.parametrize("width", [50, 200])
def test_passes_wraps_every_description_and_choice_at_any_width(monkeypatch, width):
    from typer.testing import CliRunner

    from compressor.cli import app
    from compressor.console import console
    from compressor.passes import PASSES
    from compressor.reference import key_tables, summary

    monkeypatch.setattr(console, "width", width)
    output = CliRunner().invoke(app, ["passes", "prune"]).output
    assert " ".join(summary(PASSES.get("prune")).split()) in " ".join(output.split())
    cells = [cell for table in key_tables("prune", PASSES.get("prune").Params) for row in table.rows for cell in row]
    assert output.count("…") == sum(cell.count("…") for cell in cells)  # rich adds one where it cuts a cell short
    assert "fpgm" in output.replace("│", "").replace(" ", "").replace("\n", "")


@pytest.mark.parametrize("source, size", [("torchvision:resnet18", 224), ("zoo:resnet20", None)])
def test_synthetic_data_defaults_to_the_models_native_size(synthetic_recipe, source, size):
    doc = {**synthetic_recipe, "model": {"source": source}, "data": {"dataset": "synthetic"}}
    assert parse_recipe(doc).data.image_size == size
    doc["data"]["image_size"] = 40  # a size given is kept
    assert parse_recipe(doc).data.image_size == 40


def test_a_timm_model_takes_its_pretrained_input_size(synthetic_recipe):
    """On synthetic data, and in `compress inspect` (which measures a built model at its native_input_shape)."""
    pytest.importorskip("timm")
    from compressor.models import build_model

    doc = {**synthetic_recipe, "model": {"source": "timm:test_vit"}, "data": {"dataset": "synthetic"}}
    assert parse_recipe(doc).data.image_size == 160
    assert build_model("timm:test_vit").native_input_shape == (3, 160, 160)
