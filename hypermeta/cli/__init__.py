"""The ``hypermeta`` command line: one module per command group, each adding its own subparsers.

``info`` (families, space, config, features, predict), ``train``, ``search`` (study, tune, evaluate, compare),
``lab`` (the pre-registered pipelines: collect, matrix, meta-train, fewshot, meta2, meta-control, meta-init,
meta-eval, meta-report) and ``bench``. Every command imports what it needs inside itself, so ``hypermeta --help``
stays light.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from hypermeta.cli import bench, info, lab, search, train
from hypermeta.cli._common import _exit_on_sigterm, _one_line_warnings, _Parser, positive_int

#: The order ``hypermeta --help`` lists the commands in.
ORDER = ("families", "space", "config", "features", "train", "study", "tune", "evaluate", "compare", "collect",
         "matrix", "meta-train", "fewshot", "meta2", "meta-control", "meta-init", "meta-eval", "predict", "meta-report",
         "bench")
#: Commands that make environments from a user's id: they take ``--max-episode-steps``.
MAKE_ENVS = ("features", "train", "study", "tune", "evaluate", "compare", "predict")
#: Commands that run batches of jobs: they take ``--backend ray [--address ADDR]`` (Optuna's storage already spreads
#: ``study`` and ``tune`` over processes and machines).
BATCHES = ("evaluate", "compare", "matrix", "fewshot", "meta2", "meta-control", "meta-init", "meta-eval", "meta-report",
           "bench")


def build_parser():
    """The whole parser: every command module's subparsers, in :data:`ORDER`."""
    parser = _Parser(prog="hypermeta", description="The ``hypermeta`` command line. See README.md.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    adders = {name: add for module in (info, train, search, lab, bench) for name, add in module.PARSERS.items()}
    for name in ORDER:
        adders[name](sub)
    for name in MAKE_ENVS:
        sub.choices[name].add_argument(
            "--max-episode-steps", type=positive_int,
            help="episode cap of environments without a time limit (default 1000, "
            "hypermeta.tasks.families.DEFAULT_MAX_EPISODE_STEPS; episodes cut by it end as truncated); environments "
            "with a time limit keep their own")
    for name in BATCHES:
        sub.choices[name].add_argument(
            "--backend", choices=["local", "ray"], default="local",
            help="local: processes on this machine (--workers); ray: each batch of jobs is a Ray task on a cluster "
            "(pip install \"hypermeta[ray]\"; results stream back to this process, which writes the stores)")
        sub.choices[name].add_argument("--address", help="--backend ray: the cluster's address (default: a cluster "
                                       "of this machine's CPUs, or RAY_ADDRESS)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    saved = {k: v for k, v in os.environ.items() if k.startswith("HYPERMETA_")}  # the backend and the episode cap
    try:
        with _one_line_warnings():
            if getattr(args, "backend", "local") == "ray" or getattr(args, "address", None):
                from hypermeta.parallel import set_backend

                if args.backend != "ray":
                    raise ValueError("--address is for --backend ray")
                set_backend("ray", args.address)  # a missing Ray fails here, in one line, before any work
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
    finally:  # settings of this command only (a caller running several in one process gets its own back)
        for key in [k for k in os.environ if k.startswith("HYPERMETA_") and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)
