"""The ``hypermeta`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence


def _load_config(path: str | None):
    from hypermeta.space import DQNConfig

    return DQNConfig() if path is None else DQNConfig.load(path)


def cmd_families(args: argparse.Namespace) -> int:
    from hypermeta.tasks.families import families

    fams = families()
    if args.json:
        print(json.dumps({n: {"env_id": f.env_id, "context": {k: vars(p) for k, p in f.context_space.items()}}
                          for n, f in fams.items()}, indent=2, default=str))
        return 0
    for name, fam in sorted(fams.items()):
        print(f"{name}  ({fam.env_id})  {fam.description}")
        for key, p in fam.context_space.items():
            print(f"    {key:<18} default {p.default:<8g} sampling [{p.low:g}, {p.high:g}]  {p.doc}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from hypermeta.space import PARAMS, get_space

    space = get_space(args.space)
    rows = [{"name": p.name, "range": p.range_text(), "default": p.default, "group": p.group, "doc": p.doc}
            for p in PARAMS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    tuned = {p.name for p in space.params}
    print(f"space {space.name!r}: {len(space.params)} tuned parameters, encoding dimension {space.dim}")
    for r in rows:
        mark = "tuned" if r["name"] in tuned else "fixed"
        print(f"  {r['name']:<24} {mark:<6} default {r['default']!s:<9} {r['range']:<40} {r['doc']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config = _load_config(args.schedule)
    if args.format == "json":
        print(json.dumps(config.to_dict(), indent=2))
    elif args.format == "yaml":
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    else:
        print(yaml.safe_dump(config.to_zoo(args.env, args.timesteps), sort_keys=False), end="")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from hypermeta.tasks.features import FEATURE_DOCS, probe_features

    features = probe_features(args.task, seed=args.seed)
    if args.json:
        print(json.dumps({"task": features.task, "seed": features.seed, "features": features.as_dict()}, indent=2))
        return 0
    print(f"{features.task}: {features.probe_steps} random-policy steps in {features.probe_seconds:.2f} s")
    for name, value in features.as_dict().items():
        print(f"  {name:<26} {value:>10.4f}  {FEATURE_DOCS[name]}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from hypermeta.experiments.measurement import check_timesteps
    from hypermeta.experiments.sb3 import evaluate, train
    from hypermeta.seeds import check_seed
    from hypermeta.tasks.features import check_spaces
    from hypermeta.tasks.families import make_env

    check_timesteps(args.timesteps)
    check_seed(args.seed)
    if args.controller is not None or args.init is not None:  # unknown names and unsafe files fail before training
        from hypermeta.controller import get_controller
        from hypermeta.qstart import get_start

        if args.controller is not None:
            get_controller(args.controller)
        if args.init is not None:
            get_start(args.init)
    if sum(map(bool, (args.schedule, args.base, args.weights))) > 1:
        raise ValueError("give one of --schedule FILE (a fixed configuration), --base (the base configuration) "
                         "or --weights FILE (a meta-learner); without any, the shipped meta-learner predicts")
    if args.no_fallback and (args.schedule or args.base):
        raise ValueError("--no-fallback applies to a predicted configuration; drop it, or drop --schedule/--base")
    config = _load_config(args.schedule) if args.schedule or args.base else None
    env = make_env(args.task)  # unknown ids and unsupported spaces fail here, before anything starts
    try:
        check_spaces(env)
    finally:
        env.close()
    if config is None:  # what HyperMetaCallback() does at training start, done here to show it first
        from hypermeta.meta.predict import predict_config

        result = predict_config(args.task, args.weights, warn=False, fallback=not args.no_fallback)
        pred = result.prediction
        print(f"predicted schedules for {args.task} ({result.model.method} meta-learner; features probed in "
              f"{result.features.probe_seconds:.2f} s; nearest training task {pred.nearest_task!r})")
        if pred.out_of_distribution:
            print("WARNING out of distribution: " + "; ".join(pred.reasons))
        config = pred.config
    print(f"training DQN on {args.task} for {args.timesteps} steps (seed {args.seed})")
    print(f"  lr: {config.lr_schedule()}\n  epsilon: {config.exploration_schedule()}")
    from hypermeta.guard import DivergenceError

    try:
        model = train(args.task, config, args.timesteps, args.seed, n_envs=args.n_envs, progress_bar=args.progress,
                      tensorboard_log=args.tensorboard, verbose=args.verbose, guard=not args.no_guard,
                      controller=args.controller, init=args.init)
    except DivergenceError as exc:
        print(f"hypermeta train: training stopped: {exc}", file=sys.stderr)
        return 1
    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    returns = evaluate(model, args.task, args.eval_episodes, args.seed)
    print(f"mean return over {len(returns)} evaluation episodes: {np.mean(returns):.2f} +/- {np.std(returns):.2f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hypermeta.experiments.bench import (run_guard_benchmark, run_kill_stress, run_overhead_benchmark,
                                             run_workers_benchmark)

    out = Path(args.out or f"studies/reports/{args.which}.md")
    if args.which == "overhead":
        report = run_overhead_benchmark(args.task, args.timesteps, args.repeats, out)
    elif args.which == "engine":
        from hypermeta.experiments.engine_bench import run_throughput_benchmark

        out = Path(args.out or "studies/reports/engine/throughput.md")
        report = run_throughput_benchmark(args.tasks.split(","), args.timesteps, args.ks, out)
    elif args.which == "fidelity" and args.plan:
        return _bench_fidelity_plan(args)
    elif args.which == "fidelity":
        from hypermeta.experiments.engine_bench import run_fidelity_benchmark

        out = Path(args.out or "studies/reports/engine/fidelity.md")
        tasks = dict(item.rsplit("@", 1) for item in args.fidelity_tasks.split(";"))
        report = run_fidelity_benchmark({t: int(n) for t, n in tasks.items()}, args.configs, args.seeds,
                                        args.workers, out)
    elif args.which == "guard":
        report = run_guard_benchmark(args.task, args.timesteps, args.seeds, out)
    elif args.which == "minatar":
        from hypermeta.experiments.bench import run_minatar_reference
        from hypermeta.tasks.families import get_family

        out = Path(args.out or "studies/reports/minatar/reference.md")
        games = args.games.split(",")
        for game in games:
            get_family(game)  # unknown names fail before any training
        report = run_minatar_reference(games, args.timesteps, args.seeds, args.workers, out)
    elif args.which == "kill":
        report = run_kill_stress(args.task, args.timesteps, args.trials, args.kills, out)
    else:
        report = run_workers_benchmark(args.task, args.timesteps, args.trials, out)
    print(report)
    return 0


def _bench_fidelity_plan(args: argparse.Namespace) -> int:
    """``bench fidelity --plan PLAN``: run (resume) the plan's jobs in ``--runners``, then render its report."""
    from hypermeta.experiments.fidelity import FidelityPlan, render, run_plan

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


