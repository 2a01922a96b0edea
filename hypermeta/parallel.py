"""Process pools that stop at once: every process pool of hypermeta (runs, engine batches, CV folds) is made by
:func:`pool_results`, so Ctrl-C, SIGTERM or an error never waits for hours of submitted work whose results would
be thrown away. (Study workers and side-by-side ``tune`` studies are one process each, stopped by their own
loops.) No hypermeta imports: any layer may use it."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence, TypeVar

T, R = TypeVar("T"), TypeVar("R")


def pool_results(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for every item as each finishes, in ``workers`` spawned processes. A stop (Ctrl-C,
    SIGTERM, an error, or the caller closing this generator) stops the processes at once (:func:`stop_pool`)."""
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
