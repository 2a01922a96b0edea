"""``nearest-task`` (Feurer et al., AAAI 2015): no learning; the best configuration of the nearest training
task in standardised feature space. The bar a learned predictor must clear."""

from __future__ import annotations

from hypermeta.meta.data import SchedulePredictor, TaskBatch
from hypermeta.meta.method import Method


class NearestTask(Method):
    name = "nearest-task"
    learned = False

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        raise TypeError("nearest-task has no networks: its prediction is the nearest training task's best code")