def _spec_from_args(args: argparse.Namespace):
    from hypermeta.experiments.study import StudySpec

    return StudySpec(args.task, args.timesteps, args.space, args.seeds_per_trial, args.n_evals,
                     args.eval_episodes, args.reference)


def _batch(args: argparse.Namespace) -> int:
    from hypermeta.experiments.defaults import BATCHED_STUDY_BATCH

    return args.batch or (BATCHED_STUDY_BATCH if args.runner == "batched" else 1)


def cmd_study(args: argparse.Namespace) -> int:
    from hypermeta.experiments.study import best_config_of, load_enqueue_file, run_study

    spec = _spec_from_args(args)
    enqueue = load_enqueue_file(args.enqueue) if args.enqueue else []
    study = run_study(spec, args.trials, study_name=args.study_name, storage=args.storage, sampler=args.sampler,
                      pruner=args.pruner, workers=args.workers, seed=args.sampler_seed, enqueue=enqueue,
                      progress=args.progress, heartbeat_interval=args.heartbeat_interval,
                      grace_period=args.grace_period, runner=args.runner, batch_size=_batch(args))
    finished = [t for t in study.trials if t.state.is_finished()]
    print(f"study {study.study_name!r} in {args.storage}: {len(finished)} finished trials")
    try:
        best = study.best_trial
    except ValueError:
        print("no complete trial yet")
        return 0
    print(f"best trial #{best.number}: objective {best.value:.4f} (tuning seeds {best.user_attrs.get('seeds')}; "
          "re-evaluate it on test seeds with `hypermeta evaluate --study`)")
    print(json.dumps(best_config_of(study).to_dict(), indent=2))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import yaml

    from hypermeta.experiments.tune import tune, write_best
    from hypermeta.files import check_writable_file

    if args.trials is None and args.time_budget is None:
        raise ValueError("give --trials N, --time-budget MINUTES, or both")
    check_writable_file(args.out, "--out", "best.yaml")  # before hours of training, not after
    from hypermeta.meta.predict import predict_config

    prediction = predict_config(args.task, args.weights, warn=False)
    if prediction.prediction.out_of_distribution:  # said before any training: the user may want more trials
        print("WARNING out of distribution: " + "; ".join(prediction.prediction.reasons) + ". Round 0's candidates "
              "come from training tasks unlike this one, so the warm start helps less: on meta-learner v2's "
              "held-out family, which is out of distribution, even TPE's random start (its best of 10 trials) beat "
              "the zero-shot choice "
              "(studies/reports/meta2/report.md). Give this study more trials.")
    wall, cpu = time.perf_counter(), time.process_time()
    result = tune(args.task, args.trials, args.timesteps, seeds_per_trial=args.seeds_per_trial,
                  runner=args.runner, storage=args.storage, study_name=args.study_name, predictor=args.weights,
                  time_budget_minutes=args.time_budget, progress=_tune_progress(args), sampler=args.sampler,
                  meta_data=args.meta_data, adapt_predictor=args.adapt_weights, pruner=args.pruner,
                  heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, prediction=prediction,
                  n_evals=args.n_evals, eval_episodes=args.eval_episodes, reference=args.reference)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"round 0 ({len(result.candidates)} warm candidates): " + ", ".join(label for label, _ in result.candidates))
    print(f"{result.trials} finished trials, {result.env_steps:,} environment steps, {result.train_seconds:.0f} s "
          f"of training (the finished trials' own time; study {result.study.study_name!r} in {args.storage}); "
          f"this command: {wall:.0f} s elapsed, {cpu:.0f} s of CPU")
    path = write_best(result.best, args.out)
    print(f"best configuration -> {path} (apply it with HyperMetaCallback({str(path)!r}); its tuning-seed score is "
          "optimistic: re-evaluate it with `hypermeta evaluate --config` on test seeds)")
    from hypermeta.networks import zoo_policy_kwargs
    from hypermeta.tasks.families import make_env

    env = make_env(args.task)
    space = env.observation_space
    env.close()
    print("SB3 kwargs (the YAML above is the source; the callback applies every schedule shape exactly):\n"
          + "\n".join("    " + line for line in sb3_snippet(str(path), result.best, space)))
    zoo = zoo_policy_kwargs(space, result.best)
    if zoo:
        print("rl-zoo (image observations: put this entry in a Python hyperparameter file, `-conf`, that imports "
              "MinAtarCNN from hypermeta.networks):")
    print(yaml.safe_dump(result.best.to_zoo(args.env or args.task, args.timesteps, zoo), sort_keys=False), end="")
    return 0


