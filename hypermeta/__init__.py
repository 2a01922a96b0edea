"""hypermeta: meta-learned learning-rate and exploration schedules for Stable-Baselines3 DQN."""

from __future__ import annotations

from hypermeta._callback import HyperMetaCallback
from hypermeta._features import FEATURE_DOCS, FEATURE_NAMES, FEATURE_VERSION, TaskFeatures, check_spaces, probe_features
from hypermeta._schedules import ShapedSchedule
from hypermeta._space import PARAMS, SPACE_VERSION, DQNConfig, Param, SearchSpace, get_space
from hypermeta._tasks import (
    ContextParam,
    Task,
    TaskFamily,
    env_factory,
    families,
    get_family,
    get_task,
    make_env,
    register_family,
)

__version__ = "0.1.0"

__all__ = [
    "FEATURE_DOCS",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "PARAMS",
    "SPACE_VERSION",
    "ContextParam",
    "DQNConfig",
    "HyperMetaCallback",
    "Param",
    "SearchSpace",
    "ShapedSchedule",
    "Task",
    "TaskFamily",
    "TaskFeatures",
    "check_spaces",
    "env_factory",
    "families",
    "get_family",
    "get_space",
    "get_task",
    "make_env",
    "probe_features",
    "register_family",
]
