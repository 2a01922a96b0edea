"""``reptile`` (Nichol et al. 2018): ``inner_steps`` Adam steps on one task's loss, then
``theta += reptile_eps * (theta_task - theta)``, averaged over ``tasks_per_batch`` tasks.

The tasks of a meta-batch adapt side by side (:meth:`SchedulePredictor.forward_stacked`: one copy of the
parameters per task, each with its own Adam state, since Adam is elementwise): the same algorithm as one task
after another, several times faster on CPU, where these tiny networks are bound by per-call overhead."""

from __future__ import annotations

import torch

from hypermeta.meta.data import SchedulePredictor, TaskBatch, init_member, sample_tasks, stack_tasks, task_loss
from hypermeta.meta.method import Method


class Reptile(Method):
    name = "reptile"

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        cfg = self.cfg
        net, rng, _ = init_member(seed, n_features, cfg.hidden)
        outer = torch.optim.SGD(net.parameters(), lr=cfg.reptile_eps)  # theta -= eps * (theta - theta_task)
        for _ in range(cfg.meta_iterations):
            batch = sample_tasks(rng, tasks, cfg.tasks_per_batch)
            x, codes, w = stack_tasks(batch)
            fast = [p.requires_grad_() for p in net.stacked(len(batch))]
            inner = self.adapt_optimizer(fast)
            for _ in range(cfg.inner_steps):
                inner.zero_grad()
                task_loss(net.forward_stacked(fast, x), codes, w).backward()
                inner.step()
            with torch.no_grad():
                for p, f in zip(net.body.parameters(), fast):
                    p.grad = -(f - p).mean(0)
            outer.step()
        return net
