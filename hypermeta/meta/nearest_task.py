"""The methods without networks, the bars a learned predictor must clear: ``nearest-task`` (Feurer et al.,
AAAI 2015; the best configuration of the nearest training task in standardised feature space), ``k-nearest``
(the portfolio configuration best on average over the k nearest training tasks), ``ridge-portfolio`` (the
portfolio configuration whose predicted score, one ridge regression on the features per configuration, is
highest) and ``best-fixed`` (one configuration for every task)."""

from __future__ import annotations

from hypermeta.meta.data import SchedulePredictor, TaskBatch
from hypermeta.meta.method import Method


class NearestTask(Method):
    name = "nearest-task"
    learned = False

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        raise TypeError("nearest-task has no networks: its prediction is the nearest training task's best code")


class BestFixed(Method):
    """``best-fixed``: no learning and no task features; the one configuration, among those tried on every
    training task, with the best mean normalised score over them (:func:`hypermeta.meta.data.best_fixed_code`).
    A meta-learner that does not beat it is a lookup table."""

    name = "best-fixed"
    learned = False

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        raise TypeError("best-fixed has no networks: its prediction is one configuration for every task")


class KNearest(Method):
    """``k-nearest``: between ``nearest-task`` (k = 1) and ``best-fixed`` (k = all): the configuration, among those
    tried on every training task (the portfolio), with the best mean normalised score over the k nearest
    training tasks in standardised feature space, k = ceil(sqrt(training tasks)) (:func:`~hypermeta.meta.data.knn_size`).
    One noisy task's best does not decide, as it does for ``nearest-task``; unlike ``best-fixed`` it depends on
    the task. Added to meta-learner v2's plan on 2026-11-26 (logged in ``studies/meta2/calibration.md``)."""

    name = "k-nearest"
    learned = False

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        raise TypeError("k-nearest has no networks: its prediction is a portfolio configuration")


class RidgePortfolio(Method):
    """``ridge-portfolio``: algorithm selection over the portfolio. Each portfolio configuration's normalised score
    is regressed on the standardised task features (ridge, one penalty for all, chosen by exact leave-one-task-out
    error among :data:`~hypermeta.meta.data.RIDGE_ALPHAS`, "infinite" included); a new task gets the configuration
    with the highest predicted score. With an infinite penalty every prediction is the training mean, so the
    method is best-fixed unless the features measurably help. Added to meta-learner v2's plan on 2026-11-26
    (logged in ``studies/meta2/calibration.md``)."""

    name = "ridge-portfolio"
    learned = False

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        raise TypeError("ridge-portfolio has no networks: its prediction is a portfolio configuration")
