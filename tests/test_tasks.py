from __future__ import annotations

import textwrap

import gymnasium as gym
import numpy as np
import pytest

import hypermeta.tasks.families as tasks_mod
from hypermeta import families, get_family, get_task, make_env

BUILTIN = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1", "mountaincar": "MountainCar-v0",
           "lunarlander": "LunarLander-v3", "frozenlake": "FrozenLake-v1",
           "minatar-breakout": "MinAtar/Breakout-v1", "minatar-asterix": "MinAtar/Asterix-v1",
           "minatar-freeway": "MinAtar/Freeway-v1", "minatar-seaquest": "MinAtar/Seaquest-v1",
           "minatar-spaceinvaders": "MinAtar/SpaceInvaders-v1"}


def test_builtin_families_come_from_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="hypermeta.plugins")}
    assert {n for n in BUILTIN if not n.startswith("minatar-")} | {"minatar"} <= names  # one entry, five games
    assert {n: f.env_id for n, f in families().items() if n in BUILTIN} == BUILTIN


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_family_contract(name):
    fam = get_family(name)
    assert fam.default_context() == {k: p.default for k, p in fam.context_space.items()}
    a, b = fam.sample_contexts(5, seed=3), fam.sample_contexts(5, seed=3)
    assert a == b and a != fam.sample_contexts(5, seed=4)
    for ctx in a:
        for k, v in ctx.items():
            p = fam.context_space[k]
            assert p.low <= v <= p.high
        task = fam.task(ctx)
        assert get_task(task.id) == task and get_task(task.id).context == pytest.approx(ctx)
        env = task.make_env()
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        env.close()
    assert fam.task().id == name


@pytest.mark.parametrize("task_id,attr,value", [
    ("cartpole:gravity=15,length=0.8", "polemass_length", 0.1 * 0.8),
    ("cartpole:masscart=2", "total_mass", 2.1),
    ("acrobot:link_mass_2=1.7", "LINK_MASS_2", 1.7),
    ("mountaincar:max_speed=0.1", "max_speed", 0.1),
    ("lunarlander:gravity=-5,wind_power=12", "wind_power", 12.0),
])
def test_context_reaches_the_simulator(task_id, attr, value):
    env = make_env(task_id)
    assert getattr(env.unwrapped, attr) == pytest.approx(value)
    env.close()


def test_contexts_change_dynamics():
    def first_steps(task_id):
        env = make_env(task_id)
        env.reset(seed=0)
        out = [env.step(env.action_space.n - 1)[0] for _ in range(5)]  # push right
        env.close()
        return np.array(out)

    assert not np.allclose(first_steps("cartpole"), first_steps("cartpole:gravity=19"))
    assert not np.allclose(first_steps("mountaincar"), first_steps("mountaincar:force=0.002"))
    lander = make_env("lunarlander:gravity=-4")
    assert lander.unwrapped.world.gravity[1] == pytest.approx(-4) and lander.unwrapped.enable_wind is False
    wind = make_env("lunarlander:turbulence_power=1")
    assert wind.unwrapped.enable_wind is True
    mc = make_env("mountaincar:max_speed=0.1")
    assert mc.observation_space.high[1] == pytest.approx(0.1)


def test_plain_gymnasium_ids_work():
    env = make_env("CartPole-v1")
    assert env.spec.id == "CartPole-v1"
    env.close()


@pytest.mark.parametrize("bad,match", [
    ("CartPol-v1", "Did you mean CartPole-v1"),
    ("cartpol:gravity=3", "Did you mean cartpole"),
    ("cartpole:gravty=3", r"unknown context feature\(s\) \['gravty'\]"),
    ("cartpole:gravity=-3", r"outside its valid range"),
    ("cartpole:gravity=heavy", "is not a number"),
    ("cartpole:gravity", "expected key=value"),
    ("", "non-empty string"),
])
def test_bad_ids_are_explained(bad, match):
    with pytest.raises(ValueError, match=match):
        make_env(bad)


def test_third_party_plugin_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "my_games.py").write_text(textwrap.dedent('''
        from hypermeta import ContextParam, TaskFamily

        class SlipperyLake(TaskFamily):
            name = "slippery"
            env_id = "FrozenLake-v1"
            context_space = {"reward_scale": ContextParam(1.0, 0.5, 2.0, "scale of the goal reward")}

            def apply_context(self, env, context):
                env.reward_scale = context["reward_scale"]
    '''))
    dist = tmp_path / "my_games-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-games\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hypermeta.plugins]\nslippery = my_games:SlipperyLake\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tasks_mod, "_FAMILIES", dict(tasks_mod._FAMILIES))
    tasks_mod.load_plugins(reload=True)
    env = make_env("slippery:reward_scale=2")
    assert env.unwrapped.reward_scale == 2.0 and isinstance(env.action_space, gym.spaces.Discrete)
    env.close()
