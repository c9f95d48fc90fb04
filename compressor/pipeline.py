"""Runs a recipe's passes in order, checkpoints after each, resumes after the last finished one
(and, inside a pass that trains, after its last finished epoch: training/resume.py). It knows
nothing of pruning or training: passes do the work."""

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.nn as nn

from compressor.console import console
from compressor.data import DataBundle, load_data
from compressor.errors import CompressorError
from compressor.measure import count_macs_params, human
from compressor.files import atomic_write
from compressor.models import NO_TRUST, TRUST_ALL, Trust, load_source
from compressor.passes import PASSES
from compressor.process import busy_warning, current_wait, use_threads
from compressor.recipe import Recipe, dump_recipe
from compressor.pruning.diagnose import forward_or_explain
from compressor.runs import (RECIPE_FILE, check_deletable, check_writable, checkpoints, is_checkpoint, is_marked, mark,
                             partial_folder, pass_folder, pass_folders)
from compressor.tasks import Task, task_of
from compressor.state import State, load_checkpoint, read_meta, save_checkpoint
from compressor.training import distributed
from compressor.training.resume import PassCheckpoints, drop_training_checkpoints, holds_training_checkpoint

INPUT = "input"  # the name under which the unmodified model is referred to (e.g. as teacher)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CompressorError("device: cuda was asked for, but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


