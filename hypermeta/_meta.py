"""The meta-learner: from task features to DQN learning-rate and exploration schedules.

Data: one row per finished study trial on a *training task* (task id, the task's features, the
configuration's code in the ``schedule`` space, the normalised objective), see :mod:`hypermeta._collect`.

Network: :class:`SchedulePredictor` maps standardised task features to a code of the ``schedule`` space
with bounded outputs (sigmoid for numbers, softmax over each unordered choice), so every output decodes
to a valid :class:`~hypermeta.DQNConfig`.

Per-task loss (what "good for task t" means): a soft regression onto the task's trials, each weighted by
``softmax(objective / temperature)`` within the task, so the best configurations dominate while close
runners-up still inform (the objective is noisy, a single best trial is not to be trusted).

Methods (:data:`METHODS`):

* ``multitask``: a surrogate ``S(features, code) -> objective`` is fitted on every trial of every task;
  the predictor is trained to maximise ``S`` on the training tasks, anchored by the per-task loss.
* ``reptile``: Nichol et al. 2018: ``k`` inner Adam steps on one task's loss, then
  ``theta += eps * (theta_task - theta)``.
* ``maml``: Finn et al. 2017, second order with ``torch.func`` (the outer gradient flows through the
  inner SGD steps); each task's trials are split into support (inner) and query (outer) halves.
* ``fomaml``: first-order MAML (inner gradients treated as constants).
* ``nearest-task``: no learning: the best configuration of the nearest training task in standardised
  feature space (Feurer et al., AAAI 2015), the bar a learned predictor must clear.

Uncertainty: :class:`MetaModel` is an ensemble (members differ in seed and in a bootstrap resample of the
training tasks); a prediction comes with the members' disagreement and the distance to the nearest
training task, both compared with what was seen on the training tasks (leave-one-out), and an
out-of-distribution warning when either is well outside it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad

from hypermeta._features import FEATURE_NAMES, FEATURE_VERSION
from hypermeta._space import SPACE_VERSION, DQNConfig, get_space

METHODS = ("multitask", "reptile", "maml", "fomaml", "nearest-task")
#: Bumped when the weights format changes.
FORMAT_VERSION = "1"
SPACE = get_space("schedule")
MIN_FEATURE_STD = 0.05


class OutOfDistributionWarning(UserWarning):
    """The task looks unlike every training task: treat the prediction as a guess, not a tuned value."""


# --- data ---------------------------------------------------------------------------------------------------
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
        raw = self.body(features)
        parts = [torch.softmax(raw[..., s:s + n], -1) if choice else torch.sigmoid(raw[..., s:s + n])
                 for s, n, choice in self.blocks]
        return torch.cat(parts, dim=-1)


class Surrogate(nn.Module):
    """(standardised features, code) -> predicted normalised objective (the ``multitask`` method)."""

    def __init__(self, n_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features + SPACE.dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([features, codes], dim=-1)).squeeze(-1)


# --- training -----------------------------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        for name in ("ensemble", "hidden", "meta_iterations", "tasks_per_batch", "inner_steps", "surrogate_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "inner_lr", "outer_lr", "reptile_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class _Batch:
    """Tensors of one task, with its features already standardised."""

    def __init__(self, task: TaskData, mean: np.ndarray, std: np.ndarray, temperature: float) -> None:
        self.task = task.task
        self.x = torch.as_tensor((task.features - mean) / std, dtype=torch.float32)
        self.codes = torch.as_tensor(task.codes, dtype=torch.float32)
        self.y = torch.as_tensor(task.objectives, dtype=torch.float32)
        self.w = task_weights(self.y, temperature)

    def subset(self, idx: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.codes[idx], task_weights(self.y[idx], temperature)


def _loss(pred: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted squared distance of the predicted code to the task's trials."""
    return (weights * ((codes - pred) ** 2).sum(-1)).sum()


