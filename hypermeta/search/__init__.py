"""The search a user runs: Optuna studies over the search space (:mod:`~hypermeta.search.study`), ``hypermeta
tune`` (:mod:`~hypermeta.search.tune`, with the proposers of :mod:`~hypermeta.search.proposers`), the named baseline
configurations (:mod:`~hypermeta.search.baselines`) and comparison files (:mod:`~hypermeta.search.comparison`).

Depends on the engine and the core; nothing below imports it.
"""
