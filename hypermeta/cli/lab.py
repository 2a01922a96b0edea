"""The laboratory: the pre-registered pipelines that produce hypermeta's evidence and its meta-learners."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hypermeta.cli._common import _load_config, nonneg_int, positive_int, finite_float


def cmd_collect(args: argparse.Namespace) -> int:
    from hypermeta.lab.collect import TaskDistribution, collect, export_dataset, summary

    dist = TaskDistribution.load(args.distribution)
    if args.runner:
        dist.runner = args.runner
    if args.list:
        for split, tasks in (("train", dist.train_tasks()), ("held-out context", dist.heldout_contexts),
                             ("held-out family", dist.heldout_family)):
            for task in tasks:
                print(f"{split:<17} {dist.budget(task):>7} steps  {task}")
        return 0
    if args.export_only:
        frame = export_dataset(dist)
    else:
        frame = collect(dist, workers=args.workers, progress=args.progress, trials=args.trials)
    print(f"dataset {dist.dataset}: {summary(frame)}")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from hypermeta.lab.matrix import MatrixPlan, collect_matrix, matrix_summary

    plan = MatrixPlan.load(args.plan)
    if args.list:
        for i, task in enumerate(plan.all_tasks()):
            split = "train" if i < len(plan.train_tasks()) else "held-out"
            print(f"{split:<9} {plan.budget(task):>7} steps  {task}")
        return 0
    if args.status:
        from hypermeta.lab.matrix import format_progress, matrix_progress
        from hypermeta.engine.pipeline import RunStore

        print(format_progress(matrix_progress(plan, RunStore(plan.runs_path).frame())))
        return 0
    if not args.export_only:
        runs = collect_matrix(plan, runner=args.runner, workers=args.workers, n_tasks=args.tasks,
                              progress=args.progress, split=args.split, max_agents=args.max_agents)
        print(f"matrix {plan.runs_path}: {matrix_summary(runs)}")
    from hypermeta.lab.matrix import export_matrix_dataset

    frame, path = export_matrix_dataset(plan)
    print(f"dataset {path}: {frame['task'].nunique() if len(frame) else 0} complete training tasks, {len(frame)} rows")
    return 0


def cmd_meta_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from hypermeta.meta.data import MetaTrainConfig, settings_from_frame, tasks_from_frame
    from hypermeta.meta.model import meta_train
    from hypermeta.space import DQNConfig

    cfg = MetaTrainConfig(method=args.method, seed=args.seed, ensemble=args.ensemble,
                          **({"meta_iterations": args.iterations} if args.iterations else {}))
    if not Path(args.data).is_file():
        raise ValueError(f"dataset {args.data!r} does not exist; build it with `hypermeta collect`")
    frame = pd.read_csv(args.data)
    # recorded in the weights (the callback compares a model's with them): --settings, else the dataset's own
    # (`hypermeta matrix --export-only` and `collect` write them), else hypermeta's base configuration
    settings = _load_config(args.settings) if args.settings else settings_from_frame(frame) or DQNConfig()
    tasks = tasks_from_frame(frame)
    start = time.perf_counter()
    model = meta_train(tasks, cfg, base=settings)
    path = model.save(args.out)
    print(f"{args.method}: trained on {len(tasks)} tasks ({sum(len(t.codes) for t in tasks)} trials) in "
          f"{time.perf_counter() - start:.1f} s; wrote {path} and {path.with_suffix('.json')}")
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from hypermeta.lab.fewshot import FewShotPlan, run_fewshot
    from hypermeta.reports.fewshot import render_fewshot_report

    plan = FewShotPlan.load(args.plan)
    if args.tasks and (args.status or args.render_only):
        raise ValueError("--tasks chooses the tasks to run; --status and --render-only read every task: drop one")
    if args.test_runs_only and (args.status or args.render_only):
        raise ValueError("--test-runs-only runs test runs; --status and --render-only run nothing: drop one")
    if args.status:
        from hypermeta.lab.fewshot import fewshot_progress, format_fewshot_progress

        print(format_fewshot_progress(plan, fewshot_progress(plan)))
        return 0
    if not args.render_only:
        run_fewshot(plan, workers=args.workers, progress=args.progress, tasks=args.tasks,
                    test_runs_only=args.test_runs_only)
    print(f"report written to {render_fewshot_report(plan, args.out_dir)}")
    return 0


def cmd_meta2(args: argparse.Namespace) -> int:
    from hypermeta.lab import meta2
    from hypermeta.lab.matrix import MatrixPlan

    plan = MatrixPlan.load(args.plan)
    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    unknown = sorted(set(methods or []) - set(plan.methods))
    if unknown:
        raise ValueError(f"--methods {','.join(unknown)}: not in the plan's methods {plan.methods}")
    if args.stage == "cv":
        sel = meta2.cross_validate(plan, methods, ensemble=args.cv_ensemble, workers=args.workers,
                                   progress=args.progress, allow_incomplete=args.allow_incomplete)
        for row in sel["table"]:
            print(f"  {row['method']:<13} CV score {row['cv_score']:.3f}  vs best-fixed {row['minus_best_fixed']:+.3f} "
                  f"({row['wins']} wins, {row['losses']} losses over {row['tasks']} tasks)")
        print(f"CV winner: {sel['winner']} (selection written to {meta2.Paths.of(plan).selection})")
    elif args.stage == "train":
        models = meta2.train_methods(plan, retrain=args.retrain)
        print(f"weights of {', '.join(models)} in {meta2.Paths.of(plan).weights}")
    elif args.stage == "ship":
        path = meta2.ship_winner(plan)
        print(f"the CV winner {meta2.load_selection(plan)['winner']!r} is now the default weights: {path}")
    elif args.stage == "report":
        from hypermeta.reports.meta2 import render_meta2_report, render_selection_report

        beside = Path(args.out).with_name("selection.md") if args.out else None  # beside the report
        print(f"model selection written to {render_selection_report(plan, beside)}")
        if not (meta2.Paths.of(plan).heldout / "runs_by_method.csv").is_file():
            print(f"no held-out runs yet: run `hypermeta meta2 heldout {plan.path}` for the report")
            return 0
        print(f"report written to {render_meta2_report(plan, args.out)}")
    elif args.stage == "heldout":
        out = meta2.run_heldout(plan, workers=args.workers, runner=args.runner, progress=args.progress,
                                tpe=not args.no_tpe)
        print(f"held-out runs in {out}")
    return 0


def cmd_meta_control(args: argparse.Namespace) -> int:
    from hypermeta.lab.control_training import meta_train

    if not Path(args.plan).is_file():
        raise ValueError(f"plan file {args.plan!r} does not exist")
    state = meta_train(args.plan, args.out, workers=args.workers, generations=args.generations, progress=args.progress)
    last = state.history[-1] if state.history else None
    print(f"{state.generation} generations, {state.cpu_seconds / 3600:.2f} CPU hours"
          + (f"; last mean fitness {last['mean_fitness']:.4f}" if last else ""))
    for check in state.validation:
        print(f"  validation after generation {check['generation']}: theta - zero {check['mean_difference']:+.4f} "
              f"(s.e. {check['se_difference']:.4f})")
    return 0


def cmd_meta_init(args: argparse.Namespace) -> int:
    from hypermeta.lab.qstart_training import MetaInitSettings, meta_init

    settings = MetaInitSettings(iterations=args.iterations, inner_steps=args.inner_steps,
                                tasks_per_iteration=args.tasks_per_iteration, step_size=args.step_size,
                                outer_lr=args.outer_lr, seed=args.seed)
    out = args.out or f"studies/v3/init/{args.family}-{args.method}"
    start = meta_init(args.family, args.method, args.plan, out, settings, progress=args.progress)
    print(f"{args.method} start of {args.family} ({start.obs_dim} inputs, hidden {list(start.hidden)}, "
          f"{start.n_actions} actions; {start.manifest['cpu_seconds']:.0f} s of CPU) -> {out}.safetensors; use it with "
          f"HyperMetaCallback(config, init={out + '.safetensors'!r}) or `hypermeta train --init`")
    return 0


def cmd_meta_eval(args: argparse.Namespace) -> int:
    from hypermeta.lab.v3 import STEPS, EvaluationError, V3Evaluation, run_step

    ev = V3Evaluation.load(args.plan)
    steps = [] if (args.render or args.ship) and not args.step else (args.step or list(STEPS))
    for step in steps:
        try:
            print(run_step(ev, step, workers=args.workers, progress=args.progress, max_agents=args.max_agents),
                  flush=True)
        except EvaluationError as exc:
            if args.step:  # a step asked for by name that cannot run is an error
                raise
            print(f"step {step}: not yet: {exc}", flush=True)  # every step in order: the others still run
    if args.ship:
        from hypermeta.reports.v3_ship import PROVENANCE, package_weights, ship_v3

        record = ship_v3(ev.plan_path)
        word = {True: "shipped", False: "not shipped"}
        print(f"controller: {word[record['controller']['shipped']]}; starts: "
              + ", ".join(f"{f} {word[e['shipped']]}" for f, e in record["starts"].items())
              + f" (decisions and numbers: {package_weights() / PROVENANCE})")
    from hypermeta.reports.v3 import render_v3_report

    print(f"report written to {render_v3_report(ev.plan_path, args.out)}")
    return 0


def cmd_meta_report(args: argparse.Namespace) -> int:
    from hypermeta.lab.collect import TaskDistribution
    from hypermeta.reports.meta import meta_report

    dist = TaskDistribution.load(args.distribution)
    if args.runner:
        dist.runner = args.runner
    path = meta_report(dist, workers=args.workers, progress=args.progress, retrain=args.retrain)
    print(f"report written to {path}")
    return 0


def _add_collect(sub: Any) -> None:
    from hypermeta.engine.defaults import RUNNERS

    p = sub.add_parser("collect", help="run the training studies of a task distribution and export the dataset")
    p.add_argument("distribution", help="task distribution YAML, e.g. studies/meta/tasks.yaml")
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine (per study)")
    p.add_argument("--trials", type=positive_int, help="finished trials per training task (default: the file's)")
    p.add_argument("--list", action="store_true", help="print the training and held-out tasks, then exit")
    p.add_argument("--export-only", action="store_true", help="only export the dataset of what exists")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_collect)



def _add_matrix(sub: Any) -> None:
    from hypermeta.engine.defaults import RUNNERS

    p = sub.add_parser("matrix", help="run (or resume) the performance matrix of a meta-learner v2 plan")
    p.add_argument("plan", help="plan YAML, e.g. studies/meta2/plan.yaml")
    p.add_argument("--runner", choices=list(RUNNERS), default="batched")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--tasks", type=positive_int,
                   help="only the first N tasks in collection order (calibration tasks, then one per family in turn)")
    p.add_argument("--list", action="store_true", help="print the training and held-out tasks, then exit")
    p.add_argument("--status", action="store_true",
                   help="print what is stored and the CPU time the rest needs (per split and family), then exit")
    p.add_argument("--split", choices=["train", "heldout"], default="train",
                   help="heldout: the held-out tasks' matrix (their oracle); default: the training tasks")
    p.add_argument("--export-only", action="store_true", help="only write the dataset of the complete training tasks")
    p.add_argument("--max-agents", type=positive_int, default=64,
                   help="batched runner: runs per lock-step batch (stored when the batch ends; results do not depend on it)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_matrix)



def _add_meta_train(sub: Any) -> None:
    from hypermeta.meta.method import METHODS

    p = sub.add_parser("meta-train", help="train the meta-learner on a collected dataset")
    p.add_argument("--method", choices=list(METHODS), required=True)
    p.add_argument("--data", default="studies/meta/dataset.csv", help="dataset CSV from `hypermeta collect`")
    p.add_argument("--out", required=True, help="weights path (writes PATH.safetensors and PATH.json)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--ensemble", type=positive_int, default=5, help="networks in the ensemble")
    p.add_argument("--iterations", type=positive_int, help="outer steps / epochs (default: the method's)")
    p.add_argument("--settings", help="YAML/JSON configuration holding the DQN settings (network, batch size, ...) "
                   "the dataset's runs used; recorded in the weights (default: the dataset's c_ columns, else "
                   "hypermeta's base configuration)")
    p.set_defaults(func=cmd_meta_train)



def _add_fewshot(sub: Any) -> None:
    p = sub.add_parser("fewshot", help="benchmark: `tune` with a few trials against cold TPE studies")
    p.add_argument("plan", help="few-shot plan YAML, e.g. studies/tune/plan.yaml")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--out-dir", default="studies/reports/tune")
    p.add_argument("--render-only", action="store_true", help="only render the report from the runs that exist")
    p.add_argument("--tasks", nargs="+", metavar="PATTERN",
                   help="run only the evaluation tasks matching these shell-style patterns (quoted, e.g. 'cartpole*'), "
                   "after the selection tasks, which always run first; the report reads every finished task")
    p.add_argument("--test-runs-only", action="store_true",
                   help="with --tasks: only the test runs of those evaluation tasks, whose studies must be finished "
                   "(e.g. on a machine with more cores; their studies' results do not depend on --workers then)")
    p.add_argument("--status", action="store_true",
                   help="print each task's finished trials, stored test runs and the CPU time the rest needs, then exit")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_fewshot)



def _add_meta2(sub: Any) -> None:
    from hypermeta.engine.defaults import RUNNERS

    p = sub.add_parser("meta2", help="meta-learner v2 after the matrix: cv (select), train, ship, heldout, report")
    p.add_argument("stage", choices=["cv", "train", "ship", "heldout", "report"])
    p.add_argument("plan", help="plan YAML, e.g. studies/meta2/plan.yaml")
    p.add_argument("--methods", help="comma-separated subset of the plan's methods (default: all)")
    p.add_argument("--cv-ensemble", type=positive_int, default=1, help="cv: ensemble members per fold")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--runner", choices=list(RUNNERS), default="batched")
    p.add_argument("--retrain", action="store_true", help="train: train again even where weights exist")
    p.add_argument("--no-tpe", action="store_true", help="heldout: leave out the Optuna TPE baselines")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="cv: run on the complete training tasks although others lack runs (recorded; not the plan's result)")
    p.add_argument("--out", help="report: path (default studies/reports/meta2/report.md)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_meta2)



def _add_meta_control(sub: Any) -> None:
    p = sub.add_parser("meta-control", help="meta-train the in-run controller (meta-learner v3) by evolution "
                       "strategies in the engine; resumable")
    p.add_argument("plan", help="v3 plan YAML, e.g. studies/v3/plan.yaml (its meta_training section)")
    p.add_argument("--out", help="folder of the state, runs and candidate weights (default: PLAN's folder/controller)")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--generations", type=positive_int, help="stop after this many generations (default: the plan's)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_meta_control)



def _add_meta_init(sub: Any) -> None:
    p = sub.add_parser("meta-init", help="learn a Q-network start for a task family (Reptile, first-order MAML, or "
                       "the transfer and multi-task baselines) in the engine; resumable")
    p.add_argument("family", help="a training family of the matrix plan (cartpole, acrobot, frozenlake, mountaincar)")
    p.add_argument("--method", choices=["reptile", "fomaml", "transfer", "multitask"], required=True)
    p.add_argument("--plan", default="studies/meta2/plan.yaml", help="matrix plan: training contexts, settings, budgets")
    p.add_argument("--out", help="artifact path without suffix (default studies/v3/init/FAMILY-METHOD)")
    p.add_argument("--iterations", type=positive_int, default=40, help="meta-iterations (reptile, fomaml)")
    p.add_argument("--inner-steps", type=positive_int, default=5000, help="steps of each inner DQN run")
    p.add_argument("--tasks-per-iteration", type=positive_int, default=16, help="contexts per meta-iteration")
    p.add_argument("--step-size", type=finite_float, default=0.5, help="reptile: outer step, annealed linearly to 0")
    p.add_argument("--outer-lr", type=finite_float, default=1e-3, help="fomaml: Adam's outer learning rate")
    p.add_argument("--seed", type=nonneg_int, default=0, help="draws each iteration's contexts")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_meta_init)



def _add_meta_eval(sub: Any) -> None:
    from hypermeta.lab.v3 import STEPS

    p = sub.add_parser("meta-eval", help="meta-learner v3's pre-registered evaluation (controller, starts, v2 fallback) "
                       "on the held-out contexts and family, step by step; resumable; then the report")
    p.add_argument("plan", help="v3 plan YAML, e.g. studies/v3/plan.yaml")
    p.add_argument("--step", action="append", choices=list(STEPS),
                   help="run only this step (repeatable; default: every step in order, each that cannot run yet said "
                   "in one line; a done step is never redone)")
    p.add_argument("--render", action="store_true", help="without --step: only write the report from what exists")
    p.add_argument("--ship", action="store_true", help="apply the plan's shipping rule to the finished evaluation: "
                   "copy the controller and each family's start that met it into the package, remove what did not, "
                   "record the decisions in hypermeta/weights/v3.provenance.json; then write the report")
    p.add_argument("--out", help="report path (default studies/reports/v3/report.md)")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--max-agents", type=positive_int, help="engine steps: runs per lock-step batch (stored when the "
                   "batch ends, so a kill loses at most one batch per worker; results do not depend on it; default: "
                   "the engine's, up to 256)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_meta_eval)



def _add_meta_report(sub: Any) -> None:
    from hypermeta.engine.defaults import RUNNERS

    p = sub.add_parser("meta-report", help="zero-shot predictions vs baselines and Optuna on the held-out tasks")
    p.add_argument("distribution", help="task distribution YAML, e.g. studies/meta/tasks.yaml")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--retrain", action="store_true", help="meta-train every method again even if weights exist")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_meta_report)



#: command name -> the function that adds its subparser, in the order ``hypermeta --help`` lists them
PARSERS = {"collect": _add_collect, "matrix": _add_matrix, "meta-train": _add_meta_train, "fewshot": _add_fewshot,
           "meta2": _add_meta2, "meta-control": _add_meta_control, "meta-init": _add_meta_init,
           "meta-eval": _add_meta_eval,
           "meta-report": _add_meta_report}
