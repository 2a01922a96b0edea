"""``hypermeta train``: SB3 DQN with the callback, then an evaluation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hypermeta.cli._common import _load_config, _add_fallback_arg, nonneg_int, positive_int


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from hypermeta.engine.measurement import check_timesteps
    from hypermeta.engine.sb3 import evaluate, train
    from hypermeta.seeds import check_seed
    from hypermeta.tasks.features import check_spaces
    from hypermeta.tasks.families import make_env

    check_timesteps(args.timesteps)
    check_seed(args.seed)
    if args.controller is not None or args.init is not None:  # unknown names and unsafe files fail before training
        from hypermeta.controller import get_controller
        from hypermeta.qstart import get_start
        from hypermeta.tasks.families import family_name

        if args.controller is not None:
            get_controller(args.controller)
        if args.init is not None:
            get_start(args.init, family_name(args.task))
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
    if args.compare:
        _print_comparison(args, config)
    return 0


def _print_comparison(args: argparse.Namespace, config: Any) -> None:
    """``--compare N``: the configuration against SB3's default schedules, measured on N test seeds in the engine."""
    from hypermeta.search.baselines import compare_with_sb3_default

    print(f"measuring it against SB3's default schedules (lr 1e-4, epsilon 1 -> 0.05 over 10%) on the same DQN "
          f"settings, {args.compare} test seeds each, in the batched engine ...")
    c = compare_with_sb3_default(args.task, config, args.timesteps, args.compare)
    print(f"normalised AUC (0 = random policy, 1 = the task's reference return): these schedules {c['config']:.3f}, "
          f"SB3's default schedules {c['sb3_default']:.3f}; difference {c['diff']:+.3f} [{c['ci_low']:+.3f}, "
          f"{c['ci_high']:+.3f}] (paired, 95% bootstrap CI over the {args.compare} seeds)")


def _add_train(sub: Any) -> None:
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
    p.add_argument("--compare", type=positive_int, metavar="N",
                   help="then measure the schedules against SB3's default ones on N test seeds (batched engine)")
    p.add_argument("--init", help="a Q-network start loaded before the first step: a .safetensors from `hypermeta "
                   "meta-init`, or 'default' (the start shipped for the task's family)")
    p.set_defaults(func=cmd_train)



#: command name -> the function that adds its subparser, in the order ``hypermeta --help`` lists them
PARSERS = {"train": _add_train}

