"""The quickstart's distillation throughput with `compress`'s default threads and wait, against
1 thread and 2 threads spinning or sleeping, while 0, 1 and 2 other processes keep CPUs busy.
Writes docs/threads.md; exits 1 where the default misses 0.8x of the best setting under a load.

    python examples/benchmarks/threads_under_load.py            # 3 rounds, ~10 min on 2 CPU cores
    python examples/benchmarks/threads_under_load.py --quick    # 1 round of 1 s measurements

Each busy process is another single-threaded job: numpy 256×256 matmuls in a loop on one thread,
as another user's run with OMP_NUM_THREADS=1 would be. A worker process builds the quickstart's
state (its recipe, data and prune pass, as `compress run` does) and then, on each request, runs the
real distill pass for a few seconds and reports the img/s its training loop measured.

`compress` chooses how its threads wait as it starts, from what the other processes use then, so
the default's worker is a new process started under each load, as a user's `compress run` would
be (its first measurement warms it up and is dropped). The fixed settings each have one worker,
whose environment fixes the wait. Rounds cycle through the loads, and within a load the settings
take turns in a rotating order, so the drift of a shared machine hits them alike. No worker
inherits OMP_NUM_THREADS, OMP_WAIT_POLICY or GOMP_SPINCOUNT from this script's environment.
"""

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
HOG = ("import os\n"
       "import numpy as np\n"
       "parent = os.getppid()\n"
       "a = np.random.rand(256, 256).astype(np.float32)\n"
       "while os.getppid() == parent:  # a killed benchmark leaves no hog behind\n"
       "    a = np.tanh(a @ a)\n")  # tanh keeps the values finite
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
OPENMP_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SPINNING = {"GOMP_SPINCOUNT": "300000"}  # libgomp's own default, stated so that no choice is made
# setting -> (the worker's extra environment, threads asked for); None: `compress`'s defaults, a new process a load
DEFAULT = "default"
SETTINGS = {
    DEFAULT: (None, None),
    "1 thread": (SPINNING, 1),
    "2 threads, spinning": (SPINNING, 2),
    "2 threads, sleeping": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
}


# the worker: one process per environment, serving measurements ---------------------------------


class Timed:
    """A loader cut short once `seconds` have passed since its iteration began: the loop's epoch
    then ends early, and its img/s covers the steps it took (one at least)."""

    def __init__(self, loader, seconds: float):
        self.loader, self.seconds = loader, seconds

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        end = time.perf_counter() + self.seconds
        for batch in self.loader:
            yield batch
            if time.perf_counter() >= end:
                return


def serve(seconds: float) -> None:
    """Builds the quickstart's pruned student and its teacher once, then answers each line
    {"threads": N or null} on stdin with a line {"img_s", "threads", "why", "wait", "loadavg"} on stdout."""
    from compressor.process import current_wait, keep_freed_memory, settle_wait

    settle_wait()  # first, as the compress command does
    from compressor.console import console
    from compressor.passes import PASSES
    from compressor.pipeline import Pipeline
    from compressor.process import use_threads
    from compressor.recipe import load_recipe

    keep_freed_memory()  # as the compress command runs
    console.quiet = True  # stdout carries the answers
    recipe = load_recipe(QUICKSTART, ["data.eval_samples=500"])
    prune, distill = (next(p for p in recipe.passes if p.type == kind) for kind in ("prune", "distill"))
    with tempfile.TemporaryDirectory() as scratch:
        pipeline = Pipeline(recipe, Path(scratch))
        ctx = pipeline.ctx
        ctx.pass_dir = Path(scratch)
        state = pipeline.initial_state()
        PASSES.get("prune")(prune).run(state, ctx)
        ctx.index = recipe.passes.index(distill)
        ctx.data.train = Timed(ctx.data.train, seconds)
        for line in sys.stdin:
            threads = use_threads(json.loads(line)["threads"])
            metrics = PASSES.get("distill")(distill).run(state, ctx)
            wait = current_wait()
            print(json.dumps({"img_s": metrics["img_per_s"], "threads": threads, "why": threads.why,
                              "spin": wait.spin, "wait": wait.describe(), "loadavg": os.getloadavg()[0]}), flush=True)


