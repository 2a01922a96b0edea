"""The meta-learner on synthetic task distributions where the right answer is known."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from hypermeta import FEATURE_NAMES, DQNConfig, MetaModel, MetaTrainConfig, OutOfDistributionWarning, meta_train
from hypermeta.meta.data import SPACE, TaskData
from hypermeta.meta.method import METHODS

D = len(FEATURE_NAMES)
CONT = [i for i, n in enumerate(SPACE.encoded_names) if "=" not in n]  # numeric (non one-hot) code dims
LR, FRAC = SPACE.encoded_names.index("lr_initial"), SPACE.encoded_names.index("eps_fraction")
NETWORK_FREE = ("nearest-task", "k-nearest", "ridge-portfolio", "best-fixed")
TESTED = [m for m in METHODS if m not in ("best-fixed", "k-nearest", "ridge-portfolio")]  # portfolio: test_meta2.py
FAST = dict(ensemble=2, meta_iterations=150, surrogate_epochs=300, tasks_per_batch=4, inner_steps=3)


def optimum(features: np.ndarray) -> np.ndarray:
    """The known best code: lr and epsilon fraction follow the first two features, the rest sit mid-range."""
    best = np.full(SPACE.dim, 0.5)
    best[LR] = 1 / (1 + np.exp(-1.5 * features[0]))
    best[FRAC] = 1 / (1 + np.exp(1.5 * features[1]))
    return best


def random_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([SPACE.encode(SPACE.decode(rng.uniform(size=SPACE.dim))) for _ in range(n)])


def objective(codes: np.ndarray, best: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1 - 3 * ((codes[:, CONT] - best[CONT]) ** 2).mean(1) + rng.normal(0, 0.01, len(codes))


def synthetic_tasks(n_tasks: int, seed: int, trials: int = 40) -> list[TaskData]:
    """Tasks with their own random trials (no shared portfolio: best-fixed is tested in test_meta2.py)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for k in range(n_tasks):
        f = rng.normal(size=D)
        codes = random_codes(rng, trials)
        tasks.append(TaskData(f"synthetic-{seed}-{k}", f, codes, objective(codes, optimum(f), rng)))
    return tasks


@pytest.fixture(scope="module")
def train_tasks():
    return synthetic_tasks(24, seed=0)


@pytest.fixture(scope="module")
def models(train_tasks):
    return {m: meta_train(train_tasks, MetaTrainConfig(method=m, seed=0, **FAST)) for m in TESTED}


def _error(model: MetaModel, tasks: list[TaskData]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDistributionWarning)
        return float(np.mean([np.abs(model.predict(t.features).code[[LR, FRAC]] - optimum(t.features)[[LR, FRAC]]).mean()
                              for t in tasks]))


@pytest.mark.parametrize("method", [m for m in METHODS if m not in NETWORK_FREE])
def test_learned_methods_beat_one_config_for_all(models, train_tasks, method):
    test_tasks = synthetic_tasks(12, seed=1)
    constant = np.mean([t.best_code() for t in train_tasks], axis=0)  # the best "one size fits all" guess
    constant_error = float(np.mean([np.abs(constant[[LR, FRAC]] - optimum(t.features)[[LR, FRAC]]).mean()
                                    for t in test_tasks]))
    assert _error(models[method], test_tasks) < 0.8 * constant_error


def test_nearest_task_returns_the_best_config_of_the_nearest_training_task(models, train_tasks):
    model = models["nearest-task"]
    target = train_tasks[5]
    pred = model.predict(target.features + 1e-3)
    assert pred.nearest_task == target.task
    np.testing.assert_allclose(pred.code, target.best_code())


@pytest.mark.parametrize("method", TESTED)
def test_predictions_depend_on_the_task_and_round_trip(models, train_tasks, method):
    """Different tasks get different schedules (a constant predictor fails), and a prediction's config is the
    decoded code and survives JSON."""
    preds = [models[method].predict(t.features, warn=False) for t in train_tasks]
    codes = np.stack([p.code for p in preds])
    assert codes[:, [LR, FRAC]].std(0).min() > 0.02  # the lr and epsilon fraction vary over the tasks
    space = SPACE
    for p in preds[:3]:
        assert p.config == space.decode(p.code)
        np.testing.assert_allclose(space.encode(p.config)[CONT], p.code[CONT], atol=1e-6)
        assert DQNConfig.from_dict(json.loads(json.dumps(p.to_dict()))["config"]) == p.config


@pytest.mark.parametrize("method", TESTED)
def test_member_codes_are_what_the_prediction_averages(models, train_tasks, method):
    model = models[method]
    for t in train_tasks[:3]:
        codes = model.member_codes(t.features)
        assert codes.shape == ((1 if method in NETWORK_FREE else FAST["ensemble"]), SPACE.dim)
        pred = model.predict(t.features, warn=False, fallback=False)
        np.testing.assert_allclose(codes.mean(0), pred.code)
        assert pred.disagreement == pytest.approx(float(codes.std(0).mean()))
    with pytest.raises(ValueError, match="finite numbers"):
        model.member_codes(np.zeros(D + 1))