def _tune_progress(args: argparse.Namespace) -> bool | str:
    """tune's report of its trials: none with --quiet, a bar on a terminal (or with --progress), else a line per
    finished trial."""
    if args.quiet:
        return False
    return True if args.progress or sys.stdout.isatty() else "lines"


def sb3_snippet(path: str, config: Any, observation_space: Any) -> list[str]:
    """Python lines that build SB3's DQN with ``config`` (saved at ``path``), for an ``env`` the user has: the
    keyword arguments spelled out (classes imported, schedules as :class:`~hypermeta.ShapedSchedule`), then
    ``learn`` with the callback that applies every schedule shape exactly."""
    kwargs = config.sb3_kwargs(observation_space)
    imports = {"from stable_baselines3 import DQN", "from hypermeta import HyperMetaCallback"}

    def code(value: Any) -> str:
        if isinstance(value, type):
            imports.add(f"from {value.__module__} import {value.__qualname__}")
            return value.__qualname__
        if isinstance(value, dict):
            return "dict(" + ", ".join(f"{k}={code(v)}" for k, v in value.items()) + ")"
        if type(value).__name__ == "ShapedSchedule":
            imports.add("from hypermeta import ShapedSchedule")
        return repr(value)

    body = [f"    {k}={code(v)}," for k, v in kwargs.items()]  # before the imports: code() adds to them
    return [*sorted(imports), 'model = DQN("MlpPolicy", env,', *body, ")",
            f"model.learn(total_timesteps=..., callback=HyperMetaCallback({path!r}))"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hypermeta.experiments.baselines import named_config
    from hypermeta.experiments.measurement import Measurement
    from hypermeta.experiments.pipeline import evaluate_on_test_seeds

    method, config = named_config(args.task, config_file=args.config, baseline=args.baseline, study=args.study,
                                  storage=args.storage)
    runs, agg = evaluate_on_test_seeds(args.task, method, config, Measurement(args.timesteps, args.n_evals,
                                       args.eval_episodes), args.seeds, args.out, workers=args.workers,
                                       runner=args.runner, reference=args.reference, progress=args.progress)
    print(runs[["seed", "auc", "final_return", "final_score", "wall_time"]].to_string(index=False))
    print(f"{method} on {args.task}: IQM normalised AUC {agg['iqm']:.3f} [{agg['ci_low']:.3f}, {agg['ci_high']:.3f}] "
          f"(95% bootstrap CI, {len(runs)} test seeds); per-seed results in {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from hypermeta.experiments.comparison import ComparisonSpec
    from hypermeta.reports.comparison import compare

    spec = ComparisonSpec.load(args.spec)
    if args.runner:
        spec.runner = args.runner
    path = compare(spec, workers=args.workers, progress=args.progress)
    print(f"report written to {path}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hypermeta.experiments.collect import TaskDistribution, collect, export_dataset, summary

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
    from hypermeta.experiments.matrix import MatrixPlan, collect_matrix, matrix_summary

    plan = MatrixPlan.load(args.plan)
    if args.list:
        for i, task in enumerate(plan.all_tasks()):
            split = "train" if i < len(plan.train_tasks()) else "held-out"
            print(f"{split:<9} {plan.budget(task):>7} steps  {task}")
        return 0
    if args.status:
        from hypermeta.experiments.matrix import format_progress, matrix_progress
        from hypermeta.experiments.pipeline import RunStore

        print(format_progress(matrix_progress(plan, RunStore(plan.runs_path).frame())))
        return 0
    if not args.export_only:
        runs = collect_matrix(plan, runner=args.runner, workers=args.workers, n_tasks=args.tasks,
                              progress=args.progress, split=args.split, max_agents=args.max_agents)
        print(f"matrix {plan.runs_path}: {matrix_summary(runs)}")
    from hypermeta.experiments.matrix import export_matrix_dataset

    frame, path = export_matrix_dataset(plan)
    print(f"dataset {path}: {frame['task'].nunique() if len(frame) else 0} complete training tasks, {len(frame)} rows")
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from hypermeta.experiments.fewshot import FewShotPlan, run_fewshot
    from hypermeta.reports.fewshot import render_fewshot_report

    plan = FewShotPlan.load(args.plan)
    if args.tasks and (args.status or args.render_only):
        raise ValueError("--tasks chooses the tasks to run; --status and --render-only read every task: drop one")
    if args.test_runs_only and (args.status or args.render_only):
        raise ValueError("--test-runs-only runs test runs; --status and --render-only run nothing: drop one")
    if args.status:
        from hypermeta.experiments.fewshot import fewshot_progress, format_fewshot_progress

        print(format_fewshot_progress(plan, fewshot_progress(plan)))
        return 0
    if not args.render_only:
        run_fewshot(plan, workers=args.workers, progress=args.progress, tasks=args.tasks,
                    test_runs_only=args.test_runs_only)
    print(f"report written to {render_fewshot_report(plan, args.out_dir)}")
    return 0


def cmd_meta2(args: argparse.Namespace) -> int:
    from hypermeta.experiments import meta2
    from hypermeta.experiments.matrix import MatrixPlan

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


def cmd_meta_control(args: argparse.Namespace) -> int:
    from hypermeta.experiments.control_training import meta_train

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
    from hypermeta.experiments.qstart_training import MetaInitSettings, meta_init

    settings = MetaInitSettings(iterations=args.iterations, inner_steps=args.inner_steps,
                                tasks_per_iteration=args.tasks_per_iteration, step_size=args.step_size,
                                outer_lr=args.outer_lr, seed=args.seed)
    out = args.out or f"studies/v3/init/{args.family}-{args.method}"
    start = meta_init(args.family, args.method, args.plan, out, settings, progress=args.progress)
    print(f"{args.method} start of {args.family} ({start.obs_dim} inputs, hidden {list(start.hidden)}, "
          f"{start.n_actions} actions; {start.manifest['cpu_seconds']:.0f} s of CPU) -> {out}.safetensors; use it with "
          f"HyperMetaCallback(config, init={out + '.safetensors'!r}) or `hypermeta train --init`")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hypermeta.meta.predict import predict_config
    from hypermeta.space import get_space

    result = predict_config(args.task, args.weights, warn=False, fallback=not args.no_fallback)  # verdict below
    model, pred = result.model, result.prediction
    learned = model.trained_settings
    if args.json:
        print(json.dumps({"task": args.task, "method": model.method, **pred.to_dict(),
                          "trained_settings": None if learned is None else learned.to_dict()}, indent=2))
        return 0
    print(f"{args.task}: predicted by {model.method} ({len(model.members) or 'no'} networks; nearest training task "
          f"{pred.nearest_task!r}, distance {pred.nearest_distance:.2f})")
    if pred.out_of_distribution:
        print("WARNING out of distribution: " + "; ".join(pred.reasons))
    print(f"  lr: {pred.config.lr_schedule()}\n  epsilon: {pred.config.exploration_schedule()}")
    schedule = {p.name for p in get_space("schedule").params}
    print(json.dumps({k: v for k, v in pred.config.to_dict().items() if k in schedule}, indent=2))
    if learned is None:
        print("these weights do not record the DQN settings of their training data")
    else:  # the best schedules depend on the rest: say what they were learned with
        print("learned for these DQN settings (the training data's; `--json` gives the whole configuration, whose "
              "sb3_kwargs(observation_space) build such a model): "
              + ", ".join(f"{k} {v}" for k, v in learned.to_dict().items() if k not in schedule))
    return 0


def cmd_meta_report(args: argparse.Namespace) -> int:
    from hypermeta.experiments.collect import TaskDistribution
    from hypermeta.reports.meta import meta_report

    dist = TaskDistribution.load(args.distribution)
    if args.runner:
        dist.runner = args.runner
    path = meta_report(dist, workers=args.workers, progress=args.progress, retrain=args.retrain)
    print(f"report written to {path}")
    return 0


def _add_fallback_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fallback", action="store_true",
                   help="out of distribution, keep the meta-learner's own prediction instead of falling back to "
                        "best-fixed's configuration (the default behaviour); it is still flagged")


def _add_heartbeat_args(p: argparse.ArgumentParser) -> None:
    from hypermeta.experiments.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL

    p.add_argument("--heartbeat-interval", type=positive_int, default=HEARTBEAT_INTERVAL,
                   help="seconds between a running trial's heartbeats in the storage")
    p.add_argument("--grace-period", type=positive_int, default=GRACE_PERIOD,
                   help="seconds without heartbeat after which a trial counts as dead (a killed run) and is retried once")


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    """How a run is scored: its evaluations and the return that normalises to 1."""
    from hypermeta.experiments.defaults import EVAL_EPISODES, N_EVALS

    p.add_argument("--n-evals", type=positive_int, default=N_EVALS, help="evenly spaced evaluations per run")
    p.add_argument("--eval-episodes", type=positive_int, default=EVAL_EPISODES, help="greedy episodes per evaluation")
    p.add_argument("--reference", type=finite_float, help="return that normalises to 1 (default: the task's "
                   "reference return, e.g. reward_threshold; needed for tasks without one)")


def _add_measurement_args(p: argparse.ArgumentParser) -> None:
    from hypermeta.experiments.defaults import DEFAULT_RUNNER, RUNNERS

    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--timesteps", type=positive_int, required=True, help="training steps per run")
    _add_scoring_args(p)
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine")
    p.add_argument("--runner", choices=list(RUNNERS), default=DEFAULT_RUNNER,
                   help="sb3: one SB3 DQN per run; batched: the lock-step engine (see README)")
    p.add_argument("--progress", action="store_true")


def nonneg_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``hypermeta CMD: error: ...``, exit 2) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hypermeta", description=__doc__.strip() + " See README.md.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("families", help="list task families and their context features")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("space", help="print the search space (every field, range and default)")
    p.add_argument("--space", choices=["schedule", "full"], default="schedule")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("config", help="print a configuration as YAML, JSON or an rl-zoo dqn.yml entry")
    p.add_argument("--schedule", help="YAML/JSON file of DQNConfig fields (default: the base configuration)")
    p.add_argument("--format", choices=["yaml", "json", "zoo"], default="yaml")
    p.add_argument("--env", default="CartPole-v1", help="env id of the rl-zoo entry")
    p.add_argument("--timesteps", type=positive_int, default=100_000, help="n_timesteps of the rl-zoo entry")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("features", help="probe the task features of an environment")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train SB3 DQN with the hypermeta callback, then evaluate it")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--timesteps", type=positive_int, required=True)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--schedule", help="YAML/JSON file of DQNConfig fields (default: predicted by the meta-learner)")
    p.add_argument("--base", action="store_true", help="use the base configuration instead of a prediction")
    p.add_argument("--weights", help="meta-learner .safetensors (default: the weights shipped with hypermeta)")
    _add_fallback_arg(p)
    p.add_argument("--n-envs", type=positive_int, default=1)
    p.add_argument("--eval-episodes", type=positive_int, default=10)
    p.add_argument("--progress", action="store_true", help="show SB3's progress bar")
    p.add_argument("--save", help="save the trained model (DQN.save) to this path")
    p.add_argument("--tensorboard", help="TensorBoard log directory")
    p.add_argument("--verbose", type=nonneg_int, default=0)
    p.add_argument("--no-guard", action="store_true",
                   help="train without the divergence guard (on by default: rolls back and cuts the lr on divergence)")
    p.add_argument("--controller", help="steer lr and epsilon during training: 'rule' (hand-written), 'default' (the "
                   "shipped meta-learned controller) or a controller .safetensors (meta-learner v3)")
    p.add_argument("--init", help="a Q-network start (.safetensors from `hypermeta meta-init`) loaded before the first step")
    p.set_defaults(func=cmd_train)

    from hypermeta.experiments.defaults import DEFAULT_RUNNER, DEFAULT_STORAGE, PRUNERS, RUNNERS, SAMPLERS, TEST_SEEDS

    p = sub.add_parser("study", help="run or resume an Optuna study over the search space")
    _add_measurement_args(p)
    p.add_argument("--space", choices=["schedule", "full"], default="schedule")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    p.add_argument("--sampler-seed", type=nonneg_int, default=0, help="worker i seeds its sampler with this + i")
    p.add_argument("--pruner", choices=PRUNERS, default="median")
    p.add_argument("--trials", type=positive_int, required=True, help="finished (complete or pruned) trials to reach")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="trials asked and trained together (default: 16 with --runner batched, else 1)")
    p.add_argument("--seeds-per-trial", type=positive_int, default=1)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL (sqlite:///..., postgresql+psycopg2://...)")
    p.add_argument("--study-name", help="default: task|space|sampler|T<timesteps>|m<seeds>")
    p.add_argument("--enqueue", help="YAML/JSON config (or list of configs) to try first")
    _add_heartbeat_args(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("tune", help="tune a new task quickly: a study warm-started by the meta-learner")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--timesteps", type=positive_int, required=True, help="training steps per run")
    p.add_argument("--trials", type=positive_int, help="finished trials to reach")
    p.add_argument("--time-budget", type=finite_float, help="minutes; no new trial starts after it")
    p.add_argument("--seeds-per-trial", type=positive_int, default=1)
    _add_scoring_args(p)
    p.add_argument("--runner", choices=list(RUNNERS), default=DEFAULT_RUNNER)
    p.add_argument("--pruner", choices=PRUNERS,
                   help="default: the study's own when resuming it, else none (the few-shot benchmark measured "
                   "tune without pruning)")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--study-name", help="default: tune|TASK|T<timesteps>|m<seeds>, plus |SAMPLER for adapt and "
                   "metatpe")
    p.add_argument("--weights", help="meta-learner .safetensors for round 0 (default: the shipped weights)")
    p.add_argument("--sampler", choices=["tpe", "adapt", "metatpe"], default="tpe",
                   help="after round 0: Optuna TPE, the meta-learner's few-shot adapt step, or meta-learned TPE")
    p.add_argument("--adapt-weights", help="adapt: a network meta-learner whose few-shot step proposes the trials "
                   "after round 0 (default: --weights if that method has networks, else the shipped network "
                   "method's weights)")
    p.add_argument("--meta-data", help="metatpe: dataset CSV of the training tasks' trials "
                   "(`hypermeta matrix PLAN --export-only`)")
    p.add_argument("--out", default="best.yaml", help="where to write the best configuration (YAML)")
    p.add_argument("--env", help="env id of the printed rl-zoo entry (default: the task)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="a progress bar even when not on a terminal (on a terminal it is the default)")
    shown.add_argument("--quiet", action="store_true",
                       help="print no progress (default: a bar on a terminal, else one line per finished trial)")
    _add_heartbeat_args(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="re-train one configuration on fresh test seeds")
    _add_measurement_args(p)
    p.add_argument("--config", help="YAML/JSON configuration file")
    p.add_argument("--baseline", help="sb3-default, rl-zoo or base")
    p.add_argument("--study", help="name of a study whose best configuration to evaluate")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--seeds", type=positive_int, default=TEST_SEEDS, help="number of test seeds")
    p.add_argument("--out", default="studies/results/evaluations.csv", help="per-seed results CSV (appended)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="run a comparison file (studies, baselines, test runs) and write its report")
    p.add_argument("spec", help="comparison YAML, e.g. studies/baselines.yaml")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("collect", help="run the training studies of a task distribution and export the dataset")
    p.add_argument("distribution", help="task distribution YAML, e.g. studies/meta/tasks.yaml")
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine (per study)")
    p.add_argument("--trials", type=positive_int, help="finished trials per training task (default: the file's)")
    p.add_argument("--list", action="store_true", help="print the training and held-out tasks, then exit")
    p.add_argument("--export-only", action="store_true", help="only export the dataset of what exists")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_collect)

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

    p = sub.add_parser("meta-control", help="meta-train the in-run controller (meta-learner v3) by evolution "
                       "strategies in the engine; resumable")
    p.add_argument("plan", help="v3 plan YAML, e.g. studies/v3/plan.yaml (its meta_training section)")
    p.add_argument("--out", help="folder of the state, runs and candidate weights (default: PLAN's folder/controller)")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--generations", type=positive_int, help="stop after this many generations (default: the plan's)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_meta_control)

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

    p = sub.add_parser("predict", help="predict the lr and epsilon schedules of a task with the meta-learner")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--weights", help=".safetensors file (default: the weights shipped with hypermeta)")
    p.add_argument("--json", action="store_true")
    _add_fallback_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("meta-report", help="zero-shot predictions vs baselines and Optuna on the held-out tasks")
    p.add_argument("distribution", help="task distribution YAML, e.g. studies/meta/tasks.yaml")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--retrain", action="store_true", help="meta-train every method again even if weights exist")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_meta_report)

    p = sub.add_parser("bench", help="benchmarks that write reports under studies/reports/")
    p.add_argument("which", choices=["overhead", "workers", "kill", "guard", "engine", "fidelity", "minatar"])
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
    p.add_argument("--repeats", type=positive_int, default=7, help="overhead benchmark: interleaved pairs")
    p.add_argument("--out", help="default: studies/reports/<which>.md")
    p.add_argument("--trials", type=positive_int, default=8, help="workers / kill: trials per study")
    p.add_argument("--kills", type=positive_int, default=20, help="kill benchmark: SIGKILLs at random instants")
    p.add_argument("--seeds", type=positive_int, default=10, help="guard benchmark: training seeds per configuration")
    p.set_defaults(func=cmd_bench)

    for name in ("features", "train", "study", "tune", "evaluate", "compare", "predict"):
        sub.choices[name].add_argument(
            "--max-episode-steps", type=positive_int,
            help="episode cap of environments without a time limit (default 1000, "
            "hypermeta.tasks.families.DEFAULT_MAX_EPISODE_STEPS; episodes cut by it end as truncated); environments "
            "with a time limit keep their own")
    return parser


@contextlib.contextmanager
def _one_line_warnings():
    """hypermeta's own warnings (e.g. the episode cap) as one line, ``WARNING ...`` on stderr, like the OOD one."""
    import warnings

    from hypermeta.tasks.families import EpisodeCapWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EpisodeCapWarning):
            print(f"WARNING {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: worker processes are stopped, storages stay consistent


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with _one_line_warnings():
            if getattr(args, "max_episode_steps", None) is not None:
                from hypermeta.tasks.families import set_max_episode_steps

                set_max_episode_steps(args.max_episode_steps)  # worker processes inherit it
            return args.func(args)
    except ValueError as exc:
        print(f"hypermeta {args.command}: error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line
        return 2
    except OSError as exc:  # an unreadable input or unwritable output path
        print(f"hypermeta {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
