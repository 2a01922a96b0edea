"""SB3 against itself started one ulp away, on the fidelity plan's jobs of one family: what rounding alone does to
the paired difference (exploratory, added after the plan's CartPole verdict was seen; not part of the plan).

    python studies/fidelity2/ulp_null.py --plan studies/fidelity2/plan.yaml --family cartpole

Every job of the family is trained once more with the SB3 runner, both networks' initial weights moved one unit in
the last place (``trace.nudge_one_ulp``), into ``runs_sb3_ulp.csv`` beside the plan (resumable: stored jobs are not
trained again). Then the plan's test (the same scores, strata, bootstrap and margin) on three pairings of the same
jobs: SB3-one-ulp - SB3 (a rounding-size difference and nothing else), engine - SB3 (the plan's own), and engine -
SB3-one-ulp. Writes ``studies/reports/engine/fidelity_ulp_null.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

from hypermeta.engine.pipeline import diverged_row, run_row
from hypermeta.guard import DivergenceError
from hypermeta.lab.fidelity import FidelityPlan, equivalence_table, family_of, paired, scored_runs, verdict_text

RUNNER = "sb3_ulp"


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


def report(plan: FidelityPlan, family: str, out: Path) -> Path:
    runs = {r: scored_runs(plan, r) for r in ("sb3", "batched", RUNNER)}
    runs = {r: f[f["family"] == family] for r, f in runs.items()}
    keys = ["task", "method", "seed"]
    common = runs["sb3"][keys].merge(runs["batched"][keys]).merge(runs[RUNNER][keys])  # every pairing, the same jobs
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
             "moved it, not that the runners differ. The third row pairs the engine with SB3-one-ulp.", "",
             "| pairing | runs | mean difference | 90% CI | 95% CI | equivalent (+-margin) | identical curves |",
             "|---|---:|---:|---|---|---|---:|"]
    for label, a, b in (("SB3-one-ulp - SB3", RUNNER, "sb3"), ("engine - SB3 (the plan's)", "batched", "sb3"),
                        ("engine - SB3-one-ulp", "batched", RUNNER)):
        pairs, _ = paired(plan, {"sb3": runs[b], "batched": runs[a]})
        if pairs.empty:
            lines.append(f"| {label} | 0 | | | | | |")
            continue
        r = next(equivalence_table(pairs, plan.margin).query("family != 'overall'").itertuples())
        verdict = verdict_text(r)
        if a == RUNNER and "differ" in verdict:  # the null row: the same SB3, one ulp apart
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
    p.add_argument("--limit", type=int, help="train at most this many jobs now (the rest on the next call)")
    p.add_argument("--out", default="studies/reports/engine/fidelity_ulp_null.md")
    args = p.parse_args(argv)
    plan = FidelityPlan.load(args.plan)
    families = sorted({family_of(c["task"]) for c in plan.contexts})
    if args.family not in families:
        print(f"error: family {args.family!r} is not in the plan; one of {', '.join(families)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    trained = run_ulp(plan, args.family, args.limit)
    path = report(plan, args.family, Path(args.out))
    print(f"trained {trained} runs; report written to {path}")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