class Worker:
    def __init__(self, extra_env: dict, seconds: float):
        env = {k: v for k, v in os.environ.items() if k not in OPENMP_KEYS} | extra_env
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(seconds)], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def measure(self, threads: int | None) -> dict:
        self.process.stdin.write(json.dumps({"threads": threads}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"a worker stopped (exit status {self.process.wait()}); its error is above")
        return json.loads(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


@contextlib.contextmanager
def busy(processes: int):
    """`processes` CPU hogs running for the duration of the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG], env=os.environ | ONE_THREAD) for _ in range(processes)]
    try:
        time.sleep(0.5)  # numpy loaded: each one computes from here on
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# the measurement ---------------------------------------------------------------------------------


def measure(loads: list[int], rounds: int, seconds: float) -> dict:
    """{load: {setting: [answers, one a round]}}."""
    workers = {}  # a fixed environment -> its worker
    for env, threads in SETTINGS.values():
        if env is not None:
            key = json.dumps(env, sort_keys=True)
            if key not in workers:
                workers[key] = Worker(env, seconds)
            workers[key].measure(threads)  # warm-up at each setting
    try:
        results = {load: {name: [] for name in SETTINGS} for load in loads}
        names = list(SETTINGS)
        for round_ in range(rounds):
            for load in loads:
                with busy(load):
                    shift = (round_ + load) % len(names)
                    for name in names[shift:] + names[:shift]:
                        env, threads = SETTINGS[name]
                        if env is None:  # compress's default: started under this load
                            fresh = Worker({}, seconds)
                            try:
                                fresh.measure(threads)  # warm-up
                                answer = fresh.measure(threads)
                            finally:
                                fresh.close()
                        else:
                            answer = workers[json.dumps(env, sort_keys=True)].measure(threads)
                        results[load][name].append(answer)
                        print(f"  round {round_ + 1}/{rounds}, {load} busy, {name}: {answer['img_s']:.0f} img/s "
                              f"on {answer['threads']} ({answer['why']}), {answer['wait']}, "
                              f"load average {answer['loadavg']:.1f}", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return results


def machine() -> str:
    import torch

    from compressor.process import usable_cpus
    from compressor.runtime.latency import device_name

    return (f"{device_name(torch.device('cpu'))}, {usable_cpus()} usable CPUs ({os.cpu_count()} online), "
            f"torch {torch.__version__} with libgomp (OpenMP), numpy {__import__('numpy').__version__}")


def table(results: dict) -> tuple[list[str], dict, list[str]]:
    """The Markdown rows, each load's default ÷ best ratio of medians, and what the default chose."""
    lines = ["| busy processes | setting | threads | wait, each round | median img/s | each round's img/s | ÷ best "
             "| load average |",
             "|---:|---|---|---|---:|---|---:|---|"]
    ratios, chosen = {}, []
    for load, settings in results.items():
        medians = {name: statistics.median(a["img_s"] for a in answers) for name, answers in settings.items()}
        best = max(medians.values())
        ratios[load] = medians[DEFAULT] / best
        for name, answers in settings.items():
            threads = "; ".join(sorted({f"{a['threads']} ({a['why']})" for a in answers}))
            waits = ", ".join("spin" if a["spin"] else "sleep" for a in answers)
            each = ", ".join(f"{a['img_s']:.0f}" for a in answers)
            loads = [a["loadavg"] for a in answers]
            lines.append(f"| {load} | {name} | {threads} | {waits} | {medians[name]:.0f} | {each} "
                         f"| {medians[name] / best:.2f} | {min(loads):.1f}–{max(loads):.1f} |")
        rounds = Counter(a["wait"] for a in settings[DEFAULT])
        chosen.append(f"* {load} busy: " + "; ".join(f"{wait} ×{n}" for wait, n in rounds.items()))
    return lines, ratios, chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 1 s measurements; writes no doc "
                                                               "unless --doc is given")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3, help="training time a measurement (one step at least)")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="busy processes")
    parser.add_argument("--doc", type=Path, help="the Markdown written (default: docs/threads.md; none with --quick)")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)  # a worker's own command line
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    rounds, seconds = (1, 1.0) if args.quick else (args.rounds, args.seconds)
    doc = args.doc or (None if args.quick else ROOT / "docs" / "threads.md")
    start = time.perf_counter()
    results = measure(args.loads, rounds, seconds)
    minutes = (time.perf_counter() - start) / 60
    lines, ratios, chosen = table(results)
    verdict = [f"* {load} busy: the default reaches {ratio:.2f}× the best setting's median "
               f"({'meets' if ratio >= 0.8 else 'misses'} the 0.8× bar)" for load, ratio in ratios.items()]
    report = [
        "# Training threads under CPU load",
        "",
        f"Measured {datetime.date.today()} by `python examples/benchmarks/threads_under_load.py"
        f"{' --quick' if args.quick else ''}` ({minutes:.1f} min): the quickstart's distill pass (the pruned "
        f"ResNet-20 learning from the unpruned one, KD + CWD on layer3, batch 128) for {seconds:g} s a "
        f"measurement (one step at least), {rounds} round{'s' * (rounds > 1)}, the settings taking turns "
        "within each load. img/s is what the training loop reports. A busy process is a single-threaded "
        "numpy matmul loop.",
        "",
        f"Machine: {machine()}.",
        "",
        "*default* is what `compress run` does where nothing is set: a thread per usable CPU, and a wait chosen "
        "as it starts (compressor/process.py, `settle_wait`): threads spin as libgomp's default has them (about "
        "300000 iterations, some milliseconds, before they sleep) where the CPUs other processes use leave one "
        "free for each thread, and sleep at once (OMP_WAIT_POLICY=PASSIVE) where they do not. Its worker is a new "
        "process under each load. *1 thread*, *2 threads, spinning* (GOMP_SPINCOUNT=300000, libgomp's default, "
        "stated) and *2 threads, sleeping* (OMP_WAIT_POLICY=PASSIVE) are fixed. On this 2-CPU machine every thread "
        "count there is to choose is among them. The load average is the machine's 1-minute one after each "
        "measurement, other users' processes included.",
        "",
        *lines,
        "",
        "What the default chose, each round:",
        "",
        *chosen,
        "",
        *verdict,
    ]
    print("\n".join(report))
    if doc:
        doc.write_text("\n".join(report) + "\n")
        print(f"\nwrote {doc}")
    return 0 if all(r >= 0.8 for r in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
