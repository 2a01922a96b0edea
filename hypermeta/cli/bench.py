"""``hypermeta bench``: benchmarks that write reports under ``studies/reports/``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hypermeta.cli._common import positive_int


def cmd_bench(args: argparse.Namespace) -> int:
    from hypermeta.lab.bench import run_guard_benchmark, run_kill_stress, run_overhead_benchmark, run_workers_benchmark

    out = Path(args.out or f"studies/reports/{args.which}.md")
    if args.which == "overhead":
        report = run_overhead_benchmark(args.task, args.timesteps, args.repeats or 7, out)
    elif args.which == "engine":
        from hypermeta.lab.engine_bench import run_throughput_benchmark

        out = Path(args.out or "studies/reports/engine/throughput.md")
        report = run_throughput_benchmark(args.tasks.split(","), args.timesteps, args.ks, out, args.repeats or 5)
    elif args.which == "fidelity" and args.plan:
        return _bench_fidelity_plan(args)
    elif args.which == "fidelity":
        from hypermeta.lab.engine_bench import run_fidelity_benchmark

        out = Path(args.out or "studies/reports/engine/fidelity.md")
        tasks = dict(item.rsplit("@", 1) for item in args.fidelity_tasks.split(";"))
        report = run_fidelity_benchmark({t: int(n) for t, n in tasks.items()}, args.configs, args.seeds,
                                        args.workers, out)
    elif args.which == "guard":
        report = run_guard_benchmark(args.task, args.timesteps, args.seeds, out)
    elif args.which == "minatar":
        from hypermeta.lab.bench import run_minatar_reference
        from hypermeta.tasks.families import get_family

        out = Path(args.out or "studies/reports/minatar/reference.md")
        games = args.games.split(",")
        for game in games:
            get_family(game)  # unknown names fail before any training
        report = run_minatar_reference(games, args.timesteps, args.seeds, args.workers, out)
    elif args.which == "scale":
        from hypermeta.lab.scale_bench import run_scale_benchmark

        out = Path(args.out or "studies/reports/engine/scale.md")
        report = run_scale_benchmark(args.plan or "studies/meta2/plan.yaml", args.repeats or 3, out)
    elif args.which == "kill":
        report = run_kill_stress(args.task, args.timesteps, args.trials, args.kills, out)
    else:
        report = run_workers_benchmark(args.task, args.timesteps, args.trials, out)
    print(report)
    return 0


def _bench_fidelity_plan(args: argparse.Namespace) -> int:
    """``bench fidelity --plan PLAN``: run (resume) the plan's jobs in ``--runners``, then render its report."""
    from hypermeta.lab.fidelity import FidelityPlan, render, run_plan

    plan = FidelityPlan.load(args.plan)
    runners = [] if args.render_only else args.runners.split(",")
    unknown = [r for r in runners if r not in plan.runners]
    if unknown:
        raise ValueError(f"--runners: {unknown} not in the plan's runners {plan.runners}")
    plan.jobs()  # an unknown configuration or task fails before any training
    run_plan(plan, runners, workers=args.workers, progress=args.progress)
    path = render(plan, Path(args.out or "studies/reports/engine/fidelity_full.md"))
    print(f"report written to {path}")
    return 0


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks that write reports under studies/reports/")
    p.add_argument("which", choices=["overhead", "workers", "kill", "guard", "engine", "fidelity", "minatar", "scale"])
    p.add_argument("--games", default="minatar-breakout,minatar-asterix,minatar-freeway,minatar-seaquest,"
                   "minatar-spaceinvaders", help="minatar benchmark: comma-separated MinAtar families")
    p.add_argument("--tasks", default="CartPole-v1,Acrobot-v1", help="engine benchmark: comma-separated tasks")
    p.add_argument("--ks", type=lambda v: [positive_int(k) for k in v.split(",")], default=[1, 16, 64, 256],
                   help="engine benchmark: comma-separated numbers of agents per lock-step batch")
    p.add_argument("--fidelity-tasks", default="cartpole:length=0.7@5000;acrobot:link_mass_2=1.5@5000;"
                   "frozenlake:success_rate=0.6@5000", help="fidelity benchmark: TASK@STEPS;TASK@STEPS;...")
    p.add_argument("--configs", type=positive_int, default=16, help="fidelity benchmark: Sobol configurations")
    p.add_argument("--plan", help="fidelity benchmark: a pre-registered plan (studies/fidelity2/plan.yaml) instead of "
                   "--fidelity-tasks/--configs/--seeds; report studies/reports/engine/fidelity_full.md")
    p.add_argument("--runners", default="sb3,batched", help="fidelity --plan: the runners to run now (comma-separated)")
    p.add_argument("--render-only", action="store_true", help="fidelity --plan: only render the report")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--workers", type=positive_int, default=1, help="fidelity benchmark: processes")
    p.add_argument("--task", default="CartPole-v1")
    p.add_argument("--timesteps", type=positive_int, default=20_000,
                   help="overhead: steps per run; workers: per trial; minatar: per run (use 100000)")
    p.add_argument("--repeats", type=positive_int,
                   help="overhead: interleaved pairs (default 7); engine and scale: repetitions of every cell for "
                   "medians and ranges (default 5 and 3)")
    p.add_argument("--out", help="default: studies/reports/<which>.md")
    p.add_argument("--trials", type=positive_int, default=8, help="workers / kill: trials per study")
    p.add_argument("--kills", type=positive_int, default=20, help="kill benchmark: SIGKILLs at random instants")
    p.add_argument("--seeds", type=positive_int, default=10, help="guard benchmark: training seeds per configuration")
    p.set_defaults(func=cmd_bench)



#: command name -> the function that adds its subparser, in the order ``hypermeta --help`` lists them
PARSERS = {"bench": _add_bench}
