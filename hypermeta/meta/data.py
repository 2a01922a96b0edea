"""What meta-learning is trained on and trains: task data, the networks and the meta-training settings.

Data: one row per finished study trial on a *training task* (task id, the task's features, the
configuration's code in the ``schedule`` space, the normalised objective), see
:mod:`hypermeta.lab.collect`.

Network: :class:`SchedulePredictor` maps standardised task features to a code of the ``schedule`` space
with bounded outputs (sigmoid for numbers, softmax over each unordered choice), so every output decodes
to a valid :class:`~hypermeta.DQNConfig`.

Per-task loss (what "good for task t" means): a soft regression onto the task's trials, each weighted by
``softmax(objective / temperature)`` within the task, so the best configurations dominate while close
runners-up still inform (the objective is noisy, a single best trial is not to be trusted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hypermeta.meta.method import METHODS
from hypermeta.space import DQNConfig, get_space
from hypermeta.tasks.features import FEATURE_NAMES

SPACE = get_space("schedule")


@dataclass
class TaskData:
    """The trials of one task: ``codes`` ``(n, dim)`` in the schedule space and their objectives ``(n,)``."""

    task: str
    features: np.ndarray
    codes: np.ndarray
    objectives: np.ndarray

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        self.codes = np.asarray(self.codes, dtype=np.float64).reshape(-1, SPACE.dim)
        self.objectives = np.asarray(self.objectives, dtype=np.float64).reshape(-1)
        if len(self.codes) != len(self.objectives) or len(self.codes) == 0:
            raise ValueError(f"task {self.task!r}: need as many objectives as codes (>= 1), got "
                             f"{len(self.objectives)} and {len(self.codes)}")
        if not (np.all(np.isfinite(self.codes)) and np.all(np.isfinite(self.objectives))
                and np.all(np.isfinite(self.features))):
            raise ValueError(f"task {self.task!r}: features, codes and objectives must be finite")

    def best_code(self) -> np.ndarray:
        return self.codes[int(np.argmax(self.objectives))]


def tasks_from_frame(frame: Any, feature_names: Sequence[str] = FEATURE_NAMES) -> list[TaskData]:
    """Group a dataset frame (columns ``task``, ``f_<feature>``, ``x_<code>``, ``objective``) by task."""
    fcols = [f"f_{n}" for n in feature_names]
    xcols = [f"x_{n}" for n in SPACE.encoded_names]
    missing = sorted(set(fcols + xcols + ["task", "objective"]) - set(frame.columns))
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; build it with `hypermeta collect`")
    out = []
    for task, rows in frame.groupby("task", sort=True):
        rows = rows[np.isfinite(rows["objective"].to_numpy(dtype=float))]
        if len(rows):
            out.append(TaskData(task, rows[fcols].iloc[0].to_numpy(float), rows[xcols].to_numpy(float),
                                rows["objective"].to_numpy(float)))
    if not out:
        raise ValueError("dataset has no finished trial with a finite objective")
    return out


def settings_from_frame(frame: Any) -> DQNConfig | None:
    """The DQN settings outside the schedules that a dataset's runs used, from its ``c_<field>`` columns (every
    configuration field); ``None`` when the dataset does not record them (datasets written before they were)."""
    schedule = {p.name for p in get_space("schedule").params}
    fixed = [name for name in DQNConfig.__dataclass_fields__ if name not in schedule]
    if not all(f"c_{name}" in frame.columns for name in fixed):
        return None
    values = {}
    for name in fixed:
        seen = frame[f"c_{name}"].dropna().unique()
        if len(seen) != 1:
            raise ValueError(f"the dataset's runs used {len(seen)} values of {name} ({', '.join(map(str, seen[:4]))}); "
                             "meta-train one dataset per set of DQN settings")
        values[name] = seen[0].item() if hasattr(seen[0], "item") else seen[0]
    return DQNConfig.from_dict(values, source="the dataset's c_ columns")


def portfolio_matrix(tasks: Sequence[TaskData], decimals: int = 9) -> tuple[np.ndarray, np.ndarray] | None:
    """The codes tried on *every* task (a shared portfolio), in the first task's order, and each task's objective
    of each (``[codes, dim]``, ``[tasks, codes]``; a code tried twice on a task counts with its mean there); None
    when no code was tried on every task."""
    def keys(t: TaskData) -> list[bytes]:
        return [np.round(c, decimals).tobytes() for c in t.codes]

    shared = set(keys(tasks[0]))
    for t in tasks[1:]:
        shared &= set(keys(t))
    if not shared:
        return None
    columns = list(dict.fromkeys(k for k in keys(tasks[0]) if k in shared))
    first = {k: i for i, k in reversed(list(enumerate(keys(tasks[0]))))}
    scores = np.zeros((len(tasks), len(columns)))
    for row, t in enumerate(tasks):
        seen: dict[bytes, list[float]] = {}
        for k, y in zip(keys(t), t.objectives):
            if k in shared:
                seen.setdefault(k, []).append(float(y))
        scores[row] = [np.mean(seen[k]) for k in columns]
    return np.stack([tasks[0].codes[first[k]] for k in columns]), scores


def knn_size(n_tasks: int) -> int:
    """``k-nearest``'s neighbourhood: ceil(sqrt(training tasks)) (fixed before its first cross-validation)."""
    return max(1, math.ceil(math.sqrt(n_tasks)))


