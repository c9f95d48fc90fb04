"""Input from a stranger or a careless hand: a run folder never runs code it names, nothing outside
the run folder is written or deleted, and every mistake is one `error:` line, exit code 2, with
every file already there left byte for byte as it was."""

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from tests.conftest import write_recipe

runner = CliRunner()
EVIL = '''
from pathlib import Path
Path(__file__).with_name("pwned").write_text("code from a run folder ran")
from compressor.models.zoo import ZOO

def make(**kwargs):
    return ZOO.get("resnet20")(**kwargs)
'''


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error(result, *expected: str) -> str:
    """The result is a refusal: exit code 2, one `error:` line (last), no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.rstrip().splitlines()[-1] == errors[0], result.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path, synthetic_recipe) -> tuple[Path, Path]:
    doc = {**synthetic_recipe, "passes": [{"type": "evaluate"}, {"type": "prune", "ratio": 0.5}]}
    recipe = write_recipe(tmp_path / "r.yaml", doc)
    result = invoke("run", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    return recipe, tmp_path / "run"


def name_code(run: Path, source: str) -> None:
    """What a stranger's run folder could hold: its checkpoints and recipe name code to import."""
    for state in run.glob("*/state.json"):
        doc = json.loads(state.read_text())
        doc["model"]["source"] = source
        state.write_text(json.dumps(doc))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["source"] = source
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def test_a_run_folder_naming_python_code_is_refused_without_trust_code(tmp_path, finished_run, monkeypatch):
    recipe, run = finished_run
    (tmp_path / "evil_factory.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    name_code(run, "python:evil_factory:make")
    before = snapshot(run)
    for args in (("inspect", run), ("bench", run, "--batch", "1", "--backend", "torch"), ("export", run),
                 ("run", recipe, "--out", run, "--resume")):
        one_error(invoke(*args), "imports and runs code", "--trust-code")
        assert not (tmp_path / "pwned").exists(), args
        assert snapshot(run) == before, args
    trusted = invoke("inspect", run, "--trust-code")
    assert trusted.exit_code == 0, trusted.output
    assert (tmp_path / "pwned").exists()  # the flag is what lets it run


def test_fresh_deletes_only_a_compress_run(tmp_path, synthetic_recipe, finished_run):
    recipe, run = finished_run
    theirs = tmp_path / "theirs"
    (theirs / "00-chapter").mkdir(parents=True)
    (theirs / "thesis.txt").write_text("years of work")
    before = snapshot(theirs)
    one_error(invoke("run", recipe, "--out", theirs, "--fresh"), "not one", ".compress-run")
    assert snapshot(theirs) == before
    (run / "notes.txt").write_text("mine")
    one_error(invoke("run", recipe, "--out", run, "--fresh"), "notes.txt")
    assert (run / "notes.txt").read_text() == "mine"
    (run / "notes.txt").unlink()
    assert invoke("run", recipe, "--out", run, "--fresh").exit_code == 0


@pytest.mark.parametrize("name", ["/abs/path", "../x", "a/b", ".."])
def test_a_recipe_name_is_a_plain_name(tmp_path, synthetic_recipe, name):
    path = write_recipe(tmp_path / "r.yaml", {**synthetic_recipe, "name": name})
    one_error(invoke("validate", path), "name: must be a plain name")


def test_output_file_names_stay_inside_the_run_folder(tmp_path, synthetic_recipe):
    doc = {**synthetic_recipe, "passes": [{"type": "export_onnx", "filename": "../../elsewhere.onnx"}]}
    one_error(invoke("validate", write_recipe(tmp_path / "r.yaml", doc)), "passes[0].filename: must be a plain name")


def test_an_alias_bomb_gives_a_short_line(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines + ["name: *g"]) + "\n")
    assert path.stat().st_size < 600
    line = one_error(invoke("validate", path), "anchors and aliases expand")
    assert len(line) < 300


