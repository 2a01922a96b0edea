"""What proposes ``hypermeta tune``'s trials after round 0 (``--sampler``); the candidates of the comparison in
issue 11, all over the ``schedule`` space's code (the unit cube of :data:`hypermeta.meta.data.SPACE`):

* ``tpe``: Optuna's TPE with the round-0 observations in its model (no proposer object: the study samples).
* ``adapt``: the meta-learner's few-shot step. The observed trials (objectives rescaled so the best is 1, the
  scale of the training data) adapt every ensemble member (``MetaModel.adapt``: the method's own inner loop),
  and the adapted ensemble's mean and member predictions are proposed, best guess first.
* ``metatpe``: meta-learned TPE (Watanabe, Awad, Onishi & Hutter, IJCAI 2023, "Speeding up multi-objective
  hyperparameter optimization by task similarity-based meta-learning for the tree-structured Parzen
  estimator"), implemented here because OptunaHub's ``MetaLearnTPE`` downloads its code at run time. Each task
  (the training tasks of the matrix dataset, and the new task) gets TPE's two Parzen estimators over its top
  ``gamma`` and remaining trials; a training task's weight is its similarity to the new task, ``1 - total
  variation distance`` of their top-trial densities (Monte Carlo), the new task's own weight is 1, and only the
  :data:`META_TOP_K` most similar training tasks are kept. Candidates drawn from the weighted top-trial mixture
  are ranked by the weighted ratio ``l(x) / g(x)``, as TPE does. Before the new task has 2 observations every
  kept task weighs the same.

Objectives of different tasks only matter through their ranks within a task, so no scale is shared.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from hypermeta.meta.data import SPACE, TaskData
from hypermeta.space import DQNConfig

PROPOSERS = ("tpe", "adapt", "metatpe")
#: metatpe: the fraction of a task's trials that counts as its top (TPE's gamma), and the training tasks kept.
META_GAMMA = 0.15
META_TOP_K = 5
META_CANDIDATES = 128
MC_SAMPLES = 256


def _key(config: DQNConfig) -> str:
    return json.dumps({p.name: getattr(config, p.name) for p in SPACE.params}, sort_keys=True)


def _new(configs: Sequence[DQNConfig], observed: Sequence[tuple[DQNConfig, float]], n: int) -> list[DQNConfig]:
    """The first ``n`` configurations whose schedules were neither observed nor proposed before them."""
    seen = {_key(c) for c, _ in observed}
    out = []
    for c in configs:
        if _key(c) not in seen:
            seen.add(_key(c))
            out.append(c)
    return out[:n]


class AdaptProposer:
    """``adapt`` (see the module docstring)."""

    def __init__(self, model: Any, features: Any, steps: int | None = None) -> None:
        self.model, self.features, self.steps = model, features, steps

    def propose(self, observed: Sequence[tuple[DQNConfig, float]], n: int) -> list[DQNConfig]:
        if not observed:
            return []
        ys = np.array([v for _, v in observed], dtype=float)
        top = ys.max()
        scaled = ys / top if top > 0 else ys - ys.min()
        adapted = self.model.adapt([(c, float(s)) for (c, _), s in zip(observed, scaled)], self.features, self.steps)
        codes = adapted.member_codes(self.features)
        candidates = [codes.mean(0), *codes]
        return _new([SPACE.decode(c, base=self.model.base) for c in candidates], observed, n)


class _Parzen:
    """TPE's univariate Parzen estimator per code dimension (Gaussian kernels with a Silverman bandwidth, plus a
    uniform prior weighing like one kernel); the density of a code is the product over dimensions, as in
    Optuna's default (independent) TPE, which keeps it usable in this many dimensions."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = np.asarray(codes, float).reshape(-1, SPACE.dim)
        k = len(self.codes)
        spread = self.codes.std(0) if k > 1 else np.full(SPACE.dim, 0.3)
        self.h = np.clip(1.06 * spread * max(k, 1) ** -0.2, 0.05, 0.5)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        k = len(self.codes)
        if k == 0:
            return np.zeros(len(x))
        z = (x[:, None, :] - self.codes[None]) / self.h
        kernels = np.exp(-0.5 * z ** 2) / (self.h * np.sqrt(2 * np.pi))  # (n, k, dim)
        per_dim = (kernels.sum(1) + 1.0) / (k + 1)  # the uniform prior on [0, 1] has density 1
        return np.log(per_dim).sum(-1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = len(self.codes)
        pick = rng.integers(0, k + 1, (n, SPACE.dim))  # per dimension; index k: the uniform prior
        out = rng.uniform(size=(n, SPACE.dim))
        kernel = pick < k
        centers = self.codes[np.minimum(pick, max(k - 1, 0)), np.arange(SPACE.dim)[None]] if k else out
        noise = rng.normal(0, 1, (n, SPACE.dim)) * self.h
        out[kernel] = (centers + noise)[kernel]
        return np.clip(out, 0.0, 1.0)


def _split(codes: np.ndarray, ys: np.ndarray, gamma: float) -> tuple[_Parzen, _Parzen]:
    order = np.argsort(-ys, kind="stable")
    n_good = max(1, int(np.ceil(gamma * len(ys))))
    return _Parzen(codes[order[:n_good]]), _Parzen(codes[order[n_good:]])


def total_variation(p: _Parzen, q: _Parzen, rng: np.random.Generator, n: int = MC_SAMPLES) -> float:
    """``0.5 * integral |p - q|``, by Monte Carlo from the mixture ``(p + q) / 2``:
    ``E[|p - q| / (p + q)] = E[|tanh((log p - log q) / 2)|]``."""
    x = np.vstack([p.sample(rng, n // 2), q.sample(rng, n - n // 2)])
    return float(np.clip(np.mean(np.abs(np.tanh((p.logpdf(x) - q.logpdf(x)) / 2))), 0.0, 1.0))


class MetaTPEProposer:
    """``metatpe`` (see the module docstring); ``meta_tasks`` are the training tasks' trials (codes, objectives)."""

    def __init__(self, meta_tasks: Sequence[TaskData], base: DQNConfig | None = None, seed: int = 0,
                 gamma: float = META_GAMMA, top_k: int = META_TOP_K) -> None:
        if not meta_tasks:
            raise ValueError("metatpe needs the trials of earlier tasks (a matrix dataset with --meta-data)")
        self.meta = [(t.task, *_split(t.codes, t.objectives, gamma)) for t in meta_tasks]
        self.base, self.gamma, self.top_k = base or DQNConfig(), gamma, top_k
        self.rng = np.random.default_rng(seed)
        self.weights: dict[str, float] = {}

    def _weighted(self, observed: Sequence[tuple[DQNConfig, float]]) -> list[tuple[float, _Parzen, _Parzen]]:
        if len(observed) < 2:
            chosen = self.meta if len(self.meta) <= self.top_k else [
                self.meta[i] for i in self.rng.choice(len(self.meta), self.top_k, replace=False)]
            self.weights = {name: 1.0 for name, _, _ in chosen}
            return [(1.0, good, bad) for _, good, bad in chosen]
        codes = np.stack([SPACE.encode(c) for c, _ in observed])
        good, bad = _split(codes, np.array([v for _, v in observed], dtype=float), self.gamma)
        sims = [(1.0 - total_variation(good, g, self.rng), name, g, b) for name, g, b in self.meta]
        sims.sort(key=lambda s: -s[0])
        kept = sims[:self.top_k]
        self.weights = {"new task": 1.0, **{name: s for s, name, _, _ in kept}}
        return [(1.0, good, bad)] + [(s, g, b) for s, _, g, b in kept]

    def propose(self, observed: Sequence[tuple[DQNConfig, float]], n: int) -> list[DQNConfig]:
        parts = self._weighted(observed)
        w = np.array([p[0] for p in parts])
        w = w / w.sum()
        counts = self.rng.multinomial(META_CANDIDATES, w)
        x = np.vstack([g.sample(self.rng, int(c)) for (_, g, _), c in zip(parts, counts) if c > 0])
        log_w = np.log(w)[:, None]
        lx = np.logaddexp.reduce(log_w + np.stack([g.logpdf(x) for _, g, _ in parts]), axis=0)
        gx = np.logaddexp.reduce(log_w + np.stack([b.logpdf(x) for _, _, b in parts]), axis=0)
        order = np.argsort(-(lx - gx), kind="stable")
        return _new([SPACE.decode(x[i], base=self.base) for i in order], observed, n)