@pytest.mark.parametrize("method", [m for m in METHODS if m not in NETWORK_FREE])
def test_meta_training_is_deterministic(train_tasks, method):
    """Ensembles of several members (bootstrap resamples, per-member seeds), as shipped, every method."""
    cfg = MetaTrainConfig(method=method, seed=7, ensemble=3, meta_iterations=20, inner_steps=2, surrogate_epochs=20)
    a, b = meta_train(train_tasks, cfg), meta_train(train_tasks, cfg)
    other = meta_train(train_tasks, MetaTrainConfig(**{**cfg.__dict__, "seed": 8}))
    for t in train_tasks[:3]:
        pa, pb = a.predict(t.features, warn=False), b.predict(t.features, warn=False)
        np.testing.assert_array_equal(pa.code, pb.code)
        assert pa.disagreement == pb.disagreement > 0  # the members really differ from each other
    assert not np.array_equal(a.predict(train_tasks[0].features, warn=False).code,
                              other.predict(train_tasks[0].features, warn=False).code)  # the seed matters


def test_out_of_distribution_warning(models, train_tasks):
    model = models["reptile"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDistributionWarning)
        assert not model.predict(train_tasks[0].features).out_of_distribution  # a training task: no warning
    # far in ONE feature only: the distance threshold (1.5x the largest leave-one-out distance) must catch it
    z_far = model.thresholds["distance"] * 1.2 * model.std[0]
    far = train_tasks[0].features.copy()
    far[0] += z_far
    with pytest.warns(OutOfDistributionWarning, match="from the nearest training task"):
        pred = model.predict(far)
    assert pred.out_of_distribution and not any("disagrees" in r for r in pred.reasons)
    near = train_tasks[0].features.copy()
    near[0] += 0.5 * model.thresholds["distance"] / 1.5 * model.std[0]
    assert not model.predict(near, warn=False).out_of_distribution


def test_ensemble_disagreement_alone_flags_out_of_distribution(models, train_tasks):
    """A task close to the training tasks on which the members disagree far more than they ever did."""
    import copy

    model = copy.deepcopy(models["reptile"])
    with torch.no_grad():  # make one member disagree wildly with the other
        model.members[1].body[-1].bias.add_(torch.linspace(-20, 20, model.members[1].body[-1].bias.numel()))
    pred = model.predict(train_tasks[0].features, warn=False)
    assert pred.nearest_distance == 0.0  # a training task: the distance test passes ...
    assert pred.out_of_distribution and any("the ensemble disagrees" in r for r in pred.reasons)  # ... this one not


@pytest.mark.parametrize("method", TESTED)
def test_adapt_moves_towards_a_new_tasks_optimum(models, method):
    rng = np.random.default_rng(11)
    f = rng.normal(size=D)
    best = optimum(f)
    best[LR] = 0.05 if best[LR] > 0.5 else 0.95  # this task's optimum is not what its features suggest
    codes = np.clip(best + rng.normal(0, 0.05, (8, SPACE.dim)), 0, 1)
    trials = [(SPACE.decode(c), float(v)) for c, v in zip(codes, objective(codes, best, rng))]
    model = models[method]
    before = abs(model.predict(f, warn=False).code[LR] - best[LR])
    adapted = model.adapt(trials, f, steps=30)
    after = abs(adapted.predict(f, warn=False).code[LR] - best[LR])
    assert after < 0.5 * before
    assert abs(model.predict(f, warn=False).code[LR] - best[LR]) == pytest.approx(before)  # original unchanged
    with pytest.raises(ValueError, match="at least one"):
        model.adapt([], f)


def test_weights_round_trip_and_refuse_what_they_should(models, tmp_path):
    model = models["maml"]
    path = model.save(tmp_path / "w")
    assert path.suffix == ".safetensors" and (tmp_path / "w.json").exists()
    loaded = MetaModel.load(path)
    f = np.random.default_rng(5).normal(size=D)
    np.testing.assert_allclose(loaded.predict(f, warn=False).code, model.predict(f, warn=False).code, rtol=1e-6)
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["method"] == "maml" and meta["feature_names"] == list(FEATURE_NAMES) and len(meta["training_tasks"]) == 24

    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="pickle files .* are refused"):
        MetaModel.load(tmp_path / "w.pt")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file")
    (tmp_path / "bad.json").write_text((tmp_path / "w.json").read_text())
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        MetaModel.load(bad)
    assert meta["format_version"] == "1"  # a network method: older hypermeta versions read it
    for key, value in (("space_version", "0"), ("feature_version", "0"), ("format_version", "3")):
        (tmp_path / "w.json").write_text(json.dumps({**meta, key: value}))
        with pytest.raises(ValueError, match=f"written with {key} '{value}'.*retrain"):
            MetaModel.load(path)
    (tmp_path / "w.json").write_text(json.dumps({**meta, "method": "anil"}))  # a method this version lacks
    with pytest.raises(ValueError, match="method must be one of"):
        MetaModel.load(path)


