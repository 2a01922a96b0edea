"""``multitask``: a surrogate ``S(features, code) -> objective`` is fitted on every trial of every task; the
predictor is trained to maximise ``S`` on the training tasks, anchored by the per-task loss.

``surrogate`` (:class:`SurrogateRanked`): the same surrogate; the predictor regresses onto the configurations it
ranks highest for (jittered) training-task features."""

from __future__ import annotations

import torch
from torch import nn

from hypermeta.meta.data import SchedulePredictor, Surrogate, TaskBatch, init_member, stack_tasks
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
        codes, weights = stack_tasks(tasks)[1:]
        for _ in range(cfg.meta_iterations):
            pred = net(xs)
            gain = surrogate(xs, pred).mean()
            # every task's task_loss at once (padding has weight 0)
            anchor = (weights * ((codes - pred[:, None]) ** 2).sum(-1)).sum(-1).mean()
            loss = -gain + cfg.anchor * anchor
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net


class SurrogateRanked(MultiTask):
    """``surrogate``: the predictor regresses onto the configurations the surrogate ranks highest, not onto the
    measured trials: for a feature vector ``x`` its target is the soft-argmax (``softmax(S(x, c) / temperature)``
    over every configuration ``c`` tried on any training task). Targets are computed for the training tasks'
    features jittered by ``surrogate_jitter`` standard deviations each iteration, so between and around the
    training tasks the predictor follows what the surrogate learnt from all tasks together."""

    name = "surrogate"

    def train_member(self, tasks: list[TaskBatch], n_features: int, seed: int) -> SchedulePredictor:
        cfg = self.cfg
        surrogate = self.train_surrogate(tasks, n_features, seed)
        net, _, gen = init_member(seed, n_features, cfg.hidden)
        candidates = torch.unique(torch.cat([t.codes for t in tasks]), dim=0)  # (C, dim)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.multitask_lr)
        xs = torch.stack([t.x for t in tasks])
        for _ in range(cfg.meta_iterations):
            x = xs + cfg.surrogate_jitter * torch.randn(xs.shape, generator=gen)
            with torch.no_grad():
                flat = x[:, None].expand(-1, len(candidates), -1).reshape(-1, x.shape[1])
                scores = surrogate(flat, candidates.repeat(len(x), 1)).reshape(len(x), len(candidates))
                weights = torch.softmax(scores / cfg.temperature, dim=-1)
            pred = net(x)
            loss = (weights * ((candidates[None] - pred[:, None]) ** 2).sum(-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net
