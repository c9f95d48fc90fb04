"""The device bundle's shell side: build_engine.sh and check_engine.sh run trtexec on the target
(engines are specific to its GPU and its TensorRT version), and README.md says what they build.
The scripts name only files in their own folder and cd there, so the folder can be copied anywhere.

trtexec's flags by version, from NVIDIA's migration guides and each version's `trtexec --help`:
* 8.x to 10.x (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-trtexec.html):
  --workspace=N, deprecated since 8.4, was removed for --memPoolSize=workspace:<size>; --explicitBatch,
  --batch and --maxBatch went with implicit batch (8.x already parses ONNX explicit-batch, so none is needed).
* 8.6's --help takes the pool size as `pool:sizeInMiB`; 10.x's also takes B/K/M/G suffixes (MiB without one).
* 10.x to 11.x (…/api/migration/tensorrt-10x-to-11x-trtexec.html): --fp16, --int8, --best and --calib were
  removed, every network being strongly typed: an fp16 engine is built from an fp16 ONNX, an int8 one from
  the Q/DQ ONNX with no precision flag ("--stronglyTyped is no longer needed: it is always enabled").
* int8 from a Q/DQ ONNX on 8.6 and 10.x is explicit quantisation: --int8 --fp16, no calibration (--fp16
  lets layers without int8 kernels run in fp16 rather than fp32).
* --sparsity=enable, --useDLACore=N and --allowGPUFallback are the same in 8.6 and 10.x.
"""

import shlex
from dataclasses import dataclass

from compressor.runtime.onnx import INPUT_NAME
from compressor.runtime.tensorrt import SUPPORTED, BatchRange, BuildPlan, supported_text, version_name

BUILD_SCRIPT, CHECK_SCRIPT, README = "build_engine.sh", "check_engine.sh", "README.md"
BUILDER_FLAG = {"FP16": "--fp16", "INT8": "--int8", "SPARSE_WEIGHTS": "--sparsity=enable"}


@dataclass(frozen=True)
class Bundle:
    """What the target builds and checks. Every file is named relative to the bundle's folder."""

    engine_file: str
    reference_onnx: str  # the fp32 ONNX the engine is checked against
    plans: dict[int, BuildPlan | str]  # a major version's plan, or why it cannot build this engine
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    batches: BatchRange | None  # None: the ONNX's own batch, `fixed_batch`
    fixed_batch: int | None
    workspace_mb: int
    dla_core: int | None
    atol: float
    rtol: float
    built_from: dict[str, str]  # README's "what was built" rows

    def opt_shape(self) -> tuple[int, ...]:
        return (self.batches.opt if self.batches else self.fixed_batch, *self.input_shape)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def workspace_flag(major: int, workspace_mb: int) -> str:
    return f"--memPoolSize=workspace:{workspace_mb}" + ("" if major == 8 else "M")


def dla_flags(dla_core: int | None) -> list[str]:
    return [] if dla_core is None else [f"--useDLACore={dla_core}", "--allowGPUFallback"]


def build_arguments(major: int, plan: BuildPlan, bundle: Bundle) -> list[str]:
    arguments = [f"--onnx={plan.onnx_file}", f"--saveEngine={bundle.engine_file}",
                 *(BUILDER_FLAG[flag] for flag in plan.builder_flags), workspace_flag(major, bundle.workspace_mb)]
    if bundle.batches:
        low, opt, high = bundle.batches.shapes(bundle.input_shape)
        arguments += [f"--minShapes={INPUT_NAME}:{_shape(low)}", f"--optShapes={INPUT_NAME}:{_shape(opt)}",
                      f"--maxShapes={INPUT_NAME}:{_shape(high)}"]
    return arguments + dla_flags(plan.dla_core)


def timing_arguments(bundle: Bundle) -> list[str]:
    shapes = [f"--shapes={INPUT_NAME}:{_shape(bundle.opt_shape())}"] if bundle.batches else []
    dla = [] if bundle.dla_core is None else [f"--useDLACore={bundle.dla_core}"]  # the core it was built for
    return [f"--loadEngine={bundle.engine_file}", *shapes, *dla]


