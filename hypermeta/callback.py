"""The drop-in SB3 DQN callback that applies hypermeta's learning-rate and epsilon schedules."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import TrainFrequencyUnit

from hypermeta.controller import CONTROL_FRACTION, RECENT, SIGNAL_NAMES, recent_rows, smooth_l1_mean
from hypermeta.guard import DivergenceGuard, GuardSettings
from hypermeta.schedules import ScaledSchedule
from hypermeta.space import DQNConfig
from hypermeta.tasks.features import check_spaces


def as_config(config: DQNConfig | dict[str, Any] | str | Path) -> DQNConfig:
    """Accept a :class:`DQNConfig`, a mapping of its fields, or a YAML/JSON file path."""
    if isinstance(config, DQNConfig):
        return config
    if isinstance(config, dict):
        return DQNConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return DQNConfig.load(config)
    raise TypeError(f"config must be a DQNConfig, a dict or a file path, got {type(config).__name__}")


class SettingsMismatchWarning(UserWarning):
    """The model's DQN settings outside the schedules differ from those the predicted schedules were learned
    with: the best schedules depend on them, so the prediction may not transfer."""


def _net(extractor: str, arch: list[int], activation: str) -> str:
    layers = f"{arch} {activation}" if arch else "no hidden layers"
    return layers if extractor == FlattenExtractor.__name__ else f"{extractor}, then {layers}"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def settings_mismatch(config: DQNConfig, model: DQN) -> dict[str, tuple[Any, Any]]:
    """The DQN settings outside the schedules where ``model`` trains differently from a single-env
    ``DQN("MlpPolicy", env, **config.sb3_kwargs(env.observation_space))`` (the settings hypermeta's data comes
    from): ``{setting: (config's, model's)}``, empty when they agree.

    Compared: the Q-network (features extractor and its kwargs, hidden layers, activation), batch size, gamma, train frequency
    **in transitions** (SB3 counts ``train_freq`` in ``VecEnv.step`` calls, each ``n_envs`` transitions),
    gradient steps per training phase (``-1`` resolved as SB3 does: one per transition collected), target
    update interval, learning starts, buffer size, and the SB3 settings ``DQNConfig`` leaves at SB3's defaults
    (``tau``, ``n_steps``, ``max_grad_norm``)."""
    import inspect

    want_policy = config.sb3_kwargs(model.observation_space)["policy_kwargs"]
    policy_defaults = inspect.signature(type(model.policy).__init__).parameters
    want_activation = want_policy.get("activation_fn", policy_defaults["activation_fn"].default)
    freq, n_envs = model.train_freq, model.n_envs
    in_steps = freq.unit == TrainFrequencyUnit.STEP
    have_freq = freq.frequency * n_envs if in_steps else _plural(freq.frequency, freq.unit.value)
    have_gradient_steps = model.gradient_steps if model.gradient_steps >= 0 else (
        have_freq if in_steps else "one per transition")
    settings = {
        "net": (_net(want_policy.get("features_extractor_class", FlattenExtractor).__name__,
                     list(want_policy["net_arch"]), want_activation.__name__),
                _net(type(model.policy.q_net.features_extractor).__name__, list(model.policy.net_arch),
                     model.policy.activation_fn.__name__)),
        "features_extractor_kwargs": (dict(want_policy.get("features_extractor_kwargs") or {}),
                                      dict(model.policy.features_extractor_kwargs or {})),
        "batch_size": (config.batch_size, model.batch_size),
        "gamma": (config.gamma, model.gamma),
        "train_freq": (config.train_freq, have_freq),
        "gradient_steps": (config.gradient_steps, have_gradient_steps),
        "target_update_interval": (config.target_update_interval, model.target_update_interval),
        "learning_starts": (config.learning_starts, model.learning_starts),
        "buffer_size": (config.buffer_size, model.buffer_size),
    }
    sb3_defaults = inspect.signature(DQN.__init__).parameters
    for name in ("tau", "n_steps", "max_grad_norm"):  # not in DQNConfig: the data used SB3's defaults
        if name in sb3_defaults and hasattr(model, name):
            settings[name] = (sb3_defaults[name].default, getattr(model, name))
    return {name: (want, have) for name, (want, have) in settings.items()
            if not (want == have or (isinstance(want, float) and isinstance(have, (int, float))
                                     and math.isclose(want, have, rel_tol=1e-9)))}


class HyperMetaCallback(BaseCallback):
    """Applies a :class:`~hypermeta.DQNConfig`'s learning-rate and exploration schedules to SB3 ``DQN``.

    Use it like any SB3 callback::

        model = DQN("MlpPolicy", env, **config.sb3_kwargs())
        model.learn(50_000, callback=HyperMetaCallback(config))

    When it fires: at every training start (each ``learn`` call, so also after ``DQN.load`` and with
    ``reset_num_timesteps=False``) it checks the model and replaces ``model.lr_schedule`` and
    ``model.exploration_schedule``. SB3 then reads them itself: the optimizer's lr is set from
    ``lr_schedule`` at the start of every ``train()``, and epsilon from ``exploration_schedule`` after
    every environment step, both at SB3's *progress remaining* (so ``learn(reset_num_timesteps=False)``
    continues the schedule where it stopped). Writing the optimizer or ``exploration_rate`` directly
    would be overwritten by SB3 on the same step.

    At every step it records the lr inside the optimizer and the epsilon in use as
    ``hypermeta/learning_rate`` and ``hypermeta/exploration_rate`` in SB3's logger (stdout, CSV,
    TensorBoard: whatever the model's logger writes).

    With no ``config``, the schedules are **predicted**: at the first training start the callback probes
    the task features of a fresh environment rebuilt from what the training environment was made from
    (the hypermeta task id it carries, or its gymnasium ``EnvSpec``; never the training env itself, so
    ``Monitor`` files, ``VecNormalize`` and ``SubprocVecEnv`` are fine), or of ``task`` when given, and asks the
    meta-learner (``predictor``: a ``MetaModel``, a weights file, or by default the weights shipped with
    hypermeta) for a configuration; the prediction is kept for later ``learn`` calls and exposed as
    ``callback.prediction`` (with its out-of-distribution flag, which is also issued as a warning and logged as
    ``hypermeta/out_of_distribution``). Out of distribution, weights that know ``best-fixed`` (meta-learner
    v2's) apply it instead of the prediction (``callback.prediction.fallback``, logged as
    ``hypermeta/fallback``). The callback only controls the schedules, and the best schedules depend on the
    other DQN settings: when the weights record the settings their training data came from and the model's
    differ (:func:`settings_mismatch`), it issues :class:`SettingsMismatchWarning` naming each one, keeps them
    in ``callback.settings_mismatch`` and logs their number as ``hypermeta/settings_mismatch``. Build the model
    with ``load_default().base.sb3_kwargs(env.observation_space)`` (or your predictor's ``base``) to use the
    settings the schedules were learned for.

    :param config: the configuration whose schedules to apply (a ``DQNConfig``, a dict of its fields
        or a YAML/JSON file); only its schedule fields are used here, build the model with
        ``config.sb3_kwargs()`` to apply the rest. ``None``: predict it (above).
    :param predictor: with ``config=None``, the meta-learner to ask (default: the shipped weights).
    :param task: with ``config=None``, a task id whose features to probe instead of the training env's
        (needed only for environments made neither from a task id nor from a registered gymnasium id).
    :param fallback: with ``config=None``: out of distribution, apply best-fixed's configuration (default, the
        pre-registered behaviour of meta-learner v2); ``False`` applies the meta-learner's own prediction anyway
        (still warned and logged as out of distribution).
    :param guard: watch for divergence and intervene (``True`` for the default
        :class:`~hypermeta.guard.GuardSettings`, or give settings): see :mod:`hypermeta.guard`. Every
        ``check_every`` steps a healthy Q-network is snapshotted; a non-finite loss, weight or Q-value, or
        Q-values beyond what the rewards and gamma allow, roll the networks back, cut the lr schedule 10x
        and reset Adam's moments; after 3 interventions training stops with ``DivergenceError``.
    :param controller: steer lr and epsilon during training from the run's own signals (meta-learner v3, see
        :mod:`hypermeta.controller`): ``"rule"`` (the hand-written adaptive rule), ``"default"`` (the shipped
        meta-learned controller, when one is shipped), a controller's ``.safetensors`` file or a
        :class:`~hypermeta.controller.Controller`. Every 2% of the run it computes the signals, and the configuration's
        schedules (or the prediction's) are moved by the controller's offsets until the next control step; the
        signals and offsets are logged as ``hypermeta/signal/<name>`` and kept in ``callback.control.log``. The
        guard's lr cut applies under the controller's offset. One env only (``ValueError`` otherwise). ``None``
        (default): the schedules as they are.
    :param init: a meta-learned Q-network start (:mod:`hypermeta.qstart`: a ``.safetensors`` file from
        ``hypermeta meta-init FAMILY``, a ``QStart``, or ``"default"``: the start shipped for the env's family, an
        error naming the shipped families when there is none), loaded into ``q_net`` and ``q_net_target`` at the first
        training start of a model that has made no gradient update and has no start loaded yet (a mark saved with
        the model), so later ``learn`` calls, with or without ``reset_num_timesteps``, and loaded models keep their
        weights. A start made for other shapes is refused (``ValueError``, one line); one
        made on another family warns.
    :raises TypeError: at training start, if the model is not a ``stable_baselines3.DQN``.
    :raises ValueError: at training start, if the action space is not Discrete.
    """

    def __init__(self, config: DQNConfig | dict[str, Any] | str | Path | None = None, verbose: int = 0, *,
                 predictor: Any = None, task: str | None = None, guard: bool | GuardSettings = False,
                 fallback: bool | str = True, controller: Any = None, init: Any = None) -> None:
        super().__init__(verbose)
        from hypermeta.qstart import get_start

        # a missing or unsafe file fails now; "default" is resolved at training start, where the env's family is known
        self.init = None if init is None or str(init) == "default" else get_start(init)
        self._default_init = init is not None and str(init) == "default"
        from hypermeta.controller import get_controller

        self.controller = None if controller is None else get_controller(controller)  # bad names fail now
        #: the run under the controller (:class:`~hypermeta.controller.RunControl`), made at the first training start
        self.control: Any = None
        if config is not None and (predictor is not None or task is not None or not fallback):
            raise ValueError("give either config, or predictor/task/fallback to predict one, not both")
        self.config = None if config is None else as_config(config)
        self.predictor, self.task, self.fallback = predictor, task, fallback
        self.prediction: Any = None
        #: with a predicted config: ``{setting: (learned with, the model's)}`` where they differ (see above)
        self.settings_mismatch: dict[str, tuple[Any, Any]] = {}
        self.guard = None if guard is False else DivergenceGuard(None if guard is True else guard)

    def _on_training_start(self) -> None:
        if not isinstance(self.model, DQN):
            raise TypeError(
                f"HyperMetaCallback drives DQN's learning-rate and epsilon schedules; got a "
                f"{type(self.model).__name__} model. Use it with stable_baselines3.DQN (or a DQN subclass)."
            )
        check_spaces(self.training_env, "HyperMetaCallback")
        if ((self.init is not None or self._default_init) and self.model._n_updates == 0
                and not getattr(self.model, _START_LOADED, False)):
            from hypermeta.qstart import get_start, load_into_sb3

            family = _family_of(self.training_env)
            if self.init is None:
                self.init = get_start("default", family)
            load_into_sb3(self.model, self.init, family)
            setattr(self.model, _START_LOADED, True)  # saved with the model: a loaded model keeps its weights
        if self.config is None:
            self.config = self._predict()
            self.logger.record("hypermeta/out_of_distribution", int(self.prediction.out_of_distribution))
            self.logger.record("hypermeta/fallback", int(self.prediction.fallback))
            self._check_settings()
        self.model.lr_schedule = self._lr_schedule()
        self.model.exploration_schedule = self.config.exploration_schedule()
        if self.controller is not None:
            self._start_control()
        # SB3 applies both only after the first step / at the first train(); apply them now so the very
        # first actions and the logged lr already follow the schedule. The stored progress is stale after
        # DQN.load / learn(reset_num_timesteps=False) until the first step, so recompute it the SB3 way.
        self.model._update_current_progress_remaining(self.model.num_timesteps, self.model._total_timesteps)
        self.model._update_learning_rate(self.model.policy.optimizer)
        self.model.exploration_rate = self.model.exploration_schedule(self.model._current_progress_remaining)
        if self.guard is not None:
            self.guard.snapshot(self.model)
        if self.verbose:
            print(f"HyperMetaCallback: lr {self.model.lr_schedule}, epsilon {self.model.exploration_schedule}")

    def _lr_schedule(self) -> Any:
        schedule = self.config.lr_schedule()
        scale = 1.0 if self.guard is None else self.guard.lr_scale
        schedule = schedule if scale == 1.0 else ScaledSchedule(schedule, scale)
        if self.control is not None:  # under the controller's offset (the guard's cut inside it)
            self.control.lr_schedule.base = schedule
            return self.control.lr_schedule
        return schedule

    def _start_control(self) -> None:
        """The first training start makes the run's control (its signals persist over later ``learn`` calls, which
        only update the run's length); every training start installs its schedules."""
        from hypermeta.controller import RunControl

        if self.model.n_envs != 1:
            raise ValueError(f"the controller reads one run's episodes and steers one run: train with one env, got "
                             f"n_envs={self.model.n_envs}")

        total = int(self.model._total_timesteps)
        if self.control is None:
            features = None
            if self.controller.uses_features:
                from hypermeta.meta.predict import probe_env_factory
                from hypermeta.seeds import FEATURE_SEED
                from hypermeta.tasks.features import probe_features

                env = probe_env_factory(self.training_env)()
                try:
                    features = probe_features(env, seed=FEATURE_SEED).values
                finally:
                    env.close()
            self.control = RunControl(self.controller, self.model.lr_schedule, self.model.exploration_schedule,
                                      total, self.model.learning_starts, self.model.gamma, features)
        else:
            self.control.signals.total = total
            self.control.signals.interval = max(1, int(round(CONTROL_FRACTION * total)))
        self.control.eps_schedule.base = self.model.exploration_schedule
        self.model.lr_schedule = self._lr_schedule()
        self.model.exploration_schedule = self.control.eps_schedule

    def _steer(self) -> None:
        """Feed this step to the run's signals; at a control step, compute them (TD loss and Q from the transitions
        stored before this step) and move the schedules."""
        rewards, dones = self.locals["rewards"], self.locals["dones"]
        step = self.num_timesteps - len(rewards)
        for r, d in zip(rewards, dones):  # one transition per env, in order
            step += 1
            self.control.on_step(step, float(r), bool(d))
            if self.control.due(step):
                td, q_max = _recent_td(self.model)
                self.control.control(step, td, q_max)
                for name, value in zip(SIGNAL_NAMES, self.control.log[-1][1]):
                    self.logger.record(f"hypermeta/signal/{name}", float(value))

    def _on_step(self) -> bool:
        if self.control is not None:
            self._steer()
        if self.guard is not None and self.n_calls % self.guard.settings.check_every == 0:
            before = len(self.guard.interventions)
            self.guard.check(self.model, self.num_timesteps)  # raises DivergenceError when it gives up
            if len(self.guard.interventions) > before:  # it intervened: the cut lr applies from now on
                self.model.lr_schedule = self._lr_schedule()
                self.model._update_learning_rate(self.model.policy.optimizer)
        self.logger.record("hypermeta/learning_rate", self.model.policy.optimizer.param_groups[0]["lr"])
        self.logger.record("hypermeta/exploration_rate", self.model.exploration_rate)
        return True

    def _check_settings(self) -> None:
        """Warn when the model's settings outside the schedules differ from those the weights learned with."""
        learned = self._predicted_by.trained_settings
        self.settings_mismatch = {} if learned is None else settings_mismatch(learned, self.model)
        self.logger.record("hypermeta/settings_mismatch", len(self.settings_mismatch))
        if self.settings_mismatch:
            diffs = ", ".join(f"{name} {have} (learned with {want})" for name, (want, have) in self.settings_mismatch.items())
            warnings.warn(f"the predicted schedules were learned with other DQN settings than this model's: {diffs}; "
                          "they may not transfer. Build the model with the predictor's settings, "
                          "`base.sb3_kwargs(env.observation_space)` (hypermeta.load_default().base for the shipped "
                          "weights), or treat the prediction as a starting point", SettingsMismatchWarning,
                          stacklevel=2)

    def _predict(self) -> DQNConfig:
        from hypermeta.meta.predict import predict_config

        # a task id is probed as given; otherwise a fresh env rebuilt from the training env's task id or spec
        result = predict_config(self.task if self.task is not None else self.training_env, self.predictor,
                                fallback=self.fallback)
        self.prediction, self._predicted_by = result.prediction, result.model
        if self.verbose:
            print(f"HyperMetaCallback: predicted by {result.model.method} (nearest training task "
                  f"{self.prediction.nearest_task!r}): {self.prediction.config.to_dict()}")
        return self.prediction.config


def _recent_td(model: DQN) -> tuple[float, float]:
    """The controller's TD loss and ``max|Q|`` on the last stored transitions of ``model``'s replay buffer (those of
    its first env), as the engine computes them (NaN, NaN when nothing is stored)."""
    import numpy as np
    import torch

    buffer = model.replay_buffer
    size = buffer.buffer_size if buffer.full else buffer.pos
    if size == 0:
        return math.nan, math.nan
    rows = recent_rows(buffer.pos if not buffer.full else buffer.pos + buffer.buffer_size, buffer.buffer_size,
                       min(RECENT, buffer.buffer_size - 1))
    obs = buffer.observations[rows, 0]
    nxt = (buffer.next_observations[rows, 0] if buffer.next_observations is not None  # optimize_memory_usage:
           else buffer.observations[(rows + 1) % buffer.buffer_size, 0])  # the next row holds the next observation
    with torch.no_grad():  # the buffer's arrays as SB3's replay samples feed them (q_net preprocesses: one-hot, float)
        q_all = model.q_net(torch.as_tensor(obs, device=model.device))
        next_q = model.q_net_target(torch.as_tensor(nxt, device=model.device)).max(dim=1).values.numpy()
    done = buffer.dones[rows, 0] * (1 - buffer.timeouts[rows, 0])
    target = buffer.rewards[rows, 0] + (1 - done) * model.gamma * next_q
    q = q_all.numpy()[np.arange(len(rows)), buffer.actions[rows, 0].astype(np.int64).reshape(-1)]
    return smooth_l1_mean(q, target.astype(np.float32)), float(np.abs(q_all.numpy()).max())


#: The model attribute that says a Q-network start was loaded into it (pickled with the model by ``save``).
_START_LOADED = "_hypermeta_start_loaded"


def _family_of(venv: Any) -> str | None:
    """The hypermeta family of a vec env's environments, when they carry a task id or a family's gymnasium id."""
    from hypermeta.tasks.families import family_name

    try:
        return family_name(str(venv.get_attr("hypermeta_task_id")[0]))
    except (AttributeError, IndexError):
        spec = getattr(venv.envs[0], "spec", None) if hasattr(venv, "envs") else None
        return family_name(spec.id) if spec is not None else None
