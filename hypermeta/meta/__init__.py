"""The meta-learner: from task features to DQN learning-rate and exploration schedules.

- :mod:`~hypermeta.meta.method`: the :class:`~hypermeta.meta.method.Method` base class and the registry
  (no torch import: the CLI lists the names);
- one file per method: :mod:`~hypermeta.meta.multitask`, :mod:`~hypermeta.meta.reptile`,
  :mod:`~hypermeta.meta.maml` (MAML and FOMAML), :mod:`~hypermeta.meta.nearest_task`;
- :mod:`~hypermeta.meta.data`: task data, networks, meta-training settings;
- :mod:`~hypermeta.meta.model`: the ensemble (OOD flags, ``adapt``, safetensors save/load) and ``meta_train``;
- :mod:`~hypermeta.meta.predict`: ``predict_config``, the one path from an environment to a prediction.
"""
