"""The batched DQN engine: K independent DQN agents trained in lock-step, in one process and one thread.

Each agent has its own environment (whatever a task id or gymnasium id makes, so plugins work unchanged; gymnasium's
classic-control envs get bit-identical faster steps from :mod:`hypermeta.engine.fast_envs`), its
own replay buffer, Q-network, target network, Adam state, schedules and random streams; the K networks are
stored as batched weight tensors (``[K, in, out]``) so one ``torch.baddbmm`` runs all K forward passes, and one
backward pass of the sum of the agents' losses gives every agent its own gradients. What differs per agent is
data (masks and per-agent tensors), not Python branches.

It mirrors Stable-Baselines3 2.x DQN (``stable_baselines3/dqn/dqn.py`` and ``common/off_policy_algorithm.py``)
step by step, including its random streams: an agent with seed ``s`` draws exploration coins and replay
indices from ``numpy.random.RandomState(s)`` in SB3's order, random actions from its action space seeded with
``s``, its initial weights from ``torch.Generator().manual_seed(s)`` in ``nn.Linear``'s order, and resets its
environment with seed ``s``. Up to floating-point rounding of batched vs single matrix products, an agent
takes the same actions and reaches the same weights as ``SB3Runner`` on the same job (the README's fidelity
table lists each point with the SB3 line it mirrors; ``hypermeta bench fidelity`` measures it).

Agents that need different tensor shapes (observation size, actions, ``net_arch`` (ignored for images, which
always get MinAtarCNN), ``batch_size``) train in separate groups; ``buffer_size``, lr/epsilon schedules,
gamma, ``target_update_interval``, ``train_freq``, ``gradient_steps`` and ``learning_starts`` may differ
within a group. An agent whose loss, weights, Q-values or evaluation returns turn non-finite fails with its
reason and is masked out; the others go on untouched.
Observations: Box, Discrete (one-hot) and MultiBinary go through the configuration's MLP; boolean images
(``H x W x C`` Box of dtype bool, MinAtar's frames) go through :class:`hypermeta.networks.MinAtarCNN`, as the SB3
runner's ``policy_kwargs_for`` builds it, with one ``F.conv2d`` per agent (SB3's own call, bit-identical); their
replay buffers store ``uint8`` (SB3 stores the bool frames), not float32. The network's arithmetic dominates there,
which batching cannot remove: at 16 agents the engine trains MinAtar only ~1.9x faster than the SB3 runner per CPU
second (studies/reports/engine/throughput_minatar_repeated.md), not the ~10-15x of small MLPs.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from hypermeta.engine.fast_envs import make_fast_env
from hypermeta.engine.measurement import Curve, DivergenceError
from hypermeta.engine.runner import Job, OnEval, Runner
from hypermeta.parallel import distributed, pool_results
from hypermeta.schedules import ShapedSchedule
from hypermeta.seeds import eval_seed
from hypermeta.space import NET_ARCHS
from hypermeta.tasks.families import make_env

MAX_GRAD_NORM = 10.0  # SB3 DQN's max_grad_norm
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam defaults (SB3 passes no optimizer_kwargs)
#: Agents per lock-step batch (larger groups are split): small nets gain up to 256 agents; for nets of 256
#: units and more the arithmetic dominates and 16 was fastest (studies/reports/engine/throughput.md).
#: Image observations (MinAtarCNN): 16 was faster than 32 (studies/reports/engine/throughput_minatar.md) and keeps
#: the uint8 replay buffers of a batch of 50,000-step runs on 10x10x7 frames at ~1.1 GB.
MAX_AGENTS = {"small": 256, "medium": 16, "big": 16, "cnn": 16}
#: MinAtarCNN's sizes (hypermeta.networks.MinAtarCNN defaults, as policy_kwargs_for builds it)
CNN_CHANNELS, CNN_HIDDEN, CNN_KERNEL = 16, 128, 3


def group_key(job: Job, shapes: dict[str, tuple] | None = None) -> tuple:
    """Jobs with equal keys can share one lock-step batch (same tensor shapes). ``shapes`` memoises the tasks'
    shapes across calls (one env per task, not per job: a matrix forms batches from ~18,000 jobs)."""
    shapes = {} if shapes is None else shapes
    if job.task not in shapes:
        shapes[job.task] = task_shapes(job.task)
    obs_dim, n_actions, image = shapes[job.task]
    net = ("cnn", *image) if image else tuple(NET_ARCHS[job.config.net_arch])
    return (obs_dim, n_actions, net, job.config.batch_size)


def task_shapes(task: str) -> tuple[int, int, tuple[int, int, int] | None]:
    """A task's flattened observation size, number of actions and image shape."""
    env = make_env(task)
    try:
        return _obs_dim(env.observation_space), int(env.action_space.n), _image_shape(env.observation_space)
    finally:
        env.close()


