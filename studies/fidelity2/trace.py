"""Step-by-step trace of one job through both runners (issue 28, step 1): where do the engine and SB3 first part?

    python studies/fidelity2/trace.py acrobot:link_length_1=1.3,link_mass_1=0.8 30000 --seed 10000000 \
        --out studies/fidelity2/trace_acrobot.json

Trains the job with the SB3 runner and with the engine, each with its evaluations (as the matrix runs them), and
records at every step the observation the action was taken at, the action, and the online network's Q-values of
that observation. The report (JSON, and printed) gives the first step where the observations differ, the first
where the actions differ, the Q-values of both networks at that step (a near-tie flipped by rounding shows as a
gap of ~1e-7 between the two best actions), and how the largest |Q_engine - Q_SB3| grew before it.
``--ulp`` runs SB3 itself twice instead, the second time with every initial weight moved by one unit in the last
place (``torch.nextafter`` towards +inf): how far a difference of rounding size alone carries in SB3.

``--forced`` follows the runs past the first flip: SB3 trains freely and records its actions; then the engine, and
SB3 started one ulp away, train again, each making its own random draws as usual but taking SB3's recorded action at
every step. The observations, rewards and replay contents are then the same in all three runs for the whole budget
(buffer wrap-around and time-limit truncations included), and the growth of |Q - Q_SB3| on them, engine beside
SB3-one-ulp, shows whether the engine's learning updates leave rounding size while the comparison is still sensitive.
Each run's own epsilon-greedy choice is recorded beside the action it was made to take: how often the engine's
choice was not SB3's action, beside how often SB3-one-ulp's was not, compares their action selection (the same
random draws; greedy choices part only where the Q-values have), and each run's evaluation curve (of its own
network) is kept. What it cannot see: how those choices would have steered the runs, a difference that starts after
the one-ulp run's |dQ| has grown to the size of Q (it is hidden in that noise), and anything in other jobs than the
one traced. Flat observations only (a Discrete observation is stored as an integer by SB3 and one-hot by the engine):

    python studies/fidelity2/trace.py cartpole 60000 --forced --out studies/fidelity2/trace_cartpole_forced.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from hypermeta.engine.measurement import Measurement
from hypermeta.engine.runner import Job
from hypermeta.space import DQNConfig

#: meta2's fixed DQN settings (studies/meta2/plan.yaml), under the base configuration's schedules
META2_FIXED = dict(net_arch="small", batch_size=64, train_freq=4, subsample_steps=4, target_update_interval=250,
                   learning_starts=1000, gamma=0.99, buffer_size=50000)


def one_ulp_up(t: torch.Tensor) -> torch.Tensor:
    """Every value of ``t`` moved one unit in the last place towards +inf."""
    return torch.nextafter(t, torch.full_like(t, float("inf")))


def nudge_one_ulp(model: Any) -> None:
    """Move every initial weight of both of a DQN's networks one unit in the last place (towards +inf)."""
    with torch.no_grad():
        for net in (model.q_net, model.q_net_target):
            for p in net.parameters():
                p.copy_(one_ulp_up(p))


def one_ulp_start() -> Any:
    """An SB3 callback that nudges both networks one ulp (:func:`nudge_one_ulp`) when training starts."""
    from stable_baselines3.common.callbacks import BaseCallback

    class OneUlpStart(BaseCallback):
        def _on_training_start(self) -> None:
            nudge_one_ulp(self.model)

        def _on_step(self) -> bool:
            return True

    return OneUlpStart()


@contextmanager
def sb3_callbacks(*extra: Any) -> Iterator[None]:
    """Within the block, the SB3 runner's ``DQN.learn`` also runs ``extra`` callbacks, after its own."""
    import hypermeta.engine.sb3 as sb3

    learn = sb3.DQN.learn

    def learn_with(self, total_timesteps, callback=None, **kwargs):
        return learn(self, total_timesteps, callback=[*callback, *extra], **kwargs)

    sb3.DQN.learn = learn_with
    try:
        yield
    finally:
        sb3.DQN.learn = learn


