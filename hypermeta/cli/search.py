"""The search a user runs: Optuna studies, ``tune``, test-seed evaluations and comparison files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from hypermeta.cli._common import _add_heartbeat_args, _add_scoring_args, _add_measurement_args, nonneg_int, positive_int, finite_float


def _spec_from_args(args: argparse.Namespace):
    from hypermeta.search.study import StudySpec

    return StudySpec(args.task, args.timesteps, args.space, args.seeds_per_trial, args.n_evals,
                     args.eval_episodes, args.reference)


def _batch(args: argparse.Namespace) -> int:
    from hypermeta.engine.defaults import BATCHED_STUDY_BATCH

    return args.batch or (BATCHED_STUDY_BATCH if args.runner == "batched" else 1)


def cmd_study(args: argparse.Namespace) -> int:
    from hypermeta.search.study import best_config_of, load_enqueue_file, run_study

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

    from hypermeta.search.tune import tune, write_best
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
                  n_evals=args.n_evals, eval_episodes=args.eval_episodes, reference=args.reference,
                  controller=args.controller, init=args.init)
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
          + "\n".join("    " + line for line in sb3_snippet(str(path), result.best, space, args.controller,
                                                           args.init)))
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


def sb3_snippet(path: str, config: Any, observation_space: Any, controller: str | None = None,
                init: str | None = None) -> list[str]:
    """Python lines that build SB3's DQN with ``config`` (saved at ``path``), for an ``env`` the user has: the
    keyword arguments spelled out (classes imported, schedules as :class:`~hypermeta.ShapedSchedule`), then
    ``learn`` with the callback that applies every schedule shape exactly (and the controller and Q-network start
    the study's trials used, when they did)."""
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
            f"model.learn(total_timesteps=..., callback=HyperMetaCallback({path!r}"
            + (f", controller={controller!r}" if controller else "") + (f", init={init!r}" if init else "") + "))"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hypermeta.search.baselines import named_config
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.pipeline import evaluate_on_test_seeds

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
    from hypermeta.search.comparison import ComparisonSpec
    from hypermeta.reports.comparison import compare

    spec = ComparisonSpec.load(args.spec)
    if args.runner:
        spec.runner = args.runner
    path = compare(spec, workers=args.workers, progress=args.progress)
    print(f"report written to {path}")
    return 0


def _add_study(sub: Any) -> None:
    from hypermeta.engine.defaults import DEFAULT_STORAGE, PRUNERS, SAMPLERS

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



def _add_tune(sub: Any) -> None:
    from hypermeta.engine.defaults import DEFAULT_RUNNER, DEFAULT_STORAGE, PRUNERS, RUNNERS

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
    p.add_argument("--controller", help="steer every trial's lr and epsilon with this controller ('rule', 'default' "
                   "or a .safetensors from `hypermeta meta-control`): the study tunes the schedules it steers")
    p.add_argument("--init", help="start every trial's Q-network from this start (.safetensors from `hypermeta "
                   "meta-init`)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="a progress bar even when not on a terminal (on a terminal it is the default)")
    shown.add_argument("--quiet", action="store_true",
                       help="print no progress (default: a bar on a terminal, else one line per finished trial)")
    _add_heartbeat_args(p)
    p.set_defaults(func=cmd_tune)



def _add_evaluate(sub: Any) -> None:
    from hypermeta.engine.defaults import DEFAULT_STORAGE, TEST_SEEDS

    p = sub.add_parser("evaluate", help="re-train one configuration on fresh test seeds")
    _add_measurement_args(p)
    p.add_argument("--config", help="YAML/JSON configuration file")
    p.add_argument("--baseline", help="sb3-default, rl-zoo or base")
    p.add_argument("--study", help="name of a study whose best configuration to evaluate")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--seeds", type=positive_int, default=TEST_SEEDS, help="number of test seeds")
    p.add_argument("--out", default="studies/results/evaluations.csv", help="per-seed results CSV (appended)")
    p.set_defaults(func=cmd_evaluate)



def _add_compare(sub: Any) -> None:
    from hypermeta.engine.defaults import RUNNERS

    p = sub.add_parser("compare", help="run a comparison file (studies, baselines, test runs) and write its report")
    p.add_argument("spec", help="comparison YAML, e.g. studies/baselines.yaml")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--runner", choices=list(RUNNERS), help="override the file's runner (sb3 or batched)")
    p.set_defaults(func=cmd_compare)



#: command name -> the function that adds its subparser, in the order ``hypermeta --help`` lists them
PARSERS = {"study": _add_study, "tune": _add_tune, "evaluate": _add_evaluate, "compare": _add_compare}