def _command(arguments: list[str]) -> str:
    return " ".join(['"$TRTEXEC"', *map(shlex.quote, arguments)])


def _preamble(script: str, about: str) -> list[str]:
    """Finds trtexec and its version: $TRTEXEC, PATH, JetPack's place, then $TENSORRT_HOME/bin."""
    too_old = [f'if [ "$major" = {major} ] && [ "${{minor:-0}}" -lt {minor} ]; then major="{major}.$minor"; fi'
               for major, minor in SUPPORTED.items() if minor]
    return [
        "#!/usr/bin/env bash",
        f"# {about} Made by `compress export`; README.md beside it says what was built.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'if [ -z "${TRTEXEC:-}" ]; then',
        '  for candidate in "$(command -v trtexec || true)" /usr/src/tensorrt/bin/trtexec '
        '"${TENSORRT_HOME:-/nonexistent}/bin/trtexec"; do',
        '    if [ -n "$candidate" ] && [ -x "$candidate" ]; then TRTEXEC="$candidate"; break; fi',
        "  done",
        "fi",
        'if [ -z "${TRTEXEC:-}" ]; then',
        f"  echo '{script}: no trtexec on PATH, in /usr/src/tensorrt/bin (JetPack) or in $TENSORRT_HOME/bin; "
        "set TRTEXEC=/path/to/trtexec' >&2",
        "  exit 1",
        "fi",
        "# The version: trtexec's banner ('[TensorRT v8602]' is 8.6.2, 'v100300' is 10.3.0), else the",
        "# Debian package (JetPack's), else the Python module.",
        'banner="$("$TRTEXEC" --help 2>&1 | head -n 1 || true)"',
        "number=\"$(printf '%s' \"$banner\" | sed -n 's/.*TensorRT v\\([0-9][0-9]*\\).*/\\1/p')\"",
        'if [ -n "$number" ] && [ "$number" -ge 100000 ]; then version="$((number / 10000)).$((number / 100 % 100))"',
        'elif [ -n "$number" ]; then version="$((number / 1000)).$((number / 100 % 10))"',
        "else version=\"$( (dpkg-query -W -f='${Version}' libnvinfer-bin 2>/dev/null || "
        "python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true) | cut -d. -f1,2)\"",
        "fi",
        'major="${version%%.*}"; minor="${version#*.}"',
        *too_old,
    ]


def build_script(bundle: Bundle) -> str:
    """Runs the trtexec command made for the target's TensorRT major version."""
    branches = []
    for major, plan in bundle.plans.items():
        if isinstance(plan, BuildPlan):
            action = _command(build_arguments(major, plan, bundle))
        else:
            action = f"echo {shlex.quote(f'{BUILD_SCRIPT}: {plan}')} >&2; exit 1"
        branches.append(f"  {major}) {action} ;;")
    return "\n".join([
        *_preamble(BUILD_SCRIPT, f"Builds {bundle.engine_file} on the device it will run on."),
        'echo "building with $TRTEXEC (TensorRT ${version:-unknown})"',
        'case "$major" in',
        *branches,
        f'  *) echo "{BUILD_SCRIPT}: needs TensorRT {supported_text()}; $TRTEXEC says: '
        '${banner:-nothing} (version ${version:-unknown})" >&2; exit 1 ;;',
        "esac",
        f'echo "built {bundle.engine_file}: check it with bash {CHECK_SCRIPT}"',
        "",
    ])


