"""The CLI keeps freed memory in the process, so PyTorch's fresh feature maps stop page-faulting."""

import ctypes.util
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from compressor.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
x = torch.randn(128, 16, 28, 28)
def step():
    maps = [x * 2]
    for _ in range(5):
        maps.append(maps[-1].relu() + 1)  # feature maps kept for a backward pass, as in training
    return sum(m.sum() for m in maps)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not ctypes.util.find_library("c") or sys.platform != "linux", reason="needs glibc")
def test_kept_memory_stops_page_faults_on_fresh_tensors():
    def faults(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                                  check=True).stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 20 * 1568  # glibc faulted 6.4 MB maps in again (how many varies from run to run)
    assert kept < default / 10
