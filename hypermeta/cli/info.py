"""Commands that describe: task families, the search space, configurations, task features, predictions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hypermeta.cli._common import _load_config, _add_fallback_arg, nonneg_int, positive_int


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


def _add_families(sub: Any) -> None:
    p = sub.add_parser("families", help="list task families and their context features")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_families)



def _add_space(sub: Any) -> None:
    p = sub.add_parser("space", help="print the search space (every field, range and default)")
    p.add_argument("--space", choices=["schedule", "full"], default="schedule")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_space)



def _add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="print a configuration as YAML, JSON or an rl-zoo dqn.yml entry")
    p.add_argument("--schedule", help="YAML/JSON file of DQNConfig fields (default: the base configuration)")
    p.add_argument("--format", choices=["yaml", "json", "zoo"], default="yaml")
    p.add_argument("--env", default="CartPole-v1", help="env id of the rl-zoo entry")
    p.add_argument("--timesteps", type=positive_int, default=100_000, help="n_timesteps of the rl-zoo entry")
    p.set_defaults(func=cmd_config)



def _add_features(sub: Any) -> None:
    p = sub.add_parser("features", help="probe the task features of an environment")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_features)



def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict the lr and epsilon schedules of a task with the meta-learner")
    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--weights", help=".safetensors file (default: the weights shipped with hypermeta)")
    p.add_argument("--json", action="store_true")
    _add_fallback_arg(p)
    p.set_defaults(func=cmd_predict)



#: command name -> the function that adds its subparser, in the order ``hypermeta --help`` lists them
PARSERS = {"families": _add_families, "space": _add_space, "config": _add_config, "features": _add_features, "predict": _add_predict}
