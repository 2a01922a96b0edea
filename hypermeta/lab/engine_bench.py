"""Benchmarks of the batched engine: throughput (``hypermeta bench engine``) and fidelity to SB3
(``hypermeta bench fidelity``). Both write reports under ``studies/reports/engine/``."""

from __future__ import annotations

import os
import platform
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hypermeta.search.baselines import baseline_config
from hypermeta.engine.defaults import EVAL_EPISODES, N_EVALS
from hypermeta.engine.batched import _Agents, task_shapes, train_group
from hypermeta.engine.measurement import Measurement, check_timesteps
from hypermeta.engine.runner import Job
from hypermeta.engine.sb3 import SB3Runner
from hypermeta.files import write_report
from hypermeta.seeds import test_seeds
from hypermeta.space import NET_ARCHS, DQNConfig, get_space


def _machine() -> str:
    one, five, _ = os.getloadavg()
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread; "
            f"load average {one:.1f} (1 min), {five:.1f} (5 min) at the end")


def _cpu(fn):
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - start_cpu, time.perf_counter() - start_wall


def run_throughput_benchmark(tasks: list[str], timesteps: int, ks: list[int], out: Path, repeats: int = 1) -> str:
    """Agent-steps per CPU-second of the engine at each K and of the SB3 runner, same configurations, side by side in
    this process (one thread), ``repeats`` times interleaved; the report gives medians and ranges, and the ratio to
    SB3 per repetition (the same repetition's SB3 run)."""
    check_timesteps(timesteps)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    out.parent.mkdir(parents=True, exist_ok=True)  # before hours of work, not after
    torch.set_num_threads(1)
    images = {task: task_shapes(task)[2] is not None for task in tasks}  # refuses images the engine cannot train
    for task in tasks:  # warm-up, not measured: imports, first allocations, caches of both runners
        warm = Job(task, "warm-up", DQNConfig(net_arch="small", learning_starts=100), Measurement(300, 1, 1), 0)
        SB3Runner().run(warm)
        train_group([warm])
    loads = []
    rows = [row for r in range(repeats) for task in tasks
            for row in _throughput_rows(task, images[task], timesteps, ks, r, loads)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    return write_report(out, _throughput_lines(frame, tasks, timesteps, ks, repeats, out, loads))


def _throughput_rows(task: str, image: bool, timesteps: int, ks: list[int], repeat: int, loads: list) -> list[dict]:
    measurement = Measurement(timesteps, 1, 1)
    rows = []
    for arch in ("small",) if image else ("small", "medium"):  # MinAtarCNN, whatever net_arch says
        config = DQNConfig(net_arch=arch, learning_starts=100)
        net = "MinAtarCNN" if image else str(NET_ARCHS[arch])
        job = Job(task, "bench", config, measurement, seed=0)
        _, cpu, wall = _cpu(lambda: SB3Runner().run(job))
        sb3 = timesteps / cpu
        rows.append({"repeat": repeat, "task": task, "net": net, "runner": "sb3", "K": 1, "cpu_s": cpu,
                     "wall_s": wall, "steps_per_cpu_s": sb3, "ratio": 1.0, "bytes_per_agent": None})
        for k in ks:
            jobs = [Job(task, "bench", config, measurement, seed=s) for s in range(k)]
            probe = _Agents(jobs[:1])
            per_agent = sum(t.element_size() * t.nelement() for t in (
                probe.flat, probe.target, probe.m, probe.v, probe.b_obs, probe.b_next, probe.b_act, probe.b_rew,
                probe.b_done))
            probe.close()
            _, cpu, wall = _cpu(lambda: train_group(jobs))
            rows.append({"repeat": repeat, "task": task, "net": net, "runner": "batched", "K": k, "cpu_s": cpu,
                         "wall_s": wall, "steps_per_cpu_s": k * timesteps / cpu,
                         "ratio": k * timesteps / cpu / sb3, "bytes_per_agent": per_agent})
        loads.append(os.getloadavg()[0])
    return rows


def _throughput_lines(frame: pd.DataFrame, tasks: list[str], timesteps: int, ks: list[int], repeats: int, out: Path,
                      loads: list[float]) -> list[str]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cells = frame.groupby(["task", "net", "runner", "K"], sort=False).agg(
        rate=("steps_per_cpu_s", "median"), rate_lo=("steps_per_cpu_s", "min"), rate_hi=("steps_per_cpu_s", "max"),
        cpu=("cpu_s", "median"), cpu_lo=("cpu_s", "min"), cpu_hi=("cpu_s", "max"), ratio=("ratio", "median"),
        ratio_lo=("ratio", "min"), ratio_hi=("ratio", "max"), mem=("bytes_per_agent", "first")).reset_index()
    lines = [
        "# Batched engine throughput vs the SB3 runner", "",
        f"Command: `hypermeta bench engine --tasks {','.join(tasks)} --timesteps {timesteps} --ks "
        f"{','.join(map(str, ks))} --repeats {repeats}` ({_machine()}). Load average (1 min) during the runs: "
        f"median {np.median(loads):.1f}, range {min(loads):.1f}-{max(loads):.1f}. Rows: `{out.with_suffix('.csv').name}`.",
        "",
        f"Every run trains the base configuration (lr and epsilon schedules, batch 64, train_freq 4, one gradient "
        f"step per rollout, target update every 250 steps) with learning_starts 100 for {timesteps:,} steps and "
        "ends with one greedy evaluation episode. `sb3` is the SB3 runner (one SB3 `DQN` with `HyperMetaCallback`); "
        "`batched` is the engine with K agents (seeds 0..K-1) in one lock-step batch. Throughput = agent-steps per "
        "second of this process's CPU time; ratio = engine / SB3 on the same task and net in the same repetition. "
        f"Every cell ran {repeats} times, interleaved: medians, with the range in brackets. Image observations "
        "(MinAtar) use MinAtarCNN in both runners. Both runners ran once on every task before the measurements "
        "(warm-up, not measured). Memory per agent = the engine's tensors of one agent (weights, target, Adam "
        f"moments, replay buffer of {timesteps:,} transitions); peak resident memory of the whole benchmark process: "
        f"{peak:,.0f} MiB.", "",
        "| task | net | runner | K | CPU s | agent-steps / CPU s | ratio vs SB3 | tensor memory / agent |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *(f"| `{r.task}` | {r.net} | {r.runner} | {r.K} | {r.cpu:.2f} [{r.cpu_lo:.2f}, {r.cpu_hi:.2f}] | "
          f"{r.rate:,.0f} [{r.rate_lo:,.0f}, {r.rate_hi:,.0f}] | {r.ratio:.1f}x [{r.ratio_lo:.1f}, {r.ratio_hi:.1f}] | "
          f"{'' if pd.isna(r.mem) else f'{r.mem / 1024:,.0f} KiB'} |" for r in cells.itertuples()), "",
    ]
    targets = {str(NET_ARCHS["small"]): (10.0, 64), str(NET_ARCHS["medium"]): (2.0, None)}  # the issue's, on CartPole
    for r in cells[cells["runner"] == "batched"].itertuples():
        target, at = targets.get(r.net, (None, None)) if "cartpole" in r.task.lower() else (None, None)
        if target is not None and (at is None or r.K == at):
            verdict = "meets" if r.ratio >= target else "misses"
            lines.append(f"- `{r.task}`, net {r.net}, K={r.K}: median **{r.ratio:.1f}x** SB3 (target >= {target:g}x at "
                         f"the median: {verdict} it).")
    lines.append("")
    return lines


