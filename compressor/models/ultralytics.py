"""Model source `ultralytics:` — Ultralytics YOLO detectors (YOLOv8, YOLO11, …) built as this tool
prunes, exports and reloads them.

    ultralytics:yolov8n.yaml              a model YAML Ultralytics ships (any scale), random weights
    ultralytics:path/to/custom.yaml       a model YAML of your own (relative to the working directory)
    ultralytics:path/to/best.pt           trained weights: a pickle, loaded only with model.trust_pickle
    ultralytics:cfg                       the architecture itself in kwargs {"cfg": {...}}: what a
                                          checkpoint records for the two sources above

What the model is, whatever the source: Ultralytics' DetectionModel, with
* its Detect head in export mode: in eval it returns one tensor (B, 4 + nc, anchors), boxes xywh
  in input pixels then sigmoid class scores, so MACs counting, torch-pruning's trace, ONNX export
  and latency all see one tensor; in train mode the raw dict v8DetectionLoss takes;
* every block that splits a conv's output with chunk/split (C2f, C3k2, C2fCIB, C2fPSA, C2PSA, PSA)
  swapped for an equivalent one with two convs, which torch-pruning can follow;
* the head's final convs declared fixed-width (compressor.pruning.fixed), with the reason.

A checkpoint's source record may be a stranger's, and Ultralytics' parse_model looks each layer
name up in its module globals and calls it (and evals `activation`), so every cfg is checked
before it is built: layers are Ultralytics or torch.nn modules, arguments plain literals.
Ultralytics is imported only through compressor.ultra, and nothing here reaches the network:
YAML names are looked up in the installed package, never downloaded."""

import ast
import copy
import math
import re
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from compressor.errors import CompressorError, excerpt
from compressor.pruning.fixed import declare

SOURCE = "ultralytics"
CFG = "cfg"  # ultralytics:cfg — the architecture given as a dict
PICKLES = (".pt", ".pth")
# Layers a cfg may name that Ultralytics exports but that fetch weights from the network.
NETWORK_LAYERS = {"TorchVision"}
LAYER_ATTRIBUTES = ("i", "f", "type", "np")  # what parse_model attaches to each top-level layer
MAX_YAML_BYTES = 1 << 20
MAX_NODES = 100_000  # values a cfg may hold (an alias bomb is small text and an endless walk)
MAX_INT = 1 << 16  # no channel count, repeat or kernel of a real model comes near
TASKS = {"Segment": "segmentation", "Pose": "pose estimation", "OBB": "oriented boxes", "Classify": "classification",
         "WorldDetect": "open-vocabulary detection", "YOLOEDetect": "open-vocabulary detection",
         "RTDETRDecoder": "RT-DETR", "v10Detect": "YOLOv10's end-to-end detection"}


def _quoted(name: str) -> str:
    return excerpt(f"{SOURCE}:{name}")


def _ultralytics(what: str = "model source 'ultralytics:'"):
    from compressor.ultra import require

    return require(what)


# --- the cfg: read, then checked --------------------------------------------------------------


def _shipped(name: str) -> Path | None:
    """The YAML Ultralytics ships for `name` (yolov8n.yaml is yolov8.yaml at scale n), if any."""
    root = Path(_ultralytics().__file__).parent / "cfg" / "models"
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(name).stem) + ".yaml"
    for candidate in (name, unified):
        hits = sorted(root.rglob(candidate))
        if hits:
            return hits[0]
    return None


def _scale_of(name: str) -> str:
    match = re.search(r"yolo(e-)?v?\d+([nslmx])", Path(name).stem)
    return match.group(2) if match else ""


def is_shipped(name: str) -> bool:
    """Whether `name` is a bare YAML name found in the installed Ultralytics (not a path)."""
    return Path(name).name == name and not Path(name).is_file() and _shipped(name) is not None


