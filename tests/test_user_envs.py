"""Games a user brings: every episode hypermeta runs ends (an environment without a time limit is capped), bad
inputs are refused before anything is written, and ``tune`` shows its trials as they finish."""

from __future__ import annotations

import os
import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

from hypermeta.cli import build_parser, main
from hypermeta.tasks.families import (DEFAULT_MAX_EPISODE_STEPS, MAX_EPISODE_STEPS_VAR, EpisodeCapWarning,
                                      has_time_limit, make_env, max_episode_steps, set_max_episode_steps)


@pytest.fixture(autouse=True)
def _fresh_cap(monkeypatch):
    """Each test starts with the default cap and no warning given yet (the CLI sets both in os.environ)."""
    monkeypatch.delenv(MAX_EPISODE_STEPS_VAR, raising=False)
    monkeypatch.delenv("HYPERMETA_EPISODE_CAP_WARNED", raising=False)
    yield
    os.environ.pop(MAX_EPISODE_STEPS_VAR, None)
    os.environ.pop("HYPERMETA_EPISODE_CAP_WARNED", None)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM raises in the test's (main) thread after ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"did not finish in {seconds} s: an episode that never ends?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_env_without_a_time_limit_gets_the_cap_once_warned_and_others_keep_theirs():
    env = make_env("CliffWalking-v1")
    with pytest.warns(EpisodeCapWarning, match="CliffWalking-v1 has no time limit: .* after 1000 steps"):
        env.reset(seed=0)  # said at the first reset, so an env refused before it runs (its spaces) says nothing
    assert has_time_limit(env) and env.spec.max_episode_steps == DEFAULT_MAX_EPISODE_STEPS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second env of the same id: no second warning
        make_env("CliffWalking-v1").reset()
        assert make_env("CartPole-v1").spec.max_episode_steps == 500  # its own limit, no warning
        assert make_env("cartpole").spec.max_episode_steps == 500
    set_max_episode_steps(7)
    assert max_episode_steps() == 7 and make_env("CliffWalking-v1").spec.max_episode_steps == 7
    assert make_env("CartPole-v1").spec.max_episode_steps == 500
    with pytest.raises(ValueError, match="max_episode_steps must be an integer >= 1, got 0"):
        set_max_episode_steps(0)


def test_a_capped_episode_is_truncated_not_terminal_in_both_runners_replay():
    """A policy that walks into CliffWalking's top wall never terminates: the cap truncates it, and the engine stores
    that last transition as not done (SB3's handle_timeout_termination does the same)."""
    set_max_episode_steps(20)
    env = make_env("CliffWalking-v1")
    env.reset(seed=0)
    for t in range(20):
        _, _, terminated, truncated, _ = env.step(0)  # up, into the wall
        assert not terminated and truncated == (t == 19)

    from hypermeta.engine.batched import _Agents
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job
    from hypermeta.space import DQNConfig

    agents = _Agents([Job("CliffWalking-v1", "m", DQNConfig(learning_starts=100), Measurement(60, 1, 1), 0)])
    for _ in range(60):
        agents.step(np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool))
    assert agents.stored[0] == 60 and float(agents.b_done[0, :60].sum()) == 0.0  # 3 truncations, none terminal


# a table of standard gymnasium envs a user might bring: (id, extra argv, expected exit code, message)
USER_ENVS = [
    ("CartPole-v1", [], 0, None),                                 # Box observations, a time limit
    ("CliffWalking-v1", ["--reference", "-13"], 0, None),         # Discrete observations, no time limit
    ("FrozenLake-v1", [], 0, None),                               # Discrete observations, a time limit
    ("Taxi-v4", [], 0, None),                                     # Discrete observations, reward_threshold 8
    ("Blackjack-v1", ["--reference", "1"], 2, "Wrap the environment with gymnasium.wrappers.FlattenObservation"),
]


