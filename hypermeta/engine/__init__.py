"""The engine: what trains DQN for a measurement.

- :mod:`~hypermeta.engine.runner`: ``Job`` and the ``Runner`` seam (a registry of runners by name);
- :mod:`~hypermeta.engine.sb3`: the Stable-Baselines3 runner (the product's own trainer, with the callback);
- :mod:`~hypermeta.engine.batched`: the batched engine, K DQN agents in lock-step on one core, SB3's steps;
- :mod:`~hypermeta.engine.fast_envs`: bit-identical faster steps of gymnasium's classic-control envs;
- :mod:`~hypermeta.engine.measurement`: ``Measurement``, learning curves, normalised scores;
- :mod:`~hypermeta.engine.pipeline`: jobs -> runner -> resumable run store -> IQM and paired CIs;
- :mod:`~hypermeta.engine.defaults`: names and defaults the CLI reads without heavy imports.

Depends only on the core (``hypermeta`` top-level modules, ``hypermeta.tasks``, ``hypermeta.meta``).
"""
