"""Microseconds per env step of make_fast_env (min of 7 repeats of 20,000 random steps, CPU time).

`python env_step_timing.py LABEL TASK...`, once on the old code (a git worktree on PYTHONPATH) and once on the new."""
import sys, time, numpy as np
from hypermeta.engine.fast_envs import make_fast_env
for task in sys.argv[2:]:
    env = make_fast_env(task); env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, env.action_space.n, 20000).astype(np.int64)
    best = 1e9
    for rep in range(7):
        env.reset(seed=rep); t = time.process_time()
        for a in acts:
            o, r, te, tr, _ = env.step(a)
            if te or tr: env.reset()
        best = min(best, time.process_time() - t)
    print(sys.argv[1], task, "us/step", round(best / len(acts) * 1e6, 2))
