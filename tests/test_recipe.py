import pytest

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
    (folder / "w.safetensors").write_bytes(b"")  # only the path is resolved here
    model = {**synthetic_recipe["model"], "checkpoint": "w.safetensors"}
    doc = {**synthetic_recipe, "model": model, "passes": [{"type": "distill", "teacher": model}]}
    recipe = load_recipe(write_recipe(folder / "r.yaml", doc))
    assert recipe.model.checkpoint == recipe.passes[0].teacher.checkpoint == str(folder / "w.safetensors")
