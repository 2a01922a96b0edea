"""The meta-learner: an ensemble of schedule predictors with its feature normalisation, uncertainty and files.

Methods (:data:`hypermeta.meta.method.METHODS`): ``multitask``, ``surrogate``, ``reptile``, ``maml``, ``fomaml``,
and those without networks, ``nearest-task``, ``k-nearest``, ``ridge-portfolio`` and ``best-fixed``, under
:mod:`hypermeta.meta`.

Uncertainty: :class:`MetaModel` is an ensemble (members differ in seed and in a bootstrap resample of the
training tasks); a prediction comes with the members' disagreement and the distance to the nearest
training task, both compared with what was seen on the training tasks (leave-one-out), and an
out-of-distribution warning when either is well outside it (:data:`OOD_DISTANCE_FACTOR`,
:data:`OOD_DISAGREEMENT_FACTOR`; or, once set by cross-validation, one threshold on the OOD score
``max(distance / reference distance, disagreement / reference disagreement)``, see
:mod:`hypermeta.meta.selection`). When the training tasks share a portfolio of configurations, the model also
keeps ``best-fixed`` (the configuration with the best mean score over them) and falls back to it when out of
distribution.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hypermeta.meta.data import (SPACE, MetaTrainConfig, SchedulePredictor, TaskBatch, TaskData, best_fixed_code,
                                 fit_portfolio_ridge, knn_size, portfolio_matrix,
                                 task_loss)
from hypermeta.meta.method import Method, get_method
from hypermeta.seeds import member_seed
from hypermeta.space import SPACE_VERSION, DQNConfig
from hypermeta.tasks.features import FEATURE_NAMES, FEATURE_VERSION

#: Bumped when the weights format changes.
FORMAT_VERSION = "2"  # "2": weights that need the stored portfolio (k-nearest, ridge-portfolio); others are "1"
READABLE_FORMATS = ("1", "2")
#: methods that choose among the training tasks' shared portfolio (weights store it)
PORTFOLIO_METHODS = ("k-nearest", "ridge-portfolio")
MIN_FEATURE_STD = 0.05
#: A task is out of distribution when its nearest training task is farther than this many times the largest
#: leave-one-out nearest distance among the training tasks ...
OOD_DISTANCE_FACTOR = 1.5
#: ... or when the ensemble disagrees more than this many times the most it did on a training task.
OOD_DISAGREEMENT_FACTOR = 2.0


class OutOfDistributionWarning(UserWarning):
    """The task looks unlike every training task: treat the prediction as a guess, not a tuned value."""


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
    ood_score: float = 0.0  # max(distance / reference distance, disagreement / reference disagreement)
    fallback: bool = False  # True when out of distribution and ``config`` is best-fixed, not the prediction

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "disagreement": self.disagreement, "nearest_task": self.nearest_task,
                "nearest_distance": self.nearest_distance, "out_of_distribution": self.out_of_distribution,
                "ood_score": self.ood_score, "fallback": self.fallback, "reasons": self.reasons}


class MetaModel:
    """An ensemble of :class:`SchedulePredictor` (or, for ``nearest-task``, the training tasks' best codes),
    with feature normalisation and the training tasks it has seen."""

    def __init__(self, method: str, members: list[SchedulePredictor], mean: np.ndarray, std: np.ndarray,
                 task_names: list[str], task_features: np.ndarray, task_best: np.ndarray,
                 train_config: MetaTrainConfig, feature_names: Sequence[str] = FEATURE_NAMES,
                 thresholds: dict[str, float] | None = None, fallback: np.ndarray | None = None,
                 base: DQNConfig | None = None, portfolio: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        get_method(method)  # an unknown method (e.g. weights of a newer hypermeta) fails here, by name
        self.method = method
        self.members = members
        self.mean, self.std = np.asarray(mean, float), np.asarray(std, float)
        self.task_names = list(task_names)
        self.task_features = np.asarray(task_features, float)
        self.task_best = np.asarray(task_best, float)
        self.train_config = train_config
        self.feature_names = tuple(feature_names)
        #: the DQN settings the training data came from (None: weights that do not record them); predicted
        #: schedules are decoded over them (``base``, hypermeta's base configuration when unknown)
        self.trained_settings = base
        self.base = base or DQNConfig()
        #: best-fixed's code (None when the training tasks share no configuration)
        self.fallback = None if fallback is None else np.asarray(fallback, float)
        #: the portfolio's codes ``[C, dim]`` and the training tasks' scores of them ``[tasks, C]``
        self.portfolio = None if portfolio is None else (np.asarray(portfolio[0], float), np.asarray(portfolio[1], float))
        if self.portfolio is not None and (self.portfolio[0].shape[1:] != (SPACE.dim,) or
                                           self.portfolio[1].shape != (len(self.task_names), len(self.portfolio[0]))):
            raise ValueError(f"the portfolio's codes {self.portfolio[0].shape} and scores {self.portfolio[1].shape} do "
                             f"not fit {len(self.task_names)} training tasks and codes of length {SPACE.dim}")
        self._ridge: tuple[np.ndarray, np.ndarray, float] | None = None  # ridge-portfolio's fit, made when first used
        if (method == "best-fixed" and self.fallback is None) or (method in PORTFOLIO_METHODS and self.portfolio is None):
            raise ValueError(f"{method} needs training tasks that share their configurations (a portfolio)")
        self.thresholds = dict(thresholds) if thresholds else self._calibrate()
        # weights written before the OOD score existed: its references follow from the two thresholds
        self.thresholds.setdefault("ref_distance", self.thresholds["distance"] / OOD_DISTANCE_FACTOR)
        self.thresholds.setdefault("ref_disagreement", self.thresholds["disagreement"] / OOD_DISAGREEMENT_FACTOR)

    @property
    def algorithm(self) -> Method:
        return get_method(self.method)(self.train_config)

    # -- prediction --
    def _z(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, float) - self.mean) / self.std

    def _member_codes(self, features: np.ndarray) -> np.ndarray:
        if self.method == "best-fixed":
            return self.fallback[None]
        if self.method == "k-nearest":
            d = np.linalg.norm(self._z(self.task_features) - self._z(features), axis=1)
            near = np.argsort(d, kind="stable")[:knn_size(len(d))]
            codes, scores = self.portfolio
            return codes[[int(np.argmax(scores[near].mean(0)))]]
        if self.method == "ridge-portfolio":
            if self._ridge is None:
                self._ridge = fit_portfolio_ridge(self._z(self.task_features), self.portfolio[1])
            w, b, _ = self._ridge
            return self.portfolio[0][[int(np.argmax(self._z(features) @ w + b))]]
        if not self.members:  # a method without networks (nearest-task): the nearest training task's best
            return self.task_best[[self._nearest(features)[0]]]
        x = torch.as_tensor(self._z(features), dtype=torch.float32)
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
        ref_d, ref_s = float(np.max(dists)) + 1e-9, float(np.max(spread)) + 1e-9
        return {"distance": OOD_DISTANCE_FACTOR * ref_d, "disagreement": OOD_DISAGREEMENT_FACTOR * ref_s,
                "ref_distance": ref_d, "ref_disagreement": ref_s}

    def ood_score(self, distance: float, disagreement: float) -> float:
        """How far outside the training tasks a task is: 1 = as far as the farthest training task was from
        its nearest neighbour, or as much member disagreement as the most seen on a training task. A threshold
        calibrated without the disagreement term (cross-validation with one-member folds, where members cannot
        disagree) is applied to the distance term alone (``thresholds["score_uses_disagreement"] == 0``)."""
        score = distance / self.thresholds["ref_distance"]
        if self.thresholds.get("score_uses_disagreement", 1.0):
            score = max(score, disagreement / self.thresholds["ref_disagreement"])
        return score

    def set_ood_threshold(self, score: float, uses_disagreement: bool = True) -> None:
        """Use one cross-validated threshold on :meth:`ood_score` instead of the two default factors;
        ``uses_disagreement=False`` when the validation could not see member disagreement."""
        if not np.isfinite(score) or score <= 0:
            raise ValueError(f"the OOD score threshold must be a positive number, got {score}")
        self.thresholds["score"] = float(score)
        self.thresholds["score_uses_disagreement"] = float(uses_disagreement)

    def predict(self, features: np.ndarray | Any, warn: bool = True, fallback: bool | str = True) -> Prediction:
        """Predict a configuration for a task's features (a ``TaskFeatures`` or a vector in feature order).

        Out of distribution, the prediction is replaced by best-fixed when the model has it and ``fallback``
        is true (``fallback=False`` gives the network's own prediction, as cross-validation needs).
        ``fallback="structure"`` (meta-learner v3's rule, registered in studies/v3/plan.yaml): replace it only
        where the task's observation/action structure is unknown to the training tasks (no training task with the
        same observation size, number of actions and binary-ness), whatever the OOD score says; the OOD flag and
        its reasons are kept either way."""
        if fallback not in (True, False, "structure"):
            raise ValueError(f"fallback must be True, False or 'structure', got {fallback!r}")
        features = self._check_features(features)
        codes = self._member_codes(features)
        code = codes.mean(0)
        disagreement = float(codes.std(0).mean())
        i, dist = self._nearest(features)
        score = self.ood_score(dist, disagreement)
        reasons = []
        if "score" in self.thresholds:
            if score > self.thresholds["score"]:
                reasons.append(f"its OOD score is {score:.2f} (distance {dist:.2f} to the nearest training task "
                               f"{self.task_names[i]!r}, disagreement {disagreement:.3f}), above the "
                               f"cross-validated threshold {self.thresholds['score']:.2f}")
        else:
            if dist > self.thresholds["distance"]:
                reasons.append(f"its features are {dist:.2f} (standardised) from the nearest training task "
                               f"{self.task_names[i]!r}; training tasks lie within "
                               f"{self.thresholds['ref_distance']:.2f} of each other")
            if disagreement > self.thresholds["disagreement"]:
                reasons.append(f"the ensemble disagrees ({disagreement:.3f}, more than {OOD_DISAGREEMENT_FACTOR:g} "
                               "times the most seen on a training task)")
        if fallback == "structure":
            known = self.known_structure(features)
            if not known:
                reasons.append("its observation/action structure is unlike every training task's")
            fallback = not known
        fallback = fallback and bool(reasons) and self.fallback is not None and self.method != "best-fixed"
        if fallback:
            code = self.fallback
            reasons.append("falling back to best-fixed (the configuration best on average over the training tasks)")
        pred = Prediction(SPACE.decode(code, base=self.base), code, disagreement, self.task_names[i], dist, bool(reasons), reasons,
                          score, fallback)
        if reasons and warn:
            warnings.warn("out of distribution: " + "; ".join(reasons) + ". Consider a few trials "
                          "(`hypermeta tune`) or `adapt()`.", OutOfDistributionWarning, stacklevel=2)
        return pred

    #: The features that describe a task's observation/action structure (the "structure" fallback rule).
    STRUCTURE_FEATURES = ("log_obs_dim", "log_n_actions", "obs_is_binary")

    def known_structure(self, features: np.ndarray | Any) -> bool:
        """Whether some training task has the same observation size, number of actions and binary-ness."""
        features = self._check_features(features)
        idx = [self.feature_names.index(n) for n in self.STRUCTURE_FEATURES]
        return bool(np.isclose(self.task_features[:, idx], features[idx], rtol=0, atol=1e-9).all(axis=1).any())

    def member_codes(self, features: np.ndarray | Any) -> np.ndarray:
        """Every ensemble member's predicted code for a task, shape ``(members, SPACE.dim)`` (one row for
        methods without networks); their mean is the zero-shot prediction before any OOD fallback."""
        return self._member_codes(self._check_features(features))

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

    def warm_start_codes(self, features: np.ndarray | Any, n_nearest: int = 3) -> list[tuple[str, np.ndarray]]:
        """Diverse candidates for a new task, best guess first: the ensemble's prediction, then best-fixed (when
        the model has it), then the best configurations of the ``n_nearest`` nearest training tasks alternating
        with the members' own predictions (so that a short prefix mixes every source)."""
        features = self._check_features(features)
        codes = self._member_codes(features)
        out = [("zero-shot", codes.mean(0))]
        if self.fallback is not None and self.method != "best-fixed":
            out.append(("best-fixed", self.fallback))
        d = np.linalg.norm(self._z(self.task_features) - self._z(features), axis=1)
        nearest = [(f"nearest:{self.task_names[i]}", self.task_best[i]) for i in np.argsort(d)[:n_nearest]]
        members = [(f"member-{i}", c) for i, c in enumerate(codes)] if len(codes) > 1 else []
        for k in range(max(len(nearest), len(members))):
            out += nearest[k:k + 1] + members[k:k + 1]
        return out

    # -- few-shot adaptation --
    def adapt(self, trials: Sequence[tuple[DQNConfig, float]], features: np.ndarray | Any, steps: int | None = None,
              lr: float | None = None) -> MetaModel:
        """A copy adapted to one new task from a few observed ``(config, normalised objective)`` trials.

        Every member takes ``steps`` inner steps (the method's own inner loop: SGD for MAML/FOMAML, Adam
        for Reptile, multitask and surrogate) on the per-task loss of these trials; ``nearest-task``,
        ``k-nearest``, ``ridge-portfolio`` and ``best-fixed`` instead return the best observed configuration
        (the copies of the last three are ``best-fixed`` models of it, and say so in ``method``). The original
        model is unchanged.
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
                          cfg, self.feature_names, self.thresholds, self.fallback, self.trained_settings, self.portfolio)
        # adapted, the fallback is the best observed configuration (for best-fixed also the prediction itself)
        clone.fallback = data.best_code()
        if self.method in ("best-fixed", *PORTFOLIO_METHODS):  # the trials need not be in the portfolio: their best
            clone.method = "best-fixed"
            return clone
        if not self.algorithm.learned:
            clone.task_names = [*self.task_names, "adapted"]
            clone.task_features = np.vstack([self.task_features, features])
            clone.task_best = np.vstack([self.task_best, data.best_code()])
            return clone
        batch = TaskBatch(data, self.mean, self.std, cfg.temperature)
        for member in self.members:
            net = SchedulePredictor(len(self.feature_names), cfg.hidden)
            net.load_state_dict(member.state_dict())
            opt = self.algorithm.adapt_optimizer(net.parameters(), lr)
            for _ in range(steps):
                opt.zero_grad()
                task_loss(net(batch.x), batch.codes, batch.w).backward()
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
        if self.fallback is not None:
            tensors["fallback.code"] = torch.as_tensor(self.fallback)
        if self.portfolio is not None:
            tensors["portfolio.codes"], tensors["portfolio.scores"] = (torch.as_tensor(a) for a in self.portfolio)
        for i, m in enumerate(self.members):
            for k, v in m.state_dict().items():
                tensors[f"member{i}.{k}"] = v.detach().clone().contiguous()
        meta = {"format_version": FORMAT_VERSION if self.method in PORTFOLIO_METHODS else "1",
                "space": SPACE.name, "space_version": SPACE_VERSION,
                "feature_version": FEATURE_VERSION, "feature_names": list(self.feature_names),
                "code_names": SPACE.encoded_names, "method": self.method, "members": len(self.members),
                "training_tasks": self.task_names, "train_config": asdict(self.train_config),
                "thresholds": self.thresholds,
                "fixed": None if self.trained_settings is None else self.trained_settings.to_dict()}
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
        for key, want in (("format_version", READABLE_FORMATS), ("space_version", (SPACE_VERSION,)),
                          ("feature_version", (FEATURE_VERSION,))):
            if meta.get(key) not in want:
                raise ValueError(f"{str(path)!r} was written with {key} {meta.get(key)!r}, this hypermeta reads "
                                 f"{' or '.join(map(repr, want))}: retrain it with `hypermeta meta-train`")
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
                   meta["feature_names"], meta["thresholds"],
                   tensors["fallback.code"].numpy() if "fallback.code" in tensors else None,
                   DQNConfig.from_dict(meta["fixed"], source=f"{str(meta_path)!r} `fixed`") if meta.get("fixed") else None,
                   (tensors["portfolio.codes"].numpy(), tensors["portfolio.scores"].numpy())
                   if "portfolio.codes" in tensors else None)


def meta_train(tasks: Sequence[TaskData], cfg: MetaTrainConfig, base: DQNConfig | None = None) -> MetaModel:
    """Train a :class:`MetaModel` on the training tasks (whose runs used the DQN settings ``base``, default
    hypermeta's base configuration). Deterministic for ``cfg.seed``."""
    tasks, base = list(tasks), base or DQNConfig()
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
    fixed, portfolio = best_fixed_code(tasks), portfolio_matrix(tasks)
    algorithm = get_method(cfg.method)(cfg)
    if not algorithm.learned:
        return MetaModel(cfg.method, [], mean, std, names, feats, best, cfg, fallback=fixed, base=base,
                         portfolio=portfolio)
    torch.set_num_threads(1)
    batches = [TaskBatch(t, mean, std, cfg.temperature) for t in tasks]
    members = []
    rng = np.random.default_rng(cfg.seed)
    for k in range(cfg.ensemble):
        # bootstrap over tasks (all of them for a single member, so one member sees every task)
        chosen = batches if cfg.ensemble == 1 else [batches[i] for i in rng.choice(len(batches), len(batches))]
        members.append(algorithm.train_member(chosen, len(mean), member_seed(cfg.seed, k)))
    return MetaModel(cfg.method, members, mean, std, names, feats, best, cfg, fallback=fixed, base=base,
                     portfolio=portfolio)


def default_weights_path() -> Path:
    return Path(__file__).parent.parent / "weights" / "default.safetensors"


def default_adapt_weights_path() -> Path:
    """The network meta-learner ``tune --sampler adapt`` uses when the default weights have no networks (shipped
    beside them by ``hypermeta meta2 ship``; absent when the default itself has networks)."""
    return default_weights_path().with_name("adapt.safetensors")


def load_default() -> MetaModel:
    """The weights shipped with hypermeta (see ``studies/reports/meta/`` for how they were chosen)."""
    path = default_weights_path()
    if not path.is_file():
        raise ValueError(f"the default weights {str(path)!r} are missing from this installation; train some with "
                         "`hypermeta meta-train` and pass them explicitly")
    return MetaModel.load(path)