def fidelity_configs(n_sobol: int, seed: int = 0) -> dict[str, DQNConfig]:
    """A scrambled Sobol sample of the schedule space plus base, sb3-default and rl-zoo (per task, below)."""
    from scipy.stats import qmc

    space = get_space("schedule")
    codes = qmc.Sobol(space.dim, scramble=True, seed=seed).random(n_sobol)
    configs = {f"sobol-{i:02d}": space.decode(code) for i, code in enumerate(codes)}
    configs["base"] = DQNConfig()
    return configs


def run_fidelity_benchmark(tasks: dict[str, int], n_sobol: int, seeds: int, workers: int, out: Path) -> str:
    """Every configuration x task x seed with both runners (same jobs, same seeds); per configuration the mean
    normalised AUC of both with CIs and their paired difference; Spearman correlation of configuration means."""
    from scipy.stats import spearmanr

    from hypermeta.engine.pipeline import RunStore, run_jobs

    out.parent.mkdir(parents=True, exist_ok=True)
    configs = fidelity_configs(n_sobol)
    jobs = []
    for task, timesteps in tasks.items():
        per_task = dict(configs, **{name: baseline_config(name, task) for name in ("sb3-default", "rl-zoo")
                                    if _has_baseline(name, task)})
        for name, config in per_task.items():
            jobs += [Job(task, name, config, Measurement(timesteps), s) for s in test_seeds(seeds)]
    runs, failed = {}, {}
    for runner in ("sb3", "batched"):
        failed[runner] = []
        runs[runner] = run_jobs(jobs, RunStore(out.parent / f"fidelity_runs_{runner}.csv"), workers=workers,
                                runner=runner, errors=failed[runner])
        runs[runner]["runner"] = runner
    frame = pd.concat(runs.values(), ignore_index=True)
    paired = runs["sb3"].merge(runs["batched"], on=["task", "method", "seed"], suffixes=("_sb3", "_engine"))
    paired["diff"] = paired["auc_engine"] - paired["auc_sb3"]
    paired["same_curve"] = paired["curve_sb3"] == paired["curve_engine"]
    rng = np.random.default_rng(0)
    rows = []
    for method, g in paired.groupby("method", sort=False):
        boot = rng.choice(g["diff"].to_numpy(), (10_000, len(g))).mean(1)
        rows.append({"config": method, "runs": len(g), "sb3": g["auc_sb3"].mean(), "engine": g["auc_engine"].mean(),
                     "sem_sb3": g["auc_sb3"].sem(), "sem_engine": g["auc_engine"].sem(), "diff": g["diff"].mean(),
                     "ci_low": np.quantile(boot, 0.025), "ci_high": np.quantile(boot, 0.975),
                     "identical_curves": int(g["same_curve"].sum())})
    table = pd.DataFrame(rows)
    table.to_csv(out.with_suffix(".csv"), index=False)
    rho = spearmanr(table["sb3"], table["engine"]).statistic
    outside = table[(table["ci_low"] > 0) | (table["ci_high"] < 0)]
    _fidelity_plot(table, out.with_suffix(".png"))
    lines = _fidelity_lines(tasks, seeds, table, paired, rho, outside, out, frame)
    lines.insert(-2, "Diverged runs (left out of the pairs): " + ", ".join(
        f"{r}: {len(f)}" + (f" ({'; '.join(f'{j.method} seed {j.seed}' for j, _ in f)})" if f else "")
        for r, f in failed.items()) + ".")
    return write_report(out, lines)


