"""The divergence guard: healthy runs are left alone; diverging ones are rolled back, their lr cut and their
optimizer reset, each intervention logged; after the last allowed one, training stops with a clear error."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from hypermeta import DQNConfig, HyperMetaCallback
from hypermeta.engine.sb3 import build_model
from hypermeta.guard import DivergenceError, GuardSettings, health

DIVERGES = DQNConfig(lr_initial=1e-2, target_update_interval=1, gamma=0.999, train_freq=1, subsample_steps=1,
                     learning_starts=100, net_arch="small")


class _Spy(BaseCallback):
    """Records (step, lr inside the optimizer) after the guard ran on each step."""

    def __init__(self) -> None:
        super().__init__()
        self.lrs: list[tuple[int, float]] = []
        self.adam_steps: dict[int, float] = {}

    def _on_step(self) -> bool:
        optimizer = self.model.policy.optimizer
        self.lrs.append((self.num_timesteps, optimizer.param_groups[0]["lr"]))
        state = next(iter(optimizer.state.values()), {})
        self.adam_steps[self.num_timesteps] = float(state.get("step", 0))
        return True


def test_without_the_guard_this_configuration_really_diverges():
    model = build_model("cartpole", DIVERGES, seed=0)
    model.learn(600, callback=HyperMetaCallback(DIVERGES))
    assert "|Q| reached" in health(model, q_factor=2.0)


def test_guard_rolls_back_cuts_the_lr_resets_adam_and_logs(tmp_path):
    model = build_model("cartpole", DIVERGES, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    guard = GuardSettings(check_every=50, max_interventions=10)
    callback, spy = HyperMetaCallback(DIVERGES, guard=guard), _Spy()
    model.learn(600, callback=[callback, spy])
    interventions = callback.guard.interventions
    assert interventions and all("|Q| reached" in reason for _, reason in interventions)
    first = interventions[0][0]
    schedule = DIVERGES.lr_schedule()
    progress = lambda step: 1 - step / 600  # noqa: E731  # SB3's progress remaining
    before = [lr for step, lr in spy.lrs if step < first]
    after = [(step, lr) for step, lr in spy.lrs if first <= step < (interventions[1][0] if len(interventions) > 1 else 600)]
    assert before and all(lr == pytest.approx(schedule(progress(s))) for s, lr in spy.lrs if s < first - 4)
    assert after and all(lr == pytest.approx(0.1 * schedule(progress(s)), rel=0.05) for s, lr in after[1:])
    assert callback.guard.lr_scale == pytest.approx(0.1 ** len(interventions))
    assert spy.adam_steps[first - 1] > 50 and spy.adam_steps[first] == 0  # Adam's moments were reset
    csv = (tmp_path / "progress.csv").read_text()
    assert "hypermeta/guard_interventions" in csv


def test_rollback_restores_the_last_healthy_networks():
    model = build_model("cartpole", DIVERGES, seed=1)
    callback = HyperMetaCallback(DIVERGES, guard=GuardSettings(check_every=50, max_interventions=0))
    with pytest.raises(DivergenceError, match=r"training diverged again at step \d+ \(\|Q\| reached .*\) after 0 guard"):
        model.learn(2000, callback=callback)
    healthy = callback.guard._snapshot[0]
    assert all(torch.equal(v, model.q_net.state_dict()[k]) for k, v in healthy.items())
    assert health(model, q_factor=2.0) is None  # the model left behind is the last healthy one


def test_a_healthy_run_is_left_alone():
    config = DQNConfig()
    model = build_model("cartpole", config, seed=0)
    callback = HyperMetaCallback(config, guard=GuardSettings(check_every=50))
    model.learn(1500, callback=callback)
    assert callback.guard.interventions == [] and callback.guard.lr_scale == 1.0


def test_train_command_guards_by_default_and_stops_in_one_line(tmp_path, capsys):
    from hypermeta.cli import main

    path = DIVERGES.save(tmp_path / "diverges.yaml")
    code = main(["train", "cartpole", "--timesteps", "20000", "--schedule", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "training stopped: training diverged again" in err
    assert "after 3 guard interventions" in err