def trace_sb3(job: Job, ulp: bool = False, forced: np.ndarray | None = None) -> dict[str, np.ndarray]:
    from stable_baselines3.common.callbacks import BaseCallback

    import hypermeta.engine.sb3 as sb3

    obs, acts, qs, trunc, term, replay, own = [], [], [], [], [], {}, []
    sample = sb3.DQN._sample_action

    def sample_forced(self, learning_starts, action_noise=None, n_envs=1):
        action, buffer_action = sample(self, learning_starts, action_noise, n_envs)  # SB3's own random draws
        own.append(int(action[0]))  # what this run would have done
        a = np.full_like(action, forced[len(acts)])
        return a, a.copy()

    class Record(BaseCallback):
        def _on_step(self) -> bool:  # before _store_transition: _last_obs is the observation the action was taken at
            o = np.asarray(self.model._last_obs, dtype=np.float32).reshape(1, -1)
            with torch.no_grad():
                q = self.model.q_net(torch.as_tensor(self.model._last_obs))
            obs.append(o[0].copy())
            acts.append(int(self.locals["actions"][0]))
            qs.append(q[0].double().numpy().copy())
            truncated = bool(self.locals["infos"][0].get("TimeLimit.truncated", False))
            trunc.append(truncated)
            term.append(bool(self.locals["dones"][0]) and not truncated)
            return True

        def _on_training_end(self) -> None:  # the replay contents, as the TD targets read them
            rb = self.model.replay_buffer
            replay.update(obs=rb.observations[:, 0].copy(), next_obs=rb.next_observations[:, 0].copy(),
                          action=rb.actions[:, 0].reshape(len(rb.actions), -1)[:, 0].copy(),
                          reward=rb.rewards[:, 0].copy(), done=(rb.dones[:, 0] * (1 - rb.timeouts[:, 0])).copy())

    if forced is not None:
        sb3.DQN._sample_action = sample_forced
    try:
        with sb3_callbacks(Record(), *([one_ulp_start()] if ulp else [])):  # the nudge before the first step
            curve = sb3.run_curve(job.task, job.config, job.measurement, job.seed)
    finally:
        sb3.DQN._sample_action = sample
    return {"obs": np.array(obs), "actions": np.array(acts), "q": np.array(qs), "curve": np.array(curve.returns),
            "truncated": np.array(trunc), "terminated": np.array(term), "replay": replay, "own": np.array(own)}


def trace_engine(job: Job, forced: np.ndarray | None = None) -> dict[str, np.ndarray]:
    import hypermeta.engine.batched as engine

    obs, acts, qs, seen, own = [], [], [], [], []
    act = engine._Agents.act

    def act_recording(agents, t, active):
        seen[:] = [agents]
        actions = act(agents, t, active)  # the engine's own random draws
        own.append(int(actions[0]))  # what the engine would have done
        if forced is not None:
            actions[0] = forced[len(acts)]
        obs.append(agents.obs[0].copy())
        acts.append(int(actions[0]))
        qs.append(agents.q_values(torch.from_numpy(agents.obs[:1]).unsqueeze(1))[0, 0].double().numpy().copy())
        return actions

    engine._Agents.act = act_recording
    try:
        curve = engine.train_group([job])[0]
    finally:
        engine._Agents.act = act
    if isinstance(curve, BaseException):
        raise curve
    ag = seen[0]
    replay = {name: getattr(ag, f"b_{b}")[0].float().numpy().reshape(ag.b_obs.shape[1], -1).squeeze()
              for name, b in (("obs", "obs"), ("next_obs", "next"), ("action", "act"), ("reward", "rew"),
                              ("done", "done"))}
    return {"obs": np.array(obs), "actions": np.array(acts), "q": np.array(qs), "curve": np.array(curve.returns),
            "replay": replay, "own": np.array(own)}


def first(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: tuple[str, str]) -> dict:
    n = min(len(a["actions"]), len(b["actions"]))
    obs_step = first(np.any(a["obs"][:n] != b["obs"][:n], axis=1))
    act_step = first(a["actions"][:n] != b["actions"][:n])
    qdiff = np.abs(a["q"][:n] - b["q"][:n]).max(axis=1)
    out: dict = {"steps": n, "first_obs_difference": obs_step, "first_action_difference": act_step,
                 "identical_curves": bool(np.array_equal(a["curve"], b["curve"])),
                 f"curve_{names[0]}": a["curve"].tolist(), f"curve_{names[1]}": b["curve"].tolist()}
    upto = n if act_step is None else act_step + 1
    out["max_abs_q_difference_before"] = {str(s): float(qdiff[:min(s, upto)].max()) for s in
                                          (100, 1000, 2000, 5000, 10000, 20000, 30000) if s <= upto}
    if act_step is not None:
        qa, qb = a["q"][act_step], b["q"][act_step]
        out["at_first_action_difference"] = {
            "actions": [int(a["actions"][act_step]), int(b["actions"][act_step])],
            f"q_{names[0]}": qa.tolist(), f"q_{names[1]}": qb.tolist(),
            "gap_between_best_two_actions": float(np.sort(qa)[-1] - np.sort(qa)[-2]),
            "max_abs_q_difference": float(np.abs(qa - qb).max()),
        }
    return out


