"""TensorRT: engine builds with the Python API on 8.6 and 10.x (precision by builder flags) and
11.x (strongly typed only: precision comes from the ONNX), and an engine runner
(execute_async_v3). The trtexec scripts for a target device are in runtime/trtexec.py.
`tensorrt` is imported lazily: most machines that compress models have none, and engines are
built where they will run."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compressor.errors import CompressorError
from compressor.files import atomic_write
from compressor.runtime.onnx import INPUT_NAME, compare, run_onnx

# The TensorRT versions this builds with, here and in the target's scripts: major -> lowest minor.
# 8.6 is JetPack 6.0's (the first 8.x whose Python API has every call used here: execute_async_v3,
# set_input_shape, memory pools); 10.x is JetPack 6.1+ and desktops'; 11.x desktops' (no JetPack yet).
SUPPORTED = {8: 6, 10: 0, 11: 0}
SUPPORTED_MAJORS = tuple(SUPPORTED)


def qdq_command(run="RUN") -> str:
    """How a Q/DQ ONNX for TensorRT is made: the quantize pass, run on the run's last checkpoint."""
    return f"`compress export {run} --format onnx --int8 --set target=tensorrt`"


def version_name(major: int) -> str:
    """How a supported major version is named to users: '8.6', '10.x'."""
    return f"{major}.{SUPPORTED[major]}" if SUPPORTED[major] else f"{major}.x"


def supported_text() -> str:
    names = [version_name(major) for major in SUPPORTED]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def is_supported(version: str) -> bool:
    major, minor = (int(part) for part in (version.split(".") + ["0"])[:2])
    return major in SUPPORTED and minor >= SUPPORTED[major]


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
    if not is_supported(version):
        return f"TensorRT {version} is installed; only {supported_text()} are supported"
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
    """What one TensorRT major version needs for a precision: which ONNX to read, which flags,
    and the DLA core to build for (None: the GPU)."""

    onnx_file: str
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag
    dla_core: int | None = None


def plan_build(major: int, precision: str, sparse: bool, onnx_file: str, fp16_onnx_file: str,
               dla_core: int | None = None, qdq: bool = False) -> BuildPlan:
    """`qdq`: int8 from a Q/DQ ONNX (`onnx_file`, explicit quantisation: no calibration), else
    8.6 and 10 calibrate (build_engine's calibration)."""
    if major in (8, 10):
        # INT8 keeps FP16 as the fallback for layers without int8 kernels, as trtexec --int8 --fp16 does.
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
        source = onnx_file
    elif major == 11:
        if precision == "int8" and not qdq:
            raise CompressorError("precision int8 on TensorRT 11 builds from a Q/DQ ONNX made for TensorRT (it "
                                  f"calibrates nothing): {qdq_command()} writes it")
        if dla_core is not None:  # its 10.x-to-11.x migration guide: no JetPack and no DLA support in 11.x yet
            raise CompressorError("TensorRT 11.x builds no DLA engines; build on the Jetson's TensorRT 8.6 or 10.x")
        # 11.x removed the precision flags: every network is strongly typed, the Q/DQ nodes say where int8 runs,
        # and --stronglyTyped "is no longer needed: it is always enabled" (docs.nvidia.com/deeplearning/tensorrt/
        # 11.0.0/api/migration/tensorrt-10x-to-11x-trtexec.html).
        flags = ()
        source = fp16_onnx_file if precision == "fp16" else onnx_file
    else:
        raise CompressorError(f"TensorRT {major}.x is not supported; install TensorRT {supported_text()}")
    return BuildPlan(source, flags + (("SPARSE_WEIGHTS",) if sparse else ()), dla_core)


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _entropy_calibrator(batches: list[torch.Tensor], cache: Path):
    """INT8 scales from real images, where no Q/DQ ONNX gives them (TensorRT 8.6 and 10: 11.x has no calibration)."""
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
    # Explicit batch is the only mode since 10.0 (the flag is deprecated there); 8.x must ask for it.
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompressorError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.dla_core is not None:  # as trtexec --useDLACore=N --allowGPUFallback
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
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

    def __init__(self, path: Path, dla_core: int | None = None):
        import tensorrt as trt

        self.runtime = trt.Runtime(_logger())
        if dla_core is not None:  # a DLA engine runs on the core it was built for
            self.runtime.DLA_core = dla_core
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
                  rtol: float, dla_core: int | None = None) -> dict:
    """The engine against onnxruntime on the same real inputs, in chunks the profile allows."""
    engine = Engine(engine_path, dla_core)
    chunks = [engine(chunk) for chunk in inputs.split(max_batch)]
    got = {name: np.concatenate([c[name] for c in chunks]) for name in engine.outputs}
    return compare(run_onnx(onnx_path, inputs), got, atol, rtol, "TensorRT engine", "onnxruntime",
                   "lower the precision's tolerance only if top-1 agreement stays high, or build in fp32")