def read_cfg(name: str) -> dict:
    """The model dict of a YAML file, or of a YAML name Ultralytics ships; never a download."""
    if "://" in name:
        raise CompressorError(f"{_quoted(name)}: only local YAML files and the names Ultralytics ships "
                              "are read (no URLs: nothing is downloaded)")
    path = Path(name)
    if not path.is_file():
        path = _shipped(name) if path.name == name else None
        if path is None:
            raise CompressorError(f"{_quoted(name)}: no such YAML file, nor a model YAML Ultralytics ships "
                                  "(e.g. yolov8n.yaml, yolov8s.yaml, yolo11n.yaml)")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise CompressorError(f"{_quoted(name)}: {path} is larger than a model YAML")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CompressorError(f"{_quoted(name)}: {path} is not valid YAML ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise CompressorError(f"{_quoted(name)}: {path} is not a model YAML (no mapping at the top)")
    cfg.setdefault("scale", _scale_of(name))  # as Ultralytics reads yolov8s.yaml: yolov8.yaml at scale s
    cfg["yaml_file"] = Path(name).name
    return cfg


# parse_model's locals that shipped YAMLs name as arguments: values read from the cfg itself.
CFG_VALUES = {"nc", "kpt_shape"}


def _parse_locals() -> set[str]:
    """Names a string argument would resolve to inside parse_model (its own variables: the model
    dict, the layer class, …) instead of staying a string, but for the cfg's own values."""
    from ultralytics.nn.tasks import parse_model

    code = parse_model.__code__
    return (set(code.co_varnames) | set(code.co_cellvars)) - CFG_VALUES


def _layer_class(name: object, where: str) -> type:
    """The module class a cfg row names, which must be what parse_model resolves it to and an
    nn.Module of Ultralytics' layers or torch.nn: anything else in parse_model's globals
    (torch_safe_load, a model class that reads another YAML unchecked …) could run code."""
    import ultralytics.nn.modules as layers
    import ultralytics.nn.tasks as tasks

    if not isinstance(name, str):
        raise CompressorError(f"{where}: the module is {excerpt(name)}, not a layer name")
    if name.startswith("nn."):
        found = getattr(nn, name[3:], None)
    elif name in layers.__all__ and name not in NETWORK_LAYERS:
        found = getattr(layers, name)
        found = found if getattr(tasks, name, None) is found else None
    else:
        found = None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise CompressorError(f"{where}: {excerpt(name)} is not an Ultralytics layer or a torch.nn module; a cfg "
                              "names only those (it may come from someone else's file, and Ultralytics would call it)")
    return found


class _Budget:
    def __init__(self):
        self.left = MAX_NODES

    def spend(self, where: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise CompressorError(f"{where}: the cfg holds more values than any model's")


def _literal(value, where: str, budget: _Budget, depth: int = 0, strings: set[str] = frozenset()):
    """`value` if it is plain data (numbers, booleans, None, short strings, lists of them)."""
    budget.spend(where)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise CompressorError(f"{where}: {excerpt(value)} is larger than any layer argument")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CompressorError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > 64 or (value in strings):
            raise CompressorError(f"{where}: {excerpt(value)} is not a plain argument")
        return value
    if isinstance(value, list) and depth < 3:
        return [_literal(v, where, budget, depth + 1, strings) for v in value]
    raise CompressorError(f"{where}: {excerpt(value)} is not a plain literal (number, string, list of them)")


def _activation(text: object, where: str) -> str:
    """`activation: nn.SiLU()` and the like — parse_model evals it, so nothing else passes."""
    try:
        call = ast.parse(str(text).strip(), mode="eval").body
        assert isinstance(call, ast.Call) and all(k.arg for k in call.keywords)
        func = ast.unparse(call.func)
        assert func.startswith(("nn.", "torch.nn.")) and func.count(".") == func.startswith("torch.") + 1
        cls = getattr(nn, func.rpartition(".")[2])
        assert isinstance(cls, type) and issubclass(cls, nn.Module)
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(arg)
            assert isinstance(arg, (ast.Constant, ast.UnaryOp))
    except Exception:
        raise CompressorError(f"{where}: activation {excerpt(text)} is not a torch.nn activation with literal "
                              "arguments, e.g. nn.SiLU() or nn.LeakyReLU(0.1)") from None
    return str(text)


def check_cfg(cfg: object, origin: str) -> dict:
    """A copy of `cfg` once it is known to build nothing but layers with plain arguments."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("backbone"), list) or not isinstance(cfg.get("head"), list):
        raise CompressorError(f"{origin}: a model cfg is a mapping with 'backbone' and 'head' lists of layers")
    budget, strings = _Budget(), _parse_locals()
    checked = {}
    for key, value in cfg.items():
        where = f"{origin}: {excerpt(key, 40)}"
        if not isinstance(key, str):
            raise CompressorError(f"{where}: keys are names")
        if key in ("backbone", "head"):
            continue
        if key == "activation":
            checked[key] = _activation(value, where)
        elif key == "scales":
            if not isinstance(value, dict):
                raise CompressorError(f"{where}: scales maps a scale name to [depth, width, max_channels]")
            checked[key] = {str(_literal(k, where, budget)): _literal(v, where, budget) for k, v in value.items()}
        else:
            checked[key] = _literal(value, where, budget)
    for part in ("backbone", "head"):
        rows = []
        for i, row in enumerate(cfg[part]):
            where = f"{origin}: {part}[{i}]"
            if not (isinstance(row, list) and len(row) == 4):
                raise CompressorError(f"{where}: a layer is [from, repeats, module, args]")
            source, repeats, module, args = row
            sources = source if isinstance(source, list) else [source]
            if not sources or not all(isinstance(s, int) and not isinstance(s, bool) for s in sources):
                raise CompressorError(f"{where}: 'from' is a layer index or a list of them")
            if not (isinstance(repeats, int) and 0 < repeats <= 100):
                raise CompressorError(f"{where}: repeats is a small positive number")
            _layer_class(module, where)
            if not isinstance(args, list):
                raise CompressorError(f"{where}: args is a list")
            rows.append([_literal(source, where, budget), repeats, module, _literal(args, where, budget, 0, strings)])
        checked[part] = rows
    return checked


# --- blocks that split a conv's output, and their two-conv equivalents --------------------------


def _rows_of(block: nn.Module, rows: slice) -> nn.Module:
    """A copy of an Ultralytics Conv (conv, BatchNorm, activation) that computes only output
    channels `rows`: the same numbers for those channels, from a conv torch-pruning can cut alone."""
    part = copy.deepcopy(block)
    conv, bn = part.conv, part.bn
    conv.weight = nn.Parameter(conv.weight.detach()[rows].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[rows].clone())
    conv.out_channels = conv.weight.shape[0]
    bn.weight, bn.bias = (nn.Parameter(p.detach()[rows].clone()) for p in (bn.weight, bn.bias))
    bn.running_mean, bn.running_var = bn.running_mean[rows].clone(), bn.running_var[rows].clone()
    bn.num_features = conv.out_channels
    return part


class SplitFree(nn.Module):
    """Base of the two-conv blocks: `cv1` of the original, whose output the original splits in
    two halves, becomes `cv0` (first half) and `cv1` (second half). torch-pruning maps channels
    through chunk/split wrongly (an IndexError inside its step), but two convs it follows."""

    def __init__(self, original: nn.Module):
        super().__init__()
        half = original.cv1.conv.out_channels // 2
        self.c = original.c
        self.cv0, self.cv1 = _rows_of(original.cv1, slice(0, half)), _rows_of(original.cv1, slice(half, 2 * half))
        self.cv2 = original.cv2
        for attr in LAYER_ATTRIBUTES:  # how DetectionModel routes a layer's inputs, where one is a layer
            if hasattr(original, attr):
                setattr(self, attr, getattr(original, attr))


class C2fSplitFree(SplitFree):
    """C2f and its subclasses (C3k2, C2fCIB, C2fPSA): the second half runs through the blocks,
    each block's output is kept, and all are concatenated."""

    def __init__(self, original: nn.Module):
        super().__init__(original)
        self.m = original.m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2PSASplitFree(SplitFree):
    """C2PSA: the second half runs through the PSA blocks, the first half passes by."""

    def __init__(self, original: nn.Module):
        super().__init__(original)
        self.m = original.m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(torch.cat((self.cv0(x), self.m(self.cv1(x))), 1))


class PSASplitFree(SplitFree):
    """PSA: the second half through attention and a feed-forward block, each with a residual."""

    def __init__(self, original: nn.Module):
        super().__init__(original)
        self.attn, self.ffn = original.attn, original.ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.cv1(x)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((self.cv0(x), b), 1))


def _split_free(module: nn.Module) -> nn.Module | None:
    """The two-conv equivalent of `module`, or None when it has no split to remove."""
    from ultralytics.nn.modules import PSA, C2f, C2PSA

    if isinstance(module, C2f) and type(module).forward is C2f.forward:
        return C2fSplitFree(module)
    if type(module) is C2PSA:
        return C2PSASplitFree(module)
    if type(module) is PSA:
        return PSASplitFree(module)
    return None


def remove_splits(model: nn.Module) -> nn.Module:
    """Swaps, in place, every block that splits a conv's output for its two-conv equivalent (the
    same outputs; parameter names cv0/cv1 instead of one cv1)."""
    for name, module in list(model.named_modules()):
        new = _split_free(module)
        if new is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


# --- the detector ---------------------------------------------------------------------------------


def _check_head(model: nn.Module, origin: str) -> nn.Module:
    from ultralytics.nn.modules import Detect

    head = model.model[-1]
    if type(head) is not Detect:
        kind = next((task for name, task in TASKS.items() if type(head).__name__.startswith(name)), None)
        raise CompressorError(f"{origin} ends in a {type(head).__name__} head{f' ({kind})' if kind else ''}; only "
                              "detection models (a Detect head: YOLOv8, YOLO11 …) are supported")
    if getattr(head, "one2one_cv2", None) is not None:
        raise CompressorError(f"{origin} has an end-to-end (NMS-free) Detect head, as YOLO26 and YOLOv10 do; only "
                              "heads without one (YOLOv8, YOLO11 …) are supported")
    return head


def _head_widths(head: nn.Module) -> dict[str, str]:
    """The head's layers whose output channels are its outputs: the decoding reads them by position."""
    widths = {}
    for i, (box, cls) in enumerate(zip(head.cv2, head.cv3)):
        widths[f"cv2.{i}.{len(box) - 1}"] = (f"its channels are the Detect head's box/DFL outputs "
                                             f"({4 * head.reg_max} = 4×reg_max)")
        widths[f"cv3.{i}.{len(cls) - 1}"] = f"its channels are the Detect head's class scores ({head.nc} = nc)"
    if isinstance(getattr(head, "dfl", None), nn.Module) and hasattr(head.dfl, "conv"):
        widths["dfl.conv"] = f"the Detect head's DFL integral (fixed weights 0…{head.reg_max - 1})"
    return widths


def _prepared(model: nn.Module, origin: str) -> nn.Module:
    """`model` as this tool uses it: one output tensor in eval, split-free, head widths declared,
    and Ultralytics' default hyperparameters where v8DetectionLoss reads its box/cls/dfl gains."""
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace

    head = _check_head(model, origin)
    remove_splits(model)
    head.export = True  # eval: one tensor (B, 4 + nc, anchors), not (tensor, raw dict)
    # The anchors are rebuilt on every forward: the tool's forwards drop the tensors a module caches
    # (compressor.pruning.leftovers), and a kept shape with dropped anchors would decode wrongly.
    head.dynamic = True
    model.args = IterableSimpleNamespace(**DEFAULT_CFG_DICT)
    declare(head, _head_widths(head))
    size = DEFAULT_CFG_DICT["imgsz"]
    model.native_input_shape = (3, size, size)  # what `compress inspect` measures it at (640×640)
    return model.eval()


def build_detector(cfg: dict, num_classes: int | None, origin: str) -> nn.Module:
    """Ultralytics' DetectionModel for a checked cfg, random weights, prepared for this tool."""
    _ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    cfg = check_cfg(cfg, origin)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or not 0 < num_classes <= MAX_INT):
        raise CompressorError(f"{origin}: num_classes is {excerpt(num_classes)}, not a positive number")
    if num_classes is not None:
        cfg["nc"] = num_classes  # as DetectionModel(nc=…) would, without logging it
    try:
        model = DetectionModel(cfg, verbose=False)
    except CompressorError:
        raise
    except Exception as e:  # a cfg Ultralytics cannot build: wrong channels, indices, arguments
        raise CompressorError(f"cannot build the Ultralytics model {origin}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else 'no message'}") from None
    return _prepared(model, origin)


