"""The batched engine: faithful to SB3 DQN (same seeds -> same actions and weights), per-agent schedules,
fault isolation, batch invariance, and studies run through it."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import hypermeta.engine.batched as engine
from hypermeta import DQNConfig, Job, Measurement, get_runner, run_jobs
from hypermeta.engine.sb3 import SB3Runner, build_model
from hypermeta.search.study import StudySpec, run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

SMALL = DQNConfig(net_arch="small", learning_starts=100, train_freq=4, subsample_steps=2, target_update_interval=50,
                  lr_shape="cosine", lr_final_ratio=0.1, eps_fraction=0.3, eps_shape="exponential")


class _Record:
    """Patches the engine's agents to record, per agent, the actions, the epsilon in use and the lr of each
    training call (the engine's counterpart of SB3's optimizer lr)."""

    def __init__(self, monkeypatch) -> None:
        self.actions, self.eps, self.lr, self.final = [], [], [], None
        act, train, close = engine._Agents.act, engine._Agents.train, engine._Agents.close
        rec = self

        def spy_act(agents, t, active):
            rec.eps.append((t, agents.eps.copy()))
            out = act(agents, t, active)
            rec.actions.append(out.copy())
            return out

        def spy_train(agents, learners, progress):
            rec.lr.append((int(agents.stored[learners[0]]), {int(k): agents.lr_sched[k](progress[k]) for k in learners}))
            return train(agents, learners, progress)

        def spy_close(agents):
            rec.final = [p.detach().clone() for p in agents.layers(agents.flat.detach())]
            return close(agents)

        monkeypatch.setattr(engine._Agents, "act", spy_act)
        monkeypatch.setattr(engine._Agents, "train", spy_train)
        monkeypatch.setattr(engine._Agents, "close", spy_close)


def test_an_agent_takes_the_same_actions_and_reaches_the_same_weights_as_sb3(monkeypatch, learn_recording_actions):
    job = Job("cartpole", "x", SMALL, Measurement(1200, 2, 2), seed=3)
    model = build_model("cartpole", SMALL, 3)
    initial = [v.clone() for v in model.q_net.state_dict().values()]
    sb3_actions = learn_recording_actions(model, SMALL, 1200)
    rec = _Record(monkeypatch)
    agents = engine._Agents([job])
    for mine, theirs in zip(agents.layers(agents.flat.detach()), initial):
        assert torch.equal(mine[0], theirs.T if theirs.dim() == 2 else theirs.view(1, -1))  # SB3's init, exactly
    agents.close()
    curve = engine.train_group([job])[0]
    assert [int(a[0]) for a in rec.actions] == sb3_actions  # every one of the 1,200 actions
    for mine, theirs in zip(rec.final, model.q_net.state_dict().values()):  # ~550 Adam steps later
        np.testing.assert_allclose(mine[0], theirs.T if theirs.dim() == 2 else theirs.view(1, -1), atol=1e-4)
    assert curve.returns == SB3Runner().run(job).returns  # the same greedy evaluations


def test_every_agent_follows_its_own_schedules(monkeypatch):
    configs = [SMALL, SMALL.replace(lr_initial=3e-3, lr_shape="exponential", lr_final_ratio=0.05, eps_initial=0.7,
                                    eps_final=0.15, eps_fraction=0.5, eps_shape="linear", train_freq=8,
                                    subsample_steps=1, learning_starts=0)]
    T = 803  # not a multiple of train_freq: SB3 runs on to the end of the last rollout (808), past progress 0
    jobs = [Job("cartpole", "x", c, Measurement(T, 1, 1), seed=s) for s, c in enumerate(configs)]
    rec = _Record(monkeypatch)
    engine.train_group(jobs)
    for k, config in enumerate(configs):
        eps_s, lr_s = config.exploration_schedule(), config.lr_schedule()
        end = -(-T // config.train_freq) * config.train_freq
        assert [t for t, _ in rec.eps if t < end] == list(range(end))
        for t, eps in rec.eps[1:end]:  # epsilon used for the action after t steps: schedule(1 - t / T), exactly
            assert eps[k] == eps_s(1 - t / T), (k, t)
        calls = [(step, lrs[k]) for step, lrs in rec.lr if k in lrs]
        steps = [step for step, _ in calls]
        assert steps == [s for s in range(config.train_freq, end + 1, config.train_freq) if s > config.learning_starts]
        for step, lr in calls:  # lr set at each train(): schedule at SB3's progress remaining
            assert lr == pytest.approx(lr_s(1 - step / T), rel=1e-12)
        assert max(lr for _, lr in calls) / min(lr for _, lr in calls) > 1.5  # the schedule really moves


def test_a_diverging_agent_is_masked_out_and_the_others_are_untouched():
    config = DQNConfig(net_arch="small", learning_starts=100)
    measurement = Measurement(400, 2, 1)
    jobs = [Job("HyperMetaTest/NaNReward-v0", "x", config, measurement, seed=s, reference=200.0) for s in (0, 1, 3)]
    results = engine.train_group(jobs)
    assert isinstance(results[0], engine.DivergenceError) and "non-finite" in str(results[0])  # seed 0: NaN rewards
    alone = engine.train_group([jobs[2]])[0]
    assert results[2].returns == alone.returns and all(np.isfinite(results[1].returns))


def test_an_agent_in_a_batch_gives_the_same_curve_as_alone():
    mixed = [SMALL, SMALL.replace(lr_initial=2e-3, target_update_interval=10), DQNConfig(net_arch="small"),
             SMALL.replace(buffer_size=1000, train_freq=2, subsample_steps=1)]
    jobs = [Job("cartpole:length=0.7", "x", c, Measurement(1500, 3, 2), seed=10 + i) for i, c in enumerate(mixed)]
    together = engine.train_group(jobs)
    for job, curve in zip(jobs, together):
        assert engine.train_group([job])[0].returns == curve.returns


def test_runner_groups_shapes_and_runs_through_the_pipeline(tmp_path):
    runner = get_runner("batched")
    jobs = [Job("cartpole", "a", SMALL, Measurement(300, 1, 1), seed=1),
            Job("cartpole", "b", SMALL.replace(net_arch="medium"), Measurement(300, 1, 1), seed=1),
            Job("acrobot", "c", SMALL, Measurement(300, 1, 1), seed=1)]
    assert sorted(len(b) for b in runner.batches(jobs)) == [1, 1, 1]  # shapes differ: three groups
    runs = run_jobs(jobs, runner="batched")
    assert list(runs["method"]) == ["a", "b", "c"] and runs["env_steps"].tolist() == [300, 300, 300]
    parallel = run_jobs(jobs, runner="batched", workers=2).sort_values("method", ignore_index=True)  # a process pool
    assert parallel["auc"].tolist() == runs["auc"].tolist()


@pytest.mark.filterwarnings("error:Heartbeat of storage")  # the batch's heartbeats are hypermeta's own
def test_a_study_through_the_engine_asks_in_batches_and_resumes(tmp_path):
    spec = StudySpec("cartpole", 400, n_evals=2, eval_episodes=1)
    storage = f"sqlite:///{tmp_path}/s.db"
    study = run_study(spec, 4, storage=storage, sampler="tpe", pruner="none", runner="batched", batch_size=4)
    first = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    backend = study._storage._backend  # heartbeats were recorded for the whole batch, as optimize() does
    assert all(backend._has_heartbeat(t._trial_id) for t in study.trials)
    assert len(first) == 4 and all(len(t.intermediate_values) == 2 for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # constant liar: four different configs
    study = run_study(spec, 6, storage=storage, sampler="tpe", pruner="none", runner="batched", batch_size=4)
    done = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) == 6 and all(done[n] == v for n, v in first.items())  # resumed: the first four kept
    assert len(study.trials) == 6  # the second batch asked for the two trials still needed, no more


def test_cli_study_with_the_batched_runner(tmp_path, capsys):
    from hypermeta.cli import main

    code = main(["study", "cartpole", "--timesteps", "300", "--trials", "3", "--n-evals", "1", "--eval-episodes", "1",
                 "--runner", "batched", "--storage", f"sqlite:///{tmp_path}/s.db", "--sampler", "random"])
    assert code == 0 and "3 finished trials" in capsys.readouterr().out


def test_batches_follow_the_order_of_the_jobs_across_groups():
    """Early jobs finish early whatever their group (a partial matrix then covers every family)."""
    m = Measurement(100)
    jobs = [Job(task, "x", DQNConfig(), m, seed) for seed in range(2) for task in ("cartpole", "acrobot", "cartpole")]
    batches = engine.BatchedRunner(max_agents=2).batches(jobs)
    assert [[j.task for j in b] for b in batches] == [["cartpole", "cartpole"], ["acrobot", "acrobot"],
                                                      ["cartpole", "cartpole"]]
    assert sorted(id(j) for b in batches for j in b) == sorted(id(j) for j in jobs)


@pytest.mark.parametrize("shape", ["linear", "cosine", "exponential", "constant"])
@pytest.mark.parametrize("total,fraction", [(1000, 0.1), (30000, 0.37), (4097, 1.0), (60000, 0.012345)])
def test_an_epsilon_schedule_keeps_its_value_from_the_step_it_settles_at(shape, total, fraction):
    from hypermeta.engine.batched import _settles_at
    from hypermeta.schedules import ShapedSchedule

    schedule = ShapedSchedule(0.9, 0.03, shape, fraction)
    n = _settles_at(schedule, total)
    T = np.array([total])
    values = [schedule((1.0 - m / T)[0]) for m in range(n, total + 9)]  # as train_group computes them
    assert len(set(values)) == 1
    if n > 1:  # the first such step: the one before is still inside the window
        assert (1.0 - (1.0 - (n - 1) / T)[0]) / fraction < 1.0
    assert _settles_at(lambda progress: 0.1, total) > 10 * total  # an unknown schedule is called at every step


def test_box2d_groups_limit_glibc_heap_fragmentation_and_others_do_not(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "limit_heap_fragmentation", lambda: calls.append(1) or True)
    engine.train_group([Job("cartpole", "a", SMALL, Measurement(200, 1, 1), seed=1)])
    assert calls == []  # CartPole's batches do not fragment the heap: malloc is left as it is
    engine.train_group([Job("lunarlander", "a", SMALL, Measurement(200, 1, 1), seed=1)])
    assert calls == [1]


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_limit_heap_fragmentation_makes_glibc_serve_64_kib_blocks_by_mmap():
    """In a fresh process: once the heap's free chunks are used up, 100 KB blocks come from mmap after the call
    (glibc's mmapped chunks start 16 bytes into a page; below the default 128 KiB threshold they come from the
    top of the heap), and the call reports it."""
    import subprocess
    import sys

    code = ("import ctypes, os; os.environ.pop('MALLOC_MMAP_THRESHOLD_', None)\n"
            "from hypermeta.engine.batched import limit_heap_fragmentation\n"
            "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
            "ok = limit_heap_fragmentation()\n"
            "offsets = [libc.malloc(100_000) % 4096 for _ in range(300)]\n"  # past the heap's free chunks
            "print(ok, offsets[-4:])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "True [16, 16, 16, 16]"


def test_the_throughput_benchmark_reports_medians_and_ranges_of_repetitions(tmp_path):
    import pandas as pd

    from hypermeta.lab.engine_bench import run_throughput_benchmark

    out = tmp_path / "throughput.md"
    text = run_throughput_benchmark(["CartPole-v1"], 200, [2], out, repeats=2)
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert sorted(set(frame["repeat"])) == [0, 1] and len(frame) == 2 * 2 * 2  # 2 nets x (SB3 + K=2) x 2 repeats
    assert "--repeats 2" in text and "Load average (1 min) during the runs" in text
    assert "| `CartPole-v1` | [64, 64] | batched | 2 |" in text and "x [" in text  # median ratio [range]
