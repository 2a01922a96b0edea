"""The laboratory: the pre-registered pipelines and benchmarks that produced hypermeta's evidence and its
meta-learners. Meta-learner v1's data (:mod:`~hypermeta.lab.collect`, :mod:`~hypermeta.lab.heldout`), v2's matrix and
pipeline (:mod:`~hypermeta.lab.matrix`, :mod:`~hypermeta.lab.meta2`), the few-shot benchmark of ``tune``
(:mod:`~hypermeta.lab.fewshot`), v3's controller and Q-network starts (:mod:`~hypermeta.lab.control_training`,
:mod:`~hypermeta.lab.qstart_training`), the engine's fidelity test (:mod:`~hypermeta.lab.fidelity`) and the benchmarks
(:mod:`~hypermeta.lab.bench`, :mod:`~hypermeta.lab.engine_bench`).

Depends on the search, the engine and the core; only the CLI and the reports import it.
"""