def _obs_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        _image_shape(space)  # refuses images it has no network for
        return int(np.prod(space.shape))
    raise ValueError(f"the batched engine supports Box, Discrete and MultiBinary observations, got {space}")


def _image_shape(space: gym.Space) -> tuple[int, int, int] | None:
    """``(H, W, C)`` of a boolean image observation (MinAtarCNN's input), None for flat observations."""
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3):
        return None
    if space.dtype != np.bool_ or min(space.shape[:2]) < CNN_KERNEL:
        raise ValueError(f"the batched engine's CNN takes channel-last boolean images of at least 3x3 (MinAtar), "
                         f"got {space.shape} {space.dtype}: use --runner sb3")
    return tuple(int(n) for n in space.shape)


def limit_heap_fragmentation() -> bool:
    """On glibc, serve allocations of 64 KiB and more by mmap (``mallopt(M_MMAP_THRESHOLD, 65536)``, as the
    environment variable ``MALLOC_MMAP_THRESHOLD_=65536`` does), so that they go back to the system when freed.

    Box2D's small allocations between torch's tensors fragment glibc's heap otherwise: 64 LunarLander agents grew
    to 2.7 GB in 10,000 steps and the 100,000-step batches to 11-13 GB per process (0.4 GB with the setting, 27%
    slower; measured 2026-11-26). CartPole's batches do not grow, so only Box2D groups call this; the setting then
    holds for the rest of the process (glibc cannot go back to its dynamic threshold), so later groups of other
    families in the same process run with it too. True when set (now, earlier in this process, or by the
    environment variable); False where there is no glibc."""
    global _HEAP_LIMITED
    if _HEAP_LIMITED or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries: nothing to set
        return False
    _HEAP_LIMITED = mallopt(_M_MMAP_THRESHOLD, 65536) == 1
    return _HEAP_LIMITED


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_HEAP_LIMITED = False


