"""Latency backends: each turns a candidate model into a zero-argument callable that runs one
batch to completion, so the clock measures the work and nothing before or after it."""

import copy
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.registry import Registry
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.runtime.latency import interleaved


@dataclass
class Candidate:
    """One model to time, in whichever forms it exists; missing forms are made from `model`."""

    name: str
    model: nn.Module | None = None
    onnx: Path | None = None
    engine: Path | None = None
    two_four: bool = False  # weights are 2:4 sparse: backends with sparse kernels may use them


@dataclass
class Settings:
    threads: int
    device: torch.device  # where the torch backends run
    workdir: Path  # where ONNX files and engines made for timing go
    precision: str = "fp32"  # of the GPU backends (torch on CUDA, TensorRT); CPU backends run fp32
    semi_structured: bool = False  # torch on CUDA: 2:4 candidates as semi-structured sparse tensors


class Backend:
    needs = "model"  # the form of a candidate it runs: model | onnx | engine

    def unavailable(self, settings: Settings) -> str | None:
        return None

    def device(self, settings: Settings) -> torch.device:
        return torch.device("cuda")

    def runner(self, candidate: Candidate, batch: int, input_shape, settings: Settings) -> Callable[[], None]:
        raise NotImplementedError


BACKENDS: Registry[Backend] = Registry("latency backend")
# What a requested backend also times where the hardware and packages allow.
VARIANTS = {"torch": ["torch-cuda-graph"], "onnxruntime": ["onnxruntime-cuda", "onnxruntime-tensorrt"]}


def expand(requested: list[str], settings: Settings) -> list[str]:
    names = []
    for name in requested:
        BACKENDS.get(name)  # an unknown name fails here, with a suggestion
        names += [name] + [v for v in VARIANTS.get(name, []) if BACKENDS.get(v).unavailable(settings) is None]
    return names


def _torch_model(candidate: Candidate, settings: Settings) -> nn.Module:
    model = candidate.model.eval().to(settings.device)
    if settings.device.type == "cuda" and settings.precision == "fp16":
        model = copy.deepcopy(model).half()
    if settings.device.type == "cuda" and settings.semi_structured and candidate.two_four:
        from compressor.sparsity.nm import to_semi_structured

        model, _ = to_semi_structured(copy.deepcopy(model))
    return model


def _input(batch: int, input_shape, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)


class TorchEager(Backend):
    def device(self, settings):
        return settings.device

    def runner(self, candidate, batch, input_shape, settings):
        model = _torch_model(candidate, settings)
        x = _input(batch, input_shape, settings.device, next(model.parameters()).dtype)
        sync = torch.cuda.synchronize if settings.device.type == "cuda" else (lambda: None)

        @torch.inference_mode()
        def run():
            model(x)
            sync()  # CUDA calls return before the work is done

        return run


class TorchCudaGraph(Backend):
    """The whole forward pass replayed as one CUDA graph: no Python or launch overhead per layer."""

    def unavailable(self, settings):
        return None if settings.device.type == "cuda" else "CUDA graphs need a CUDA device"

    def runner(self, candidate, batch, input_shape, settings):
        model = _torch_model(candidate, settings)
        x = _input(batch, input_shape, "cuda", next(model.parameters()).dtype)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # lazy initialisation and cuDNN autotuning must not be captured
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            model(x)

        def run():
            graph.replay()
            torch.cuda.synchronize()

        return run