def _train_member(tasks: list[_Batch], cfg: MetaTrainConfig, n_features: int, seed: int,
                  surrogate: Surrogate | None) -> SchedulePredictor:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SchedulePredictor(n_features, cfg.hidden)
    rng = np.random.default_rng(seed)

    if cfg.method == "multitask":
        assert surrogate is not None
        opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr * 3)
        xs = torch.stack([t.x for t in tasks])
        for _ in range(cfg.meta_iterations):
            pred = net(xs)
            gain = surrogate(xs, pred).mean()
            anchor = torch.stack([_loss(pred[i], t.codes, t.w) for i, t in enumerate(tasks)]).mean()
            loss = -gain + cfg.anchor * anchor
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net

    if cfg.method == "reptile":
        outer = torch.optim.SGD(net.parameters(), lr=cfg.reptile_eps)  # theta -= eps * (theta - theta_task)
        for _ in range(cfg.meta_iterations):
            batch = [tasks[i] for i in rng.choice(len(tasks), min(cfg.tasks_per_batch, len(tasks)), replace=False)]
            start = [p.detach().clone() for p in net.parameters()]
            deltas = [torch.zeros_like(p) for p in start]
            for t in batch:
                with torch.no_grad():
                    for p, p0 in zip(net.parameters(), start):
                        p.copy_(p0)
                inner = torch.optim.Adam(net.parameters(), lr=cfg.inner_lr * 0.1)
                for _ in range(cfg.inner_steps):
                    inner.zero_grad()
                    _loss(net(t.x), t.codes, t.w).backward()
                    inner.step()
                for d, p, p0 in zip(deltas, net.parameters(), start):
                    d += (p.detach() - p0) / len(batch)
            with torch.no_grad():
                for p, p0, d in zip(net.parameters(), start, deltas):
                    p.copy_(p0)
                    p.grad = -d
            outer.step()
        return net

    # maml / fomaml: functional inner loop with torch.func
    second_order = cfg.method == "maml"
    outer = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    params = dict(net.named_parameters())

    def task_loss(p: dict[str, torch.Tensor], x: torch.Tensor, codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _loss(functional_call(net, p, (x,)), codes, w)

    inner_grad = grad(task_loss)
    for _ in range(cfg.meta_iterations):
        batch = [tasks[i] for i in rng.choice(len(tasks), min(cfg.tasks_per_batch, len(tasks)), replace=False)]
        outer.zero_grad()
        total = torch.zeros(())
        for t in batch:
            n = len(t.codes)
            perm = torch.randperm(n, generator=gen)
            support = perm[: max(n // 2, 1)]
            query = perm[max(n // 2, 1):] if n > 1 else perm
            s_codes, s_w = t.subset(support, cfg.temperature)
            q_codes, q_w = t.subset(query, cfg.temperature)
            fast = params
            for _ in range(cfg.inner_steps):
                g = inner_grad(fast, t.x, s_codes, s_w)
                if not second_order:
                    g = {k: v.detach() for k, v in g.items()}
                fast = {k: fast[k] - cfg.inner_lr * g[k] for k in fast}
            total = total + task_loss(fast, t.x, q_codes, q_w) / len(batch)
        total.backward()
        outer.step()
    return net


def _train_surrogate(tasks: list[_Batch], cfg: MetaTrainConfig, n_features: int, seed: int) -> Surrogate:
    torch.manual_seed(seed)
    model = Surrogate(n_features)
    xs = torch.cat([t.x.expand(len(t.codes), -1) for t in tasks])
    codes = torch.cat([t.codes for t in tasks])
    ys = torch.cat([t.y for t in tasks])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(cfg.surrogate_epochs):
        opt.zero_grad()
        nn.functional.mse_loss(model(xs, codes), ys).backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- the ensemble -------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """A predicted configuration with its uncertainty."""

    config: DQNConfig
    code: np.ndarray
    disagreement: float  # mean std of the members' codes
    nearest_task: str
    nearest_distance: float  # standardised feature distance to the nearest training task
    out_of_distribution: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "disagreement": self.disagreement, "nearest_task": self.nearest_task,
                "nearest_distance": self.nearest_distance, "out_of_distribution": self.out_of_distribution,
                "reasons": self.reasons}


class MetaModel:
    """An ensemble of :class:`SchedulePredictor` (or, for ``nearest-task``, the training tasks' best codes),
    with feature normalisation and the training tasks it has seen."""

    def __init__(self, method: str, members: list[SchedulePredictor], mean: np.ndarray, std: np.ndarray,
                 task_names: list[str], task_features: np.ndarray, task_best: np.ndarray,
                 train_config: MetaTrainConfig, feature_names: Sequence[str] = FEATURE_NAMES,
                 thresholds: dict[str, float] | None = None) -> None:
        self.method = method
        self.members = members
        self.mean, self.std = np.asarray(mean, float), np.asarray(std, float)
        self.task_names = list(task_names)
        self.task_features = np.asarray(task_features, float)
        self.task_best = np.asarray(task_best, float)
        self.train_config = train_config
        self.feature_names = tuple(feature_names)
        self.thresholds = thresholds or self._calibrate()

    # -- prediction --
    def _z(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, float) - self.mean) / self.std

    def _member_codes(self, features: np.ndarray) -> np.ndarray:
        z = self._z(features)
        if self.method == "nearest-task":
            d = np.linalg.norm(self._z(self.task_features) - z, axis=1)
            return self.task_best[[int(np.argmin(d))]]
        x = torch.as_tensor(z, dtype=torch.float32)
        with torch.no_grad():
            return np.stack([m(x).numpy().astype(np.float64) for m in self.members])

    def _nearest(self, features: np.ndarray, exclude: int | None = None) -> tuple[int, float]:
        d = np.linalg.norm(self._z(self.task_features) - self._z(features), axis=1)
        if exclude is not None:
            d[exclude] = np.inf
        i = int(np.argmin(d))
        return i, float(d[i])

    def _calibrate(self) -> dict[str, float]:
        """Leave-one-out nearest distances and member disagreement on the training tasks."""
        n = len(self.task_names)
        dists = [self._nearest(self.task_features[i], exclude=i)[1] for i in range(n)] if n > 1 else [0.0]
        spread = [float(self._member_codes(f).std(0).mean()) for f in self.task_features]
        return {"distance": 1.5 * float(np.max(dists)) + 1e-9, "disagreement": 2.0 * float(np.max(spread)) + 1e-9}

    def predict(self, features: np.ndarray | Any, warn: bool = True) -> Prediction:
        """Predict a configuration for a task's features (a ``TaskFeatures`` or a vector in feature order)."""
        features = self._check_features(features)
        codes = self._member_codes(features)
        code = codes.mean(0)
        disagreement = float(codes.std(0).mean())
        i, dist = self._nearest(features)
        reasons = []
        if dist > self.thresholds["distance"]:
            reasons.append(f"its features are {dist:.2f} (standardised) from the nearest training task "
                           f"{self.task_names[i]!r}; training tasks lie within {self.thresholds['distance'] / 1.5:.2f} "
                           "of each other")
        if disagreement > self.thresholds["disagreement"]:
            reasons.append(f"the ensemble disagrees ({disagreement:.3f}, more than twice the most seen on a "
                           "training task)")
        pred = Prediction(SPACE.decode(code), code, disagreement, self.task_names[i], dist, bool(reasons), reasons)
        if reasons and warn:
            warnings.warn("out of distribution: " + "; ".join(reasons) + ". Consider a few Optuna trials "
                          "(`hypermeta study --enqueue`) or `adapt()`.", OutOfDistributionWarning, stacklevel=2)
        return pred

    def _check_features(self, features: Any) -> np.ndarray:
        names = getattr(features, "names", None)
        if names is not None:
            if tuple(names) != self.feature_names:
                raise ValueError("task features were computed with other feature names than the weights expect; "
                                 "probe them with this hypermeta version")
            features = features.values
        features = np.asarray(features, dtype=np.float64)
        if features.shape != (len(self.feature_names),) or not np.all(np.isfinite(features)):
            raise ValueError(f"features must be {len(self.feature_names)} finite numbers in the order "
                             f"FEATURE_NAMES, got shape {features.shape}")
        return features

    # -- few-shot adaptation --
    def adapt(self, trials: Sequence[tuple[DQNConfig, float]], features: np.ndarray | Any, steps: int | None = None,
              lr: float | None = None) -> MetaModel:
        """A copy adapted to one new task from a few observed ``(config, normalised objective)`` trials.

        Every member takes ``steps`` inner steps (the method's own inner loop: SGD for MAML/FOMAML, Adam
        for Reptile and multitask) on the per-task loss of these trials; ``nearest-task`` instead returns
        the best observed configuration. The original model is unchanged.
        """
        features = self._check_features(features)
        if not trials:
            raise ValueError("adapt needs at least one (config, objective) trial")
        codes = np.stack([SPACE.encode(c) for c, _ in trials])
        objectives = np.array([float(v) for _, v in trials])
        data = TaskData("adapt", features, codes, objectives)
        cfg = self.train_config
        steps = cfg.inner_steps if steps is None else steps
        clone = MetaModel(self.method, [], self.mean, self.std, self.task_names, self.task_features, self.task_best,
                          cfg, self.feature_names, self.thresholds)
        if self.method == "nearest-task":
            clone.task_names = [*self.task_names, "adapted"]
            clone.task_features = np.vstack([self.task_features, features])
            clone.task_best = np.vstack([self.task_best, data.best_code()])
            return clone
        batch = _Batch(data, self.mean, self.std, cfg.temperature)
        for member in self.members:
            net = SchedulePredictor(len(self.feature_names), cfg.hidden)
            net.load_state_dict(member.state_dict())
            if self.method in ("maml", "fomaml"):
                opt: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=lr or cfg.inner_lr)
            else:
                opt = torch.optim.Adam(net.parameters(), lr=lr or cfg.inner_lr * 0.1)
            for _ in range(steps):
                opt.zero_grad()
                _loss(net(batch.x), batch.codes, batch.w).backward()
                opt.step()
            clone.members.append(net)
        return clone

    # -- files --
    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` (tensors) and ``PATH.json`` (metadata); returns the safetensors path."""
        from safetensors.torch import save_file

        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        tensors = {"norm.mean": torch.as_tensor(self.mean), "norm.std": torch.as_tensor(self.std),
                   "tasks.features": torch.as_tensor(self.task_features), "tasks.best": torch.as_tensor(self.task_best)}
        for i, m in enumerate(self.members):
            for k, v in m.state_dict().items():
                tensors[f"member{i}.{k}"] = v.detach().clone().contiguous()
        meta = {"format_version": FORMAT_VERSION, "space": SPACE.name, "space_version": SPACE_VERSION,
                "feature_version": FEATURE_VERSION, "feature_names": list(self.feature_names),
                "code_names": SPACE.encoded_names, "method": self.method, "members": len(self.members),
                "training_tasks": self.task_names, "train_config": asdict(self.train_config),
                "thresholds": self.thresholds}
        stem.parent.mkdir(parents=True, exist_ok=True)
        weights = stem.with_suffix(".safetensors")
        save_file(tensors, str(weights), metadata={"hypermeta": json.dumps(meta)})
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return weights

    @classmethod
    def load(cls, path: str | Path) -> MetaModel:
        """Load weights written by :meth:`save`. Only safetensors are read: no code is executed."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        elif path.suffix != ".safetensors":
            raise ValueError(f"{str(path)!r}: hypermeta weights are .safetensors files (with a .json beside them); "
                             "pickle files (.pt, .pth, .pkl) are refused because loading them can run code")
        if not path.is_file():
            raise ValueError(f"weights file {str(path)!r} does not exist")
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise ValueError(f"{str(meta_path)!r} (the metadata written beside the weights) does not exist")
        meta = json.loads(meta_path.read_text())
        for key, want in (("format_version", FORMAT_VERSION), ("space_version", SPACE_VERSION),
                          ("feature_version", FEATURE_VERSION)):
            if meta.get(key) != want:
                raise ValueError(f"{str(path)!r} was written with {key} {meta.get(key)!r}, this hypermeta needs "
                                 f"{want!r}: retrain it with `hypermeta meta-train`")
        if meta.get("space") != SPACE.name or meta.get("code_names") != SPACE.encoded_names:
            raise ValueError(f"{str(path)!r} predicts another search space ({meta.get('space')!r}); retrain it")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{str(path)!r} is not a valid safetensors file ({exc}); pickle files are refused") \
                from None
        cfg = MetaTrainConfig(**meta["train_config"])
        members = []
        for i in range(meta["members"]):
            net = SchedulePredictor(len(meta["feature_names"]), cfg.hidden)
            prefix = f"member{i}."
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            members.append(net)
        return cls(meta["method"], members, tensors["norm.mean"].numpy(), tensors["norm.std"].numpy(),
                   meta["training_tasks"], tensors["tasks.features"].numpy(), tensors["tasks.best"].numpy(), cfg,
                   meta["feature_names"], meta["thresholds"])


def meta_train(tasks: Sequence[TaskData], cfg: MetaTrainConfig) -> MetaModel:
    """Train a :class:`MetaModel` on the training tasks. Deterministic for ``cfg.seed``."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("meta-training needs at least one task")
    feats = np.stack([t.features for t in tasks])
    mean = feats.mean(0)
    std = feats.std(0)
    # Nearly constant features would dominate distances and inputs once scaled: floor their scale. Features
    # are O(1) by construction (logs, fractions, symlogs), so 0.05 is "no meaningful variation".
    std = np.maximum(std, MIN_FEATURE_STD)
    best = np.stack([t.best_code() for t in tasks])
    names = [t.task for t in tasks]
    if cfg.method == "nearest-task":
        return MetaModel(cfg.method, [], mean, std, names, feats, best, cfg)
    torch.set_num_threads(1)
    batches = [_Batch(t, mean, std, cfg.temperature) for t in tasks]
    members = []
    rng = np.random.default_rng(cfg.seed)
    for k in range(cfg.ensemble):
        seed = cfg.seed * 1000 + k
        # bootstrap over tasks (all of them for a single member, so one member sees every task)
        chosen = batches if cfg.ensemble == 1 else [batches[i] for i in rng.choice(len(batches), len(batches))]
        surrogate = _train_surrogate(chosen, cfg, len(mean), seed) if cfg.method == "multitask" else None
        members.append(_train_member(chosen, cfg, len(mean), seed, surrogate))
    return MetaModel(cfg.method, members, mean, std, names, feats, best, cfg)


def default_weights_path() -> Path:
    return Path(__file__).parent / "weights" / "default.safetensors"


def load_default() -> MetaModel:
    """The weights shipped with hypermeta (see ``studies/reports/meta/`` for how they were chosen)."""
    path = default_weights_path()
    if not path.is_file():
        raise ValueError(f"the default weights {str(path)!r} are missing from this installation; train some with "
                         "`hypermeta meta-train` and pass them explicitly")
    return MetaModel.load(path)