def _has_baseline(name: str, task: str) -> bool:
    try:
        baseline_config(name, task)
        return True
    except ValueError:
        return False


def _fidelity_plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.errorbar(table["sb3"], table["engine"], xerr=1.96 * table["sem_sb3"], yerr=1.96 * table["sem_engine"], fmt="o",
                ms=4, alpha=0.8)
    lo, hi = min(table["sb3"].min(), table["engine"].min()), max(table["sb3"].max(), table["engine"].max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("SB3 runner: mean normalised AUC")
    ax.set_ylabel("batched engine: mean normalised AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fidelity_lines(tasks, seeds, table, paired, rho, outside, out, frame) -> list[str]:
    cpu = frame.groupby("runner")["wall_time"].sum()
    return [
        "# Batched engine fidelity: the same jobs through the SB3 runner and the engine", "",
        "Command: `hypermeta bench fidelity --fidelity-tasks \""
        + ";".join(f"{t}@{n}" for t, n in tasks.items())
        + f"\" --configs {len([c for c in table['config'] if c.startswith('sobol')])} --seeds {seeds}` ({_machine()}).", "",
        "Configurations: a scrambled Sobol sample of the schedule space (over the base configuration), `base`, "
        "`sb3-default` and, where rl-zoo has an entry, `rl-zoo`. Tasks and budgets: "
        + ", ".join(f"`{t}` ({n:,} steps)" for t, n in tasks.items())
        + f". Each (configuration, task) runs on test seeds 10,000,000..{10_000_000 + seeds - 1:,} with both runners; "
        f"score = normalised AUC of {N_EVALS} greedy evaluations of {EVAL_EPISODES} episodes (as every report). The "
        "engine draws from the "
        "same random streams as SB3 for the same seed, so the comparison is paired per run: differences come from "
        "floating-point rounding of batched vs single matrix products, which can flip a near-tie greedy action and "
        "from there change the trajectory.", "",
        f"- Spearman rank correlation of the configuration means (SB3 vs engine): **{rho:.3f}** (target >= 0.9: "
        f"{'meets' if rho >= 0.9 else 'misses'} it).",
        f"- Configurations whose paired difference has a 95% bootstrap CI excluding 0: **{len(outside)}** of "
        f"{len(table)} (target 0: {'meets' if outside.empty else 'misses'} it)"
        + ("" if outside.empty else ": " + ", ".join(outside["config"])) + ".",
        f"- Runs with an identical evaluation curve under both runners: {int(paired['same_curve'].sum())} of "
        f"{len(paired)}.",
        f"- Training time (sum of per-run wall time, as the runners record it): SB3 {cpu.get('sb3', 0):,.0f} s, "
        f"engine {cpu.get('batched', 0):,.0f} s.", "",
        "| configuration | runs | SB3 mean AUC (s.e.) | engine mean AUC (s.e.) | engine - SB3 [95% CI] | identical curves |",
        "|---|---:|---:|---:|---|---:|",
        *(f"| {r.config} | {r.runs} | {r.sb3:.3f} ({r.sem_sb3:.3f}) | {r.engine:.3f} ({r.sem_engine:.3f}) | "
          f"{r.diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {r.identical_curves} |" for r in table.itertuples()),
        "", f"![SB3 vs engine]({out.with_suffix('.png').name})", "",
        f"Files: `{out.with_suffix('.csv').name}` (this table), `fidelity_runs_sb3.csv` and `fidelity_runs_batched.csv` "
        "(every run with its curve; the resumable caches).", "",
    ]
