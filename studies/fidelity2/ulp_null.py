"""SB3 against itself started one ulp away, on the fidelity plan's jobs of one family: what rounding alone does to
the paired difference (exploratory, added after the plan's CartPole verdict was seen; not part of the plan).

    python studies/fidelity2/ulp_null.py --plan studies/fidelity2/plan.yaml --family cartpole

Every job of the family is trained once more with the SB3 runner, both networks' initial weights moved one unit in
the last place (``trace.nudge_one_ulp``), into ``runs_sb3_ulp.csv`` beside the plan (resumable: stored jobs are not
trained again). Then the plan's test (the same scores, strata, bootstrap and margin) on three pairings of the same
jobs: SB3-one-ulp - SB3 (a rounding-size difference and nothing else), engine - SB3 (the plan's own), and engine -
SB3-one-ulp. Writes ``studies/reports/engine/fidelity_ulp_null.md``.

    python studies/fidelity2/ulp_null.py --plan studies/fidelity2/plan.yaml --family cartpole --runner engine

trains the same jobs once more in the engine started one ulp away (``runs_batched_ulp.csv``; the engine's weights
``flat`` and its target nudged as ``nudge_one_ulp`` nudges SB3's two networks): a second, independent draw of the
engine, so that a difference seen in the plan's engine runs can be told from those runs' own luck. With it the report
adds engine-one-ulp - engine (the engine's rounding-only null), engine-one-ulp against both SB3 draws, and both
engine draws against both SB3 draws (each job's mean score of its two draws per runner).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from hypermeta.engine.pipeline import diverged_row, run_row
from hypermeta.guard import DivergenceError
from hypermeta.lab.fidelity import FidelityPlan, equivalence_table, family_of, paired, scored_runs, verdict_text

RUNNER, ENGINE_RUNNER = "sb3_ulp", "batched_ulp"


def _trace_module():
    spec = importlib.util.spec_from_file_location("fidelity_trace", Path(__file__).with_name("trace.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ulp(plan: FidelityPlan, family: str, limit: int | None = None) -> int:
    """Train the family's jobs not yet stored with SB3 started one ulp away; returns how many were trained."""
    from tqdm.auto import tqdm

    import hypermeta.engine.sb3 as sb3

    trace = _trace_module()
    store = plan.store(RUNNER)
    todo = [j for j in plan.jobs() if family_of(j.task) == family and store.get(j) is None][:limit]
    with trace.sb3_callbacks(trace.one_ulp_start()):
        for job in tqdm(todo, desc=f"SB3 one ulp away ({family})", unit="run"):
            try:  # as the plan's SB3 runner trains it; a diverged run is stored as the plan's runners store it
                store.add(run_row(job, sb3.SB3Runner().run(job)))
            except DivergenceError as error:
                store.add(diverged_row(job, error))
    return len(todo)


@contextmanager
def engine_one_ulp() -> Iterator[None]:
    """Within the block, every agent of the batched engine starts one ulp away (towards +inf) from SB3's
    initialisation, in both its online weights and its target (which starts as a copy of them)."""
    from hypermeta.engine import batched

    init, one_ulp_up = batched._Agents._init_params, _trace_module().one_ulp_up

    def nudged(self):
        return one_ulp_up(init(self))

    batched._Agents._init_params = nudged
    try:
        yield
    finally:
        batched._Agents._init_params = init


def run_engine_ulp(plan: FidelityPlan, family: str, limit: int | None = None) -> int:
    """Train the family's jobs not yet stored with the engine started one ulp away (one process, so that the patch
    applies); returns how many were trained."""
    from hypermeta.engine.batched import BatchedRunner
    from hypermeta.engine.pipeline import run_jobs_scoring_divergence

    store = plan.store(ENGINE_RUNNER)
    todo = [j for j in plan.jobs() if family_of(j.task) == family and store.get(j) is None][:limit]
    if todo:
        with engine_one_ulp():
            run_jobs_scoring_divergence(todo, store, workers=1, progress=True, runner=BatchedRunner())
    return len(todo)


def _mean_of_draws(a, b):
    """Per job, the mean score of two draws of one runner (``curve``: both curves, so that an identical curve in a
    pairing means identical in both draws)."""
    keys = ["task", "method", "seed"]
    both = a.merge(b[keys + ["score", "curve", "diverged"]], on=keys, suffixes=("", "_2"))
    both["score"] = (both["score"] + both["score_2"]) / 2
    both["curve"] = both["curve"] + "|" + both["curve_2"]
    both["diverged"] = both["diverged"] | both["diverged_2"]
    return both.drop(columns=["score_2", "curve_2", "diverged_2"])


