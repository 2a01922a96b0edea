"""``multitask``: a surrogate ``S(features, code) -> objective`` is fitted on every trial of every task; the
predictor is trained to maximise ``S`` on the training tasks, anchored by the per-task loss."""

from __future__ import annotations

import torch
from torch import nn

from hypermeta.meta.data import SchedulePredictor, Surrogate, TaskBatch, init_member, task_loss
from hypermeta.meta.method import Method


class MultiTask(Method):
    name = "multitask"

    def train_surrogate(self, tasks: list[TaskBatch], n_features: int, seed: int) -> Surrogate:
        cfg = self.cfg
        torch.manual_seed(seed)
        model = Surrogate(n_features)
        xs = torch.cat([t.x.expand(len(t.codes), -1) for t in tasks])
        codes = torch.cat([t.codes for t in tasks])
        ys = torch.cat([t.y for t in tasks])
        opt = torch.optim.Adam(model.parameters(), lr=cfg.surrogate_lr, weight_decay=cfg.surrogate_weight_decay)
        for _ in range(cfg.surrogate_epochs):
            opt.zero_grad()
            nn.functional.mse_loss(model(xs, codes), ys).backward()
            opt.step()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        cfg = self.cfg
        surrogate = self.train_surrogate(tasks, n_features, seed)
        net, _, _ = init_member(seed, n_features, cfg.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.multitask_lr)
        xs = torch.stack([t.x for t in tasks])
        for _ in range(cfg.meta_iterations):
            pred = net(xs)
            gain = surrogate(xs, pred).mean()
            anchor = torch.stack([task_loss(pred[i], t.codes, t.w) for i, t in enumerate(tasks)]).mean()
            loss = -gain + cfg.anchor * anchor
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net
