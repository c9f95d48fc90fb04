"""TensorRT: engine builds with the Python API on 10.x (precision by builder flags) and 11.x
(strongly typed only: precision comes from the ONNX), the trtexec script for a target device,
and an engine runner (execute_async_v3). `tensorrt` is imported lazily: most machines that
compress models have none, and engines are built where they will run."""

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compressor.errors import CompressorError
from compressor.files import atomic_write
from compressor.runtime.onnx import INPUT_NAME, compare, run_onnx

SUPPORTED_MAJORS = (10, 11)
TRTEXEC_FLAG = {"FP16": "--fp16", "INT8": "--int8", "SPARSE_WEIGHTS": "--sparsity=enable"}


def installed_version() -> str | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt.__version__


def installed_major() -> int | None:
    version = installed_version()
    return int(version.split(".")[0]) if version else None


def unavailable_reason() -> str | None:
    """None where engines can be built and run here; otherwise why not, for 'skipped: …'."""
    version = installed_version()
    if version is None:
        return "no TensorRT here"
    if installed_major() not in SUPPORTED_MAJORS:
        return f"TensorRT {version} is installed; only 10.x and 11.x are supported"
    if not torch.cuda.is_available():
        return f"TensorRT {version} is installed but there is no NVIDIA GPU here"
    return None


@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile of a dynamic batch: TensorRT tunes kernels for `opt`."""

    min: int
    opt: int
    max: int

    def shapes(self, input_shape) -> tuple[tuple[int, ...], ...]:
        return tuple((b, *input_shape) for b in (self.min, self.opt, self.max))


@dataclass(frozen=True)
class BuildPlan:
    """What one TensorRT major version needs for a precision: which ONNX to read and which flags."""

    onnx_file: str
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag

    def trtexec_flags(self) -> list[str]:
        return [TRTEXEC_FLAG[f] for f in self.builder_flags]


def plan_build(major: int, precision: str, sparse: bool, onnx_file: str, fp16_onnx_file: str) -> BuildPlan:
    if major == 10:
        # INT8 keeps FP16 as the fallback for layers without int8 kernels, as trtexec --int8 --fp16 does.
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
        source = onnx_file
    elif major == 11:
        if precision == "int8":
            raise CompressorError("precision int8 on TensorRT 11 needs Q/DQ nodes in the ONNX (quantise it first, "
                                  "e.g. with NVIDIA ModelOpt); use precision fp16 or fp32")
        flags = ()  # 11.x removed the precision flags: every network is strongly typed
        source = fp16_onnx_file if precision == "fp16" else onnx_file
    else:
        raise CompressorError(f"TensorRT {major}.x is not supported; install TensorRT 10.x or 11.x")
    return BuildPlan(source, flags + (("SPARSE_WEIGHTS",) if sparse else ()))


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def trtexec_command(plan: BuildPlan, engine_file: str, input_shape, batches: BatchRange | None) -> list[str]:
    arguments = [f"--onnx={plan.onnx_file}", f"--saveEngine={engine_file}", *plan.trtexec_flags()]
    if batches:
        low, opt, high = batches.shapes(input_shape)
        arguments += [f"--minShapes={INPUT_NAME}:{_shape_text(low)}", f"--optShapes={INPUT_NAME}:{_shape_text(opt)}",
                      f"--maxShapes={INPUT_NAME}:{_shape_text(high)}"]
    return ['"$TRTEXEC"', *map(shlex.quote, arguments)]


def write_build_script(path: Path, plans: dict[int, BuildPlan | str], engine_file: str, input_shape,
                       batches: BatchRange | None, about: str) -> None:
    """A script for the target device: it asks trtexec for its version and runs the command
    made for that major version. `plans` maps a major version to its plan, or to why it cannot build."""
    branches = []
    for major, plan in plans.items():
        if isinstance(plan, BuildPlan):
            action = " ".join(trtexec_command(plan, engine_file, input_shape, batches))
        else:
            action = f"echo {shlex.quote(f'build_engine.sh: {plan}')} >&2; exit 1"
        branches.append(f"  {major}) {action} ;;")
    script = "\n".join([
        "#!/usr/bin/env bash",
        f"# Builds {engine_file} on the device it will run on: engines are specific to the GPU and",
        "# to the TensorRT version. Made by `compress`; " + about,
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-trtexec}"',
        "# trtexec prints its version first, e.g. '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]'.",
        'banner="$("$TRTEXEC" --help 2>&1 | head -n 1 || true)"',
        "version=\"$(printf '%s' \"$banner\" | sed -n 's/.*TensorRT v\\([0-9]*\\).*/\\1/p')\"",
        'major=$(( ${version:-0} / 10000 ))',
        'case "$major" in',
        *branches,
        '  *) echo "build_engine.sh: needs TensorRT ' + " or ".join(f"{m}.x" for m in plans)
        + ', trtexec says: ${banner:-nothing (is trtexec on PATH? set TRTEXEC=/path/to/trtexec)}" >&2; exit 1 ;;',
        "esac",
        "",
    ])
    atomic_write(path, script)
    path.chmod(0o755)


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _entropy_calibrator(batches: list[torch.Tensor], cache: Path):
    """INT8 scales from real images (TensorRT 10 only: 11.x takes Q/DQ nodes instead)."""
    import tensorrt as trt

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(batches)
            self.current = None  # keeps the device copy alive while TensorRT reads it

        def get_batch_size(self):
            return len(batches[0])

        def get_batch(self, names):
            self.current = next(self.pending, None)
            if self.current is None:
                return None
            self.current = self.current.cuda().contiguous()
            return [self.current.data_ptr()]

        def read_calibration_cache(self):
            data = cache.read_bytes() if cache.is_file() else b""
            return data or None  # an empty file (a fresh stand-in) means: calibrate

        def write_calibration_cache(self, data):
            atomic_write(cache, bytes(data))

    return Calibrator()


def build_engine(onnx_path: Path, engine_path: Path, plan: BuildPlan, input_shape, batches: BatchRange | None,
                 workspace_mb: int, calibration: list[torch.Tensor] | None = None,
                 calibration_cache: Path | None = None) -> None:
    """Builds and writes `engine_path`; INT8 scales are read from, or written to, `calibration_cache`
    (default: beside the engine). The engine is not checked here: see engine_parity."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since 10.0; the flag is deprecated
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompressorError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if batches:
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, *batches.shapes(input_shape))
        config.add_optimization_profile(profile)
    if calibration:
        cache = calibration_cache or engine_path.with_suffix(".calibration.cache")
        config.int8_calibrator = _entropy_calibrator(calibration, cache)
        if batches:
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompressorError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} "
                              "(its log above says why)")
    atomic_write(engine_path, bytes(serialized))