class _Agents:
    """The state of K agents of one group (shapes shared, everything else per agent)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self.K = K = len(jobs)
        cfgs = [j.config for j in jobs]
        self.envs = [make_fast_env(j.task) for j in jobs]
        if "box2d" in type(self.envs[0].unwrapped).__module__.lower():  # LunarLander: see limit_heap_fragmentation
            limit_heap_fragmentation()
        self.obs_space = self.envs[0].observation_space
        self.n_actions = int(self.envs[0].action_space.n)
        self.D = _obs_dim(self.obs_space)
        self.image = _image_shape(self.obs_space)
        # a flat Box observation is its own encoding (an assignment casts to float32 as np.asarray does)
        self.flat_obs = isinstance(self.obs_space, gym.spaces.Box) and len(self.obs_space.shape) == 1
        self.hidden = (CNN_HIDDEN,) if self.image else NET_ARCHS[cfgs[0].net_arch]
        self.batch = cfgs[0].batch_size
        self.T = np.array([j.measurement.timesteps for j in jobs])
        self.tf = np.array([c.train_freq for c in cfgs])
        self.T_end = -(-self.T // self.tf) * self.tf  # SB3 completes the last rollout of train_freq steps
        self.gs = np.array([c.gradient_steps for c in cfgs])
        self.ls = np.array([c.learning_starts for c in cfgs])
        self.tui = np.array([max(c.target_update_interval, 1) for c in cfgs])  # // n_envs, n_envs = 1
        self.gamma = torch.tensor([c.gamma for c in cfgs], dtype=torch.float32).view(K, 1)
        self.buffer = np.minimum([c.buffer_size for c in cfgs], self.T_end)  # never more rows than steps
        self.lr_sched = [c.lr_schedule() for c in cfgs]
        self.eps_sched = [c.exploration_schedule() for c in cfgs]
        self.control = [self._run_control(k, j) for k, j in enumerate(jobs)]  # None: the schedules as they are
        self.steered = any(c is not None for c in self.control)
        self.eps = np.array([s(1.0) for s in self.eps_sched])  # HyperMetaCallback sets it at training start
        self.eps_last = np.array([_settles_at(s, int(t)) for s, t in zip(self.eps_sched, self.T)])
        self.eval_steps = [set(j.measurement.eval_steps) for j in jobs]
        # random streams, in SB3's order: set_random_seed(seed) seeds numpy's and torch's global generators,
        # the action space and the env's first reset
        self.rs = [np.random.RandomState(j.seed) for j in jobs]
        for env, j in zip(self.envs, jobs):
            env.action_space.seed(j.seed)
        # all of an agent's weights in one row of `flat` ([K, P]); layers are views into it
        self.layout: list[tuple[int, int, int, int]] = []  # (offset, fan_in, fan_out, bias offset) per layer
        flat = self._init_params()
        for k, job in enumerate(jobs):  # a Q-network start replaces SB3's initialisation (drawn first, as SB3 does)
            if job.init is not None:
                flat[k] = torch.from_numpy(self._start(job.init))
        self.flat = flat.requires_grad_(True)
        self.target = self.flat.detach().clone()
        self.m = torch.zeros_like(self.target)
        self.v = torch.zeros_like(self.target)
        self.adam_t = torch.zeros(K, dtype=torch.float64)
        n = int(self.buffer.max())
        frames = torch.uint8 if self.image else torch.float32  # 0/1 frames are exact in uint8
        self.b_obs = torch.zeros(K, n, self.D, dtype=frames)
        self.b_next = torch.zeros(K, n, self.D, dtype=frames)
        self.b_act = torch.zeros(K, n, dtype=torch.int64)
        self.b_rew = torch.zeros(K, n)
        self.b_done = torch.zeros(K, n)  # SB3's dones * (1 - timeouts): 1 only for true terminations
        self.stored = np.zeros(K, dtype=np.int64)
        self.obs = np.stack([self._encode(env.reset(seed=j.seed)[0]) for env, j in zip(self.envs, jobs)])
        self.failed: list[BaseException | None] = [None] * K
        self.healthy = np.ones(K, dtype=bool)  # failed[k] is None
        self.last_loss = np.zeros(K)

    def _start(self, init: Any) -> np.ndarray:
        """A Q-network start in this group's flat layout (MLPs only)."""
        from hypermeta.qstart import get_start

        if self.image:
            raise ValueError("the batched engine loads Q-network starts into MLPs only, not MinAtarCNN: use the SB3 "
                             "runner")
        start = get_start(init)
        start.check(self.D, self.n_actions, tuple(self.hidden), "this job's env and net")
        return start.to_flat()

    def _run_control(self, k: int, job: Job) -> Any:
        """The run's :class:`~hypermeta.controller.RunControl` when the job has a controller: its schedules replace
        the configuration's (the base under the controller's offsets)."""
        if job.control is None:
            return None
        from hypermeta.controller import RunControl, get_controller

        controller = get_controller(job.control)
        features = _task_features(job.task) if controller.uses_features else None
        run = RunControl(controller, self.lr_sched[k], self.eps_sched[k], int(job.measurement.timesteps),
                         job.config.learning_starts, job.config.gamma, features)
        self.lr_sched[k], self.eps_sched[k] = run.lr_schedule, run.eps_schedule
        return run

    def steer(self, n: int, active: np.ndarray) -> None:
        """Control step of the runs whose controller is due at step ``n``: the signals from the transitions stored
        before this step's (SB3's callback runs before it stores the step), then the new offsets."""
        from hypermeta.controller import RECENT, recent_rows, smooth_l1_mean

        for k in np.flatnonzero(active):
            run = self.control[k]
            if run is None or not run.due(n):
                continue
            before = int(self.stored[k]) - 1
            rows = recent_rows(before, int(self.buffer[k]), min(RECENT, int(self.buffer[k]) - 1))
            td, q_max = math.nan, math.nan
            if len(rows):
                with torch.no_grad():
                    q_all, q, target = self.td_on_rows(k, rows, self.flat[k:k + 1])
                td, q_max = smooth_l1_mean(q.numpy(), target.numpy()), float(q_all.abs().max())
            run.control(n, td, q_max)

    def td_on_rows(self, k: int, rows: np.ndarray, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Agent ``k``'s TD quantities on its buffer ``rows`` with online parameters ``params`` (``[1, P]``): the
        Q-values of every action, those of the actions taken, and their targets from its target network (SB3's DQN
        target: terminations only)."""
        r = torch.from_numpy(rows)
        obs, nxt = self.b_obs[k, r].float().unsqueeze(0), self.b_next[k, r].float().unsqueeze(0)
        next_q = self.q_values(nxt, self.target[k:k + 1])[0].max(dim=1).values
        target = self.b_rew[k, r] + (1 - self.b_done[k, r]) * self.gamma[k, 0] * next_q
        q_all = self.forward(self.layers(params), obs)[0]
        return q_all, q_all.gather(1, self.b_act[k, r].unsqueeze(1)).squeeze(1), target

    # --- networks -----------------------------------------------------------------------------------------
    def _init_params(self) -> torch.Tensor:
        """nn.Linear's and nn.Conv2d's init (kaiming_uniform_(a=sqrt(5)) weights, uniform(+-1/sqrt(fan_in))
        biases), layer by layer, from each agent's own generator: SB3's q_net is the first user of the seeded
        torch generator. Images: MinAtarCNN's convolution (weights stored as ``[C*3*3, channels]``, the unfolded
        patch order) and its hidden layer come first, then SB3's Q-head."""
        shapes = []  # torch's weight shape of each layer, for the init
        sizes = [self.D, *self.hidden, self.n_actions]
        if self.image:
            h, w, c = self.image
            shapes.append((CNN_CHANNELS, c, CNN_KERNEL, CNN_KERNEL))
            sizes[0] = CNN_CHANNELS * (h - CNN_KERNEL + 1) * (w - CNN_KERNEL + 1)
        shapes += [(fan_out, fan_in) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        offset = 0
        for shape in shapes:
            fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
            self.layout.append((offset, fan_in, fan_out, offset + fan_in * fan_out))
            offset += fan_in * fan_out + fan_out
        flat = torch.empty(self.K, offset)
        for k, job in enumerate(self.jobs):
            gen = torch.Generator().manual_seed(job.seed)
            for shape, (o, fan_in, fan_out, ob) in zip(shapes, self.layout):
                w = torch.empty(shape)
                torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                b = torch.empty(fan_out)
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(b, -bound, bound, generator=gen)
                flat[k, o:ob] = w.reshape(fan_out, fan_in).T.reshape(-1)  # stored as [fan_in, fan_out] for x @ W
                flat[k, ob:ob + fan_out] = b
        return flat

    def layers(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Weight and bias views ``[K, in, out]``, ``[K, 1, out]`` of a ``[K, P]`` parameter tensor."""
        out = []
        for o, fan_in, fan_out, ob in self.layout:
            out += [flat[:, o:ob].view(-1, fan_in, fan_out), flat[:, ob:ob + fan_out].view(-1, 1, fan_out)]
        return out

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``[K, N, D] -> [K, N, actions]``: SB3's MLP (Linear, ReLU, ..., Linear) for all agents at once; images
        first go through MinAtarCNN's convolution (3x3, stride 1, ReLU) as one batched product over patches."""
        n_layers = len(params) // 2
        first = 0
        if self.image:
            h, w, c = self.image
            K, N = x.shape[0], x.shape[1]
            # one F.conv2d per agent on SB3's own input (MinAtarCNN.forward: float, channel-last permuted to NCHW,
            # so the same memory layout and the same kernel): bit-identical to SB3's q_net, where an unfolded batched
            # product rounded differently (its greedy actions parted from SB3's after a few hundred steps on some
            # CPUs), and faster (3.7 vs 8.6 ms forward and backward at 16 agents, batch 32)
            weights = params[0].transpose(1, 2).reshape(K, CNN_CHANNELS, c, CNN_KERNEL, CNN_KERNEL)
            images = x.float().reshape(K, N, h, w, c).permute(0, 1, 4, 2, 3)
            y = torch.stack([F.conv2d(images[k], weights[k], params[1][k, 0]) for k in range(K)])
            x = torch.relu(y).reshape(K, N, -1)  # channel-major, as nn.Flatten does
            first = 1
        for i in range(first, n_layers):
            x = torch.baddbmm(params[2 * i + 1], x, params[2 * i])
            if i < n_layers - 1:
                x = torch.relu(x)
        return x

    def q_values(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(self.layers(self.flat if flat is None else flat), x)

    def _encode(self, obs: Any) -> np.ndarray:
        """SB3's preprocess_obs, flattened: Discrete -> one-hot, Box and MultiBinary -> float32."""
        if isinstance(self.obs_space, gym.spaces.Discrete):
            out = np.zeros(self.D, dtype=np.float32)
            out[int(obs) - int(self.obs_space.start)] = 1.0
            return out
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    # --- one lock-step ------------------------------------------------------------------------------------
    def act(self, t: int, active: np.ndarray) -> np.ndarray:
        """SB3's _sample_action: uniform before learning_starts, else DQN.predict(deterministic=False)."""
        actions = np.zeros(self.K, dtype=np.int64)
        greedy = np.zeros(self.K, dtype=bool)
        for k in np.flatnonzero(active):
            if t < self.ls[k]:
                actions[k] = self.envs[k].action_space.sample()
            elif self.rs[k].rand() < self.eps[k]:
                actions[k] = self.envs[k].action_space.sample()
            else:
                greedy[k] = True
        if greedy.any():
            q = self.q_values(torch.from_numpy(self.obs).unsqueeze(1))
            actions[greedy] = q[:, 0].argmax(dim=1).numpy()[greedy]
        return actions

    def step(self, actions: np.ndarray, active: np.ndarray) -> None:
        """Step every active env and store its transition (the terminal observation as next obs, as SB3's
        _store_transition does); reset finished episodes."""
        idx = np.flatnonzero(active)
        prev_obs = self.obs[idx].copy()
        next_obs = np.empty((len(idx), self.D), dtype=np.float32)
        rewards = np.empty(len(idx), dtype=np.float32)
        terminated = np.empty(len(idx), dtype=np.float32)
        encode = None if self.flat_obs else self._encode
        for i, k in enumerate(idx):
            obs, r, term, trunc, _ = self.envs[k].step(actions[k])  # a NumPy integer, as SB3's DummyVecEnv passes
            next_obs[i] = obs if encode is None else encode(obs)
            rewards[i] = r
            terminated[i] = float(term)
            if self.control[k] is not None:
                # the float32 reward, as SB3's vec env hands it to callbacks
                self.control[k].on_step(int(self.stored[k]) + 1, float(rewards[i]), bool(term or trunc))
            if term or trunc:
                obs = self.envs[k].reset()[0]
            self.obs[k] = self._encode(obs) if (term or trunc) else next_obs[i]
        pos = torch.from_numpy(self.stored[idx] % self.buffer[idx])
        kk = torch.from_numpy(idx)
        self.b_obs[kk, pos] = torch.from_numpy(prev_obs).to(self.b_obs.dtype)
        self.b_next[kk, pos] = torch.from_numpy(next_obs).to(self.b_next.dtype)
        self.b_act[kk, pos] = torch.from_numpy(actions[idx])
        self.b_rew[kk, pos] = torch.from_numpy(rewards)
        self.b_done[kk, pos] = torch.from_numpy(terminated)
        self.stored[idx] += 1

    def train(self, agents: np.ndarray, progress: np.ndarray) -> None:
        """DQN.train(gradient_steps, batch_size) for the given agents: lr from the schedule once, then per
        gradient step: sample, TD target from the target net, smooth L1, clip_grad_norm_(10), Adam."""
        lr = np.zeros(self.K)
        for k in agents:
            lr[k] = self.lr_sched[k](progress[k])
        lr = torch.from_numpy(lr)
        for g in range(int(self.gs[agents].max())):
            mask = np.zeros(self.K, dtype=bool)
            mask[agents[self.gs[agents] > g]] = True
            losses = self._gradient_step(mask, lr)
            for k in np.flatnonzero(mask):
                if not math.isfinite(losses[k]):
                    self.fail(k, DivergenceError(f"non-finite TD loss ({losses[k]}) at step {self.stored[k]}"))
                self.last_loss[k] = losses[k]

    def _gradient_step(self, mask: np.ndarray, lr: torch.Tensor) -> np.ndarray:
        K, B = self.K, self.batch
        inds = np.zeros((K, B), dtype=np.int64)
        for k in np.flatnonzero(mask):
            full = self.stored[k] >= self.buffer[k]
            inds[k] = self.rs[k].randint(0, self.buffer[k] if full else self.stored[k], size=B)
            # ReplayBuffer._get_samples then draws env indices, randint(0, high=n_envs = 1): a range of one value,
            # which NumPy fills without drawing from the generator, so it is skipped here
        rows = torch.from_numpy(inds + np.arange(K)[:, None] * self.b_obs.shape[1]).view(-1)  # rows of [K * n, ...]
        obs, nxt, act, rew, done = (b.view(K * b.shape[1], -1).index_select(0, rows).view(K, B, -1)
                                    for b in (self.b_obs, self.b_next, self.b_act, self.b_rew, self.b_done))
        obs, nxt, act, rew, done = obs.float(), nxt.float(), act.squeeze(2), rew.squeeze(2), done.squeeze(2)
        next_q = self.q_values(nxt, self.target).max(dim=2).values
        target = rew + (1 - done) * self.gamma * next_q
        layers = self.layers(self.flat)
        q = self.forward(layers, obs).gather(2, act.unsqueeze(2)).squeeze(2)
        loss = torch.nn.functional.smooth_l1_loss(q, target, reduction="none").mean(dim=1)
        every = bool(mask.all())
        m = torch.from_numpy(mask)
        total = loss.sum() if every else torch.where(m, loss, torch.zeros_like(loss)).sum()
        # gradients of the layer views, concatenated in `flat`'s order (cheaper than the gradient of `flat`)
        grad = torch.cat([g.reshape(K, -1) for g in torch.autograd.grad(total, layers)], dim=1)
        with torch.no_grad():
            norm = grad.norm(dim=1, keepdim=True)  # clip_grad_norm_(parameters, 10) of each agent
            grad.mul_(torch.clamp(MAX_GRAD_NORM / (norm + 1e-6), max=1.0))
            self.adam_t += m.double()
            b1, b2 = ADAM_BETAS
            t = self.adam_t.clamp(min=1)
            step_size = (lr / (1 - b1 ** t)).float().view(K, 1)
            bc2_sqrt = torch.sqrt(1 - b2 ** t).float().view(K, 1)
            if every:
                self._adam(self.flat, grad, self.m, self.v, step_size, bc2_sqrt)
            else:
                kk = torch.from_numpy(np.flatnonzero(mask))
                p, m1, v = self.flat[kk], self.m[kk], self.v[kk]
                self._adam(p, grad[kk], m1, v, step_size[kk], bc2_sqrt[kk])
                self.flat[kk], self.m[kk], self.v[kk] = p, m1, v
        return loss.detach().numpy()

    @staticmethod
    def _adam(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step_size: torch.Tensor,
              bc2_sqrt: torch.Tensor) -> None:
        """torch.optim.Adam's single-tensor step (defaults), in place, with per-agent lr and step counts."""
        b1, b2 = ADAM_BETAS
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(bc2_sqrt).add_(ADAM_EPS)
        p.sub_(torch.div(m, denom, out=denom).mul_(step_size))  # addcdiv_(m, denom, value=-step_size)

    def update_target(self, agents: np.ndarray) -> None:
        """polyak_update(tau=1): the target network becomes a copy of the online one."""
        if len(agents):
            kk = torch.from_numpy(agents)
            with torch.no_grad():
                self.target[kk] = self.flat[kk]

    def final_starts(self) -> list[Any]:
        """Each agent's online network as a :class:`~hypermeta.qstart.QStart` (None where it failed), with the
        gradient of its TD loss on the last :data:`~hypermeta.controller.RECENT` stored transitions (the target
        network's targets) at those weights as ``manifest["query_grad"]`` (the flat layout)."""
        from hypermeta.controller import RECENT, recent_rows
        from hypermeta.qstart import QStart

        sizes = [self.D, *self.hidden, self.n_actions]
        out = []
        for k in range(self.K):
            if not self.healthy[k]:
                out.append(None)
                continue
            rows = recent_rows(int(self.stored[k]), int(self.buffer[k]), min(RECENT, int(self.buffer[k])))
            params = self.flat[k:k + 1].detach().clone().requires_grad_(True)
            _, q, target = self.td_on_rows(k, rows, params)
            grad = torch.autograd.grad(F.smooth_l1_loss(q, target), params)[0][0]
            out.append(QStart.from_flat(self.flat[k].detach().numpy().copy(), sizes,
                                        {"query_grad": grad.numpy().tolist()}))
        return out

    def fail(self, k: int, error: BaseException) -> None:
        if self.failed[k] is None:
            self.failed[k] = error
            self.healthy[k] = False
            with torch.no_grad():  # keep NaNs out of every shared computation from now on
                for p in (self.flat, self.target, self.m, self.v):
                    p[k].zero_()

    # --- checks and evaluations ---------------------------------------------------------------------------
    def check(self, k: int, step: int) -> None:
        """The SB3 runner's check_finite at each evaluation: loss, weights, Q-values of stored observations."""
        where = f"at step {step}"
        if not math.isfinite(self.last_loss[k]):
            raise DivergenceError(f"non-finite TD loss ({self.last_loss[k]}) {where}")
        if not torch.isfinite(self.flat[k]).all():
            raise DivergenceError(f"non-finite weights {where}")
        n = int(min(self.stored[k] - 1, self.buffer[k], 256))  # SB3 stores this step's transition after the check
        if n:
            q = self.q_values(self.b_obs[k:k + 1, :n].float(), self.flat[k:k + 1])
            if not torch.isfinite(q).all():
                raise DivergenceError(f"non-finite Q-values {where}")

    def evaluate(self, agents: list[int]) -> dict[int, float]:
        """Greedy episodes on fresh envs seeded like the SB3 runner's (``make_vec_env(seed=eval_seed(seed))``:
        seeded first reset, unseeded resets after); returns as Monitor rounds them; all agents in lock-step."""
        envs = {k: make_fast_env(self.jobs[k].task) for k in agents}
        obs = np.zeros((self.K, self.D), dtype=np.float32)
        for k in agents:
            obs[k] = self._encode(envs[k].reset(seed=eval_seed(self.jobs[k].seed))[0])
        episodes = {k: [] for k in agents}
        running = {k: 0.0 for k in agents}
        todo = set(agents)
        while todo:
            greedy = self.q_values(torch.from_numpy(obs).unsqueeze(1))[:, 0].argmax(dim=1).numpy()
            for k in list(todo):
                o, r, term, trunc, _ = envs[k].step(greedy[k])
                running[k] += float(r)
                if term or trunc:
                    episodes[k].append(round(running[k], 6))
                    running[k] = 0.0
                    if len(episodes[k]) >= self.jobs[k].measurement.eval_episodes:
                        todo.discard(k)
                        continue
                    o = envs[k].reset()[0]
                obs[k] = self._encode(o)
        for env in envs.values():
            env.close()
        return {k: float(np.mean(episodes[k])) for k in agents}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def train_group(jobs: Sequence[Job], on_eval: Sequence[OnEval | None] | None = None,
                progress: Callable[[int], None] | None = None,
                final_weights: list | None = None) -> list[Curve | BaseException]:
    """Train ``jobs`` (one group: same shapes) in lock-step; a curve per job, or the error that stopped it.

    ``on_eval[i](step, mean_return)`` is called after each evaluation of job ``i`` and may raise (e.g.
    ``optuna.TrialPruned``) to stop that job alone; ``progress(n)`` is told every ``n`` agent-steps done;
    ``final_weights``, when a list, gets each job's final online-network parameters (:class:`~hypermeta.qstart.QStart`
    of an MLP, None for a failed job), and the replay buffers' last transitions' TD-loss gradient at them
    (``QStart.manifest["query_grad"]``, the engine's flat layout: first-order MAML's outer gradient).
    """
    torch.set_grad_enabled(True)
    agents = _Agents(jobs)
    on_eval = list(on_eval) if on_eval is not None else [None] * len(jobs)
    curves = [Curve() for _ in jobs]
    start = time.perf_counter()
    try:
        any_eval = set().union(*agents.eval_steps)
        for t in range(int(agents.T_end.max())):
            active = (t < agents.T_end) & agents.healthy
            if not active.any():
                break
            agents.step(agents.act(t, active), active)
            n = t + 1  # SB3's num_timesteps after the step
            if n in any_eval:
                due = [int(k) for k in np.flatnonzero(active) if n in agents.eval_steps[k]]
                if due:
                    _evaluate(agents, due, n, curves, on_eval)
            progress_remaining = 1.0 - n / agents.T
            if agents.steered:  # SB3's callbacks run before its _on_step (target update, epsilon)
                agents.steer(n, active & agents.healthy)
            agents.update_target(np.flatnonzero(active & (n % agents.tui == 0)))
            for k in np.flatnonzero(active & (n <= agents.eps_last)):  # later values equal the last one
                agents.eps[k] = agents.eps_sched[k](progress_remaining[k])
            alive = active & agents.healthy
            learners = np.flatnonzero(alive & (n % agents.tf == 0) & (n > agents.ls))
            if len(learners):
                agents.train(learners, progress_remaining)
            if progress is not None:
                progress(int(active.sum()))
        if final_weights is not None:
            final_weights.extend(agents.final_starts())
    finally:
        agents.close()
    wall = time.perf_counter() - start
    results: list[Curve | BaseException] = []
    for k, curve in enumerate(curves):
        curve.wall_time, curve.env_steps = wall / len(jobs), int(min(agents.stored[k], agents.T_end[k]))
        if agents.control[k] is not None:
            curve.control = [(int(step), float(u_lr), float(u_eps)) for step, _, u_lr, u_eps in agents.control[k].log]
        results.append(agents.failed[k] if agents.failed[k] is not None else curve)
    return results


@functools.lru_cache(maxsize=256)
def _task_features(task: str) -> np.ndarray:
    """A task's features (probed once per process: a controller's meta-training runs each task many times)."""
    from hypermeta.seeds import FEATURE_SEED
    from hypermeta.tasks.features import probe_features

    return probe_features(task, seed=FEATURE_SEED).values


def _settles_at(schedule: Any, total: int) -> int:
    """The step ``n`` (SB3's num_timesteps) from which ``schedule`` at progress remaining ``1 - n / total``, as
    :func:`train_group` computes it, keeps one value: a :class:`ShapedSchedule` past its window (``t >= 1``, the
    same float64 operations, monotone in ``n``); any other schedule never (it is called at every step)."""
    if type(schedule) is not ShapedSchedule:
        return np.iinfo(np.int64).max
    n = np.arange(1, total + 1)
    settled = np.flatnonzero((1.0 - (1.0 - n / total)) / schedule.end_fraction >= 1.0)
    return int(n[settled[0]]) if len(settled) else total


def _evaluate(agents: _Agents, due: list[int], step: int, curves: list[Curve], on_eval: list[OnEval | None]) -> None:
    healthy = []
    for k in due:
        try:
            agents.check(k, step)
            healthy.append(k)
        except DivergenceError as exc:
            agents.fail(k, exc)
    for k, mean_return in agents.evaluate(healthy).items():
        if not math.isfinite(mean_return):
            agents.fail(k, DivergenceError(f"non-finite evaluation return at step {step}"))
            continue
        curves[k].steps.append(step)
        curves[k].returns.append(mean_return)
        if on_eval[k] is not None:
            try:
                on_eval[k](step, mean_return)
            except Exception as exc:  # noqa: BLE001  # e.g. optuna.TrialPruned: this agent stops here
                agents.fail(k, exc)


class BatchedRunner(Runner):
    """Trains jobs in lock-step batches, grouped by tensor shapes, of at most :data:`MAX_AGENTS` for the group's
    net, or ``max_agents`` where that is smaller (results do not depend on the batch size)."""

    name = "batched"

    def __init__(self, max_agents: int | None = None, progress: bool = False) -> None:
        if max_agents is not None and max_agents < 1:
            raise ValueError(f"max_agents must be >= 1, got {max_agents}")
        self.max_agents, self.progress = max_agents, progress

    def run(self, job: Job, on_eval: OnEval | None = None) -> Curve:
        result = train_group([job], [on_eval])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def batches(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """Jobs split into lock-step batches of one group each, in the order of the jobs: batches are sorted by
        their first job's position, so jobs listed early finish early whatever their group."""
        groups: dict[tuple, list[tuple[int, Job]]] = {}
        shapes: dict[str, tuple] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(group_key(job, shapes), []).append((i, job))
        out = []
        for key, group in groups.items():
            limit = MAX_AGENTS["cnn" if key[2][:1] == ("cnn",) else group[0][1].config.net_arch]
            size = min(self.max_agents, limit) if self.max_agents else limit
            out += [group[i:i + size] for i in range(0, len(group), size)]
        return [[job for _, job in batch] for batch in sorted(out, key=lambda b: b[0][0])]

    def run_many(self, jobs: Sequence[Job], workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        batches = self.batches(jobs)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(sum(-(-j.measurement.timesteps // j.config.train_freq) * j.config.train_freq
                                     for j in jobs)), desc="agent-steps", unit="step", unit_scale=True)
        threads = torch.get_num_threads()
        try:
            if workers == 1 and not distributed():  # one torch thread, as in worker processes: more only cost with
                # nets this small (and with other processes on the machine they fight over the cores: 2.5k instead of
                # 18k agent-steps/s)
                torch.set_num_threads(1)
                for batch in batches:
                    yield from zip(batch, train_group(batch, progress=None if bar is None else bar.update))
                return
            for batch, curves in pool_results(_train_group_single_thread, batches, workers):
                if bar is not None:
                    bar.update(sum(int(c.env_steps) if isinstance(c, Curve) else 0 for c in curves))
                yield from zip(batch, curves)
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()


def _train_group_single_thread(batch: list[Job]) -> list[Curve | BaseException]:
    torch.set_num_threads(1)
    return train_group(batch)
