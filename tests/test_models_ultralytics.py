"""The `ultralytics:` model source: YOLO detectors from a model YAML or a trained .pt, with one
output tensor in eval, the loss in train mode, split-free blocks that compute exactly what
Ultralytics' do, pickles loaded only when the recipe allows it, and cfgs from someone else's
checkpoint built only when they name nothing but layers."""

import copy
import json
import sys

import pytest
import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.models import NO_TRUST, Trust, build_model, load_source, load_weights
from compressor.schema import ModelSpec
from compressor.state import rebuild_model

from compressor.models import ultralytics as yolo  # noqa: E402
from tests.conftest import skip_module_without_ultralytics  # noqa: E402

skip_module_without_ultralytics()  # Ultralytics then comes through compressor.ultra: offline, quiet
from ultralytics.nn.modules import PSA, C2f, C2fCIB, C2PSA, C3k2  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402

PICO = "ultralytics:recipes/models/yolov8-pico.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: these models' convolutions are small, and on a shared 2-core machine two
    OpenMP threads spend their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and scales far from their initial values, so that a wrong channel shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def pico(num_classes: int = 10) -> nn.Module:
    return build_model(PICO, {"num_classes": num_classes})


def test_a_yaml_builds_a_detector_whose_eval_output_is_one_tensor():
    model = pico()
    out = model(torch.randn(2, 3, 64, 64))
    anchors = sum((64 // s) ** 2 for s in (8, 16, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4 + 10, anchors)
    assert 0.85e6 < sum(p.numel() for p in model.parameters()) < 0.95e6  # ≈ 1.8 MB in fp16
    assert model.native_input_shape == (3, 640, 640)
    assert not any(type(m) is C2f for m in model.modules())  # every C2f is split-free


def test_train_mode_gives_the_raw_predictions_the_detection_loss_takes():
    model = pico().train()
    preds = model(torch.randn(2, 3, 64, 64))
    assert set(preds) >= {"boxes", "scores", "feats"}
    batch = {"batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[3.0], [7.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.4, 0.2]])}
    loss, items = v8DetectionLoss(model)(preds, batch)
    assert torch.isfinite(loss).all() and loss.sum() > 0 and len(items) == 3  # box, cls, dfl
    loss.sum().backward()
    assert model.model[0].conv.weight.grad is not None
    loss, _ = model.loss({"img": torch.randn(2, 3, 64, 64), **batch})  # Ultralytics' own way, through model.args
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("block", [
    lambda: C2f(16, 32, n=2, shortcut=True),
    lambda: C3k2(16, 32, n=1, c3k=True),
    lambda: C3k2(16, 32, n=1, c3k=False),
    lambda: C2fCIB(16, 32, n=1, shortcut=True),
    lambda: C2PSA(128, 128, n=1),
    lambda: PSA(128, 128),
], ids=["C2f", "C3k2-c3k", "C3k2", "C2fCIB", "C2PSA", "PSA"])
def test_split_free_blocks_compute_exactly_what_ultralytics_blocks_do(block):
    torch.manual_seed(0)
    original = randomise(block())
    holder = nn.Sequential(copy.deepcopy(original))
    yolo.remove_splits(holder)
    assert type(holder[0]).__name__.endswith("SplitFree")
    x = torch.randn(2, original.cv1.conv.in_channels, 12, 12)
    with torch.no_grad():
        assert (holder(x) - original(x)).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_a_whole_detector_computes_what_ultralytics_builds(name):
    torch.manual_seed(0)
    original = randomise(DetectionModel(yolo.read_cfg(name), nc=10, verbose=False))
    original.model[-1].export = True
    ours = copy.deepcopy(original)
    yolo.remove_splits(ours)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours(x) - original(x)).abs().max() < 1e-6


@pytest.mark.parametrize("name, why", [("yolov8n-seg.yaml", "Segment head (segmentation)"),
                                       ("yolov8n-pose.yaml", "Pose head (pose estimation)"),
                                       ("yolo26n.yaml", "end-to-end")])
def test_only_detection_models_are_built(name, why):
    with pytest.raises(CompressorError, match=why.replace("(", r"\(").replace(")", r"\)")):
        build_model(f"ultralytics:{name}", {"num_classes": 10})


def test_unknown_names_and_urls_are_refused_without_reaching_the_network():
    with pytest.raises(CompressorError, match="no such YAML file"):
        build_model("ultralytics:yolov99n.yaml")
    with pytest.raises(CompressorError, match="no URLs"):
        build_model("ultralytics:https://example.com/yolov8n.yaml")


def test_a_yaml_of_ones_own_records_its_architecture_and_a_shipped_one_its_name():
    model, record = load_source(ModelSpec(source=PICO, num_classes=10))
    assert record["source"] == "ultralytics:cfg" and record["kwargs"]["num_classes"] == 10
    rebuilt = build_model(**json.loads(json.dumps({"source": record["source"], "kwargs": record["kwargs"]})),
                          trust=NO_TRUST)
    load_weights(rebuilt, model.state_dict(), "the pico model")
    _, shipped = load_source(ModelSpec(source="ultralytics:yolov8n.yaml", num_classes=3))
    assert shipped == {"source": "ultralytics:yolov8n.yaml", "kwargs": {"num_classes": 3}}


@pytest.fixture(scope="module")
def trained_pt(tmp_path_factory):
    """A .pt as Ultralytics saves one (YOLO(...).save(): the model in fp16 inside a dict)."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("pt") / "best.pt"
    torch.manual_seed(0)
    model = YOLO("recipes/models/yolov8-pico.yaml")
    randomise(model.model)
    model.save(str(path))
    return path


def test_a_pt_is_refused_unless_the_recipe_trusts_pickles(trained_pt):
    with pytest.raises(CompressorError, match="pickle.*model.trust_pickle: true"):
        load_source(ModelSpec(source=f"ultralytics:{trained_pt}"))
    with pytest.raises(CompressorError, match="model.trust_pickle: true"):
        build_model(f"ultralytics:{trained_pt}")  # a bare source (`compress inspect`) has no way to trust it
    # trust_pickle in a run folder's recipe is not the user's word: --trust-code is
    with pytest.raises(CompressorError, match="unpickles a file.*--trust-code"):
        load_source(ModelSpec(source=f"ultralytics:{trained_pt}", trust_pickle=True), NO_TRUST)


def test_a_trusted_pt_loads_into_our_architecture_and_records_no_pickle(trained_pt, capsys):
    from ultralytics.nn.tasks import torch_safe_load

    spec = ModelSpec(source=f"ultralytics:{trained_pt}", trust_pickle=True)
    model, record = load_source(spec, Trust.of(spec))
    assert "warning: unpickling" in capsys.readouterr().out
    assert record["source"] == "ultralytics:cfg" and record["kwargs"]["num_classes"] == 80
    original = torch_safe_load(str(trained_pt))[0]["model"].float().eval()
    original.model[-1].export = True
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() < 1e-4
    # What a checkpoint does: rebuild from the JSON record, no pickle, then load the weights.
    record = json.loads(json.dumps(record))
    rebuilt = rebuild_model(record, [], (3, 96, 96), model.state_dict(), "checkpoint", NO_TRUST)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_a_trusted_pt_fine_tunes_to_other_classes(trained_pt):
    model, record = load_source(ModelSpec(source=f"ultralytics:{trained_pt}", trust_pickle=True, num_classes=3))
    assert model(torch.randn(1, 3, 64, 64)).shape[1] == 4 + 3 and record["kwargs"]["num_classes"] == 3


def _cfg_with(**change) -> dict:
    cfg = yolo.read_cfg("recipes/models/yolov8-pico.yaml")
    for key, value in change.items():
        if key == "layer":
            cfg["backbone"][0] = value
        else:
            cfg[key] = value
    return cfg


SENTINEL = "compressor-malicious-cfg-ran"


@pytest.mark.parametrize("cfg, why", [
    (_cfg_with(layer=[-1, 1, "torch_safe_load", ["evil.pt"]]), "not an Ultralytics layer"),
    (_cfg_with(layer=[-1, 1, "DetectionModel", ["evil.yaml"]]), "not an Ultralytics layer"),
    (_cfg_with(layer=[-1, 1, "TorchVision", [64, "resnet18", "DEFAULT"]]), "not an Ultralytics layer"),
    (_cfg_with(layer=[-1, 1, "__import__", ["os"]]), "not an Ultralytics layer"),
    (_cfg_with(layer=[-1, 1, "nn.functional", []]), "not an Ultralytics layer"),
    (_cfg_with(activation=f"__import__('os').system('touch {SENTINEL}')"), "not a torch.nn activation"),
    (_cfg_with(activation="nn.SiLU(__import__('os'))"), "not a torch.nn activation"),
    (_cfg_with(layer=[-1, 1, "Conv", [64, 3, "d"]]), "not a plain argument"),
    (_cfg_with(layer=[-1, 1, "Conv", [64, {"a": 1}]]), "not a plain literal"),
    (_cfg_with(layer=[-1, 1, "Conv", [10 ** 9, 3]]), "larger than any layer argument"),
    ({"backbone": "x", "head": []}, "a mapping with 'backbone' and 'head'"),
], ids=["torch_safe_load", "DetectionModel", "TorchVision", "__import__", "nn-attribute", "activation-eval",
        "activation-argument", "parse_model-local", "dict-argument", "huge", "shape"])
def test_a_cfg_from_someone_elses_checkpoint_builds_only_layers(cfg, why, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = json.loads(json.dumps({"source": "ultralytics:cfg", "kwargs": {"cfg": cfg, "num_classes": 10}}))
    with pytest.raises(CompressorError, match=why):
        rebuild_model(record, [], (3, 64, 64), {}, "a stranger's checkpoint", NO_TRUST)
    assert not (tmp_path / SENTINEL).exists()


def test_a_record_naming_a_pickle_is_refused():
    with pytest.raises(CompressorError, match="unpickles a file"):
        rebuild_model({"source": "ultralytics:best.pt"}, [], (3, 64, 64), {}, "a stranger's checkpoint", NO_TRUST)


def test_without_ultralytics_the_source_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # `import ultralytics` now raises ImportError
    with pytest.raises(CompressorError, match=r"model source 'ultralytics:' needs Ultralytics.*pip install"):
        build_model("ultralytics:yolov8n.yaml")


def test_importing_ultralytics_leaves_the_thread_count_alone():
    """Its import sets OMP_NUM_THREADS=1 where unset; every later run in the process would then take one thread."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import os; from compressor.ultra import require; require(); print(os.environ.get('OMP_NUM_THREADS'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stdout + done.stderr
