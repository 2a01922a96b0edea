"""Meta-learning methods: a small base class and the registry that finds them by name.

A method turns the training tasks into one ensemble member (a
:class:`~hypermeta.meta.data.SchedulePredictor`) and says how a member adapts to a new task's few trials.
Add one with a new file holding a :class:`Method` subclass and one line in :data:`METHODS`; this module
imports no torch, so the CLI can list the names cheaply.

Call order: :func:`hypermeta.meta.model.meta_train` builds ``get_method(name)(cfg)`` once, then calls
:meth:`Method.train_member` once per ensemble member (with that member's bootstrap of the tasks and seed);
:meth:`hypermeta.meta.model.MetaModel.adapt` calls :meth:`Method.adapt_optimizer` once per member.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from hypermeta.meta.data import MetaTrainConfig, SchedulePredictor, TaskBatch

#: Method name -> ``"module:Class"`` (imported when used).
METHODS: dict[str, str] = {
    "multitask": "hypermeta.meta.multitask:MultiTask",
    "surrogate": "hypermeta.meta.multitask:SurrogateRanked",
    "reptile": "hypermeta.meta.reptile:Reptile",
    "maml": "hypermeta.meta.maml:MAML",
    "fomaml": "hypermeta.meta.maml:FOMAML",
    "nearest-task": "hypermeta.meta.nearest_task:NearestTask",
    "k-nearest": "hypermeta.meta.nearest_task:KNearest",
    "ridge-portfolio": "hypermeta.meta.nearest_task:RidgePortfolio",
    "best-fixed": "hypermeta.meta.nearest_task:BestFixed",
}


class Method(ABC):
    """A meta-learning algorithm over the training tasks' trials.

    :param cfg: the meta-training settings (hyperparameters of every method live there).
    """

    name: ClassVar[str]
    #: ``False`` for methods without networks (their predictions come from the training tasks' data).
    learned: ClassVar[bool] = True

    def __init__(self, cfg: MetaTrainConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        """Train one ensemble member on ``tasks`` (its bootstrap resample), deterministically for ``seed``."""

    def adapt_optimizer(self, params: Any, lr: float | None = None) -> torch.optim.Optimizer:
        """The optimizer of the few-shot adaptation steps (default: Adam, as in the methods' inner loops)."""
        import torch

        return torch.optim.Adam(params, lr=lr or self.cfg.adam_inner_lr)


def get_method(name: str) -> type[Method]:
    """The :class:`Method` class registered as ``name``."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {name!r}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
