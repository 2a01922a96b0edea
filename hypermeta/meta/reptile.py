"""``reptile`` (Nichol et al. 2018): ``inner_steps`` Adam steps on one task's loss, then
``theta += reptile_eps * (theta_task - theta)``, averaged over ``tasks_per_batch`` tasks."""

from __future__ import annotations

import torch

from hypermeta.meta.data import SchedulePredictor, TaskBatch, init_member, sample_tasks, task_loss
from hypermeta.meta.method import Method


class Reptile(Method):
    name = "reptile"

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        cfg = self.cfg
        net, rng, _ = init_member(seed, n_features, cfg.hidden)
        outer = torch.optim.SGD(net.parameters(), lr=cfg.reptile_eps)  # theta -= eps * (theta - theta_task)
        for _ in range(cfg.meta_iterations):
            batch = sample_tasks(rng, tasks, cfg.tasks_per_batch)
            start = [p.detach().clone() for p in net.parameters()]
            deltas = [torch.zeros_like(p) for p in start]
            for t in batch:
                with torch.no_grad():
                    for p, p0 in zip(net.parameters(), start):
                        p.copy_(p0)
                inner = self.adapt_optimizer(net.parameters())
                for _ in range(cfg.inner_steps):
                    inner.zero_grad()
                    task_loss(net(t.x), t.codes, t.w).backward()
                    inner.step()
                for d, p, p0 in zip(deltas, net.parameters(), start):
                    d += (p.detach() - p0) / len(batch)
            with torch.no_grad():
                for p, p0, d in zip(net.parameters(), start, deltas):
                    p.copy_(p0)
                    p.grad = -d
            outer.step()
        return net
