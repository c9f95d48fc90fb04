"""Object detection with Ultralytics' YOLO heads: targets are Ultralytics' batch dicts, the loss
its v8DetectionLoss, the metric mAP50 / mAP50-95 from its own validator code (NMS, matching at
ten IoU thresholds, AP per class), so the numbers are the ones `yolo val` reports."""

import torch
import torch.nn as nn

from compressor import ultra
from compressor.console import progress
from compressor.errors import CompressorError
from compressor.tasks import TASKS, Task

LOSS_TERMS = ("box", "cls", "dfl")
MAP_TOLERANCE = 0.2  # points of mAP an export may differ from torch by


def detect_head(model: nn.Module) -> nn.Module:
    head = getattr(getattr(model, "model", None), "__getitem__", None) and model.model[-1]
    if head is None or not hasattr(head, "f") or not hasattr(head, "reg_max"):
        raise CompressorError(f"detection data needs a detection model with an Ultralytics Detect head (e.g. "
                              f"model.source: ultralytics:yolov8n.yaml), not {type(model).__name__}")
    return head


class _Validator:
    """Ultralytics' DetectionValidator driven batch by batch: its postprocessing (NMS at conf
    0.001, IoU 0.7, 300 detections, as `yolo val`), matching and DetMetrics, none of its data or
    model loading, plotting or files."""

    def __init__(self, num_classes: int, device: torch.device):
        ultra.require()
        from ultralytics.cfg import get_cfg
        from ultralytics.models.yolo.detect.val import DetectionValidator

        args = get_cfg(overrides={"mode": "val", "plots": False, "save_json": False, "save_txt": False})
        self.v = DetectionValidator(args=args)
        self.v.data, self.v.training, self.v.device = {"val": ""}, True, device
        self.v.init_metrics(_Names({i: str(i) for i in range(num_classes)}))

    def add(self, outputs: torch.Tensor, images: torch.Tensor, targets: dict) -> None:
        self.v.update_metrics(self.v.postprocess(outputs), {**targets, "img": images})

    def results(self) -> dict:
        stats = self.v.get_stats()
        return {"map50": 100 * stats["metrics/mAP50(B)"], "map50_95": 100 * stats["metrics/mAP50-95(B)"],
                "precision": 100 * stats["metrics/precision(B)"], "recall": 100 * stats["metrics/recall(B)"]}


class _Names:
    end2end = False

    def __init__(self, names: dict[int, str]):
        self.names = names


@TASKS.register("detect")
class Detection(Task):
    name, metric, metric_label, output_name = "detect", "map50_95", "mAP50-95", "predictions"

    def move(self, targets, device):
        return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in targets.items()}

    def criterion(self, model, label_smoothing=0.0):
        ultra.require()
        from ultralytics.utils.loss import v8DetectionLoss

        detect_head(model)
        if label_smoothing:
            raise CompressorError("label_smoothing applies to classification; set it to 0 for detection")
        loss_fn = v8DetectionLoss(model)

        def loss(outputs, targets):
            scaled, _ = loss_fn(outputs, targets)  # each term times the batch size
            return dict(zip(LOSS_TERMS, scaled / outputs["boxes"].shape[0]))
        return loss

    @torch.no_grad()
    def evaluate(self, forward, loader, device, desc="evaluate") -> dict:
        if isinstance(forward, nn.Module):
            forward.eval().to(device)
            detect_head(forward)
        validator, images_seen = None, 0
        with progress() as bar:
            task = bar.add_task(desc, total=len(loader), info="")
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    outputs = forward(images)
                if validator is None:
                    validator = _Validator(outputs.shape[1] - 4, device)
                validator.add(outputs.float(), images, self.move(targets, device))
                images_seen += len(images)
                bar.update(task, advance=1, info=f"{images_seen} images")
        return {**validator.results(), "samples": images_seen}

    def check_model(self, model, outputs, data):
        head = detect_head(model)
        if head.nc != data.num_classes:
            raise CompressorError(f"the model's Detect head has {head.nc} classes and the data {data.num_classes}; "
                                  f"set model.num_classes: {data.num_classes}")

    def feature_layers(self, model):
        """The maps the Detect head reads (P3, P4, P5 for YOLOv8 and YOLO11)."""
        return [f"model.{i}" for i in detect_head(model).f]

    def logit_distillation(self):
        return ("a detector's outputs are boxes and class scores per anchor, not logits: set logit: null and "
                "distil its features (features: {loss: cwd}) on the maps its Detect head reads")

    def parity(self, model, path, inputs, atol, rtol, data) -> dict:
        """Raw outputs within the tolerances, and mAP50 and mAP50-95 of the ONNX model on the
        evaluation split within MAP_TOLERANCE points of torch's: NMS turns tiny score differences
        into different kept boxes, so the metric is what a detector's export must keep."""
        from compressor.runtime import onnx as ox

        check = ox.parity(model, path, inputs, atol, rtol)
        cpu = torch.device("cpu")
        ours = self.evaluate(model.cpu(), data.eval, cpu, desc="mAP, torch")
        theirs = self.evaluate(ox.OnnxForward(path), data.eval, cpu, desc="mAP, onnxruntime")
        for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95")):
            if abs(ours[key] - theirs[key]) > MAP_TOLERANCE:
                raise CompressorError(f"the ONNX model's {label} is {theirs[key]:.2f}, torch's {ours[key]:.2f} on the "
                                      f"same {ours['samples']} images (more than {MAP_TOLERANCE} points apart): the "
                                      "export is wrong — try export_onnx with dynamo: false, or report the model")
        return {**check, "torch_map50": ours["map50"], "torch_map50_95": ours["map50_95"],
                "onnx_map50": theirs["map50"], "onnx_map50_95": theirs["map50_95"]}

    def metadata(self, data) -> dict:
        return {"names": data.names or [], "output_layout": "(batch, 4 + classes, anchors): box centre x, centre y, "
                "width, height in input pixels, then each class's score (sigmoid); apply NMS after the model"}
