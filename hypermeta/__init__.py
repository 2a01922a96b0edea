"""hypermeta: meta-learned learning-rate and exploration schedules for Stable-Baselines3 DQN.

The public API. Names are imported on first use (so ``import hypermeta`` and the CLI's ``--help`` stay
fast and do not import torch or Stable-Baselines3).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # core: configurations, the search space, schedules, the callback
    "DQNConfig": "hypermeta.space",
    "SearchSpace": "hypermeta.space",
    "get_space": "hypermeta.space",
    "ShapedSchedule": "hypermeta.schedules",
    "HyperMetaCallback": "hypermeta.callback",
    "SettingsMismatchWarning": "hypermeta.callback",
    "settings_mismatch": "hypermeta.callback",
    # tasks and features
    "ContextParam": "hypermeta.tasks.families",
    "Task": "hypermeta.tasks.families",
    "TaskFamily": "hypermeta.tasks.families",
    "families": "hypermeta.tasks.families",
    "get_family": "hypermeta.tasks.families",
    "get_task": "hypermeta.tasks.families",
    "make_env": "hypermeta.tasks.families",
    "register_family": "hypermeta.tasks.families",
    "FEATURE_DOCS": "hypermeta.tasks.features",
    "FEATURE_NAMES": "hypermeta.tasks.features",
    "TaskFeatures": "hypermeta.tasks.features",
    "probe_features": "hypermeta.tasks.features",
    # the meta-learner
    "MetaModel": "hypermeta.meta.model",
    "Prediction": "hypermeta.meta.model",
    "OutOfDistributionWarning": "hypermeta.meta.model",
    "load_default": "hypermeta.meta.model",
    "meta_train": "hypermeta.meta.model",
    "MetaTrainConfig": "hypermeta.meta.data",
    "predict_config": "hypermeta.meta.predict",
    # experiments: train, evaluate, studies
    "Measurement": "hypermeta.engine.measurement",
    "Job": "hypermeta.engine.runner",
    "Runner": "hypermeta.engine.runner",
    "get_runner": "hypermeta.engine.runner",
    "train": "hypermeta.engine.sb3",
    "evaluate": "hypermeta.engine.sb3",
    "run_jobs": "hypermeta.engine.pipeline",
    "StudySpec": "hypermeta.search.study",
    "run_study": "hypermeta.search.study",
    "baseline_config": "hypermeta.search.baselines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hypermeta' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
