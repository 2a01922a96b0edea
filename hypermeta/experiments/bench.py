"""Benchmarks that write markdown reports (performance targets are checked here, never in timed tests)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.utils import LinearSchedule

from hypermeta.callback import HyperMetaCallback
from hypermeta.files import write_report
from hypermeta.space import DQNConfig
from hypermeta.experiments.measurement import check_timesteps
from hypermeta.experiments.sb3 import build_model

#: Linear lr and epsilon, so plain SB3 (its own LinearSchedule) can run the very same schedules.
BENCH_CONFIG = DQNConfig(lr_initial=1e-3, lr_final_ratio=0.1, lr_shape="linear", eps_shape="linear")


def _steps_per_second(task: str, timesteps: int, seed: int, with_callback: bool) -> float:
    model: DQN = build_model(task, BENCH_CONFIG, seed)
    callback = None
    if with_callback:
        callback = HyperMetaCallback(BENCH_CONFIG)
    else:  # plain SB3: its own linear schedule with the same values
        model.lr_schedule = LinearSchedule(BENCH_CONFIG.lr_initial,
                                           BENCH_CONFIG.lr_initial * BENCH_CONFIG.lr_final_ratio, 1.0)
    start = time.process_time()  # CPU time of this process: robust to other load on the machine
    model.learn(timesteps, callback=callback)
    elapsed = time.process_time() - start
    model.env.close()
    return model.num_timesteps / elapsed


def _load_text() -> str:
    """The machine's load when the report is written: numbers measured on a busy machine say so."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs at the end of the run"


def run_overhead_benchmark(task: str, timesteps: int, repeats: int, out: Path) -> str:
    """Interleaved plain-SB3 / callback runs on the same seed; report the median throughput ratio."""
    check_timesteps(timesteps)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(1)
    _steps_per_second(task, min(timesteps, 2000), 0, True)  # warm-up: imports, allocator, caches
    rows = []
    for r in range(repeats):
        order = (False, True) if r % 2 == 0 else (True, False)  # alternate who goes first
        sps = {cb: _steps_per_second(task, timesteps, r, cb) for cb in order}
        rows.append((r, sps[False], sps[True], sps[True] / sps[False]))
    median_ratio = statistics.median(row[3] for row in rows)
    verdict = "meets" if median_ratio >= 0.99 else "misses"
    lines = [
        "# Callback overhead: HyperMetaCallback vs plain SB3 DQN",
        "",
        f"Command: `hypermeta bench overhead --task {task} --timesteps {timesteps} --repeats {repeats}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread; {_load_text()}.",
        "",
        f"Both runs train DQN on `{task}` with the same seed and the same linear lr ({BENCH_CONFIG.lr_initial:g} -> "
        f"{BENCH_CONFIG.lr_initial * BENCH_CONFIG.lr_final_ratio:g}) and epsilon (1.0 -> 0.05 over 10%) schedules; "
        "plain SB3 uses its own `LinearSchedule`. Runs are interleaved and alternate which goes first; "
        "throughput is environment steps per second of process CPU time (`time.process_time`), which other "
        "load on the machine disturbs less than wall time (run it on an idle machine all the same).",
        "",
        "| repeat | plain SB3 (steps/s) | with callback (steps/s) | ratio |",
        "|---:|---:|---:|---:|",
        *(f"| {r} | {p:.0f} | {c:.0f} | {ratio:.3f} |" for r, p, c, ratio in rows),
        "",
        f"**Median ratio: {median_ratio:.3f}** (target >= 0.99: {verdict} it).",
        "",
    ]
    return write_report(out, lines)


def run_workers_benchmark(task: str, timesteps: int, trials: int, out: Path) -> str:
    """Trials per hour of one study with 1 and with 2 worker processes on one SQLite storage."""
    import tempfile

    from hypermeta.experiments.study import StudySpec, run_study

    if trials < 2:
        raise ValueError(f"trials must be >= 2, got {trials}")
    spec = StudySpec(task, check_timesteps(timesteps))
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        for workers in (1, 2):
            start = time.perf_counter()
            study = run_study(spec, trials, study_name=f"bench-{workers}", storage=storage, sampler="random",
                              pruner="none", workers=workers)
            elapsed = time.perf_counter() - start
            finished = sum(t.state.is_finished() for t in study.trials)
            rates[workers] = (finished, elapsed, finished / elapsed * 3600)
    speedup = rates[2][2] / rates[1][2]
    verdict = "meets" if speedup >= 1.8 else "misses"
    lines = [
        "# Study throughput: 1 vs 2 worker processes on one storage",
        "",
        f"Command: `hypermeta bench workers --task {task} --timesteps {timesteps} --trials {trials}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; {_load_text()}.",
        "",
        f"Both measurements run the same study settings (random sampler, no pruner, {timesteps} steps per trial) "
        "on one SQLite storage, one after the other; wall time includes process start-up.",
        "",
        "| workers | finished trials | wall time (s) | trials per hour |",
        "|---:|---:|---:|---:|",
        *(f"| {w} | {n} | {e:.1f} | {r:.0f} |" for w, (n, e, r) in rates.items()),
        "",
        f"**Speed-up with 2 workers: {speedup:.2f}x** (target >= 1.8x: {verdict} it).",
        "",
    ]
    return write_report(out, lines)