#: the steps at which a forced trace reports the largest |Q - Q_SB3| so far
FORCED_CHECKPOINTS = (1000, 5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000, 150000)


def compare_forced(a: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]], job: Job) -> dict:
    """SB3 (``a``, free) against runs that took its actions: the same observations throughout, and the largest
    |Q - Q_SB3| up to each checkpoint, beside the largest |Q_SB3| up to it."""
    n = len(a["actions"])
    out: dict = {"mode": "forced", "steps": n, "episodes_truncated": int(a["truncated"].sum()),
                 "episodes_terminated": int(a["terminated"].sum()),
                 "first_truncation": first(a["truncated"]),
                 "buffer_wraps_at": job.config.buffer_size if n > job.config.buffer_size else None}
    scale = np.abs(a["q"]).max(axis=1)
    for name, b in others.items():
        m = min(n, len(b["actions"]))
        checks = [s for s in FORCED_CHECKPOINTS if s < m] + [m]
        qdiff = np.abs(a["q"][:m] - b["q"][:m]).max(axis=1)
        stored = min(len(a["replay"]["reward"]), len(b["replay"]["reward"]), m)
        out[name] = {
            "same_actions": bool(np.array_equal(a["actions"][:m], b["actions"][:m])),
            # the replay buffers at the end (every field the TD target reads, the done flag as SB3's
            # dones * (1 - timeouts)): identical, or the fields that differ
            "replay_differs_in": [f for f in a["replay"] if not np.array_equal(
                np.asarray(a["replay"][f], np.float32)[:stored].reshape(stored, -1),
                np.asarray(b["replay"][f], np.float32)[:stored].reshape(stored, -1))],
            "first_obs_difference": first(np.any(a["obs"][:m] != b["obs"][:m], axis=1)),
            "max_abs_q_difference_before": {str(s): float(qdiff[:s].max()) for s in checks},
            "max_abs_q_sb3_before": {str(s): float(scale[:s].max()) for s in checks},  # the size of Q then
            # action selection: how often the run's own epsilon-greedy choice (from its own random draws and its
            # own Q) was not SB3's action, up to each checkpoint; the evaluation curve of its own network
            "own_choice_differs_before": {str(s): int((b["own"][:s] != a["actions"][:s]).sum()) for s in checks},
            "curve": b["curve"].tolist(),
        }
    out["curve_sb3"] = a["curve"].tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("timesteps", type=int)
    p.add_argument("--seed", type=int, default=10_000_000)
    p.add_argument("--config", help="YAML/JSON configuration (default: the base schedules over meta2's settings)")
    p.add_argument("--ulp", action="store_true", help="SB3 vs SB3 started one ulp away, instead of engine vs SB3")
    p.add_argument("--forced", action="store_true",
                   help="engine and SB3-one-ulp both take SB3's recorded actions: compare Q over the whole budget")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = DQNConfig.load(args.config) if args.config else DQNConfig.from_dict(META2_FIXED)
    job = Job(args.task, "trace", config, Measurement(args.timesteps), args.seed)
    start = time.process_time()
    if args.forced:
        a = trace_sb3(job)
        others = {"engine": trace_engine(job, forced=a["actions"]),
                  "sb3_ulp": trace_sb3(job, ulp=True, forced=a["actions"])}
        result = compare_forced(a, others, job)
    elif args.ulp:
        result = compare(trace_sb3(job), trace_sb3(job, ulp=True), ("sb3", "sb3_ulp"))
    else:
        result = compare(trace_sb3(job), trace_engine(job), ("sb3", "engine"))
    report = {"task": args.task, "timesteps": args.timesteps, "seed": args.seed, "config": config.to_dict(),
              "torch": torch.__version__, "cpu_seconds": round(time.process_time() - start, 1), **result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    json.dump({k: v for k, v in report.items() if not k.startswith("curve_")}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
