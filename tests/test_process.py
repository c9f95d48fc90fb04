"""The CPU threads a run takes, and how they wait: what was asked wins, else OMP_NUM_THREADS, else
the usable CPUs; libgomp's threads sleep when out of work unless the user chose otherwise."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from compressor.process import busy_warning, choose_threads, threads_spin, use_threads

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


def test_a_busy_machine_is_worth_a_note_only_where_threads_spin(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # other users' load, given
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert busy_warning(2) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    warning = busy_warning(2)
    assert "--threads 1" in warning and "OMP_WAIT_POLICY=PASSIVE" in warning and "load 9.0" in warning
    assert busy_warning(1) is None


def test_use_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(sys.platform != "linux", reason="torch's OpenMP runtime is libgomp on Linux")
@pytest.mark.parametrize("imports, given, spin_count", [
    ("compressor, torch", {}, "300000"),  # libgomp's own default: compressor leaves it
    ("compressor, torch", {"OMP_WAIT_POLICY": "PASSIVE"}, "0"),  # what busy_warning suggests
    ("compressor, torch", {"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": "PASSIVE"}, "300000"),  # a count wins
])
def test_libgomp_waits_as_the_environment_says_and_threads_spin_agrees(imports, given, spin_count):
    """libgomp reads its environment once, as torch loads it; OMP_DISPLAY_ENV makes it print what it
    took. threads_spin, reading the environment afterwards, must agree with it."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT} | given | {"OMP_DISPLAY_ENV": "VERBOSE"}
    code = f"import os, {imports}; from compressor.process import threads_spin; print(threads_spin(os.environ))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert f"GOMP_SPINCOUNT = '{spin_count}'" in done.stderr, done.stderr
    assert done.stdout.split() == [str(spin_count != "0")]
