"""``hypermeta meta-report``, the run stage: zero-shot meta-learner predictions vs baselines and Optuna on the
held-out tasks of a task distribution.

For every held-out task (held-out contexts of the training families, and the held-out family) it runs, all
on the same test seeds:

* each meta-learning method's zero-shot prediction (weights trained on the collected dataset of the
  training tasks only, written to ``weights_dir/<method>.safetensors``);
* the named baselines that exist for the task;
* Optuna TPE best-of-k: the best complete trial among the first k finished trials of a study run on the
  held-out task itself (tuning seeds), for every k in ``best_of``.

Every stage resumes (weights are retrained only when missing, studies resume from their storage, test runs
from ``runs.csv``). The data for the renderer (:mod:`hypermeta.reports.meta`) goes to ``report_dir``:
``runs_by_method.csv``, ``predictions.csv`` (with probe and prediction times) and ``tuning_cost.csv``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from hypermeta.search.baselines import BASELINES, baseline_config
from hypermeta.lab.collect import TaskDistribution, export_dataset
from hypermeta.engine.measurement import Measurement, Normalizer
from hypermeta.engine.pipeline import RunStore, run_jobs
from hypermeta.engine.runner import Job
from hypermeta.search.study import best_config_of, run_study, tuning_cost_frame
from hypermeta.meta.data import MetaTrainConfig, tasks_from_frame
from hypermeta.meta.method import METHODS
from hypermeta.meta.model import MetaModel, meta_train
from hypermeta.meta.predict import predict_config
from hypermeta.seeds import FEATURE_SEED, test_seeds
from hypermeta.space import DQNConfig
from hypermeta.tasks.features import probe_features

HELDOUT_SAMPLER = "tpe"


def available_baselines(task: str) -> dict[str, DQNConfig]:
    """The named baselines that exist for ``task`` (rl-zoo has entries for four environments only)."""
    configs = {}
    for name in BASELINES:
        try:
            configs[name] = baseline_config(name, task)
        except ValueError:  # e.g. no rl-zoo entry for FrozenLake: that baseline is left out on this task
            continue
    return configs


def train_all_methods(dist: TaskDistribution, retrain: bool = False) -> dict[str, MetaModel]:
    """Meta-train every method on the dataset (or load the weights already written)."""
    frame = pd.read_csv(dist.dataset) if Path(dist.dataset).is_file() else export_dataset(dist)
    tasks = tasks_from_frame(frame)
    models = {}
    for method in METHODS:
        path = Path(dist.weights_dir) / f"{method}.safetensors"
        if path.is_file() and not retrain:
            models[method] = MetaModel.load(path)
            continue
        start = time.perf_counter()
        models[method] = meta_train(tasks, MetaTrainConfig(method=method, seed=0, **dist.meta_train))
        models[method].save(path)
        print(f"meta-trained {method} on {len(tasks)} tasks in {time.perf_counter() - start:.1f} s -> {path}")
    return models


def zero_shot_predictions(tasks: list[str], models: dict[str, MetaModel]) -> pd.DataFrame:
    """Every method's prediction on every task (features probed once per task), with the probe and
    prediction times."""
    rows = []
    for task in tasks:
        features = probe_features(task, seed=FEATURE_SEED)
        for method, model in models.items():
            start = time.perf_counter()
            p = predict_config(features, model, warn=False).prediction
            rows.append({"task": task, "method": method, "out_of_distribution": p.out_of_distribution,
                         "nearest_task": p.nearest_task, "nearest_distance": p.nearest_distance,
                         "disagreement": p.disagreement, "config": json.dumps(p.config.to_dict()),
                         "probe_seconds": features.probe_seconds,
                         "predict_ms": (time.perf_counter() - start) * 1000})
    return pd.DataFrame(rows)


def run_heldout(dist: TaskDistribution, workers: int = 1, progress: bool = False, retrain: bool = False) -> Path:
    """Run (or resume) every stage and write the renderer's data to ``dist.report_dir``; returns that folder."""
    heldout = dist.heldout_tasks()
    for task in heldout:
        Normalizer.for_task(task)  # every held-out task resolves before hours of work start
    models = train_all_methods(dist, retrain)
    preds = zero_shot_predictions(heldout, models)
    studies = {(task, HELDOUT_SAMPLER): run_study(
        dist.study_spec(task), max(dist.best_of), study_name=f"{dist.name}-heldout|{task}|{HELDOUT_SAMPLER}",
        storage=dist.heldout_storage, sampler=HELDOUT_SAMPLER, pruner=dist.heldout_pruner, workers=workers,
        progress=progress, runner=dist.runner, batch_size=dist.study_batch()) for task in heldout}
    jobs = []
    for task in heldout:
        measurement = Measurement(dist.budget(task), dist.n_evals, dist.eval_episodes)
        sel = preds[preds["task"] == task]
        configs = {f"hypermeta-{m}": DQNConfig.from_dict(json.loads(c)) for m, c in zip(sel["method"], sel["config"])}
        configs.update(available_baselines(task))
        configs.update({f"optuna-{HELDOUT_SAMPLER}@{k}": best_config_of(studies[task, HELDOUT_SAMPLER], k)
                        for k in dist.best_of})
        for method, config in configs.items():
            jobs += [Job(task, method, config, measurement, seed) for seed in test_seeds(dist.test_seeds)]
    out = Path(dist.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_jobs(jobs, RunStore(out / "runs.csv"), workers=workers, progress=progress, runner=dist.runner)
    runs.to_csv(out / "runs_by_method.csv", index=False)
    preds.to_csv(out / "predictions.csv", index=False)
    tuning_cost_frame(studies).to_csv(out / "tuning_cost.csv", index=False)
    return out
