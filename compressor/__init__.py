"""compressor: make trained PyTorch models smaller and faster for edge GPUs, and prove it."""

import os
import sys

# Threads of torch's OpenMP runtime (libgomp) that wait for work sleep at once, instead of spinning
# for about 3 ms after every parallel region. Spinning, they hold both CPUs of a 2-CPU machine that
# other processes want too: the quickstart's distillation then ran at 9-32 img/s, against 71-154
# with them asleep and 45-168 on one thread (docs/threads.md). libgomp reads this once,
# when it loads, so it is set here, before any module of ours imports torch; a value the user set
# (OMP_WAIT_POLICY, or libgomp's own GOMP_SPINCOUNT) is theirs and stays. Where torch is loaded
# already it would come too late, and the environment would then misstate how its threads wait.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ) and "torch" not in sys.modules:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

__version__ = "0.1.0"
