"""The seed policy: every seed range hypermeta uses, in one place.

Tuning, meta-training and test seeds come from disjoint ranges, so no configuration is ever judged on a
seed it was tuned or meta-trained on (see ``../shared/EVALUATION.md`` and the README, "Seeds"):

========================  ==========================================  ==========================
what                      seeds                                        owner
========================  ==========================================  ==========================
tuning (study trials)     trial ``t`` with ``m`` seeds: ``t*m .. t*m+m-1``, below :data:`TEST_SEED_START`   :func:`tuning_seeds`
test runs                 :data:`TEST_SEED_START` + ``0 .. n-1``       :func:`test_seeds`
matrix (meta-training)    :data:`MATRIX_SEED_START` + 1000 * task index + ``0 .. n-1``   :func:`matrix_seeds`
reference returns         :data:`REFERENCE_SEED_START` + ``0 .. n-1``  :func:`reference_seeds`
engine fidelity runs      :data:`FIDELITY_SEED_START` + ``0 .. n-1``   :func:`fidelity_seeds`
controller meta-training  :data:`CONTROL_SEED_START` + 100 g + i; validation :data:`CONTROL_VALIDATION_SEED_START` + j   :mod:`hypermeta.lab.control_training`
Q-network start training  :data:`META_INIT_SEED_START` + 100 i + j         :mod:`hypermeta.lab.qstart_training`
evaluation episodes       training seed + :data:`EVAL_SEED_OFFSET`      :func:`eval_seed`
task-feature probe        :data:`FEATURE_SEED` (training and prediction alike)
random-policy reference   :data:`RANDOM_SEED` (normalisation)
ensemble member ``k``     ``meta_seed * 1000 + k``                     :func:`member_seed`
study worker ``i``        sampler seed + ``i``                         :func:`worker_seed`
========================  ==========================================  ==========================

>>> tuning_seeds(3, 2), test_seeds(2), eval_seed(7)
([6, 7], [10000000, 10000001], 1000007)
"""

from __future__ import annotations

#: The first test seed; tuning seeds always lie below it.
TEST_SEED_START = 10_000_000
#: Meta-training data (the performance matrix) uses seeds from here up, distinct per task; below the test seeds.
MATRIX_SEED_START = 5_000_000
#: Runs that measure a family's reference return (what scores 1.0) use seeds from here up.
REFERENCE_SEED_START = 20_000_000
#: The engine's fidelity test at full budgets (studies/fidelity2/plan.yaml) uses seeds from here up.
FIDELITY_SEED_START = 30_000_000
#: The controller's ES meta-training (hypermeta.lab.control_training): generation g, task slot i trains on CONTROL + 100 g + i;
#: its validation runs on CONTROL_VALIDATION + j.
CONTROL_SEED_START = 40_000_000
CONTROL_VALIDATION_SEED_START = 42_000_000
#: The Q-network starts' inner runs (hypermeta.lab.qstart_training): iteration i, slot j on META_INIT + 100 i + j;
#: their shared initialisation on META_INIT - 1.
META_INIT_SEED_START = 44_000_000
#: Evaluation environments are seeded with ``seed + EVAL_SEED_OFFSET`` so they never replay training episodes.
EVAL_SEED_OFFSET = 1_000_000
#: The probe seed of every task's features (training data and prediction alike).
FEATURE_SEED = 0
#: Seed of the uniform random policy whose mean return normalises scores to 0.
RANDOM_SEED = 12345
#: Ensemble members of one meta-training seed are seeded ``seed * MEMBER_SEED_STRIDE + k``.
MEMBER_SEED_STRIDE = 1000


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int, or ``ValueError`` if it is not a non-negative integer (gymnasium's rule)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {seed!r}")
    return seed


def tuning_seeds(trial_number: int, seeds_per_trial: int) -> list[int]:
    """The training seeds of study trial ``trial_number`` (never a test seed)."""
    if seeds_per_trial < 1:
        raise ValueError(f"seeds_per_trial must be >= 1, got {seeds_per_trial}")
    seeds = [trial_number * seeds_per_trial + j for j in range(seeds_per_trial)]
    if seeds[-1] >= TEST_SEED_START:
        raise ValueError(f"trial {trial_number} would use a test seed; start a new study")
    return seeds


def test_seeds(n: int) -> list[int]:
    """The first ``n`` test seeds."""
    if n < 1:
        raise ValueError(f"the number of test seeds must be >= 1, got {n}")
    return [TEST_SEED_START + i for i in range(n)]


def fidelity_seeds(n: int, offset: int = 0) -> list[int]:
    """``n`` seeds of the engine's fidelity test from the ``offset``-th on (both runners train each; a later plan
    takes new ones with an offset)."""
    if n < 1:
        raise ValueError(f"the number of fidelity seeds must be >= 1, got {n}")
    return [FIDELITY_SEED_START + offset + i for i in range(n)]


test_seeds.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def reference_seeds(n: int) -> list[int]:
    """The ``n`` seeds of reference-return runs (``hypermeta bench minatar``)."""
    if n < 1:
        raise ValueError(f"the number of reference seeds must be >= 1, got {n}")
    return [REFERENCE_SEED_START + i for i in range(n)]


def matrix_seeds(task_index: int, n: int) -> list[int]:
    """The ``n`` seeds of training task ``task_index`` in the performance matrix (no task shares a seed).

    >>> matrix_seeds(2, 3)
    [5002000, 5002001, 5002002]
    """
    if not 1 <= n <= 1000 or task_index < 0:
        raise ValueError(f"need 1 <= n <= 1000 seeds and task_index >= 0, got {n}, {task_index}")
    seeds = [MATRIX_SEED_START + 1000 * task_index + j for j in range(n)]
    if seeds[-1] >= TEST_SEED_START:
        raise ValueError(f"task index {task_index} would reach the test seeds")
    return seeds


def eval_seed(seed: int) -> int:
    """Seed of the evaluation environments of a run trained on ``seed``."""
    return seed + EVAL_SEED_OFFSET


def member_seed(seed: int, k: int) -> int:
    """Seed of ensemble member ``k`` of a meta-learner trained with ``seed``."""
    return seed * MEMBER_SEED_STRIDE + k


def worker_seed(seed: int | None, i: int) -> int | None:
    """Sampler seed of study worker ``i`` (``None`` stays unseeded)."""
    return None if seed is None else seed + i