@dataclass
class RunContext:
    """What a pass may use besides the State. `pass_dir` is where the pass writes its files."""

    recipe: Recipe
    run_dir: Path
    device: torch.device
    pass_dir: Path = None
    index: int = -1
    previous: str = INPUT  # folder name of the last finished pass
    trust: Trust | None = None  # model sources that run code which may be built (default: the recipe's)
    checkpoints: PassCheckpoints | None = None  # where the running pass's training keeps its epochs (None: nowhere)

    def __post_init__(self):
        if self.trust is None:
            self.trust = recipe_trust(self.recipe)

    @cached_property
    def data(self) -> DataBundle:
        return load_data(self.recipe.data, self.recipe.seed)

    @property
    def task(self) -> Task:
        return task_of(self.data)

    def baseline(self) -> nn.Module:
        """The model as the recipe gives it, before any pass; the same initial weights for the
        same seed, without moving the random stream of the pass that asks."""
        return self.baseline_source()[0]

    def baseline_source(self) -> tuple[nn.Module, dict]:
        """The baseline and the source record its checkpoints keep (models.load_source)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.seed)
            return load_source(self.recipe.model, self.trust)


def recipe_trust(recipe: Recipe) -> Trust:
    """A recipe the user hands us is theirs: the sources it names may run their code."""
    return Trust.of(recipe.model, *(getattr(p, "teacher", None) for p in recipe.passes))


class Pipeline:
    def __init__(self, recipe: Recipe, run_dir: Path, trust_code: bool = False):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.ctx = RunContext(recipe, self.run_dir, resolve_device(recipe.device),
                              trust=TRUST_ALL if trust_code else recipe_trust(recipe))

    def finished_passes(self) -> int:
        """How many leading passes already have a complete checkpoint made by this same recipe."""
        expected = {pass_folder(i, p.type) for i, p in enumerate(self.recipe.passes)}
        for folder in checkpoints(self.run_dir):
            if folder.name not in expected:
                raise CompressorError(
                    f"cannot resume {self.run_dir}: it holds {folder.name}, which this recipe does not have; "
                    "run with --fresh to start over, or use a new --out"
                )
        done = 0
        for index, params in enumerate(self.recipe.passes):
            folder = self.run_dir / pass_folder(index, params.type)
            if not is_checkpoint(folder):
                later = [f.name for f in checkpoints(self.run_dir) if f.name > folder.name]
                if later:
                    raise CompressorError(
                        f"cannot resume {self.run_dir}: {folder.name} has no finished checkpoint, yet {later[0]} "
                        "after it has one (a file was removed?); run with --fresh to start over")
                break
            if read_meta(folder).get("fingerprint") != self.recipe.fingerprint(index):
                raise CompressorError(
                    f"cannot resume {self.run_dir}: passes[{index}] ({params.type}) or something before it "
                    "changed since that pass ran; run with --fresh to start over, or use a new --out"
                )
            done = index + 1
        return done

    def prepare(self, resume: bool, fresh: bool) -> int:
        """Checks and tidies the run folder (rank 0 only, under torchrun); returns passes done."""
        if not distributed.is_main():
            distributed.barrier()
            return self.finished_passes() if resume else 0
        try:
            return self._prepare(resume, fresh)
        finally:
            distributed.barrier()

    def _prepare(self, resume: bool, fresh: bool) -> int:
        check_writable(self.run_dir)
        has_run = (bool(pass_folders(self.run_dir))
                   or any(map(holds_training_checkpoint, self.run_dir.glob(".*.partial"))))
        if fresh and self.run_dir.is_dir() and (has_run or is_marked(self.run_dir)):
            check_deletable(self.run_dir)
            shutil.rmtree(self.run_dir)
        elif has_run and not resume:
            raise CompressorError(
                f"{self.run_dir} already holds a run: add --resume to continue it, --fresh to start over, "
                "or --out DIR to write elsewhere"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mark(self.run_dir)
        done = self.finished_passes() if resume else 0
        # Left by a killed pass, which never finished: redone, from its last finished epoch where
        # it is the pass to run next and kept one (a stale one is ignored there with a note).
        resumable = self.partial(done) if resume and done < len(self.recipe.passes) else None
        for partial in self.run_dir.glob(".*.partial"):
            if partial != resumable or not holds_training_checkpoint(partial):
                shutil.rmtree(partial)
        return done

    def partial(self, index: int) -> Path:
        return self.run_dir / partial_folder(index, self.recipe.passes[index].type)

    def initial_state(self) -> State:
        data = self.ctx.data  # first: a missing dataset is named before a large model loads
        model, record = self.ctx.baseline_source()
        state = State(model, record, tuple(data.input_shape))
        outputs = forward_or_explain(model, state.example_input(), f"running the model on the data's input "
                                     f"{state.input_shape} (check data.channels and data.image_size against the model)")
        self.ctx.task.check_model(model, outputs, data)
        macs, params = count_macs_params(model, state.example_input())
        state.records.append({"index": -1, "type": INPUT, "dir": None, "params": params, "macs": macs,
                              "seconds": 0.0, "metrics": {}})
        return state

    def load(self, folder: str) -> State:
        """A finished pass's State, teacher included (it is stored once, as the pass it came from)."""
        state = load_checkpoint(self.run_dir / folder, self.ctx.trust)
        if state.teacher_pass == INPUT:
            state.teacher = self.ctx.baseline().requires_grad_(False)
        elif state.teacher_pass:
            teacher = load_checkpoint(self.run_dir / state.teacher_pass, self.ctx.trust)
            state.teacher = teacher.model.requires_grad_(False)
        state.model.to(self.ctx.device)
        return state

    def run(self, resume: bool = False, fresh: bool = False) -> State:
        distributed.init()
        console.quiet = not distributed.is_main()
        self.threads = use_threads(self.recipe.threads)
        self.wait = current_wait()
        done = self.prepare(resume, fresh)
        if done:
            self.ctx.previous = pass_folder(done - 1, self.recipe.passes[done - 1].type)
            console.print(f"[dim]resuming {self.run_dir} after {self.ctx.previous}[/dim]")
        state = self.load(self.ctx.previous) if done else self.initial_state()
        self.print_header(state)
        if distributed.is_main():  # once what it resumes from has checked out
            atomic_write(self.run_dir / RECIPE_FILE, dump_recipe(self.recipe))
        for index, params in enumerate(self.recipe.passes):
            if index >= done:
                state = self.run_pass(state, index, params)
        return state

    def print_header(self, state: State) -> None:
        shape = "×".join(map(str, state.input_shape))
        wait = f", {self.waiting()}" if self.waiting() else ""
        console.print(f"[bold]{self.recipe.name}[/bold]: {self.recipe.model.source} on {self.recipe.data.dataset}, "
                      f"input {shape}, {self.ctx.task.name} task, device {self.ctx.device}, {self.threads} CPU "
                      f"thread{'s' * (self.threads > 1)} ({self.threads.why}){wait}", highlight=False)
        warning = busy_warning(self.threads, self.wait)
        if warning:
            console.print(f"[yellow]note:[/yellow] {warning}")

    def waiting(self) -> str | None:
        """How the run's threads wait, and why; None for one thread, which waits for no other."""
        return self.wait.describe() if self.threads > 1 else None

    def training_ahead(self, state: State, index: int) -> str | None:
        """The whole run's ETA where it can be known: the training epochs from this pass on, at the
        speed the last training pass measured (passes that do not train take seconds beside them)."""
        rate = next((r["metrics"]["img_per_s"] for r in reversed(state.records) if "img_per_s" in r["metrics"]), None)
        epochs = sum(p.epochs for p in self.recipe.passes[index:] if PASSES.get(p.type).trains)
        if not rate or not epochs:
            return None
        loader = self.ctx.data.train
        seconds = epochs * loader.num_samples * loader.world / rate  # img/s counts every rank's images
        return (f"{human_duration(seconds)} of training left in this run ({epochs:g} epochs at the "
                f"{rate:.0f} img/s the last training pass measured)")

    def run_pass(self, state: State, index: int, params) -> State:
        """Runs one pass and checkpoints it. Under torchrun, passes that train run on every rank;
        the rest run on rank 0 while the others wait and then load its checkpoint."""
        folder = pass_folder(index, params.type)
        step = PASSES.get(params.type)(params)
        everyone = step.trains and distributed.active()
        if everyone or distributed.is_main():
            kept = self.partial(index)
            if distributed.is_main():
                kept.mkdir(exist_ok=True)  # prepare keeps one that holds training checkpoints
                partial = kept
            else:  # other ranks' files are scratch: rank 0 writes the run folder
                partial = Path(tempfile.mkdtemp(prefix=f"{folder}-rank{distributed.rank()}-"))
            self.ctx.pass_dir, self.ctx.index = partial, index
            self.ctx.checkpoints = PassCheckpoints(kept, self.recipe.fingerprint(index), folder, distributed.is_main())
            console.rule(f"[bold]{index + 1}/{len(self.recipe.passes)} {params.type}")
            ahead = self.training_ahead(state, index)
            if ahead:
                console.print(f"[dim]{ahead}[/dim]")
            try:
                seconds, macs, n_params = self.execute(step, state, index, folder, partial)
            except BaseException as e:
                # A pass that did not finish leaves nothing, but an interrupted one keeps its
                # training checkpoints for --resume (a killed one keeps them anyway).
                if not (isinstance(e, KeyboardInterrupt) and partial == kept and holds_training_checkpoint(kept)):
                    shutil.rmtree(partial, ignore_errors=True)
                raise
            console.print(f"[green]✓[/green] {folder} in {seconds:.1f}s — params {human(n_params)}, "
                          f"MACs {human(macs)}")
        distributed.barrier()
        if not everyone and not distributed.is_main():
            state = self.load(folder)
        self.ctx.previous = folder
        return state

    def execute(self, step, state: State, index: int, folder: str, partial: Path) -> tuple[float, int, int]:
        """Runs the pass and, on rank 0, turns `partial` into its checkpoint folder."""
        params = step.params
        torch.manual_seed(self.recipe.seed * 1000 + index)  # a resumed pass repeats the uninterrupted one
        start = time.perf_counter()
        try:
            metrics = step.run(state, self.ctx)
        except CompressorError as e:
            raise CompressorError(f"passes[{index}] ({params.type}): {e}") from None
        seconds = time.perf_counter() - start
        macs, n_params = count_macs_params(state.model, state.example_input(device=self.ctx.device))
        state.records.append({"index": index, "type": params.type, "dir": folder, "params": n_params,
                              "macs": macs, "seconds": round(seconds, 2), "metrics": metrics})
        if distributed.is_main():
            save_checkpoint(state, partial, {"index": index, "type": params.type,
                                             "fingerprint": self.recipe.fingerprint(index)})
            final = self.run_dir / folder
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            drop_training_checkpoints(final)  # after the rename: a kill before it still resumes
        else:
            shutil.rmtree(partial)
        return seconds, macs, n_params


def human_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"about {minutes} min"


def run_on_checkpoint(recipe: Recipe, checkpoint: Path, out_dir: Path, trust: Trust = NO_TRUST):
    """Runs the recipe's passes on a finished checkpoint, their files going to `out_dir`, without
    checkpointing them (what `compress export` does). Yields each pass's type and metrics.
    Exports run on the CPU; TensorRT picks its own GPU. The recipe and checkpoint come from a
    run folder, so only `trust` says which of their sources may run code."""
    state = load_checkpoint(checkpoint, trust)
    check_writable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(recipe, out_dir, torch.device("cpu"), pass_dir=out_dir, trust=trust)
    for params in recipe.passes:
        yield params.type, PASSES.get(params.type)(params).run(state, ctx)
