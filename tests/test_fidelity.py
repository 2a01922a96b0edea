"""The engine's pre-registered equivalence test (``hypermeta bench fidelity --plan``): the plan runs in both runners,
resumes, pairs job by job, and the TOST verdict follows the 90% CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermeta.cli import main
from hypermeta.lab.fidelity import FidelityPlan, equivalence_table, paired

ROOT = Path(__file__).resolve().parents[1]

PLAN = """name: tiny
fixed: {net_arch: small, batch_size: 16, train_freq: 4, subsample_steps: 4, target_update_interval: 50,
        learning_starts: 100, gamma: 0.99, buffer_size: 1000}
contexts:
  - {task: cartpole, timesteps: 400}
  - {task: frozenlake, timesteps: 300}
configs: [base, sb3-default, rl-zoo]
portfolio_plan: PORTFOLIO
seeds: 2
n_evals: 2
eval_episodes: 1
score: auc
margin: 0.03
"""


@pytest.fixture
def plan_path(tmp_path):
    from pathlib import Path

    portfolio = Path(__file__).resolve().parents[1] / "studies" / "meta2" / "plan.yaml"
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("PORTFOLIO", str(portfolio)))
    return path


def test_a_plan_runs_in_both_runners_resumes_and_renders_its_verdicts(plan_path, tmp_path, capsys):
    plan = FidelityPlan.load(plan_path)
    jobs = plan.jobs()
    assert len(jobs) == 2 * 3 + 2 * 2  # rl-zoo has no FrozenLake entry
    assert {j.seed for j in jobs} == {30_000_000, 30_000_001}
    out = tmp_path / "report.md"
    assert main(["bench", "fidelity", "--plan", str(plan_path), "--runners", "sb3,batched", "--out", str(out)]) == 0
    assert len(pd.read_csv(tmp_path / "runs_sb3.csv")) == len(pd.read_csv(tmp_path / "runs_batched.csv")) == 10
    pairs, dropped = paired(plan)
    assert len(pairs) == 10 and dropped.empty
    text = out.read_text()
    assert "| cartpole | 1 | 3 | 6 |" in text and "| overall |" in text and "sb3 10 of 10" in text
    before = (tmp_path / "runs_sb3.csv").read_text()
    capsys.readouterr()
    assert main(["bench", "fidelity", "--plan", str(plan_path), "--out", str(out)]) == 0  # resumes: nothing to train
    assert (tmp_path / "runs_sb3.csv").read_text() == before


def test_bad_plans_and_runners_are_refused_in_one_line(plan_path, tmp_path, capsys):
    assert main(["bench", "fidelity", "--plan", str(plan_path), "--runners", "gpu"]) == 2
    assert "--runners: ['gpu'] not in the plan's runners" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan_path.read_text().replace("configs: [base", "configs: [sobol-99, base"))
    assert main(["bench", "fidelity", "--plan", str(bad)]) == 2
    assert "configuration 'sobol-99' is not in" in capsys.readouterr().err
    assert not (tmp_path / "runs_sb3.csv").exists()


def _pairs(d: np.ndarray, families=("a", "b")) -> pd.DataFrame:
    rows = []
    for i, value in enumerate(d):
        rows.append({"family": families[i % len(families)], "task": families[i % len(families)],
                     "method": f"c{i % 3}", "seed": i, "d": value, "score_sb3": 0.5 + 0.1 * (i % 3),
                     "score_engine": 0.5 + 0.1 * (i % 3) + value, "same_curve": value == 0,
                     "wall_time_sb3": 1.0, "wall_time_engine": 0.2})
    return pd.DataFrame(rows)


def test_tost_calls_equivalent_only_when_the_90_percent_ci_is_inside_the_margin():
    rng = np.random.default_rng(1)
    close = equivalence_table(_pairs(rng.normal(0.0, 0.02, 240)), margin=0.03)
    assert close["equivalent"].all() and list(close["family"]) == ["a", "b", "overall"]
    assert (close["ci95_low"] <= close["ci90_low"]).all() and (close["ci90_high"] <= close["ci95_high"]).all()
    shifted = equivalence_table(_pairs(rng.normal(0.029, 0.02, 240)), margin=0.03)
    assert not shifted["equivalent"].any()  # the mean is inside the margin, but its CI is not
    noisy = equivalence_table(_pairs(rng.normal(0.0, 0.3, 40)), margin=0.03)
    assert not noisy["equivalent"].any()  # "not different" is not "equivalent"
    from hypermeta.lab.fidelity import verdict_text

    assert {verdict_text(r) for r in close.itertuples()} == {"yes"}
    assert {verdict_text(r) for r in noisy.itertuples()} == {"not shown (95% CI includes 0: inconclusive)"}
    assert {verdict_text(r) for r in shifted.itertuples()} == {"**no: they differ** (95% CI excludes 0)"}


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "studies/fidelity2" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_forced_trace_finds_identical_replay_through_truncations_and_wrap_around_and_the_report_shows_it(tmp_path):
    """studies/fidelity2/trace.py --forced on a short MountainCar job whose buffer wraps (1,000 of 1,500 steps) and
    whose episodes are all truncated at 200 steps: the engine and SB3-one-ulp, taking SB3's actions, store exactly
    SB3's replay contents (done flags as SB3's TD target reads them), and the report renders the row."""
    import json

    from hypermeta.lab.fidelity import trace_lines

    trace = _script("trace")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"buffer_size": 1000, "learning_starts": 100, "batch_size": 32, "train_freq": 4,
                                  "target_update_interval": 250, "net_arch": "small"}))
    out = tmp_path / "trace_mountaincar_forced.json"
    assert trace.main(["mountaincar", "1500", "--forced", "--config", str(config), "--out", str(out)]) == 0
    t = json.loads(out.read_text())
    assert t["mode"] == "forced" and t["steps"] == 1500 and t["buffer_wraps_at"] == 1000
    assert t["episodes_truncated"] == 7 and t["first_truncation"] == 199 and t["episodes_terminated"] == 0
    for name in ("engine", "sb3_ulp"):
        assert t[name]["same_actions"] and t[name]["first_obs_difference"] is None
        assert t[name]["replay_differs_in"] == []
        # rounding size before and after the wrap at 1,000 (a wrong sampling range after it shows only at the end)
        assert t[name]["max_abs_q_difference_before"]["1000"] < 1e-4
        assert t[name]["max_abs_q_difference_before"]["1500"] < 1e-4
        # action selection: the same random draws and (to rounding) the same Q-values give SB3's own choices
        assert t[name]["own_choice_differs_before"] == {"1000": 0, "1500": 0}
    table = "\n".join(trace_lines(tmp_path))
    assert "| `trace_mountaincar_forced.json` | `mountaincar` | 10,000,000 | 1,500 | 7 (199) | 1,000 | yes; yes |" in table
    assert "| 0; 0 of 1,500 |" in table  # the own-choice column


def test_the_engine_started_one_ulp_away_differs_from_sb3s_init_by_exactly_one_ulp_in_both_networks():
    from hypermeta.engine.batched import _Agents
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job
    from hypermeta.space import DQNConfig

    import torch

    job = Job("cartpole", "base", DQNConfig(), Measurement(timesteps=200, n_evals=1, eval_episodes=1), 7)
    plain = _Agents([job])
    with _script("ulp_null").engine_one_ulp():
        nudged = _Agents([job])
    after = _Agents([job])  # the patch is undone on leaving the block
    assert torch.equal(after.flat, plain.flat)
    up = torch.nextafter(plain.flat.detach(), torch.full_like(plain.flat, float("inf")))
    assert torch.equal(nudged.flat.detach(), up) and not torch.equal(up, plain.flat.detach())
    assert torch.equal(nudged.target, up)


def test_the_rounding_only_null_trains_each_runner_one_ulp_away_resumes_and_pairs_all_draws(plan_path, tmp_path):
    """studies/fidelity2/ulp_null.py on a tiny plan: SB3 and then the engine one ulp away, each into its own store
    (a second call trains nothing), and the report pairs every draw over the same jobs."""
    ulp_null = _script("ulp_null")
    assert main(["bench", "fidelity", "--plan", str(plan_path), "--out", str(tmp_path / "full.md")]) == 0
    out = tmp_path / "null.md"
    args = ["--plan", str(plan_path), "--family", "cartpole", "--out", str(out)]
    assert ulp_null.main(args) == 0
    assert "| SB3-one-ulp - SB3 | 6 |" in out.read_text() and "engine-one-ulp" not in out.read_text()
    assert ulp_null.main([*args, "--runner", "engine"]) == 0
    assert len(pd.read_csv(tmp_path / "runs_batched_ulp.csv")) == 6 == len(pd.read_csv(tmp_path / "runs_sb3_ulp.csv"))
    before = (tmp_path / "runs_batched_ulp.csv").read_text()
    assert ulp_null.main([*args, "--runner", "engine"]) == 0
    assert (tmp_path / "runs_batched_ulp.csv").read_text() == before
    text = out.read_text()
    for row in ("SB3-one-ulp - SB3", "engine - SB3 (the plan's)", "engine - SB3-one-ulp", "engine-one-ulp - engine",
                "engine-one-ulp - SB3", "engine-one-ulp - SB3-one-ulp",
                "engine (mean of 2 draws) - SB3 (mean of 2 draws)"):
        assert f"| {row} | 6 |" in text
    assert ulp_null.main(["--plan", str(plan_path), "--family", "taxi"]) == 2


def _linear_policy_start(v, hidden=(64, 64)):
    """A Q-network start whose greedy action is 1 where ``v . obs > 0`` (Q_1 - Q_0 = v . obs, through ReLU pairs)."""
    from hypermeta.qstart import QStart

    sizes = [len(v), *hidden, 2]
    w = [np.zeros((o, i), np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    w[0][0], w[0][1] = v, -np.asarray(v)
    w[1][0, 0] = w[1][1, 1] = 1.0
    w[2][1, 0], w[2][1, 1] = 1.0, -1.0
    return QStart({f"q_net.{2 * i}.{n}": a for i, (wi, o) in enumerate(zip(w, sizes[1:]))
                   for n, a in (("weight", wi), ("bias", np.zeros(o, np.float32)))})


@pytest.mark.parametrize("task", ["cartpole", "cartpole:gravity=12,length=0.7,masspole=0.15"])
def test_greedy_evaluation_episodes_are_sb3s_with_the_same_weights_through_terminations_and_the_500_step_cap(task):
    """The engine's evaluation (its own env, seeding and greedy batch) returns exactly what the SB3 runner's
    `evaluate_policy` returns for the same weights: policies that fall and one that balances to the time limit."""
    from hypermeta.engine import sb3
    from hypermeta.engine.batched import _Agents
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job
    from hypermeta.qstart import load_into_sb3
    from hypermeta.space import DQNConfig

    config = DQNConfig.from_dict({"net_arch": "small"})
    returns = []
    for v in ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.3, -0.2, 0.5, -0.1]):
        start = _linear_policy_start(v)
        for seed in (3, 4):
            job = Job(task, "eval", config, Measurement(1000, n_evals=1, eval_episodes=4), seed, init=start)
            engine = _Agents([job]).evaluate([0])[0]
            model = sb3.build_model(task, config, seed)
            load_into_sb3(model, start)
            theirs = sb3.evaluate(model, task, 4, seed)
            assert engine == float(np.mean(theirs)), (v, seed)
            returns += list(theirs)
    assert max(returns) == 500.0 and min(returns) < 100  # truncated at the cap, and terminated early


def test_a_later_plan_on_new_seeds_takes_them_from_its_seed_offset(plan_path, tmp_path):
    later = tmp_path / "later.yaml"
    later.write_text(plan_path.read_text().replace("seeds: 2", "seeds: 2\nseed_offset: 100"))
    assert {j.seed for j in FidelityPlan.load(later).jobs()} == {30_000_100, 30_000_101}
    assert {j.seed for j in FidelityPlan.load(plan_path).jobs()} == {30_000_000, 30_000_001}