class OnnxRuntime(Backend):
    needs = "onnx"
    provider = "CPUExecutionProvider"

    def unavailable(self, settings):
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            return f"onnxruntime has no {self.provider} here"
        if self.provider != "CPUExecutionProvider" and not torch.cuda.is_available():
            return "no NVIDIA GPU here"
        return None

    def device(self, settings):
        return torch.device("cpu")

    # Sessions of one model can come in two speeds, each for its whole life (where its buffers
    # landed), and a run that draws a slow one reports a speedup the next run does not repeat (see
    # docs/measurements.md). So the runner keeps the fastest of a few.
    SESSIONS = 3

    def runner(self, candidate, batch, input_shape, settings):
        feed = {ox.INPUT_NAME: _input(batch, input_shape, "cpu").numpy()}
        sessions = [ox.session(candidate.onnx, settings.threads) for _ in range(self.SESSIONS)]
        # Probed interleaved, so that a busy spell during one session's probe cannot crown another.
        probes = interleaved({i: (lambda s=s: s.run(None, feed)) for i, s in enumerate(sessions)}, warmup=1, iters=1,
                             min_warmup_s=0, min_timed_s=0.3)
        best = sessions[min(probes, key=lambda i: statistics.median(probes[i]))]
        return lambda: best.run(None, feed)


class OnnxRuntimeGpu(OnnxRuntime):
    """Input and outputs bound on the GPU (IO binding), so copies to and from the host are not timed."""

    def device(self, settings):
        return torch.device("cuda")

    def runner(self, candidate, batch, input_shape, settings):
        import onnxruntime as ort

        sess = ox.session(candidate.onnx, settings.threads, [self.provider, "CPUExecutionProvider"])
        if sess.get_providers()[0] != self.provider:  # onnxruntime falls back to the CPU quietly
            raise CompressorError(f"onnxruntime could not start {self.provider} here; its log says why")
        binding = sess.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(_input(batch, input_shape, "cpu").numpy()), "cuda", 0)
        binding.bind_ortvalue_input(ox.INPUT_NAME, x)
        for output in sess.get_outputs():
            binding.bind_output(output.name, "cuda")
        return lambda: sess.run_with_iobinding(binding)  # returns once the GPU has finished


class OnnxRuntimeCuda(OnnxRuntimeGpu):
    provider = "CUDAExecutionProvider"


class OnnxRuntimeTensorRT(OnnxRuntimeGpu):
    provider = "TensorrtExecutionProvider"


class TensorRT(Backend):
    needs = "engine"

    def unavailable(self, settings):
        return rt.unavailable_reason()

    def runner(self, candidate, batch, input_shape, settings):
        engine = rt.Engine(candidate.engine or self.build(candidate, batch, input_shape, settings))
        engine.bind(_input(batch, input_shape, "cuda"))
        return engine.run

    @staticmethod
    def build(candidate: Candidate, batch: int, input_shape, settings: Settings) -> Path:
        """An engine for exactly this batch, so each batch size is timed with kernels tuned for it."""
        fp16_onnx = settings.workdir / f"{candidate.onnx.stem}.fp16.onnx"
        plan = rt.plan_build(rt.installed_major(), settings.precision, candidate.two_four, str(candidate.onnx),
                             str(fp16_onnx))
        if plan.onnx_file == str(fp16_onnx) and not fp16_onnx.is_file():
            if candidate.model is None:
                raise CompressorError(f"fp16 on TensorRT 11 needs an fp16 ONNX, which '{candidate.name}' lacks; "
                                      "benchmark it with precision fp32, or from its checkpoint")
            ox.export(ox.HalfPrecision(copy.deepcopy(candidate.model)), input_shape, fp16_onnx)
        path = settings.workdir / f"{candidate.onnx.stem}-{settings.precision}-b{batch}.engine"
        rt.build_engine(Path(plan.onnx_file), path, plan, input_shape, rt.BatchRange(batch, batch, batch), 1024)
        return path


for _name, _backend in {"torch": TorchEager(), "torch-cuda-graph": TorchCudaGraph(), "onnxruntime": OnnxRuntime(),
                        "onnxruntime-cuda": OnnxRuntimeCuda(), "onnxruntime-tensorrt": OnnxRuntimeTensorRT(),
                        "tensorrt": TensorRT()}.items():
    BACKENDS.register(_name)(_backend)