#: ``ridge-portfolio``'s candidate penalties (standardised features); ``inf`` is "features do not help": best-fixed
RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, math.inf)


def ridge_loo_errors(x: np.ndarray, scores: np.ndarray) -> dict[float, tuple[float, np.ndarray]]:
    """For each penalty of :data:`RIDGE_ALPHAS`: the leave-one-task-out squared error summed over the tasks and
    portfolio configurations of per-configuration ridge regressions of ``scores`` ``[tasks, C]`` on ``x``
    ``[tasks, d]`` (intercepts unpenalised), and the weights ``[d, C]`` fitted on all tasks. Exact for these
    ``x`` (the hat-matrix shortcut; the ``1 / n`` term is the intercept's re-centring in each refit): ``x`` itself
    is standardised on all tasks, the left-out one included."""
    n = len(x)
    xc, yc = x - x.mean(0), scores - scores.mean(0)
    u, sv, vt = np.linalg.svd(xc, full_matrices=False)
    out = {}
    for alpha in RIDGE_ALPHAS:
        shrink = np.zeros_like(sv) if math.isinf(alpha) else sv / (sv**2 + alpha)
        w = vt.T @ (shrink[:, None] * (u.T @ yc))
        hat = ((u * (sv * shrink)) * u).sum(1) + 1.0 / n  # diagonal of the hat matrix, intercept included
        loo = (yc - xc @ w) / (1.0 - hat)[:, None]
        out[alpha] = (float((loo**2).sum()), w)
    return out


