"""Collect the matrix's *last* tasks (training tasks in collection order, or held-out tasks) into a separate CSV.

For a second machine while `hypermeta matrix` works through the same plan from the front: the runs are the
plan's own jobs (same portfolio, budgets and per-task seeds), so merging them is the same as collecting them
locally, only sooner. It leaves out runs the main CSV has, and refuses to reach the first tasks the main collection
has not finished (the ones it is working on), so the two never train the same run.

    python studies/meta2/collect_tail.py studies/meta2/plan.yaml OUT.csv --last 9 --workers 16 --max-agents 24
    python studies/meta2/collect_tail.py studies/meta2/plan.yaml OUT.csv --merge   # append OUT.csv's new rows

Runs are stored as their lock-step batch ends, so a killed collection keeps every finished batch; run it again
(or let the main collection reach those tasks) for the rest. Merge only while no `hypermeta matrix` is running
(or right after one of its batches lands), and restart the main collection after merging: a running one has
already planned those runs.

On a lent GPU machine (16 cores, no network; Python 3.12 and torch there): build the wheels here
(`pip wheel --no-deps . -w .whl`, again after every code change, and `pip download --no-deps` of gymnasium,
farama-notifications, pandas<3, pytz, tzdata, stable-baselines3, cloudpickle and, for lunarlander, Box2D, for
cp312), carry `.whl`, and run
`python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site
timeout 500 python3 studies/meta2/collect_tail.py studies/meta2/plan.yaml $OUT/tail_runs.csv --last 9
--workers 16 --max-agents 24`.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from hypermeta.engine.batched import BatchedRunner
from hypermeta.lab.matrix import MatrixPlan
from hypermeta.engine.pipeline import RUN_COLUMNS, RunStore, run_jobs_scoring_divergence

KEY = ["task", "config_key", "seed", "timesteps", "n_evals", "eval_episodes"]


def tail_tasks(plan: MatrixPlan, last: int, split: str = "train") -> list[str]:
    """The last ``last`` tasks of ``split`` in the order `hypermeta matrix` collects them, the very last first."""
    order = plan.collection_order() if split == "train" else [*plan.heldout_contexts, *plan.heldout_family]
    return order[-last:][::-1]


#: the main collection works on at most this many tasks at once (its first incomplete ones): the tail avoids them
FRONT = 4


def collect(plan: MatrixPlan, out: str, last: int, workers: int, max_agents: int, split: str = "train") -> None:
    tasks = tail_tasks(plan, last, split)
    main = RunStore(plan.runs_path)
    order = plan.collection_order() if split == "train" else tail_tasks(plan, 10**6, split)[::-1]
    front = [t for t in order if any(main.get(j) is None for j in plan.jobs([t]))][:FRONT]
    if set(front) & set(tasks):
        sys.exit(f"error: the main matrix is working on {sorted(set(front) & set(tasks))}; lower --last so the two "
                 "do not overlap")
    jobs = [j for j in plan.jobs(tasks) if main.get(j) is None]  # runs the main CSV has are not trained again
    print(f"{len(tasks)} tasks, {len(jobs)} runs -> {out}", flush=True)
    run_jobs_scoring_divergence(jobs, RunStore(out), workers=workers, runner=BatchedRunner(max_agents=max_agents))


def merge(plan: MatrixPlan, out: str) -> None:
    """Append ``out``'s rows whose keys the main CSV lacks (the main CSV's format: same columns and writer)."""
    main, extra = pd.read_csv(plan.runs_path), pd.read_csv(out)
    if list(extra.columns) != RUN_COLUMNS:
        sys.exit(f"error: {out} does not have the run columns {RUN_COLUMNS}")
    known = set(map(tuple, main[KEY].itertuples(index=False)))
    new = extra[[k not in known for k in map(tuple, extra[KEY].itertuples(index=False))]]
    new.to_csv(plan.runs_path, mode="a", header=False, index=False)
    print(f"appended {len(new)} of {len(extra)} rows to {plan.runs_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan")
    parser.add_argument("out", help="CSV for the collected runs")
    parser.add_argument("--last", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-agents", type=int, default=24)
    parser.add_argument("--split", choices=["train", "heldout"], default="train")
    parser.add_argument("--merge", action="store_true", help="append OUT's new rows to the plan's CSV instead")
    args = parser.parse_args()
    plan = MatrixPlan.load(args.plan)
    if args.merge:
        merge(plan, args.out)
    else:
        collect(plan, args.out, args.last, args.workers, args.max_agents, args.split)