class Engine:
    """A deserialised engine with one execution context on its own CUDA stream."""

    def __init__(self, path: Path):
        import tensorrt as trt

        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise CompressorError(f"{path} does not load with TensorRT {trt.__version__} on "
                                  f"{torch.cuda.get_device_name()}: engines run only where they were built; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, torch.Tensor] = {}

    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, without the batch dimension."""
        return tuple(self.engine.get_tensor_shape(self.inputs[0]))[1:]

    def _torch_dtype(self, name: str) -> torch.dtype:
        import tensorrt as trt

        return torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def bind(self, inputs: torch.Tensor) -> None:
        """Points the context at a device copy of `inputs` and fresh output buffers."""
        name = self.inputs[0]
        self.buffers = {name: inputs.to("cuda", self._torch_dtype(name)).contiguous()}
        if not self.context.set_input_shape(name, tuple(inputs.shape)):
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            raise CompressorError(f"the engine takes '{name}' from {tuple(low)} to {tuple(high)}, not "
                                  f"{tuple(inputs.shape)}; rebuild it for that batch (min_batch/max_batch)")
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            self.buffers[out] = torch.empty(shape, dtype=self._torch_dtype(out), device="cuda")
        for n, tensor in self.buffers.items():
            self.context.set_tensor_address(n, tensor.data_ptr())

    def run(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CompressorError("TensorRT failed to run the engine (its log above says why)")
        self.stream.synchronize()

    def __call__(self, inputs: torch.Tensor) -> dict[str, np.ndarray]:
        self.bind(inputs)
        self.run()
        return {n: self.buffers[n].float().cpu().numpy() for n in self.outputs}


def engine_parity(engine_path: Path, onnx_path: Path, inputs: torch.Tensor, max_batch: int, atol: float,
                  rtol: float) -> dict:
    """The engine against onnxruntime on the same real inputs, in chunks the profile allows."""
    engine = Engine(engine_path)
    chunks = [engine(chunk) for chunk in inputs.split(max_batch)]
    got = {name: np.concatenate([c[name] for c in chunks]) for name in engine.outputs}
    return compare(run_onnx(onnx_path, inputs), got, atol, rtol, "TensorRT engine", "onnxruntime",
                   "lower the precision's tolerance only if top-1 agreement stays high, or build in fp32")
