"""Learning a Q-network start for a task family (``hypermeta meta-init FAMILY``, issue 30).

Methods (the inner loops are DQN training runs in the batched engine, one training context per agent, in lock-step):

* ``reptile`` (Nichol et al. 2018): every meta-iteration trains ``tasks_per_iteration`` of the family's training
  contexts for ``inner_steps`` steps from ``theta``, then ``theta += eps_t (mean_k theta_k - theta)`` with
  ``eps_t`` annealed linearly from ``step_size`` to 0 over the iterations;
* ``fomaml`` (first-order MAML, Finn et al. 2017): the same inner runs; the outer gradient is the mean over contexts
  of the TD loss's gradient at the adapted weights ``theta_k`` on their replay buffers' last 256 transitions (data
  the last gradient steps barely used), and Adam (``outer_lr``) descends it;
* ``transfer`` (baseline): the network trained on the family's default context at the family's full budget;
* ``multitask`` (baseline): the average of the networks trained on every training context at the full budget, all
  from the same random initialisation (the same seed), so that averaging their parameters is meaningful.

Every inner run starts its target network as a copy of ``theta``, its Adam state at zero and its replay buffer
empty (SB3's fresh start, with the start loaded), under best-fixed's schedules and the matrix plan's fixed settings.
The state (``theta``, Adam's moments, the iteration) is saved after every iteration: the same command resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hypermeta.files import write_text_atomic
from hypermeta.qstart import QStart
from hypermeta.seeds import META_INIT_SEED_START

METHODS = ("reptile", "fomaml", "transfer", "multitask")
#: Inner run of iteration i, slot j: seed ``SEED_START + 100 i + j``; the shared initialisation: ``SEED_START - 1``.
SEED_START = META_INIT_SEED_START


@dataclass
class MetaInitSettings:
    """How a start is meta-learned (``hypermeta meta-init``'s options; stored in the artifact's manifest)."""

    iterations: int = 40
    inner_steps: int = 5000
    tasks_per_iteration: int = 16
    step_size: float = 0.5
    outer_lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "inner_steps", "tasks_per_iteration"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not (0 < self.step_size <= 1 and self.outer_lr > 0):
            raise ValueError("step_size must be in (0, 1] and outer_lr > 0")


def reptile_step(theta: np.ndarray, adapted: list[np.ndarray], eps: float) -> np.ndarray:
    """``theta + eps * (mean(adapted) - theta)``.

    >>> reptile_step(np.zeros(2), [np.array([1.0, 0.0]), np.array([3.0, 2.0])], 0.5).tolist()
    [1.0, 0.5]
    """
    return theta + eps * (np.mean(adapted, axis=0) - theta)


def _jobs(problem: Any, tasks: list[str], start: QStart | None, steps: int | None, seeds: list[int]) -> list[Any]:
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job

    jobs = []
    for task, seed in zip(tasks, seeds):
        budget = steps or problem.plan.budget(task)
        jobs.append(Job(task, "meta-init", problem.base, Measurement(budget, 1, 1), seed, init=start))
    return jobs


def _train(jobs: list[Any]) -> list[QStart]:
    """Train ``jobs`` as one lock-step batch (a Ray task with ``--backend ray``); each one's final network."""
    from hypermeta.parallel import distributed, pool_results

    finals = next(pool_results(_train_batch, [jobs], 1))[1] if distributed() else _train_batch(jobs)
    if any(f is None for f in finals):
        raise ValueError("an inner run diverged; lower --step-size or the inner budget")
    return finals


def _train_batch(jobs: list[Any]) -> list[QStart | None]:
    import torch

    from hypermeta.engine.batched import train_group

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        finals: list = []
        train_group(jobs, final_weights=finals)
    finally:
        torch.set_num_threads(threads)
    return finals


