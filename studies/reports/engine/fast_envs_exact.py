"""Bit-exactness harness: curves + final weights of train_group on every family.

`python fast_envs_exact.py save` on the old code, then `python fast_envs_exact.py compare` on the new."""
import hashlib, json, os, sys, tempfile, torch, numpy as np
REF = os.path.join(tempfile.gettempdir(), "hypermeta_fast_envs_exact.json")
torch.set_num_threads(1)
from hypermeta.engine import batched as engine
from hypermeta.engine.runner import Job
from hypermeta.engine.measurement import Measurement
from hypermeta.space import DQNConfig
digests = []
orig_close = engine._Agents.close
def close(self):
    digests.append(hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in (self.flat, self.target, self.m, self.v, self.adam_t))).hexdigest())
    orig_close(self)
engine._Agents.close = close
tasks = ["cartpole:gravity=12,length=0.7", "acrobot:link_length_1=1.3", "frozenlake:success_rate=0.6,hole_reward=-0.3",
         "mountaincar:force=0.0016", "lunarlander", "minatar-breakout"]
configs = [DQNConfig(net_arch="small", learning_starts=100, batch_size=32, train_freq=4, target_update_interval=100),
           DQNConfig(net_arch="small", learning_starts=1000, batch_size=32, train_freq=8, subsample_steps=2, lr_shape="linear", lr_initial=3e-3, lr_final_ratio=0.1, target_update_interval=50, buffer_size=1000),
           DQNConfig(net_arch="small", learning_starts=0, batch_size=32, train_freq=3, subsample_steps=1, eps_fraction=0.5, eps_shape="cosine", buffer_size=1500)]
out = {}
for task in tasks:
    T = 1500 if task.startswith("minatar") else 3000
    jobs = [Job(task, "x", c, Measurement(T, 3, 2), seed=7 + i) for i, c in enumerate(configs)]
    res = engine.train_group(jobs)
    out[task] = [[r.steps, r.returns, r.env_steps] if hasattr(r, "returns") else repr(r) for r in res]
out["digests"] = digests
if sys.argv[1] == "save":
    json.dump(out, open(REF, "w"))
    print("saved", json.dumps(out)[:300])
else:
    ref = json.load(open(REF))
    out = json.loads(json.dumps(out))
    bad = [k for k in ref if ref[k] != out[k]]
    print("IDENTICAL" if not bad else f"DIFFER: {bad}")
