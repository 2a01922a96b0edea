"""One way from an environment to a predicted configuration, used by the callback, the CLI and the reports:
probe the task features of a *fresh* copy of the environment, then ask the meta-learner.

The training environment is never copied or stepped: a probe environment is rebuilt from what the training
env was made from (the hypermeta task id it carries, including a family's context, else its gymnasium
``EnvSpec`` with kwargs); only when neither exists is a deep copy of a same-process env tried.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym

from hypermeta.meta.model import MetaModel, Prediction, load_default
from hypermeta.seeds import FEATURE_SEED
from hypermeta.tasks.features import TaskFeatures, probe_features
from hypermeta.tasks.families import make_env

NO_PROBE_HINT = ("pass the task id, HyperMetaCallback(task='cartpole:gravity=12') or task='CartPole-v1', "
                 "or a config")


@dataclass
class PredictedConfig:
    """A prediction with what it was made from: the features and the meta-learner."""

    prediction: Prediction
    features: TaskFeatures
    model: MetaModel

    @property
    def config(self) -> Any:
        return self.prediction.config


def load_predictor(predictor: MetaModel | str | Path | None = None) -> MetaModel:
    """A :class:`MetaModel` from a model, a weights file, or ``None`` (the weights shipped with hypermeta)."""
    if predictor is None:
        return load_default()
    if isinstance(predictor, (str, Path)):
        return MetaModel.load(predictor)
    return predictor


def probe_env_factory(venv: Any) -> Callable[[], gym.Env]:
    """A factory of fresh environments like those of ``venv`` (an SB3 ``VecEnv``, possibly wrapped, e.g. by
    ``VecNormalize``), without copying or stepping them. ``ValueError`` naming ``task=`` when impossible."""
    task_ids = _attr(venv, "hypermeta_task_id")
    if task_ids:
        return lambda: make_env(task_ids[0])
    spec = _recreatable(_attr(venv, "spec"))
    if spec is not None:
        return lambda: gym.make(spec)
    inner = venv
    while hasattr(inner, "venv"):  # VecEnvWrapper chain down to the vec env holding the envs
        inner = inner.venv
    envs = getattr(inner, "envs", None)
    if envs:
        try:
            template = copy.deepcopy(envs[0])
        except Exception as exc:  # noqa: BLE001  # any unpicklable state: say what to do instead
            raise ValueError(f"cannot make a probe copy of the training environment ({exc}); {NO_PROBE_HINT}") \
                from None
        return lambda: copy.deepcopy(template)
    raise ValueError(f"cannot make a probe copy of a {type(venv).__name__}'s environments (no task id, no "
                     f"EnvSpec); {NO_PROBE_HINT}")


#: Wrappers that only observe (they change no observation, reward or ending): left out of a probe env.
OBSERVING_WRAPPERS = ("stable_baselines3.common.monitor:Monitor",)


def _recreatable(specs: list[Any]) -> gym.envs.registration.EnvSpec | None:
    """The env's spec without observing wrappers (a ``Monitor`` writes a file and cannot be recreated from its
    spec), or ``None`` when some other wrapper cannot be recreated either."""
    if not specs or specs[0] is None:
        return None
    spec = specs[0]
    wrappers = tuple(w for w in spec.additional_wrappers if w.entry_point not in OBSERVING_WRAPPERS)
    if any(w.kwargs is None for w in wrappers):
        return None
    return dataclasses.replace(spec, additional_wrappers=wrappers)


def _attr(venv: Any, name: str) -> list[Any]:
    try:
        return list(venv.get_attr(name, indices=[0]))
    except (AttributeError, NotImplementedError):
        return []


def predict_config(source: str | gym.Env | TaskFeatures | Any, predictor: MetaModel | str | Path | None = None,
                   *, warn: bool = True, fallback: bool | str = True) -> PredictedConfig:
    """Predict the configuration of a task from its features.

    :param source: a task or gymnasium id, a gymnasium env (probed as it is: pass one you own), an SB3
        ``VecEnv`` (a fresh copy of its environments is probed, see :func:`probe_env_factory`), or already
        probed :class:`~hypermeta.TaskFeatures`.
    :param predictor: a :class:`MetaModel`, a weights file, or ``None`` for the shipped weights.
    :param warn: issue :class:`OutOfDistributionWarning` when the task looks unlike every training task.
    :param fallback: out of distribution, apply best-fixed's configuration instead of the prediction when the
        weights have it (the shipped, pre-registered behaviour); ``False`` keeps the meta-learner's own prediction
        (still flagged out of distribution); ``"structure"`` falls back only where the task's observation/action
        structure is unknown to the training tasks (meta-learner v3's rule, :meth:`MetaModel.predict`).
    """
    model = load_predictor(predictor)
    if isinstance(source, TaskFeatures):
        features = source
    elif isinstance(source, (str, gym.Env)):
        features = probe_features(source, seed=FEATURE_SEED)
    elif hasattr(source, "get_attr"):
        env = probe_env_factory(source)()
        try:
            features = probe_features(env, seed=FEATURE_SEED)
        finally:
            env.close()
    else:
        raise TypeError(f"cannot predict from a {type(source).__name__}; give a task id, an env, a VecEnv or "
                        "TaskFeatures")
    return PredictedConfig(model.predict(features, warn=warn, fallback=fallback), features, model)