def architecture(model: nn.Module) -> dict:
    """The cfg a prepared detector was built from, as a checkpoint records it."""
    cfg = {k: v for k, v in model.yaml.items() if k != "channels"}
    return copy.deepcopy(cfg)


def record_of(model: nn.Module) -> dict:
    """The source record that rebuilds `model`'s architecture without its file: {source, kwargs}."""
    return {"source": f"{SOURCE}:{CFG}", "kwargs": {"cfg": architecture(model), "num_classes": model.yaml["nc"]}}


def build(name: str, kwargs: dict) -> nn.Module:
    """`ultralytics:NAME` from a name and factory arguments (num_classes; scale for a YAML with scales)."""
    return _build(name, **kwargs)


def _build(name: str, num_classes: int | None = None, scale: str | None = None, cfg: dict | None = None) -> nn.Module:
    if Path(name).suffix in PICKLES:
        raise CompressorError(f"{_quoted(name)} is a pickle, which can run code when loaded; it is "
                              "loaded only from a recipe that says model.trust_pickle: true (only for files you trust)")
    if name == CFG:
        if cfg is None:
            raise CompressorError("ultralytics:cfg needs the architecture as kwargs {cfg: {...}}")
        origin = "ultralytics:cfg"
    else:
        if cfg is not None:
            raise CompressorError(f"{_quoted(name)} takes no cfg argument (only ultralytics:cfg does)")
        _ultralytics()
        cfg, origin = read_cfg(name), f"ultralytics:{name}"
    if scale is not None:
        cfg = {**cfg, "scale": scale}
    return build_detector(cfg, num_classes, origin)