def test_a_long_value_is_quoted_short(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", {**synthetic_recipe, "seed": "x" * 100_000})
    assert len(one_error(invoke("validate", path), "seed: input should be a valid integer")) < 300


@pytest.mark.parametrize("key", ["[/b]", "[red]", "[bold]x[/]"])
def test_user_text_is_not_console_markup(tmp_path, synthetic_recipe, key):
    path = write_recipe(tmp_path / "r.yaml", {**synthetic_recipe, key: 1})
    one_error(invoke("validate", path), f"unknown key '{key}'")


@pytest.mark.parametrize("case, expected", [
    ("not utf-8", "not UTF-8"), ("a folder", "is a folder"), ("too large", "a recipe is a small YAML file"),
    ("duplicate key", "key 'seed' is given twice"), ("infinite", "data.batch_size: input should be a finite number"),
    ("not a number", "passes[1].ratio: input should be a finite number"),
])
def test_recipe_file_problems(tmp_path, synthetic_recipe, case, expected):
    path = tmp_path / "r.yaml"
    text = yaml.safe_dump(synthetic_recipe, sort_keys=False)
    if case == "not utf-8":
        path.write_bytes(text.encode() + b"# \xff\xfe\n")
    elif case == "a folder":
        path.mkdir()
    elif case == "too large":
        path.write_text(text + "#" * (2 << 20) + "\n")
    elif case == "duplicate key":
        path.write_text(text + "seed: 1\n")
    elif case == "infinite":
        path.write_text(text.replace("batch_size: 32", "batch_size: .inf"))
    else:
        path.write_text(text.replace("ratio: 0.5", "ratio: .nan"))
    one_error(invoke("validate", path), expected)


def test_model_problems(tmp_path, synthetic_recipe):
    doc = {**synthetic_recipe, "model": {**synthetic_recipe["model"], "kwargs": {"widht": 4}}}
    one_error(invoke("run", write_recipe(tmp_path / "a.yaml", doc), "--out", tmp_path / "a"),
              "does not take these arguments", "widht")
    doc = {**synthetic_recipe, "model": {**synthetic_recipe["model"], "kwargs": {"in_channels": 3, "width": 8}}}
    one_error(invoke("run", write_recipe(tmp_path / "b.yaml", doc), "--out", tmp_path / "b"),
              "running the model on the data's input (1, 16, 16)", "data.channels")


def test_out_is_an_existing_file(tmp_path, synthetic_recipe):
    (tmp_path / "taken").write_text("keep")
    one_error(invoke("run", write_recipe(tmp_path / "r.yaml", synthetic_recipe), "--out", tmp_path / "taken"),
              "is a file")
    assert (tmp_path / "taken").read_text() == "keep"


def test_commands_on_broken_run_folders_and_files(tmp_path, finished_run):
    _, run = finished_run
    state = run / "01-prune" / "state.json"
    doc = json.loads(state.read_text())
    broken = {"not json": "{", "a path out of the folder": {**doc, "teacher_pass": "../../etc"},
              "a huge input": {**doc, "input_shape": [100000, 100000, 100000]},
              "no records": {k: v for k, v in doc.items() if k != "records"}}
    for case, content in broken.items():
        state.write_text(content if isinstance(content, str) else json.dumps(content))
        before = snapshot(run)
        for args in (("inspect", run), ("bench", run, "--batch", "1", "--backend", "torch"), ("export", run)):
            one_error(invoke(*args), "state.json")
            assert snapshot(run) == before, (case, args)
    report = run / "report.json"
    report.write_text(json.dumps({"recipe": "x", "passes": [{"index": "nope"}]}))
    one_error(invoke("report", run), "report.json is not a report")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 8)
    one_error(invoke("bench", junk), "cannot read ONNX model")
    one_error(invoke("inspect", junk), "cannot read ONNX model")
    one_error(invoke("inspect", "zoo:resnet20", "--input-shape", "-1,28,28"), "--input-shape")


@pytest.mark.parametrize("damage", ["changed bytes", "truncated weights", "vanished state.json"])
def test_resume_verifies_what_it_resumes_from(finished_run, damage):
    recipe, run = finished_run
    if damage == "changed bytes":
        weights = run / "01-prune" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        expected = "changed after it was written"
    elif damage == "truncated weights":
        weights = run / "01-prune" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        expected = "changed after it was written"
    else:
        (run / "00-evaluate" / "state.json").unlink()
        expected = "00-evaluate has no finished checkpoint"
    before = snapshot(run)
    one_error(invoke("run", recipe, "--out", run, "--resume"), expected, "--fresh")
    assert snapshot(run) == before


def test_the_same_recipe_and_seed_write_the_same_weights(tmp_path, synthetic_recipe):
    doc = {**synthetic_recipe, "passes": [{"type": "evaluate"}]}
    recipe = write_recipe(tmp_path / "r.yaml", doc)
    for out in ("a", "b"):
        assert invoke("run", recipe, "--out", tmp_path / out).exit_code == 0
    a, b = ((tmp_path / out / "00-evaluate" / "model.safetensors").read_bytes() for out in ("a", "b"))
    assert a == b
