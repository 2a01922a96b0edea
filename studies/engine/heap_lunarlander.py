"""Peak memory and CPU time of one engine batch of LunarLander agents under three heap policies (2026-11-27).

    python studies/engine/heap_lunarlander.py MODE AGENTS STEPS [EVERY]

MODE: ``off`` (glibc's defaults), ``mallopt`` (what the engine now does for Box2D groups:
``limit_heap_fragmentation``, the same as ``MALLOC_MMAP_THRESHOLD_=65536``), ``trim`` (glibc's defaults plus
``malloc_trim(0)`` every EVERY lock-step steps). Run each in a fresh process, with ``MALLOC_MMAP_THRESHOLD_``
unset; it prints one line: wall and CPU seconds of the batch, and the process's peak resident memory.
Settings: meta-learner v2's fixed DQN settings (net [64, 64], batch 64, train_freq 4, ...), seeds 1000+.
Results: studies/reports/engine/heap_lunarlander.md.
"""

import ctypes
import os
import resource
import sys
import time

import torch

from hypermeta.engine import batched as engine
from hypermeta.engine.measurement import Measurement
from hypermeta.space import DQNConfig

if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
    sys.exit("unset MALLOC_MMAP_THRESHOLD_ first: it decides the heap policy before this script can")
torch.set_num_threads(1)
mode, n, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
every = int(sys.argv[4]) if len(sys.argv) > 4 else 100
if mode not in ("off", "mallopt", "trim"):
    sys.exit(f"MODE must be off, mallopt or trim, got {mode!r}")
if mode != "mallopt":
    engine.limit_heap_fragmentation = lambda: False
libc, calls = ctypes.CDLL("libc.so.6"), [0]


def on_step(_agents: int) -> None:
    calls[0] += 1
    if mode == "trim" and calls[0] % every == 0:
        libc.malloc_trim(0)


cfg = DQNConfig(net_arch="small", batch_size=64, train_freq=4, subsample_steps=4, target_update_interval=250)
jobs = [engine.Job("lunarlander", "m", cfg, Measurement(steps), 1000 + i) for i in range(n)]
wall, cpu = time.perf_counter(), time.process_time()
engine.train_group(jobs, progress=on_step)
print(mode, n, steps, every if mode == "trim" else "-", f"wall {time.perf_counter() - wall:.0f}s",
      f"cpu {time.process_time() - cpu:.0f}s", f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
