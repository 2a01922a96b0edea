"""Benchmarks that write markdown reports (performance targets are checked here, never in timed tests)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.utils import LinearSchedule

from hypermeta.callback import HyperMetaCallback
from hypermeta.files import write_report
from hypermeta.space import DQNConfig
from hypermeta.engine.defaults import EVAL_EPISODES
from hypermeta.engine.measurement import Measurement, check_timesteps
from hypermeta.engine.pipeline import RunStore, run_jobs
from hypermeta.engine.runner import Job
from hypermeta.engine.sb3 import build_model

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

    from hypermeta.search.study import StudySpec, run_study

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


def run_kill_stress(task: str, timesteps: int, trials: int, kills: int, out: Path, seed: int = 0) -> str:
    """Kill ``hypermeta study`` (SIGKILL, whole process group) at ``kills`` random instants, rerun the same
    command each time, then let it finish; report lost or duplicated trials (both must be 0).

    Lost: a trial that was COMPLETE after some kill and is missing or changed later, or a RUNNING/WAITING
    trial left at the end. Duplicated: two finished trials on the same tuning seed, or more finished trials
    than asked for (one extra is allowed only with several workers; here there is one).
    """
    import random
    import signal
    import subprocess
    import sys
    import tempfile

    import optuna
    from optuna.trial import TrialState

    check_timesteps(timesteps)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/stress.db"
        cmd = [sys.executable, "-m", "hypermeta.cli", "study", task, "--timesteps", str(timesteps), "--n-evals", "2",
               "--eval-episodes", "1", "--trials", str(trials), "--storage", storage, "--study-name", "stress",
               "--sampler", "tpe", "--pruner", "none", "--heartbeat-interval", "1", "--grace-period", "3"]
        seen: dict[int, float] = {}
        lost, rows = 0, []
        for k in range(kills):
            delay = rng.uniform(0.0, 12.0)  # from before the study exists to mid-trial
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            time.sleep(3.2)  # let the killed trial's heartbeat (or start time) age past the grace period
            try:
                study = optuna.load_study(study_name="stress", storage=storage)
                trials_now = study.get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001  # killed before the study existed
                trials_now = []
            complete = {t.number: t.value for t in trials_now if t.state == TrialState.COMPLETE}
            lost += sum(1 for n, v in seen.items() if complete.get(n) != v)
            seen.update(complete)
            states = [t.state.name for t in trials_now]
            rows.append((k, delay, len(complete), states.count("RUNNING"), states.count("FAIL")))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
        study = optuna.load_study(study_name="stress", storage=storage)
        final = study.get_trials(deepcopy=False)
    complete = {t.number: t.value for t in final if t.state == TrialState.COMPLETE}
    lost += sum(1 for n, v in seen.items() if complete.get(n) != v)
    lost += sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in final)
    done = [t for t in final if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]  # what counts to --trials
    seeds = [s for t in done for s in t.user_attrs.get("seeds", [])]
    finished = len(done)
    duplicated = (len(seeds) - len(set(seeds))) + max(finished - trials, 0)
    verdict = "meets" if lost == 0 and duplicated == 0 else "misses"
    lines = [
        "# Kill -9 stress test of a resumable study",
        "",
        f"Command: `hypermeta bench kill --task {task} --timesteps {timesteps} --trials {trials} --kills {kills}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; {_load_text()}.",
        "",
        f"The same `hypermeta study` command (TPE, {trials} trials of {timesteps} steps, heartbeat 1 s, grace period "
        f"3 s) was started {kills} times and killed with SIGKILL after a delay drawn uniformly from [0, 12] s "
        f"(random seed {seed}): before the study exists, while a trial is being created, before its first "
        "heartbeat, mid-training. After each kill the storage was read; then the command ran to the end.",
        "",
        "| kill | after (s) | complete trials | running (left by the kill) | failed so far |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {k} | {d:.1f} | {c} | {r} | {f} |" for k, d, c, r, f in rows),
        "",
        f"At the end: {finished} finished (complete or pruned) trials of {trials} asked, "
        f"{sum(t.state == TrialState.FAIL for t in final)} failed (killed mid-trial, then retried once each), "
        f"{len(seeds)} tuning seeds used by finished trials, {len(set(seeds))} distinct.",
        "",
        f"**Lost trials: {lost}; duplicated trials: {duplicated}** (target 0 and 0: {verdict} it).",
        "",
    ]
    return write_report(out, lines)


#: Configurations that diverge on CartPole in SB3 DQN: the largest lr of the space with (A) a target network
#: copied every step, one gradient step per env step and gamma 0.999, (B) the same with gamma 0.9999.
GUARD_CONFIGS = {
    "A: lr 1e-2, target every step, gamma 0.999": DQNConfig(
        lr_initial=1e-2, target_update_interval=1, gamma=0.999, train_freq=1, subsample_steps=1, learning_starts=100,
        net_arch="small"),
    "B: lr 1e-2, target every step, gamma 0.9999": DQNConfig(
        lr_initial=1e-2, target_update_interval=1, gamma=0.9999, train_freq=1, subsample_steps=1, learning_starts=100,
        net_arch="small"),
}


def _guarded_run(task: str, config: DQNConfig, timesteps: int, seed: int, guard: bool) -> dict:
    from hypermeta.engine.measurement import Normalizer
    from hypermeta.engine.sb3 import evaluate
    from hypermeta.guard import DivergenceError, health

    model = build_model(task, config, seed)
    callback = HyperMetaCallback(config, guard=guard)
    start = time.process_time()
    stopped = ""
    try:
        model.learn(timesteps, callback=callback)
    except DivergenceError as exc:
        stopped = str(exc).split(" (")[0]
    cpu = time.process_time() - start
    unhealthy = health(model, q_factor=2.0)
    returns = evaluate(model, task, 10, seed)
    return {"guard": guard, "seed": seed, "steps": model.num_timesteps, "cpu_s": cpu,
            "interventions": 0 if callback.guard is None else len(callback.guard.interventions),
            "stopped": bool(stopped), "diverged": bool(stopped) or unhealthy is not None,
            "final_score": float(Normalizer.for_task(task)(returns.mean()))}


def run_guard_benchmark(task: str, timesteps: int, seeds: int, out: Path) -> str:
    """Diverging configurations with and without the divergence guard, same seeds: diverged runs and the final
    normalised score (10 greedy episodes), paired over seeds with a bootstrap CI."""
    import numpy as np
    import pandas as pd

    check_timesteps(timesteps)
    torch.set_num_threads(1)
    rows = []
    for name, config in GUARD_CONFIGS.items():
        for seed in range(seeds):
            for guard in (False, True):
                rows.append({"config": name, **_guarded_run(task, config, timesteps, seed, guard)})
    frame = pd.DataFrame(rows)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    rng = np.random.default_rng(0)
    lines = [
        "# Divergence guard: diverging configurations with and without it",
        "",
        f"Command: `hypermeta bench guard --task {task} --timesteps {timesteps} --seeds {seeds}`",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, torch "
        f"{torch.__version__}, 1 torch thread; {_load_text()}. Per-run rows: `{out.with_suffix('.csv').name}`.",
        "",
        f"Each configuration trains SB3 DQN on `{task}` for {timesteps:,} steps on training seeds 0..{seeds - 1}, once "
        "with `HyperMetaCallback(config)` and once with `HyperMetaCallback(config, guard=True)` (default settings: "
        "check every 250 steps, |Q| bound 2 x max|reward| / (1 - gamma), lr cut 10x, at most 3 interventions). "
        "Final score: normalised mean return of 10 greedy episodes (evaluation seeds = seed + 1,000,000) of the "
        "model at the end of training, or when the guard stopped it (then its last healthy networks). Diverged: "
        "stopped by the guard, or |Q| beyond the bound (or non-finite) at the end.",
        "",
        "| configuration | guard | diverged runs | stopped by the guard | interventions (mean) | steps trained (mean) "
        "| CPU s per run (mean) | final score (mean) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, guard), g in frame.groupby(["config", "guard"], sort=False):
        lines.append(f"| {name} | {'on' if guard else 'off'} | {int(g['diverged'].sum())}/{len(g)} | "
                     f"{int(g['stopped'].sum())} | {g['interventions'].mean():.1f} | {g['steps'].mean():,.0f} | "
                     f"{g['cpu_s'].mean():.1f} | {g['final_score'].mean():.3f} |")
    lines += ["", "Paired difference of the final score (guard on - off), mean over seeds with a 95% bootstrap CI "
              "(10,000 resamples of seeds):", ""]
    for name, g in frame.groupby("config", sort=False):
        on = g[g["guard"]].set_index("seed")["final_score"]
        off = g[~g["guard"]].set_index("seed")["final_score"]
        diff = (on - off).to_numpy()
        boot = rng.choice(diff, (10_000, len(diff))).mean(1)
        lines.append(f"- {name}: {diff.mean():+.3f} [{np.quantile(boot, 0.025):+.3f}, {np.quantile(boot, 0.975):+.3f}]")
    lines.append("")
    return write_report(out, lines)


def run_minatar_reference(games: Sequence[str], timesteps: int, seeds: int, workers: int, out: Path) -> str:
    """The base configuration (with MinAtar's CNN, SB3 runner) on each MinAtar game's default context for
    ``timesteps`` steps on :func:`~hypermeta.seeds.reference_seeds`: its mean final return becomes the family's
    ``reference_return`` (normalised score 1.0), and the report says whether it clearly beats the random policy
    (mean final return more than 2 standard errors above the random policy's). Runs resume from
    ``<out dir>/reference_runs.csv``."""
    from hypermeta.engine.measurement import random_return
    from hypermeta.seeds import reference_seeds

    jobs = []
    for game in games:
        rand = random_return(game)
        jobs += [Job(game, "base", DQNConfig(), Measurement(timesteps), s, reference=rand + 1.0)
                 for s in reference_seeds(seeds)]
    runs = run_jobs(jobs, RunStore(out.parent / "reference_runs.csv"), workers=workers, runner="sb3")
    rows = []
    for game in games:
        sel = runs[runs["task"] == game]
        final = sel["final_return"].to_numpy(dtype=float)
        se = float(final.std(ddof=1) / np.sqrt(len(final))) if len(final) > 1 else float("nan")
        rand = random_return(game)
        rows.append({"family": game, "random_return": rand, "base_final_mean": float(final.mean()), "se": se,
                     "seeds": len(final), "beats_random": bool(final.mean() - rand > 2 * se),
                     "wall_seconds": float(sel["wall_time"].sum()),
                     "steps_per_second": float(timesteps * len(sel) / sel["wall_time"].sum())})
    table = pd.DataFrame(rows)
    table.to_csv(out.with_suffix(".csv"), index=False)
    lines = ["# MinAtar reference returns", "",
             f"Generated by `hypermeta bench minatar --timesteps {timesteps} --seeds {seeds}` on {datetime.now(timezone.utc):%Y-%m-%d}.",
             "", f"hypermeta's base configuration (lr/epsilon schedules of `DQNConfig()`), MinAtar's reference network "
             f"(3x3 conv, 16 channels, 128 hidden) through SB3, {timesteps:,} steps on the default context "
             "(MinAtar's defaults: sticky actions 0.1, difficulty ramping where the game has it), reference seeds "
             "20,000,000+; final return = mean of the "
             f"last evaluation ({EVAL_EPISODES} greedy episodes). The mean final return is the family's "
             "`reference_return` (normalised score 1.0; 0.0 is the uniform random policy, 100 episodes). These are "
             "small-budget numbers: they are NOT comparable with MinAtar's published 5M-frame results. A game "
             "whose base does not clearly beat random gets no reference return (normalising it needs "
             "`--reference R`).", "",
             "| family | random return | base final return (mean +/- s.e.) | seeds | beats random (> 2 s.e.) | "
             "wall s (all seeds) | steps/s |", "|---|---:|---:|---:|---|---:|---:|"]
    lines += [f"| {r.family} | {r.random_return:.2f} | {r.base_final_mean:.2f} +/- {r.se:.2f} | {r.seeds} | "
              f"{'yes' if r.beats_random else '**no**'} | {r.wall_seconds:.0f} | {r.steps_per_second:.0f} |"
              for r in table.itertuples()]
    lines += ["", f"Wall time of one process on one core while the machine ({os.cpu_count()} cores) also ran other "
              "jobs (the performance matrix on 2 worker processes), so throughput is a lower bound. Runs are "
              "cached in `reference_runs.csv`; rerunning the command re-renders this report from them."]
    lines += ["", *_curve_table(runs, games, Measurement(timesteps))]
    return write_report(out, lines)


def _curve_table(runs: pd.DataFrame, games: Sequence[str], measurement: Measurement) -> list[str]:
    """The base configuration's learning curve per game (mean greedy return over the seeds at each evaluation,
    +/- s.e.), with a mark where it is not more than 2 s.e. above the random policy (with 2 or more seeds)."""
    from hypermeta.engine.measurement import random_return

    steps = measurement.eval_steps
    lines = ["## Learning curves: where the base is above random", "",
             "Mean greedy return over the seeds at each evaluation (+/- s.e.); *not above random* marks an "
             "evaluation whose mean is not more than 2 s.e. above the random policy's return (the criterion of the "
             "table above; with 3 seeds a screen, not a test). These are points of runs of the budget above: a run "
             "with a smaller budget is another run (epsilon decays over a fraction of the whole run).", "",
             "| family | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for game in games:
        curves = np.array([json.loads(c) if isinstance(c, str) else list(c)
                           for c in runs.loc[runs["task"] == game, "curve"]], dtype=float)
        mean = curves.mean(0)
        rand = random_return(game)
        if len(curves) < 2:  # no standard error: the means alone
            cells = [f"{m:.2f}" for m in mean]
        else:
            se = curves.std(0, ddof=1) / np.sqrt(len(curves))
            cells = [f"{m:.2f} +/- {e:.2f}" + ("" if m - rand > 2 * e else " *not above random*")
                     for m, e in zip(mean, se)]
        lines.append(f"| {game} | " + " | ".join(cells) + " |")
    return lines