@pytest.mark.parametrize("runner", ["sb3", "batched"])
@pytest.mark.parametrize("env_id,extra,code,message", USER_ENVS, ids=[e[0] for e in USER_ENVS])
def test_evaluate_on_envs_a_user_brings_ends_or_is_refused(tmp_path, capsys, runner, env_id, extra, code, message):
    argv = ["evaluate", env_id, "--timesteps", "300", "--seeds", "1", "--n-evals", "2", "--eval-episodes", "2",
            "--baseline", "base", "--runner", runner, "--out", str(tmp_path / "runs.csv"), "--max-episode-steps",
            "200", *extra]
    with deadline(120):
        assert main(argv) == code
    out, err = capsys.readouterr()
    if code == 0:
        assert "IQM normalised AUC" in out
        assert ("has no time limit" in err) == (env_id == "CliffWalking-v1")
    else:
        assert message in err and err.count("\n") == 1 and not (tmp_path / "runs.csv").exists()


REFUSED = [
    (["tune", "CliffWalking-v1", "--timesteps", "300", "--trials", "2"], "no reference return for 'CliffWalking-v1'"),
    (["tune", "Blackjack-v1", "--timesteps", "300", "--trials", "2", "--reference", "1"], "FlattenObservation"),
    (["tune", "CliffWalking-v1", "--timesteps", "300", "--trials", "2", "--reference", "-13", "--max-episode-steps",
      "0"], "--max-episode-steps: must be an integer >= 1"),
    (["tune", "CliffWalking-v1", "--timesteps", "300", "--trials", "2", "--reference", "-13", "--out", "d/"],
     "--out 'd/' is a folder"),
    (["study", "CliffWalking-v1", "--timesteps", "300", "--trials", "2"], "no reference return for 'CliffWalking-v1'"),
    (["evaluate", "CliffWalking-v1", "--timesteps", "300", "--baseline", "base"], "no reference return"),
    (["train", "Blackjack-v1", "--timesteps", "300", "--base"], "FlattenObservation"),
    (["features", "Blackjack-v1"], "FlattenObservation"),
    (["predict", "CliffWalking-v1", "--max-episode-steps", "-2"], "--max-episode-steps: must be an integer >= 1"),
]


@pytest.mark.parametrize("argv,match", REFUSED, ids=[" ".join(a)[:60] for a, _ in REFUSED])
def test_refused_inputs_leave_no_study_and_no_file(tmp_path, monkeypatch, capsys, argv, match):
    """The bug of the issue: `tune` without --reference created studies/optuna.db before it refused."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and match in err and err.strip().count("\n") <= 1 and "Traceback" not in err, err
    assert list(tmp_path.rglob("*")) == []  # no studies/optuna.db, no best.yaml, no CSV


def test_every_command_that_makes_envs_takes_max_episode_steps():
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    takes = {name for name, p in commands.items() if "--max-episode-steps" in p.format_help()}
    assert takes == {"features", "train", "study", "tune", "evaluate", "compare", "predict"}
    assert f"default {DEFAULT_MAX_EPISODE_STEPS}," in commands["tune"].format_help().replace("\n", " ")


def test_tune_prints_a_line_per_finished_trial_when_not_on_a_terminal(tmp_path, capsys):
    argv = ["tune", "CliffWalking-v1", "--timesteps", "200", "--trials", "3", "--runner", "batched", "--reference",
            "-13", "--n-evals", "1", "--eval-episodes", "1", "--max-episode-steps", "50",
            "--storage", f"sqlite:///{tmp_path}/t.db", "--out", str(tmp_path / "best.yaml")]
    with deadline(240):
        assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert [line.split(" (")[0] for line in lines] == ["trial 1 of 3", "trial 2 of 3", "trial 3 of 3"], out
    assert all(", best " in line and " elapsed" in line for line in lines)
    assert "about" in lines[0] and "left" in lines[0]  # an estimate once a trial has finished
    assert "no time limit" in err and (tmp_path / "best.yaml").is_file()
    # --quiet: nothing per trial (the resumed study has its 3 trials already)
    assert main([*argv, "--quiet"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]


def test_a_commands_episode_cap_ends_with_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["features", "CliffWalking-v1", "--max-episode-steps", "50", "--json"]) == 0
    assert MAX_EPISODE_STEPS_VAR not in os.environ and max_episode_steps() == DEFAULT_MAX_EPISODE_STEPS