def meta_init(family: str, method: str, matrix_plan: str | Path, out: str | Path,
              settings: MetaInitSettings | None = None, progress: bool = False) -> QStart:
    """Learn (or resume learning) the start of ``family`` by ``method``; writes ``OUT.safetensors`` + ``OUT.json``
    (and ``OUT.state.json`` while iterating). Returns the start."""
    from hypermeta.files import git_commit
    from hypermeta.lab.control_training import Problem

    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    settings = settings or MetaInitSettings()
    problem = Problem(matrix_plan)
    pool = [t for t in problem.tasks if t.partition(":")[0] == family]
    if not pool:
        raise ValueError(f"no training context of family {family!r} in {matrix_plan}; families: {problem.families}")
    out = Path(out).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"family": family, "method": method, "net_arch": problem.base.net_arch, "matrix_plan": str(matrix_plan),
                "base": problem.best_fixed_name, "settings": asdict(settings), "commit": git_commit(),
                "target_network": "a copy of the start", "replay_buffer": "empty", "optimizer": "fresh Adam"}
    cpu = time.process_time()
    if method in ("transfer", "multitask"):
        tasks = [family] if method == "transfer" else pool
        finals = _train(_jobs(problem, tasks, None, None, [SEED_START - 1] * len(tasks)))
        start = QStart({k: np.mean([f.state[k] for f in finals], axis=0) for k in finals[0].state})
        manifest.update(contexts=tasks, budget="the family's full matrix budget", iterations=0)
    else:
        start = _meta_iterate(problem, pool, method, settings, out, progress)
        manifest.update(contexts=pool, budget=f"{settings.inner_steps} steps per inner run")
    manifest["features"] = {t: problem.features[t].tolist() for t in manifest["contexts"]}
    manifest["cpu_seconds"] = round(time.process_time() - cpu, 1)  # this process's (not a Ray cluster's)
    start.manifest = manifest
    start.save(out)
    return start


def _meta_iterate(problem: Any, pool: list[str], method: str, settings: MetaInitSettings, out: Path,
                  progress: bool) -> QStart:
    state_path = out.with_suffix(".state.json")
    # SB3's random initialisation of one seed: what every DQN of this family would start from (a one-step run)
    template = _train(_jobs(problem, pool[:1], None, 1, [SEED_START - 1]))[0]
    sizes = [template.obs_dim, *template.hidden, template.n_actions]
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state["method"] != method:
            raise ValueError(f"{state_path} belongs to a {state['method']} run: use another --out")
        same = {k: v for k, v in asdict(settings).items() if k != "iterations"}
        if state.get("settings", same) != same:
            raise ValueError(f"{state_path} was made with other settings ({state['settings']}): resume with them or "
                             "use another --out")
    else:
        theta = template.to_flat()
        state = {"method": method, "iteration": 0, "theta": theta.tolist(), "m": [0.0] * len(theta),
                 "v": [0.0] * len(theta), "history": [],
                 "settings": {k: v for k, v in asdict(settings).items() if k != "iterations"}}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.iterations, initial=state["iteration"], desc=f"meta-init {method}", unit="it")
    try:
        while state["iteration"] < settings.iterations:
            i = state["iteration"]
            theta = np.asarray(state["theta"], dtype=np.float32)
            start = QStart.from_flat(theta, sizes)
            rng = np.random.default_rng(settings.seed + i)
            tasks = [pool[j] for j in rng.choice(len(pool), size=min(settings.tasks_per_iteration, len(pool)),
                                                  replace=False)]
            finals = _train(_jobs(problem, tasks, start, settings.inner_steps,
                                  [SEED_START + 100 * i + j for j in range(len(tasks))]))
            if method == "reptile":
                eps = settings.step_size * (1 - i / settings.iterations)
                new = reptile_step(theta.astype(np.float64), [f.to_flat().astype(np.float64) for f in finals], eps)
                m, v = state["m"], state["v"]
            else:
                from hypermeta.lab.control_training import adam_ascent

                grad = np.mean([f.manifest["query_grad"] for f in finals], axis=0)
                new, m, v = adam_ascent(theta.astype(np.float64), -grad, np.asarray(state["m"]), np.asarray(state["v"]),
                                        i + 1, settings.outer_lr)
                m, v = m.tolist(), v.tolist()
            state.update(iteration=i + 1, theta=np.asarray(new).tolist(), m=m, v=v)
            state["history"].append({"iteration": i, "tasks": tasks, "step_norm": float(np.linalg.norm(new - theta))})
            write_text_atomic(state_path, json.dumps(state) + "\n")
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return QStart.from_flat(np.asarray(state["theta"], dtype=np.float32), sizes)