def fit_portfolio_ridge(x: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One ridge regression per portfolio configuration of its score on the task features: ``x`` ``[tasks, d]``
    (standardised), ``scores`` ``[tasks, C]`` -> weights ``[d, C]``, intercepts ``[C]`` and the penalty: the one
    of :data:`RIDGE_ALPHAS` with the least leave-one-task-out error (:func:`ridge_loo_errors`; near-ties go to the
    larger penalty, towards best-fixed). With ``inf``, or with fewer than 3 tasks, the prediction is every
    configuration's mean score, whose argmax is best-fixed's choice."""
    if len(x) < 3:
        return np.zeros((x.shape[1], scores.shape[1])), scores.mean(0), math.inf
    errors = ridge_loo_errors(x, scores)
    least = min(err for err, _ in errors.values())
    alpha = max(a for a, (err, _) in errors.items() if err <= least * (1 + 1e-9) + 1e-12)
    w = errors[alpha][1]
    return w, scores.mean(0) - x.mean(0) @ w, alpha


def best_fixed_code(tasks: Sequence[TaskData], decimals: int = 9) -> np.ndarray | None:
    """``best-fixed``: the code, among those tried on *every* task, with the best mean objective over the tasks
    (ties: the first in the first task's order); None when no code was tried on every task."""
    portfolio = portfolio_matrix(tasks, decimals)
    if portfolio is None:
        return None
    codes, scores = portfolio
    return codes[int(np.argmax(scores.sum(0)))].copy()


def task_weights(objectives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-max weights over one task's trials, best first (objective scale: normalised score)."""
    return torch.softmax(objectives / temperature, dim=0)


# --- networks -----------------------------------------------------------------------------------------------
def _blocks() -> list[tuple[int, int, bool]]:
    """(start, length, is_choice) of every block of the schedule-space code."""
    out, i = [], 0
    for p in SPACE.params:
        n = len(p.encoded_names)
        out.append((i, n, n > 1))
        i += n
    return out


class SchedulePredictor(nn.Module):
    """Task features (standardised) -> a bounded code of the ``schedule`` space."""

    def __init__(self, n_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                  nn.Linear(hidden, SPACE.dim))
        self.blocks = _blocks()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))

    def head(self, raw: torch.Tensor) -> torch.Tensor:
        """The body's raw outputs -> the bounded code (softmax over each choice, sigmoid for numbers)."""
        parts = [torch.softmax(raw[..., s:s + n], -1) if choice else torch.sigmoid(raw[..., s:s + n])
                 for s, n, choice in self.blocks]
        return torch.cat(parts, dim=-1)

    def stacked(self, tasks: int) -> list[torch.Tensor]:
        """The body's parameters, one copy per task, stacked: ``[W0, b0, W1, b1, W2, b2]`` with a leading task axis
        (copies, not views: :meth:`forward_stacked` trains them)."""
        return [p.detach().expand(tasks, *p.shape).clone() for p in self.body.parameters()]

    def forward_stacked(self, params: Sequence[torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of ``B`` parameter copies (:meth:`stacked`) on ``B`` tasks' features ``(B, F)`` at once:
        batched matrix products, so a meta-batch's tasks adapt side by side, each with its own parameters. The body
        is Linear layers with tanh between them, as built in ``__init__``."""
        h = features.unsqueeze(1)
        for i in range(0, len(params), 2):
            h = torch.baddbmm(params[i + 1].unsqueeze(1), h, params[i].transpose(1, 2))
            if i + 2 < len(params):
                h = torch.tanh(h)
        return self.head(h.squeeze(1))


class Surrogate(nn.Module):
    """(standardised features, code) -> predicted normalised objective (the ``multitask`` method)."""

    def __init__(self, n_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features + SPACE.dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([features, codes], dim=-1)).squeeze(-1)


@dataclass
class MetaTrainConfig:
    """Settings of ``hypermeta meta-train`` (stored with the weights)."""

    method: str = "reptile"
    seed: int = 0
    ensemble: int = 5
    hidden: int = 64
    temperature: float = 0.05  # softmax temperature over a task's normalised objectives
    meta_iterations: int = 1500  # outer steps (reptile, maml, fomaml) or epochs (multitask)
    tasks_per_batch: int = 4
    inner_steps: int = 5
    inner_lr: float = 0.1  # SGD (maml, fomaml) / Adam (reptile) step size inside a task
    outer_lr: float = 1e-3
    reptile_eps: float = 0.5
    surrogate_epochs: int = 800
    anchor: float = 1.0  # multitask: weight of the per-task loss next to the surrogate's objective
    multitask_lr: float = 3e-3  # multitask: Adam step size of the predictor
    adam_inner_lr: float = 0.01  # Adam step size inside a task (reptile) and of adapt() for Adam methods
    surrogate_lr: float = 2e-3  # multitask: Adam step size of the surrogate
    surrogate_weight_decay: float = 1e-4
    surrogate_jitter: float = 0.3  # surrogate: noise (in feature standard deviations) added to task features

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        for name in ("surrogate_weight_decay", "surrogate_jitter"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ensemble", "hidden", "meta_iterations", "tasks_per_batch", "inner_steps", "surrogate_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "inner_lr", "outer_lr", "reptile_eps", "multitask_lr", "adam_inner_lr",
                     "surrogate_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class TaskBatch:
    """Tensors of one task, with its features already standardised."""

    def __init__(self, task: TaskData, mean: np.ndarray, std: np.ndarray, temperature: float) -> None:
        self.task = task.task
        self.x = torch.as_tensor((task.features - mean) / std, dtype=torch.float32)
        self.codes = torch.as_tensor(task.codes, dtype=torch.float32)
        self.y = torch.as_tensor(task.objectives, dtype=torch.float32)
        self.w = task_weights(self.y, temperature)


def task_loss(pred: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted squared distance of the predicted code to the task's trials (with a leading task axis,
    :func:`stack_tasks`: the sum of every task's loss, each a function of its own parameters only)."""
    return (weights * ((codes - pred.unsqueeze(-2)) ** 2).sum(-1)).sum()


def stack_tasks(batch: Sequence[TaskBatch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tasks of one meta-batch as tensors with a leading task axis (:meth:`SchedulePredictor.forward_stacked`,
    :func:`task_loss`): features ``(B, F)``, codes ``(B, N, dim)`` and weights ``(B, N)``, padded to the largest
    task with zero-weight rows (which add nothing to :func:`task_loss`)."""
    n = max(len(t.codes) for t in batch)
    codes = torch.zeros(len(batch), n, batch[0].codes.shape[1])
    w = torch.zeros(len(batch), n)
    for i, t in enumerate(batch):
        codes[i, : len(t.codes)] = t.codes
        w[i, : len(t.codes)] = t.w
    return torch.stack([t.x for t in batch]), codes, w


def init_member(seed: int, n_features: int, hidden: int) -> tuple[SchedulePredictor, np.random.Generator, torch.Generator]:
    """A freshly initialised member and the random generators of its training, all from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SchedulePredictor(n_features, hidden)
    return net, np.random.default_rng(seed), gen


def sample_tasks(rng: np.random.Generator, tasks: list[TaskBatch], k: int) -> list[TaskBatch]:
    """``k`` distinct tasks (all of them when there are fewer)."""
    return [tasks[i] for i in rng.choice(len(tasks), min(k, len(tasks)), replace=False)]
