"""Process pools that stop at once: every process pool of hypermeta (runs, engine batches, CV folds) is made by
:func:`pool_results`, so Ctrl-C, SIGTERM or an error never waits for hours of submitted work whose results would
be thrown away. (Study workers and side-by-side ``tune`` studies are one process each, stopped by their own
loops.) No hypermeta imports: any layer may use it.

The optional Ray backend (:func:`set_backend`, ``--backend ray [--address ADDR]`` on the commands that run batches
of jobs): each item becomes one Ray task (``num_cpus=1``; the functions given set one torch thread), retried up to
:data:`RAY_RETRIES` times when its worker dies, and results stream back to the caller (the driver), which alone
writes the stores. Without it nothing changes and Ray is not imported."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence, TypeVar

T, R = TypeVar("T"), TypeVar("R")


#: The backend and the Ray address, in the environment so that worker processes and Ray tasks see them too.
BACKEND_VAR, ADDRESS_VAR = "HYPERMETA_BACKEND", "HYPERMETA_RAY_ADDRESS"
BACKENDS = ("local", "ray")
#: A Ray task whose worker died is submitted again up to this many times (Ray's ``max_retries``).
RAY_RETRIES = 3


def set_backend(name: str, address: str | None = None) -> None:
    """Run the batches of :func:`pool_results` in local processes (``"local"``, the default) or as Ray tasks on the
    cluster at ``address`` (``"ray"``; None: a cluster of this machine's CPUs started for this process, or the one
    ``RAY_ADDRESS`` names). ``ValueError`` in one line, naming the extra to install, when Ray is missing."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ValueError("--backend ray needs Ray: pip install \"hypermeta[ray]\"")
    os.environ[BACKEND_VAR] = name
    if address:
        os.environ[ADDRESS_VAR] = address
    else:
        os.environ.pop(ADDRESS_VAR, None)


def distributed() -> bool:
    """Whether batches go to Ray (then even ``workers=1`` sends them there)."""
    return os.environ.get(BACKEND_VAR) == "ray"


def pool_results(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for every item as each finishes, in ``workers`` spawned processes (with the Ray backend:
    as Ray tasks, as many at once as the cluster has CPUs). A stop (Ctrl-C, SIGTERM, an error, or the caller closing
    this generator) stops the processes at once (:func:`stop_pool`), or cancels the Ray tasks."""
    if distributed():
        yield from ray_results(fn, items)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            yield items[futures[fut]], fut.result()
    except BaseException:  # the results of the runs still going are not wanted: stop them now
        stop_pool(pool)
        raise
    pool.shutdown()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` at once: queued jobs are cancelled and running ones killed (their results are not
    wanted). ``ProcessPoolExecutor``'s own exit waits for every submitted job, which for a stopped evaluation is
    hours of runs whose results would be thrown away; it has no public way to kill its processes before
    Python 3.14 (``terminate_workers``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(10)


def ray_results(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for every item as its Ray task finishes (see the module docstring)."""
    import ray

    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("HYPERMETA_")}  # the episode cap, the backend
        ray.init(address=os.environ.get(ADDRESS_VAR), runtime_env={"env_vars": env}, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True, configure_logging=False)
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_apply)  # ray.remote takes functions, not partials
    refs = {task.remote(fn, item): i for i, item in enumerate(items)}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield items[refs[ref]], ray.get(ref)
    except BaseException:  # the results still to come are not wanted: cancel them now
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)

