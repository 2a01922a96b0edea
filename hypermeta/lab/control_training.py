"""Meta-training the controller (:mod:`hypermeta.controller`) by evolution strategies in the batched engine.

OpenAI-ES (Salimans et al. 2017) over the linear controller's parameters ``theta`` (zero: best-fixed's schedules):

* every generation draws its tasks (``tasks_per_family`` per training family) and one training seed per task slot;
  every member runs the same tasks and seeds (common random numbers);
* members are antithetic pairs ``theta +- sigma * e``; a member's fitness is the mean over the tasks of its run's
  score (normalised AUC over the task's best portfolio mean in the matrix plan's data: meta2's normalisation; a
  diverged run scores 0);
* fitness is shaped into centred ranks, the gradient estimate is ``sum_i (f(+e_i) - f(-e_i)) e_i / (2 pairs sigma)``
  and Adam ascends it;
* every ``validate_every`` generations ``theta`` and zero run on fixed validation tasks and seeds (held apart from
  the seeds that drive the updates); the shipped candidate is the ``theta`` of the best validation check.

Every run goes through a resumable :class:`~hypermeta.engine.pipeline.RunStore` (a generation killed midway
keeps its finished batches), and the state (``theta``, Adam's moments, the history) is written atomically after
every generation: running the same command again continues where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermeta.controller import SIGNAL_NAMES, LinearController
from hypermeta.files import read_yaml, write_text_atomic
from hypermeta.seeds import CONTROL_SEED_START, CONTROL_VALIDATION_SEED_START

#: Seeds: generation g, task slot i trains on ``TRAIN_SEED_START + 100 g + i``; validation seed j is
#: ``VALIDATION_SEED_START + j`` (both disjoint from every other study's, see hypermeta.seeds).
TRAIN_SEED_START, VALIDATION_SEED_START = CONTROL_SEED_START, CONTROL_VALIDATION_SEED_START


@dataclass
class ESSettings:
    """The ``meta_training`` section of a v3 plan (studies/v3/plan.yaml documents each field)."""

    method: str = "openai-es"
    pairs: int = 8
    sigma: float = 0.1
    learning_rate: float = 0.03
    tasks_per_family: int = 2
    seed: int = 0
    generations: int = 120
    cpu_hours: float = 15.0
    validate_every: int = 10
    validation_tasks_per_family: int = 2
    validation_seeds: int = 2

    def __post_init__(self) -> None:
        if self.method != "openai-es":
            raise ValueError(f"meta_training.method must be 'openai-es', got {self.method!r}")
        for name in ("pairs", "tasks_per_family", "generations", "validate_every", "validation_tasks_per_family",
                     "validation_seeds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"meta_training.{name} must be >= 1, got {getattr(self, name)!r}")
        if not (self.sigma > 0 and self.learning_rate > 0 and self.cpu_hours > 0):
            raise ValueError("meta_training.sigma, learning_rate and cpu_hours must be > 0")

    def ended(self, state: ESState, generations: int | None = None) -> bool:
        """Whether meta-training stops here: ``generations`` (default: the plan's) done, or the CPU budget spent."""
        return state.generation >= (generations or self.generations) or state.cpu_seconds >= 3600 * self.cpu_hours


@dataclass
class ESState:
    """What a resumed meta-training needs: ``theta``, Adam's moments, and the record of every generation."""

    theta: list[float]
    m: list[float]
    v: list[float]
    generation: int = 0
    cpu_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def fresh(cls, size: int) -> ESState:
        return cls([0.0] * size, [0.0] * size, [0.0] * size)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ESState:
        return cls(**json.loads(path.read_text()))


class Problem:
    """The training tasks of a matrix plan with their budgets, normalisers and features, and the base configuration
    (the plan's best-fixed over its fixed settings)."""

    def __init__(self, matrix_plan: str | Path) -> None:
        from hypermeta.lab.matrix import MatrixPlan

        self.plan = MatrixPlan.load(matrix_plan)
        data = pd.read_csv(Path(self.plan.path).parent / "dataset.csv")
        per_task = data.groupby("task").first()
        self.tasks = [t for t in self.plan.train_tasks() if t in per_task.index]
        missing = sorted(set(self.plan.train_tasks()) - set(self.tasks))
        if missing:
            raise ValueError(f"{self.plan.path}'s dataset.csv lacks training tasks {missing[:3]}: export it first")
        self.best_auc = per_task["best_auc"].to_dict()
        features = per_task.loc[self.tasks, [c for c in data.columns if c.startswith("f_")]]
        self.feature_mean = features.mean().to_numpy()
        self.feature_std = features.std(ddof=0).clip(lower=1e-6).to_numpy()
        self.features = {t: features.loc[t].to_numpy() for t in self.tasks}
        means = data[data["task"].isin(self.tasks)].groupby("method")["objective"].mean()
        portfolio = self.plan.portfolio_for(self.tasks[0])
        self.best_fixed_name = str(means[means.index.isin(list(portfolio))].idxmax())
        self.base = portfolio[self.best_fixed_name]
        self.families = sorted({t.partition(":")[0] for t in self.tasks})

    def sample(self, rng: np.random.Generator, per_family: int) -> list[str]:
        out = []
        for family in self.families:
            pool = [t for t in self.tasks if t.partition(":")[0] == family]
            out += [pool[i] for i in rng.choice(len(pool), size=min(per_family, len(pool)), replace=False)]
        return out

    def validation_tasks(self, settings: ESSettings) -> list[str]:
        """The fixed validation tasks: drawn once with ``default_rng(seed + 1,000,000)``."""
        return self.sample(np.random.default_rng(settings.seed + 1_000_000), settings.validation_tasks_per_family)

    def controller(self, theta: np.ndarray) -> LinearController:
        n = len(SIGNAL_NAMES) + len(self.feature_mean)
        return LinearController(np.asarray(theta, dtype=np.float64).reshape(2, n + 1), self.feature_mean,
                                self.feature_std)

    def size(self) -> int:
        return 2 * (len(SIGNAL_NAMES) + len(self.feature_mean) + 1)

    def job(self, task: str, label: str, theta: np.ndarray, seed: int) -> Any:
        from hypermeta.engine.measurement import Measurement
        from hypermeta.engine.runner import Job

        m = Measurement(self.plan.budget(task), 5, 5)
        return Job(task, label, self.base, m, seed, control=self.controller(theta))

    def score(self, row: dict) -> float:
        return float(row["auc"]) / self.best_auc[row["task"]]


def centred_ranks(x: np.ndarray) -> np.ndarray:
    """Fitness shaping: ranks mapped to [-0.5, 0.5] (ties share their mean rank).

    >>> centred_ranks(np.array([3.0, 1.0, 2.0])).tolist()
    [0.5, -0.5, 0.0]
    """
    from scipy.stats import rankdata

    return (rankdata(x) - 1) / max(len(x) - 1, 1) - 0.5


def es_gradient(theta_noise: np.ndarray, fitness_plus: np.ndarray, fitness_minus: np.ndarray, sigma: float) -> np.ndarray:
    """The antithetic OpenAI-ES estimate of the gradient of the expected fitness, from centred-rank fitness."""
    shaped = centred_ranks(np.concatenate([fitness_plus, fitness_minus]))
    plus, minus = shaped[:len(fitness_plus)], shaped[len(fitness_plus):]
    return ((plus - minus)[:, None] * theta_noise).sum(axis=0) / (2 * len(fitness_plus) * sigma)


def adam_ascent(theta: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step up ``grad`` (step number ``t`` >= 1): the new ``theta``, ``m``, ``v``."""
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad * grad
    m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
    return theta + lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def meta_train(plan_path: str | Path, out_dir: str | Path | None = None, workers: int = 1,
               generations: int | None = None, progress: bool = False, runner: Any = None) -> ESState:
    """Run (or resume) the plan's ES meta-training; returns the state. ``generations`` overrides the plan's (a
    shorter run for a test); the CPU budget of the plan stops it too."""
    from hypermeta.engine.batched import BatchedRunner
    from hypermeta.engine.pipeline import RunStore, run_jobs_scoring_divergence

    plan_path = Path(plan_path)
    plan = read_yaml(plan_path, "v3 plan file")
    settings = ESSettings(**plan.get("meta_training", {}))
    if generations is not None and generations > settings.generations:
        raise ValueError(f"--generations {generations} is beyond the plan's {settings.generations}: the plan's budget "
                         "is registered before meta-training; a shorter run is fine, a longer one is another plan")
    problem = Problem(plan["matrix_plan"])
    out = Path(out_dir) if out_dir is not None else plan_path.parent / "controller"
    out.mkdir(parents=True, exist_ok=True)
    state_path, store = out / "es_state.json", RunStore(out / "es_runs.csv")
    state = ESState.load(state_path) if state_path.is_file() else ESState.fresh(problem.size())
    if len(state.theta) != problem.size():
        raise ValueError(f"{state_path} holds {len(state.theta)} parameters, the plan's controller has "
                         f"{problem.size()}: use another output folder")
    runner = runner or BatchedRunner(progress=progress)
    validation_tasks = problem.validation_tasks(settings)
    total = generations or settings.generations
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(state.generation, total), desc="ES generations", unit="gen")
    try:
        while not settings.ended(state, total):
            _generation(state, settings, problem, store, runner, workers, run_jobs_scoring_divergence)
            if state.generation % settings.validate_every == 0:
                _validate(state, settings, problem, validation_tasks, store, runner, workers,
                          run_jobs_scoring_divergence)
            state.save(state_path)
            if bar is not None:
                bar.update()
                bar.set_postfix(fitness=f"{state.history[-1]['mean_fitness']:.3f}",
                                cpu_h=f"{state.cpu_seconds / 3600:.2f}")
    finally:
        if bar is not None:
            bar.close()
    _write_candidate(state, problem, out, plan_path)
    return state


def _generation(state, settings, problem, store, runner, workers, run_jobs) -> None:
    g = state.generation
    rng = np.random.default_rng(settings.seed + g)
    tasks = problem.sample(rng, settings.tasks_per_family)
    noise = rng.standard_normal((settings.pairs, problem.size()))
    theta = np.asarray(state.theta)
    members = [theta + settings.sigma * e for e in noise] + [theta - settings.sigma * e for e in noise]
    jobs = [problem.job(task, f"g{g}-m{i}", member, TRAIN_SEED_START + 100 * g + slot)
            for i, member in enumerate(members) for slot, task in enumerate(tasks)]
    rows = run_jobs(jobs, store, workers=workers, runner=runner)
    scores = rows.assign(score=[problem.score(r) for _, r in rows.iterrows()]).groupby("method")["score"].mean()
    fitness = scores.loc[[f"g{g}-m{i}" for i in range(len(members))]].to_numpy()
    grad = es_gradient(noise, fitness[:settings.pairs], fitness[settings.pairs:], settings.sigma)
    new, m, v = adam_ascent(theta, grad, np.asarray(state.m), np.asarray(state.v), g + 1, settings.learning_rate)
    state.theta, state.m, state.v = new.tolist(), m.tolist(), v.tolist()
    state.cpu_seconds += float(rows["wall_time"].sum())  # the runs' own time (cached ones: never counted yet)
    state.history.append({"generation": g, "tasks": tasks, "mean_fitness": float(fitness.mean()),
                          "best_fitness": float(fitness.max()), "grad_norm": float(np.linalg.norm(grad)),
                          "theta_norm": float(np.linalg.norm(new)), "cpu_seconds": state.cpu_seconds,
                          "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    state.generation = g + 1


def _validate(state, settings, problem, tasks, store, runner, workers, run_jobs) -> None:
    """``theta`` and zero (best-fixed) on the validation tasks and seeds, paired."""
    theta = np.asarray(state.theta)
    zero = np.zeros_like(theta)
    seeds = [VALIDATION_SEED_START + j for j in range(settings.validation_seeds)]
    jobs = [problem.job(t, label, th, s) for label, th in (("theta", theta), ("zero", zero)) for t in tasks
            for s in seeds]
    rows = run_jobs(jobs, store, workers=workers, runner=runner)
    rows = rows.assign(score=[problem.score(r) for _, r in rows.iterrows()])
    pivot = rows.pivot_table(index=["task", "seed"], columns="method", values="score")
    diff = pivot["theta"] - pivot["zero"]
    trained = rows if not state.validation else rows[rows["method"] == "theta"]  # zero's runs are stored from the first
    state.cpu_seconds += float(trained["wall_time"].sum())
    state.validation.append({"generation": state.generation, "theta": theta.tolist(),
                             "mean_theta": float(pivot["theta"].mean()), "mean_zero": float(pivot["zero"].mean()),
                             "mean_difference": float(diff.mean()),
                             "se_difference": float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan})


def best_check(state: ESState) -> dict[str, Any] | None:
    """The validation check the plan ships: the highest mean difference, when it is above 0 (None otherwise)."""
    checks = [c for c in state.validation if c["mean_difference"] > 0]
    return max(checks, key=lambda c: c["mean_difference"]) if checks else None


def _write_candidate(state: ESState, problem: Problem, out: Path, plan_path: Path) -> None:
    """The shipped candidate (the best validation check's theta, when its mean difference is above 0) as
    ``controller.safetensors`` + ``controller.json`` in ``out``; nothing when no check is above 0."""
    from hypermeta.files import git_commit

    best = best_check(state)
    if best is None:
        return
    ctl = problem.controller(np.asarray(best["theta"]))
    ctl.meta = {"plan": str(plan_path), "generation": best["generation"], "validation": best,
                "base": problem.best_fixed_name, "base_config": problem.base.to_dict(), "commit": git_commit(),
                "features": "meta2 training tasks' f_ columns, standardised"}
    ctl.meta["validation"] = {k: v for k, v in best.items() if k != "theta"}
    ctl.save(out / "controller")
