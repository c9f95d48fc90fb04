"""The CPU threads a run takes, and how they wait: what was asked wins, else OMP_NUM_THREADS, else
the usable CPUs; libgomp's threads spin when out of work where the CPUs were free as the run
started, and sleep where other processes held them, unless the environment says otherwise."""

import contextlib
import json
import os
import pickle
import re
import subprocess
import sys
import time

import pytest
import torch

from compressor.process import (WaitPolicy, busy_warning, choose_threads, choose_wait, others_cpu_use, threads_spin,
                                usable_cpus, use_threads)
from tests.conftest import write_recipe

OPENMP_WAIT = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def test_the_threads_asked_for_win_over_the_environment_and_the_cpus():
    threads = choose_threads(3, {"OMP_NUM_THREADS": "1"}, 2)
    assert (threads, threads.why) == (3, "as asked")


@pytest.mark.parametrize("value, expected", [("1", 1), ("4", 4), ("0", 2), ("two", 2), ("", 2)])
def test_omp_num_threads_wins_over_the_cpus_where_it_is_a_count(value, expected):
    threads = choose_threads(None, {"OMP_NUM_THREADS": value}, 2)
    assert threads == expected
    assert threads.why == ("OMP_NUM_THREADS" if value in ("1", "4") else "2 usable CPUs")


def test_torchrun_processes_share_the_cpus_one_thread_at_least():
    threads = choose_threads(None, {"LOCAL_WORLD_SIZE": "2"}, 4)
    assert (threads, threads.why) == (2, "4 usable CPUs ÷ 2 processes")
    assert choose_threads(None, {"LOCAL_WORLD_SIZE": "4"}, 2) == 1


def test_the_count_prints_and_stores_as_a_plain_number():
    threads = choose_threads(None, {}, 2)
    assert (f"{threads}", json.dumps({"threads": threads}), threads > 1) == ("2", '{"threads": 2}', True)
    copied = pickle.loads(pickle.dumps(threads))
    assert (copied, copied.why) == (2, "2 usable CPUs")


@pytest.mark.parametrize("environ, spin", [
    ({}, True),  # libgomp's own default: ~3 ms of spinning
    ({"OMP_WAIT_POLICY": "PASSIVE"}, False),
    ({"OMP_WAIT_POLICY": "active"}, True),
    ({"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": "PASSIVE"}, True),  # libgomp: the count wins
    ({"GOMP_SPINCOUNT": "0", "OMP_WAIT_POLICY": "ACTIVE"}, False),
])
def test_threads_spin_as_libgomp_reads_the_environment(environ, spin):
    assert threads_spin(environ) is spin


@pytest.mark.parametrize("others, spin", [(0.0, True), (0.4, True), (0.6, False), (1.0, False), (2.0, False)])
def test_threads_sleep_where_other_processes_leave_fewer_free_cpus_than_threads(others, spin):
    policy = choose_wait({}, torch_loaded=False, others=others, cpus=2)
    assert policy.spin is spin
    assert f"other processes used {others:.1f} of 2 CPUs" in policy.why
    assert ("OMP_WAIT_POLICY=PASSIVE" in policy.why) is not spin


def test_the_wait_counts_the_threads_a_run_takes_by_default():
    assert choose_wait({"OMP_NUM_THREADS": "1"}, False, 1.0, 2).spin  # one thread waits for no other
    assert choose_wait({"OMP_NUM_THREADS": "4"}, False, 2.0, 8).spin  # six free CPUs for four threads
    assert choose_wait({"LOCAL_WORLD_SIZE": "2"}, False, 1.0, 8).spin  # torchrun: four threads a process
    assert not choose_wait({}, False, 1.0, 8).spin  # one of eight threads would share a CPU


@pytest.mark.parametrize("environ, torch_loaded, spin, why", [
    ({"OMP_WAIT_POLICY": "active"}, False, True, "as the environment sets"),
    ({"GOMP_SPINCOUNT": "0"}, False, False, "as the environment sets"),
    ({}, True, True, "torch was loaded before"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, True, False, "as the environment sets"),
])
def test_what_the_environment_or_a_loaded_libgomp_decided_stands_whatever_the_load(environ, torch_loaded, spin, why):
    policy = choose_wait(environ, torch_loaded, others=2.0, cpus=2)
    assert policy.spin is spin and why in policy.why


