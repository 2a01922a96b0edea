"""Experiments: everything that trains DQN to measure something.

- :mod:`~hypermeta.experiments.runner`: ``Job`` and the ``Runner`` interface (registry of runners);
  :mod:`~hypermeta.experiments.sb3` is the Stable-Baselines3 runner;
- :mod:`~hypermeta.experiments.measurement`: ``Measurement`` (timesteps, evaluations), curves, normalisation;
- :mod:`~hypermeta.experiments.pipeline`: jobs -> runner -> resumable run store -> IQM with CIs;
- :mod:`~hypermeta.experiments.study`: Optuna studies (resumable, multi-process);
- :mod:`~hypermeta.experiments.baselines`, :mod:`~hypermeta.experiments.comparison`,
  :mod:`~hypermeta.experiments.collect`, :mod:`~hypermeta.experiments.heldout`: the run stages of
  ``compare``, ``collect`` and ``meta-report``; :mod:`~hypermeta.experiments.bench`: benchmarks;
- :mod:`~hypermeta.experiments.defaults`: names and defaults the CLI reads without heavy imports.
"""