def check_script(bundle: Bundle) -> str:
    """trtexec's timing of the built engine, then, where polygraphy is installed, the engine against
    onnxruntime. Polygraphy runs the engine file itself (--model-type engine) on inputs saved from the
    onnxruntime run: `polygraphy run model.onnx --trt --onnxrt` would build and check an engine of its own."""
    engine, reference = bundle.engine_file, bundle.reference_onnx
    shape = ",".join(map(str, bundle.opt_shape()))
    onnxrt = ["polygraphy", "run", reference, "--onnxrt", "--input-shapes", f"{INPUT_NAME}:[{shape}]", "--seed", "0",
              "--save-inputs", "parity-inputs.json", "--save-outputs", "parity-onnxrt.json"]
    trt = ["polygraphy", "run", engine, "--model-type", "engine", "--trt", "--load-inputs", "parity-inputs.json",
           "--load-outputs", "parity-onnxrt.json", "--atol", str(bundle.atol), "--rtol", str(bundle.rtol)]
    return "\n".join([
        *_preamble(CHECK_SCRIPT, f"Times {engine} with trtexec and checks it against onnxruntime."),
        f'[ -f {engine} ] || {{ echo "{CHECK_SCRIPT}: no {engine} here: run bash {BUILD_SCRIPT} first" >&2; exit 1; }}',
        f'echo "== timing: {engine} with $TRTEXEC (TensorRT ${{version:-unknown}}), batch {bundle.opt_shape()[0]}"',
        f'if ! log="$({_command(timing_arguments(bundle))} 2>&1)"; then',
        "  printf '%s\\n' \"$log\" | tail -n 20 >&2",
        f'  echo "{CHECK_SCRIPT}: trtexec could not run {engine} (an engine runs only with the TensorRT and GPU '
        f'that built it: rebuild it here with bash {BUILD_SCRIPT})" >&2',
        "  exit 1",
        "fi",
        "printf '%s\\n' \"$log\" | grep -E 'Throughput:|Latency: |GPU Compute Time: '",
        "if command -v polygraphy >/dev/null 2>&1; then",
        f'  echo "== parity: {engine} against onnxruntime on {reference}, random inputs, '
        f'atol {bundle.atol}, rtol {bundle.rtol}"',
        f"  {shlex.join(onnxrt)} >/dev/null",
        f"  {shlex.join(trt)}",
        "else",
        '  echo "note: polygraphy is not installed, so only the timing ran and the outputs were not compared '
        '(pip install polygraphy, then run this again)"',
        "fi",
        "",
    ])


def readme(bundle: Bundle, has_build_script: bool) -> str:
    rows = [f"| {key} | {value} |" for key, value in bundle.built_from.items()]
    commands = ([f"bash {BUILD_SCRIPT}    # trtexec builds {bundle.engine_file} for this GPU and TensorRT"]
                if has_build_script else [])
    commands.append(f"bash {CHECK_SCRIPT}    # trtexec times it; polygraphy, if installed, checks it")
    per_version = [f"* TensorRT {version_name(major)}: `trtexec {shlex.join(build_arguments(major, plan, bundle))}`"
                   if isinstance(plan, BuildPlan) else f"* TensorRT {version_name(major)}: not built ({plan})"
                   for major, plan in bundle.plans.items()] if has_build_script else []
    return "\n".join([
        f"# {bundle.engine_file}: a TensorRT engine to build on the device",
        "",
        "Engines are specific to the GPU and the TensorRT version that build them, so this folder",
        "holds what the device needs to build and check its own. Copy the whole folder there; the",
        "scripts find trtexec on PATH, in /usr/src/tensorrt/bin (JetPack) or in $TENSORRT_HOME/bin",
        "(or take TRTEXEC=/path/to/trtexec), and run from any directory.",
        "",
        "```",
        *commands,
        "```",
        "",
        "| what | value |",
        "|---|---|",
        *rows,
        f"| TensorRT | {supported_text()} (the script picks the flags by `trtexec --help`'s version) |",
        f"| parity tolerance | atol {bundle.atol}, rtol {bundle.rtol} against onnxruntime on {bundle.reference_onnx} |",
        *([f"| DLA | core {bundle.dla_core}; layers it cannot run fall back to the GPU |"]
          if bundle.dla_core is not None else []),
        "",
        *(["The command each TensorRT version runs:", "", *per_version, ""] if per_version else []),
    ])