def report(plan: FidelityPlan, family: str, out: Path) -> Path:
    runs = {r: scored_runs(plan, r) for r in ("sb3", "batched", RUNNER, ENGINE_RUNNER)}
    runs = {r: f[f["family"] == family] for r, f in runs.items() if r != ENGINE_RUNNER or not f.empty}
    keys = ["task", "method", "seed"]
    common = runs["sb3"][keys]
    for frame in list(runs.values())[1:]:
        common = common.merge(frame[keys])  # every pairing, the same jobs
    runs = {r: f.merge(common, on=keys) for r, f in runs.items()}
    n_jobs = sum(family_of(j.task) == family for j in plan.jobs())
    lines = [f"# SB3 against itself one ulp away: the rounding-only null for {family} (exploratory)", "",
             f"Rendered {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `python "
             f"studies/fidelity2/ulp_null.py --plan {plan.path} --family {family}`. **Not part of the pre-registered "
             f"plan**: added on 2026-12-06, after the plan's {family} verdict was seen, to ask whether a difference of "
             "rounding size alone moves the paired mean as far. Same jobs, scores, strata, bootstrap and margin as the "
             "plan's test ([`fidelity_full.md`](fidelity_full.md)).", "",
             f"Jobs stored in all three runners (every row below is over these): {len(common)} of the family's "
             f"{n_jobs}" + ("" if len(common) == n_jobs else
                            " (**interim**: the rest are not run yet; `--family` again resumes)") + ". The first row is "
             "one draw of what rounding alone does to the paired mean; a CI excluding 0 there means rounding alone "
             "moved it, not that the runners differ. The third row pairs the engine with SB3-one-ulp. Where the engine "
             "has a second draw (`--runner engine`: the engine started one ulp away), the next rows pair it with the "
             "engine's first draw (the engine's own rounding-only null) and with both SB3 draws, and the last row "
             "pairs each job's mean score over the engine's two draws with its mean over SB3's two.", "",
             "| pairing | runs | mean difference | 90% CI | 95% CI | equivalent (+-margin) | identical curves |",
             "|---|---:|---:|---|---|---|---:|"]
    pairings = [("SB3-one-ulp - SB3", RUNNER, "sb3"), ("engine - SB3 (the plan's)", "batched", "sb3"),
                ("engine - SB3-one-ulp", "batched", RUNNER)]
    if ENGINE_RUNNER in runs:
        runs["sb3 both"] = _mean_of_draws(runs["sb3"], runs[RUNNER])
        runs["engine both"] = _mean_of_draws(runs["batched"], runs[ENGINE_RUNNER])
        pairings += [("engine-one-ulp - engine", ENGINE_RUNNER, "batched"),
                     ("engine-one-ulp - SB3", ENGINE_RUNNER, "sb3"),
                     ("engine-one-ulp - SB3-one-ulp", ENGINE_RUNNER, RUNNER),
                     ("engine (mean of 2 draws) - SB3 (mean of 2 draws)", "engine both", "sb3 both")]
    for label, a, b in pairings:
        pairs, _ = paired(plan, {"sb3": runs[b], "batched": runs[a]})
        if pairs.empty:
            lines.append(f"| {label} | 0 | | | | | |")
            continue
        r = next(equivalence_table(pairs, plan.margin).query("family != 'overall'").itertuples())
        verdict = verdict_text(r)
        if (a, b) in ((RUNNER, "sb3"), (ENGINE_RUNNER, "batched")) and "differ" in verdict:  # a null row: one
            # runner against itself, one ulp apart
            verdict = "rounding alone moved the mean (95% CI excludes 0)"
        lines.append(f"| {label} | {r.runs} | {r.mean:+.4f} | [{r.ci90_low:+.4f}, {r.ci90_high:+.4f}] | "
                     f"[{r.ci95_low:+.4f}, {r.ci95_high:+.4f}] | {verdict} | {r.identical} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="studies/fidelity2/plan.yaml")
    p.add_argument("--family", required=True)
    p.add_argument("--runner", choices=["sb3", "engine"], default="sb3",
                   help="which runner to train one ulp away (default sb3; engine: a second draw of the engine)")
    p.add_argument("--limit", type=int, help="train at most this many jobs now (the rest on the next call)")
    p.add_argument("--out", default="studies/reports/engine/fidelity_ulp_null.md")
    args = p.parse_args(argv)
    plan = FidelityPlan.load(args.plan)
    families = sorted({family_of(c["task"]) for c in plan.contexts})
    if args.family not in families:
        print(f"error: family {args.family!r} is not in the plan; one of {', '.join(families)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    trained = (run_ulp if args.runner == "sb3" else run_engine_ulp)(plan, args.family, args.limit)
    path = report(plan, args.family, Path(args.out))
    print(f"trained {trained} runs; report written to {path}")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
