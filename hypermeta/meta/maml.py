"""``maml`` (Finn et al. 2017), second order with ``torch.func`` (the outer gradient flows through the inner
SGD steps), and ``fomaml``, its first-order variant (inner gradients treated as constants). Each task's
trials are split into support (inner) and query (outer) halves."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch.func import functional_call, grad

from hypermeta.meta.data import SchedulePredictor, TaskBatch, init_member, sample_tasks, task_loss
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
        params = dict(net.named_parameters())

        def loss_of(p: dict[str, torch.Tensor], x: torch.Tensor, codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return task_loss(functional_call(net, p, (x,)), codes, w)

        inner_grad = grad(loss_of)
        for _ in range(cfg.meta_iterations):
            batch = sample_tasks(rng, tasks, cfg.tasks_per_batch)
            outer.zero_grad()
            total = torch.zeros(())
            for t in batch:
                n = len(t.codes)
                perm = torch.randperm(n, generator=gen)
                support = perm[: max(n // 2, 1)]
                query = perm[max(n // 2, 1):] if n > 1 else perm
                s_codes, s_w = t.subset(support, cfg.temperature)
                q_codes, q_w = t.subset(query, cfg.temperature)
                fast = params
                for _ in range(cfg.inner_steps):
                    g = inner_grad(fast, t.x, s_codes, s_w)
                    if not self.second_order:
                        g = {k: v.detach() for k, v in g.items()}
                    fast = {k: fast[k] - cfg.inner_lr * g[k] for k in fast}
                total = total + loss_of(fast, t.x, q_codes, q_w) / len(batch)
            total.backward()
            outer.step()
        return net


class FOMAML(MAML):
    name = "fomaml"
    second_order = False
