"""``maml`` (Finn et al. 2017), second order (``create_graph``: the outer gradient flows through the inner
SGD steps), and ``fomaml``, its first-order variant (inner gradients treated as constants). Each task's
trials are split into support (inner) and query (outer) halves. The tasks of a meta-batch take their inner
steps side by side (:meth:`SchedulePredictor.forward_stacked`, one copy of the parameters per task): the same
algorithm as one task after another, several times faster on CPU."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from hypermeta.meta.data import (SchedulePredictor, TaskBatch, init_member, sample_tasks, stack_tasks, task_loss,
                                 task_weights)
from hypermeta.meta.method import Method


class MAML(Method):
    name = "maml"
    second_order: ClassVar[bool] = True

    def adapt_optimizer(self, params: Any, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr or self.cfg.inner_lr)  # the inner loop's own optimizer

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        cfg = self.cfg
        net, rng, gen = init_member(seed, n_features, cfg.hidden)
        outer = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
        params = list(net.body.parameters())
        for _ in range(cfg.meta_iterations):
            batch = sample_tasks(rng, tasks, cfg.tasks_per_batch)
            outer.zero_grad()
            x, codes, _ = stack_tasks(batch)
            s_w, q_w = torch.zeros(codes.shape[:2]), torch.zeros(codes.shape[:2])
            for i, t in enumerate(batch):  # the split of each task's trials: weights over one half, zero elsewhere
                n = len(t.codes)
                perm = torch.randperm(n, generator=gen)
                support = perm[: max(n // 2, 1)]
                query = perm[max(n // 2, 1):] if n > 1 else perm
                s_w[i, support] = task_weights(t.y[support], cfg.temperature)
                q_w[i, query] = task_weights(t.y[query], cfg.temperature)
            fast = [p.expand(len(batch), *p.shape) for p in params]  # views: the outer gradient reaches params
            for _ in range(cfg.inner_steps):
                support_loss = task_loss(net.forward_stacked(fast, x), codes, s_w)
                g = torch.autograd.grad(support_loss, fast, create_graph=self.second_order)
                fast = [f - cfg.inner_lr * gi for f, gi in zip(fast, g)]
            total = task_loss(net.forward_stacked(fast, x), codes, q_w) / len(batch)
            total.backward()
            outer.step()
        return net


class FOMAML(MAML):
    name = "fomaml"
    second_order = False
