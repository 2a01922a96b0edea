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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hypermeta.engine.measurement import Measurement
from hypermeta.engine.runner import Job
from hypermeta.space import DQNConfig

#: meta2's fixed DQN settings (studies/meta2/plan.yaml), under the base configuration's schedules
META2_FIXED = dict(net_arch="small", batch_size=64, train_freq=4, subsample_steps=4, target_update_interval=250,
                   learning_starts=1000, gamma=0.99, buffer_size=50000)


def trace_sb3(job: Job, ulp: bool = False) -> dict[str, np.ndarray]:
    from stable_baselines3.common.callbacks import BaseCallback

    import hypermeta.engine.sb3 as sb3

    obs, acts, qs = [], [], []

    class Record(BaseCallback):
        def _on_training_start(self) -> None:
            if ulp:  # both networks start one ulp away from SB3's own initial weights
                with torch.no_grad():
                    for net in (self.model.q_net, self.model.q_net_target):
                        for p in net.parameters():
                            p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))

        def _on_step(self) -> bool:  # before _store_transition: _last_obs is the observation the action was taken at
            o = np.asarray(self.model._last_obs, dtype=np.float32).reshape(1, -1)
            with torch.no_grad():
                q = self.model.q_net(torch.as_tensor(self.model._last_obs))
            obs.append(o[0].copy())
            acts.append(int(self.locals["actions"][0]))
            qs.append(q[0].double().numpy().copy())
            return True

    learn = sb3.DQN.learn

    def learn_recording(self, total_timesteps, callback=None, **kwargs):
        return learn(self, total_timesteps, callback=[*callback, Record()], **kwargs)

    sb3.DQN.learn = learn_recording
    try:
        curve = sb3.run_curve(job.task, job.config, job.measurement, job.seed)
    finally:
        sb3.DQN.learn = learn
    return {"obs": np.array(obs), "actions": np.array(acts), "q": np.array(qs), "curve": np.array(curve.returns)}


def trace_engine(job: Job) -> dict[str, np.ndarray]:
    import hypermeta.engine.batched as engine

    obs, acts, qs = [], [], []
    act = engine._Agents.act

    def act_recording(agents, t, active):
        actions = act(agents, t, active)
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
    return {"obs": np.array(obs), "actions": np.array(acts), "q": np.array(qs), "curve": np.array(curve.returns)}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("timesteps", type=int)
    p.add_argument("--seed", type=int, default=10_000_000)
    p.add_argument("--config", help="YAML/JSON configuration (default: the base schedules over meta2's settings)")
    p.add_argument("--ulp", action="store_true", help="SB3 vs SB3 started one ulp away, instead of engine vs SB3")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = DQNConfig.load(args.config) if args.config else DQNConfig.from_dict(META2_FIXED)
    job = Job(args.task, "trace", config, Measurement(args.timesteps), args.seed)
    start = time.process_time()
    if args.ulp:
        a, b, names = trace_sb3(job), trace_sb3(job, ulp=True), ("sb3", "sb3_ulp")
    else:
        a, b, names = trace_sb3(job), trace_engine(job), ("sb3", "engine")
    report = {"task": args.task, "timesteps": args.timesteps, "seed": args.seed, "config": config.to_dict(),
              "torch": torch.__version__, "cpu_seconds": round(time.process_time() - start, 1),
              **compare(a, b, names)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    json.dump({k: v for k, v in report.items() if not k.startswith("curve_")}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