def test_a_busy_machine_is_worth_a_note_only_where_threads_spin(monkeypatch):
    import compressor.process as process

    monkeypatch.setattr(process, "others_cpu_use", lambda: 1.0)  # another process holds one of the two CPUs
    monkeypatch.setattr(process, "usable_cpus", lambda: 2)
    assert busy_warning(2, WaitPolicy(False, "")) is None
    assert busy_warning(1, WaitPolicy(True, "")) is None
    warning = busy_warning(2, WaitPolicy(True, ""))
    assert "--threads 1" in warning and "OMP_WAIT_POLICY=PASSIVE" in warning and "1.0 of 2 CPUs" in warning
    monkeypatch.setattr(process, "others_cpu_use", lambda: 0.1)
    assert busy_warning(2, WaitPolicy(True, "")) is None


def test_use_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


HOG = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"  # one busy CPU, two minutes at most
needs_two_cpus = pytest.mark.skipif(sys.platform != "linux" or usable_cpus() < 2,
                                    reason="needs Linux's /proc/stat and libgomp, and 2 usable CPUs")


@contextlib.contextmanager
def busy_cpu():
    """Another process keeping one CPU busy for the duration of the block."""
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        time.sleep(1)  # started and spinning
        yield
    finally:
        hog.kill()
        hog.wait()


def compress_env(given: dict) -> dict:
    """A user's environment that sets nothing about OpenMP but `given`, with libgomp asked to print
    what it read (OMP_DISPLAY_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in (*OPENMP_WAIT, "OMP_NUM_THREADS")}
    return env | given | {"OMP_DISPLAY_ENV": "VERBOSE"}


@needs_two_cpus
def test_a_run_started_beside_a_busy_process_sleeps_its_threads_and_says_so(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe | {"passes": [{"type": "evaluate"}]})
    with busy_cpu():
        done = subprocess.run([sys.executable, "-m", "compressor", "run", str(path), "--out", str(tmp_path / "run")],
                              env=compress_env({}), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GOMP_SPINCOUNT = '0'" in done.stderr, done.stderr  # what libgomp itself took
    said = " ".join(done.stdout.split())  # the header wraps at 120 columns
    assert "2 CPU threads (2 usable CPUs), sleeping while they wait (other processes used" in said, said
    assert "as the run started: OMP_WAIT_POLICY=PASSIVE)" in said, said


@needs_two_cpus
@pytest.mark.parametrize("busy, given, spin_count", [
    (False, {}, None),  # whatever the machine's load chose, libgomp and the header agree
    (True, {"GOMP_SPINCOUNT": "300000"}, "300000"),  # the environment's word stands against the load
    (False, {"OMP_WAIT_POLICY": "PASSIVE"}, "0"),
])
def test_libgomp_waits_as_compress_chose_before_torch_loaded(busy, given, spin_count):
    """libgomp reads its environment once, as torch loads it: `compress` (the CLI's main) must have
    chosen first, and what it reports must be what libgomp took."""
    code = ("import sys; sys.argv = ['compress', '--version']; from compressor import cli, process\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "import torch; torch.ones(1); print(process.current_wait().spin)")
    with busy_cpu() if busy else contextlib.nullcontext():
        done = subprocess.run([sys.executable, "-c", code], env=compress_env(given), capture_output=True, text=True,
                              check=True, timeout=120)
    took = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr).group(1)
    assert took == (spin_count or took)
    assert done.stdout.split()[-1] == str(took != "0")


@needs_two_cpus
def test_others_cpu_use_sees_a_busy_process():
    with busy_cpu():
        assert others_cpu_use(0.3) >= 0.7


@needs_two_cpus
def test_how_threads_wait_changes_no_weight_a_run_trains(tmp_path, synthetic_recipe):
    """Why the wait, and never the thread count, is chosen from the load: the same training with
    threads that spin and threads that sleep gives the same bytes."""
    recipe = synthetic_recipe | {"passes": [{"type": "train", "epochs": 1}]}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    weights = []
    for name, given in (("sleep", {"OMP_WAIT_POLICY": "PASSIVE"}), ("spin", {"GOMP_SPINCOUNT": "300000"})):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "compressor", "run", str(path), "--out", str(out), "--threads", "2"],
                              env=compress_env(given), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"GOMP_SPINCOUNT = '{given.get('GOMP_SPINCOUNT', '0')}'" in done.stderr
        weights.append((out / "00-train" / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