# --- trained weights: a .pt is a pickle ----------------------------------------------------------


def unpickles(name: str) -> bool:
    return Path(name).suffix in PICKLES


def _unpickle(path: Path) -> dict:
    """Ultralytics' own loader, on a local file only (given a missing one, it downloads). Its
    restricted mode (weights_only, known classes) first; the full unpickler, which the recipe
    allowed, only for files that mode refuses."""
    from ultralytics.nn.tasks import torch_safe_load
    from ultralytics.utils.checks import check_yolov5u_filename

    if check_yolov5u_filename(str(path), verbose=False) != str(path):
        raise CompressorError(f"rename {path}: Ultralytics would look for a YOLOv5u file of another name instead")
    try:
        try:
            return torch_safe_load(str(path), safe_only=True)[0]
        except TypeError as e:
            if "references types outside" not in str(e):
                raise
            return torch_safe_load(str(path), safe_only=False)[0]
    except Exception as e:  # a damaged file, a TorchScript archive, a YOLOv5 model …
        raise CompressorError(f"cannot load {path}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else 'no message'}") from None


def _same_outputs(original: nn.Module, converted: nn.Module, origin: str) -> None:
    """The converted model computes what the trained one does, on real-sized random images."""
    from compressor.inputs import example_input

    x = example_input((3, 128, 128), batch=2)
    with torch.no_grad():
        want, got = original(x), converted(x)
    scale = max(1.0, float(want.abs().max()))
    diff = float((want - got).abs().max())
    if diff > 1e-4 * scale:
        raise CompressorError(f"{origin}: the rebuilt model's outputs differ from the trained model's by {diff:.3g} "
                              f"(outputs up to {scale:.3g}); report this model")


