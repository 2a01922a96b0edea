"""``hypermeta bench scale``: a fixed matrix slice through the local process pool and through Ray, with 1, 2 and all
of this machine's CPUs, repeated; the report gives medians and ranges of throughput and Ray's overhead per batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from hypermeta.engine.batched import BatchedRunner
from hypermeta.engine.measurement import Measurement
from hypermeta.engine.runner import Job
from hypermeta.files import write_report
from hypermeta.lab.engine_bench import _machine
from hypermeta.lab.matrix import MatrixPlan
from hypermeta.parallel import BACKEND_VAR


def slice_jobs(plan_path: str | Path, configs: int, seeds: int, timesteps: int) -> list[Job]:
    """The first ``configs`` portfolio configurations of the plan's first calibration task, ``seeds`` matrix-style seeds
    each, at ``timesteps`` steps: a fixed slice of the performance matrix."""
    plan = MatrixPlan.load(plan_path)
    task = plan.calibration[0]
    portfolio = list(plan.portfolio_for(task).items())[:configs]
    return [Job(task, name, config, Measurement(timesteps, 1, 1), 5_000_000 + s) for name, config in portfolio
            for s in range(seeds)]


def _timed(jobs: list[Job], backend: str, cpus: int, batch: int) -> float:
    """Wall seconds to run ``jobs`` in batches of ``batch`` agents on ``cpus`` CPUs of the ``backend``."""
    import torch

    torch.set_num_threads(1)
    runner = BatchedRunner(max_agents=batch)
    before = os.environ.get(BACKEND_VAR)
    os.environ[BACKEND_VAR] = backend
    if backend == "ray":
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        start = time.perf_counter()
        for _ in runner.run_many(jobs, workers=cpus):
            pass
        return time.perf_counter() - start
    finally:
        if before is None:
            os.environ.pop(BACKEND_VAR, None)
        else:
            os.environ[BACKEND_VAR] = before
        if backend == "ray":
            import ray

            ray.shutdown()


def run_scale_benchmark(plan_path: str | Path, repeats: int, out: Path, configs: int = 8, seeds: int = 4,
                        timesteps: int = 5000, batch: int = 8) -> str:
    """Every (backend, CPUs) cell ``repeats`` times, interleaved; writes ``out`` (markdown) and its CSV."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ValueError('bench scale compares Ray with the local pool: pip install "hypermeta[ray]"')
    if repeats < 3:
        raise ValueError(f"--repeats must be >= 3 for medians, got {repeats}")
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = slice_jobs(plan_path, configs, seeds, timesteps)
    n_batches = -(-len(jobs) // batch)
    cpus = sorted({1, min(2, os.cpu_count() or 1), os.cpu_count() or 1})
    _timed(jobs[:batch], "local", 1, batch)  # warm-up, not measured
    rows = []
    for r in range(repeats):
        for n in cpus:
            for backend in ("local", "ray"):
                wall = _timed(jobs, backend, n, batch)
                rows.append({"repeat": r, "backend": backend, "cpus": n, "wall_s": wall,
                             "agent_steps_per_s": len(jobs) * timesteps / wall})
    frame = pd.DataFrame(rows)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    return write_report(out, _lines(frame, jobs, (configs, seeds, timesteps, batch, n_batches), repeats, plan_path,
                                    out))


def _lines(frame: pd.DataFrame, jobs: list[Job], shape: tuple[int, int, int, int, int], repeats: int,
           plan_path: str | Path, out: Path) -> list[str]:
    configs, seeds, timesteps, batch, n_batches = shape
    stats = frame.groupby(["cpus", "backend"])["agent_steps_per_s"].agg(["median", "min", "max"]).reset_index()
    walls = frame.groupby(["cpus", "backend"])["wall_s"].median().unstack()
    lines = ["# Scaling: the local process pool against Ray", "",
             f"Command: `hypermeta bench scale --plan {plan_path} --repeats {repeats}` ({_machine()}). Rows: "
             f"`{out.with_suffix('.csv').name}`.", "",
             f"The slice: {len(jobs)} jobs of the matrix ({jobs[0].task}, {configs} portfolio configurations x {seeds} "
             f"seeds, {timesteps:,} steps each) in {n_batches} "
             f"lock-step batches of {batch} agents. Each cell ran {repeats} times, interleaved; Ray started a fresh "
             "local cluster with that many CPUs each time, before the clock starts (its start-up, a few seconds once per "
             "command, is not counted; the tasks' scheduling, transfers and worker start-up are).",
             "", "| CPUs | backend | agent-steps / s, median | range |", "|---:|---|---:|---|"]
    lines += [f"| {r.cpus} | {r.backend} | {r['median']:,.0f} | {r['min']:,.0f} - {r['max']:,.0f} |"
              for _, r in stats.iterrows()]
    overhead = (walls["ray"] - walls["local"]) / n_batches
    lines += ["", "Ray's overhead per batch (median wall time with Ray minus the local pool's, over the batches): "
              + ", ".join(f"{c} CPU{'s' if c > 1 else ''}: {v:+.2f} s" for c, v in overhead.items()) + ".", ""]
    return lines
