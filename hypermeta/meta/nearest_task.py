"""The two methods without networks, the bars a learned predictor must clear: ``nearest-task`` (Feurer et al.,
AAAI 2015; the best configuration of the nearest training task in standardised feature space) and
``best-fixed`` (one configuration for every task)."""

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