def load_pickled(spec) -> tuple[nn.Module, dict]:
    """A trained Ultralytics .pt, rebuilt as this tool's architecture from the cfg it holds, with its
    weights; the record names that cfg, so a checkpoint never needs the pickle again."""
    from compressor.console import console
    from compressor.models import load_weights

    name = spec.source.partition(":")[2]
    path = Path(name)
    if not spec.trust_pickle:
        raise CompressorError(f"{spec.source}: '{name}' is a pickle, which can run any code when it is loaded; if you "
                              "trust the file, allow it with model.trust_pickle: true in the recipe")
    if spec.kwargs:
        raise CompressorError(f"{spec.source}: a trained .pt takes no model.kwargs (its architecture is in the file)")
    if not path.is_file():
        raise CompressorError(f"{spec.source}: file '{name}' does not exist")
    _ultralytics()
    console.print(f"[yellow]warning:[/yellow] unpickling {path} (model.trust_pickle: true): a pickle can run code",
                  soft_wrap=True)
    ckpt = _unpickle(path)
    trained = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(trained, nn.Module) or not isinstance(getattr(trained, "yaml", None), dict):
        raise CompressorError(f"{path} holds no Ultralytics model (no 'model' or 'ema' with its cfg)")
    trained = trained.float().eval()
    origin = f"ultralytics:{name}"
    if any(hasattr(m, "conv") and hasattr(m, "forward_fuse") and not hasattr(m, "bn") for m in trained.modules()):
        raise CompressorError(f"{path} holds a fused model (BatchNorm folded into its convs), which cannot be pruned "
                              "as trained; save it before fusing (a trainer's best.pt is not fused)")
    nc = trained.yaml.get("nc")
    model = build_detector(trained.yaml, spec.num_classes, origin)
    reference = copy.deepcopy(trained)
    head = _check_head(reference, origin)
    head.export, head.dynamic = True, True
    remove_splits(trained)
    if spec.num_classes in (None, nc):
        load_weights(model, trained.state_dict(), f"'{path}'")
        _same_outputs(reference, model, origin)
        model.names = dict(getattr(trained, "names", model.names))
    else:  # fine-tuning to other classes: the class convs start untrained
        own, theirs = model.state_dict(), trained.state_dict()
        kept = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(kept, strict=False)
        console.print(f"  {path} has {nc} classes, num_classes is {spec.num_classes}: {len(own) - len(kept)} tensors "
                      "of the class convs start untrained")
    return model.eval(), record_of(model)


def load_spec(spec) -> tuple[nn.Module, dict] | None:
    """What ModelSpec loading does for ultralytics: a .pt (with trust_pickle), and a YAML file of the
    user's recorded as its cfg (a run folder then rebuilds without the file, whatever became of it);
    None for the plain build (a shipped YAML name, ultralytics:cfg)."""
    name = spec.source.partition(":")[2]
    if unpickles(name):
        return load_pickled(spec)
    if name == CFG or is_shipped(name):
        return None
    model = build(name, spec.factory_kwargs())
    return model, record_of(model)


from compressor.models import SOURCES, SPEC_LOADERS, UNPICKLES  # noqa: E402  (this module registers itself)

SOURCES.register(SOURCE)(build)
SPEC_LOADERS[SOURCE] = load_spec
UNPICKLES[SOURCE] = unpickles