def test_bad_training_settings_fail_clearly(train_tasks):
    with pytest.raises(ValueError, match="method must be one of"):
        MetaTrainConfig(method="anil")
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        MetaTrainConfig(inner_lr=0)
    with pytest.raises(ValueError, match="need as many objectives as codes"):
        TaskData("t", np.zeros(D), np.zeros((2, SPACE.dim)), np.zeros(3))


def _one_task_after_another(method: str, tasks: list, cfg: MetaTrainConfig, n_features: int):
    """Reference: Reptile and (FO)MAML as published, each task of a meta-batch adapting on its own network."""
    from torch.func import functional_call, grad

    from hypermeta.meta.data import init_member, sample_tasks, task_loss, task_weights

    net, rng, gen = init_member(0, n_features, cfg.hidden)
    outer = (torch.optim.SGD(net.parameters(), lr=cfg.reptile_eps) if method == "reptile"
             else torch.optim.Adam(net.parameters(), lr=cfg.outer_lr))
    params = dict(net.named_parameters())
    loss_of = lambda p, x, c, w: task_loss(functional_call(net, p, (x,)), c, w)  # noqa: E731
    for _ in range(cfg.meta_iterations):
        batch = sample_tasks(rng, tasks, cfg.tasks_per_batch)
        outer.zero_grad()
        start = [p.detach().clone() for p in net.parameters()]
        deltas, total = [torch.zeros_like(p) for p in start], torch.zeros(())
        for t in batch:
            if method == "reptile":
                with torch.no_grad():
                    for p, p0 in zip(net.parameters(), start):
                        p.copy_(p0)
                inner = torch.optim.Adam(net.parameters(), lr=cfg.adam_inner_lr)
                for _ in range(cfg.inner_steps):
                    inner.zero_grad()
                    task_loss(net(t.x), t.codes, t.w).backward()
                    inner.step()
                for d, p, p0 in zip(deltas, net.parameters(), start):
                    d += (p.detach() - p0) / len(batch)
                continue
            n = len(t.codes)
            perm = torch.randperm(n, generator=gen)
            support, query = perm[: max(n // 2, 1)], perm[max(n // 2, 1):]
            s_codes, s_w = t.codes[support], task_weights(t.y[support], cfg.temperature)
            q_codes, q_w = t.codes[query], task_weights(t.y[query], cfg.temperature)
            fast = params
            for _ in range(cfg.inner_steps):
                g = grad(loss_of)(fast, t.x, s_codes, s_w)
                g = g if method == "maml" else {k: v.detach() for k, v in g.items()}
                fast = {k: fast[k] - cfg.inner_lr * g[k] for k in fast}
            total = total + loss_of(fast, t.x, q_codes, q_w) / len(batch)
        if method == "reptile":
            with torch.no_grad():
                for p, p0, d in zip(net.parameters(), start, deltas):
                    p.copy_(p0)
                    p.grad = -d
        else:
            total.backward()
        outer.step()
    return net


@pytest.mark.parametrize("method", ["reptile", "maml", "fomaml"])
def test_side_by_side_adaptation_is_the_same_algorithm_as_one_task_after_another(method):
    """The meta-batch's tasks adapt in one batched network (padded to the largest task): the result is the
    published algorithm's, task by task, to float precision, also for tasks with different numbers of trials."""
    from hypermeta.meta.data import TaskBatch
    from hypermeta.meta.method import get_method

    tasks = synthetic_tasks(5, seed=3, trials=12) + synthetic_tasks(4, seed=4, trials=7)
    cfg = MetaTrainConfig(method=method, seed=0, ensemble=1, meta_iterations=15, hidden=16)
    feats = np.stack([t.features for t in tasks])
    batches = [TaskBatch(t, feats.mean(0), feats.std(0), cfg.temperature) for t in tasks]
    fast = get_method(method)(cfg).train_member(batches, D, 0)
    reference = _one_task_after_another(method, batches, cfg, D)
    other = get_method(method)(cfg).train_member(batches[:3], D, 0)  # other tasks: another network
    with torch.no_grad():
        for b in batches:
            np.testing.assert_allclose(fast(b.x).numpy(), reference(b.x).numpy(), atol=1e-5)
        assert not torch.allclose(fast(batches[0].x), other(batches[0].x), atol=1e-3)
