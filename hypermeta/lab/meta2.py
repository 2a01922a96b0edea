"""Meta-learner v2, the stages after the matrix (``hypermeta meta2 STAGE PLAN``), all computed by the
pre-registered plan and all resumable:

1. ``export``: the matrix dataset of the complete training tasks (:func:`~hypermeta.lab.matrix.matrix_dataset`).
2. ``cv``: leave-one-task-out cross-validation of every method of the plan (:mod:`hypermeta.meta.selection`);
   picks the CV winner and each method's OOD threshold. Folds train ensembles of ``cv_ensemble`` members
   (default 1: ~5x cheaper than the shipped 5 members; the report says so).
3. ``train``: every method on all training tasks (ensemble 5, the plan's fixed settings as ``base``), each with
   its cross-validated OOD threshold; ``weights/<method>.safetensors``, the winner also as ``weights/winner``.
4. ``heldout``: the held-out matrix (each held-out task's oracle), then on :data:`hypermeta.seeds.test_seeds`:
   every method's zero-shot prediction, best-fixed, base, sb3-default, rl-zoo, the oracle, and Optuna TPE
   best-of-k (trials of :data:`TPE_SEEDS_PER_TRIAL` tuning seeds, no pruning, the plan's fixed settings); plus
   the SB3-runner confirmation of the key comparisons with :data:`SB3_CONFIRM_SEEDS` seeds.

Nothing here reads a held-out result before the winner and the thresholds are fixed by ``cv`` and ``train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from hypermeta.search.baselines import SB3_DEFAULT, rl_zoo_config
from hypermeta.lab.matrix import (MatrixPlan, collect_matrix, incomplete_tasks, matrix_dataset, matrix_gaps,
                                  matrix_scores)
from hypermeta.engine.measurement import Measurement
from hypermeta.engine.pipeline import RunStore, run_jobs_scoring_divergence, score_matrix
from hypermeta.engine.runner import Job
from hypermeta.files import git_commit, install_weights, write_text_atomic
from hypermeta.meta.data import MetaTrainConfig, tasks_from_frame
from hypermeta.meta.model import MetaModel, meta_train
from hypermeta.meta.selection import cv_table, cv_winner, fingerprint, loto_cv, ood_threshold
from hypermeta.seeds import FEATURE_SEED, test_seeds
from hypermeta.space import DQNConfig

#: Optuna TPE on each held-out task: best of the first k trials, each trial averaged over 3 tuning seeds.
TPE_BEST_OF = (5, 10, 20, 50)
TPE_SEEDS_PER_TRIAL = 3
#: Trials each worker asks at once with the batched runner, and TPE's random start (``n_startup_trials``: it
#: samples at random until that many trials have finished; Optuna's default, 10, would leave a worker's second
#: batch random too). A batch is chosen before any of its results, so the first workers x TPE_BATCH trials are
#: random (with 2 workers: 16), then TPE; the few-shot benchmark's cold studies do the same (studies/tune/plan.yaml).
TPE_BATCH = 8
#: The key comparisons (CV winner, base, best-fixed) are confirmed with the SB3 runner on this many test seeds.
SB3_CONFIRM_SEEDS = 5
KEY_METHODS = ("winner", "base", "best-fixed")
CV_ENSEMBLE = 1
SHIPPED_ENSEMBLE = 5


@dataclass
class Paths:
    root: Path

    @classmethod
    def of(cls, plan: MatrixPlan) -> Paths:
        return cls(Path(plan.path).parent)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.csv"

    @property
    def cv(self) -> Path:
        return self.root / "cv_runs.csv"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def heldout(self) -> Path:
        return self.root / "heldout"


def training_frame(plan: MatrixPlan, matrix: pd.DataFrame) -> pd.DataFrame:
    """The dataset of the complete training tasks, from the matrix as it is now (so it includes every finished task;
    not written here)."""
    frame = matrix_dataset(plan, matrix)
    if frame.empty:
        raise ValueError(f"no training task of {plan.path!r} has a complete matrix yet; run `hypermeta matrix`")
    return frame


def cross_validate(plan: MatrixPlan, methods: list[str] | None = None, ensemble: int = CV_ENSEMBLE,
                   workers: int = 1, progress: bool = False, allow_incomplete: bool = False) -> dict:
    """LOTO-CV of the plan's methods; writes ``cv_runs.csv`` (resumable) and ``selection.json`` (the winner,
    each method's OOD threshold, the tasks and settings of the CV); returns the selection.

    Refuses while any training task's matrix is incomplete (the plan selects on all of them);
    ``allow_incomplete`` runs it on the complete ones anyway and records the others in the selection, whose
    report then says so at the top of its deviations. ``best-fixed`` always takes part (every comparison needs
    it). The selection records when and on which commit it was made, the training tasks left out for having no
    signal, and whether held-out test runs already existed (the report flags that: selection must not see them)."""
    methods = list(dict.fromkeys([*(methods or plan.methods), "best-fixed"]))
    matrix = RunStore(plan.runs_path).frame()
    missing = incomplete_tasks(plan, matrix, plan.train_tasks())
    if missing and not allow_incomplete:
        raise ValueError(f"the training matrix is incomplete: {len(missing)} of {len(plan.train_tasks())} training "
                         f"tasks lack runs (first: {missing[0]!r}); finish it with `hypermeta matrix {plan.path}` "
                         "(`--status` shows how far it is), or pass --allow-incomplete for a run the plan does not count")
    frame = training_frame(plan, matrix)
    tasks = tasks_from_frame(frame)
    paths = Paths.of(plan)
    cfg = MetaTrainConfig(seed=0, ensemble=ensemble)
    if paths.selection.is_file() and (paths.heldout / "runs.csv").is_file():
        made_on, now = json.loads(paths.selection.read_text())["fingerprint"], fingerprint(tasks, cfg)
        if made_on != now:  # a new CV now would select with the held-out results in hand
            raise ValueError(f"the training matrix or the CV ensemble changed since the selection the held-out runs in "
                             f"{str(paths.heldout)!r} used (fingerprint {made_on}, now {now}): restore the matrix runs "
                             "and settings that selection was made on, or move that folder aside to start a new "
                             "evaluation")
    paths.dataset.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(paths.dataset, index=False)  # the dataset this CV runs on (`meta2 train` reads it)
    cv = loto_cv(tasks, methods, cfg, out=paths.cv, workers=workers, progress=progress)
    winner = cv_winner(cv, methods)
    thresholds = {}
    for m in methods:
        rows = cv[cv["method"] == m]
        thresholds[m] = ood_threshold(rows["ood_score"].to_numpy(), (rows["score"] < rows["best_fixed"]).to_numpy())
    selection = {"winner": winner, "ood_thresholds": thresholds, "methods": methods, "cv_ensemble": ensemble,
                 "incomplete_tasks": missing, "no_signal_tasks": matrix_gaps(plan, matrix, plan.train_tasks()),
                 "created": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "commit": git_commit(),
                 "heldout_runs_existed": (paths.heldout / "runs.csv").is_file(),
                 "tasks": [t.task for t in tasks], "fingerprint": fingerprint(tasks, cfg),
                 "table": cv_table(cv, methods).to_dict("records")}
    if paths.selection.is_file():
        before = json.loads(paths.selection.read_text())
        if same_selection(before, selection):
            return before  # a resumed CV: the selection (and the weights trained for it) stand as they are
    write_text_atomic(paths.selection, json.dumps(selection, indent=2) + "\n")
    return selection


#: selection fields recorded about the run, not its result
_RUN_RECORD = ("created", "commit", "heldout_runs_existed")


def same_selection(a: dict, b: dict, rel: float = 1e-9) -> bool:
    """Whether two selections are the same result up to float rounding: recomputing the thresholds and scores from
    ``cv_runs.csv`` may differ in the last digits, which must neither retrain every method nor restamp the
    selection's time (or its "held-out runs existed" flag)."""
    def close(x, y) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(close(u, v) for u, v in zip(x, y))
        if isinstance(x, float) or isinstance(y, float):
            return (isinstance(x, (int, float)) and isinstance(y, (int, float))
                    and bool(np.isclose(x, y, rtol=rel, atol=1e-12, equal_nan=True)))
        return x == y

    strip = lambda s: {k: v for k, v in s.items() if k not in _RUN_RECORD}  # noqa: E731
    return close(strip(a), strip(b))


def load_selection(plan: MatrixPlan) -> dict:
    path = Paths.of(plan).selection
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: run `hypermeta meta2 cv {plan.path}` first")
    return json.loads(path.read_text())


def train_methods(plan: MatrixPlan, ensemble: int = SHIPPED_ENSEMBLE, retrain: bool = False) -> dict[str, MetaModel]:
    """Every selected method trained on the CV's training tasks, with its OOD threshold; the winner is also
    written as ``weights/winner``. Weights written for this very selection are loaded (``retrain`` trains
    again); a new selection (``selection.json`` changed) trains them all again."""
    selection = load_selection(plan)
    frame = pd.read_csv(Paths.of(plan).dataset)
    tasks = [t for t in tasks_from_frame(frame) if t.task in set(selection["tasks"])]
    if fingerprint(tasks, MetaTrainConfig(seed=0, ensemble=selection["cv_ensemble"])) != selection["fingerprint"]:
        raise ValueError(f"{str(Paths.of(plan).dataset)!r} is not the data the selection was made on (its tasks or "
                         f"runs changed): run `hypermeta meta2 cv {plan.path}` again first")
    weights = Paths.of(plan).weights
    stamp = weights / "selection.json"  # the selection the weights in this folder were trained for
    current = json.dumps(selection, sort_keys=True)
    retrain = retrain or not stamp.is_file() or stamp.read_text() != current
    models = {}
    for method in selection["methods"]:
        path = weights / f"{method}.safetensors"
        if path.is_file() and not retrain:
            models[method] = MetaModel.load(path)
            continue
        model = meta_train(tasks, MetaTrainConfig(method=method, seed=0, ensemble=ensemble), base=plan.base)
        # with one-member CV folds the threshold saw no disagreement: it then applies to the distance alone
        model.set_ood_threshold(selection["ood_thresholds"][method], uses_disagreement=selection["cv_ensemble"] > 1)
        model.save(path)
        if method == selection["winner"]:
            model.save(weights / "winner.safetensors")
        models[method] = model
    stamp.write_text(current)
    return models


def ship_winner(plan: MatrixPlan, dest: str | Path | None = None) -> Path:
    """Make the CV winner's weights (from ``train``) hypermeta's default: copy ``weights/winner`` over the
    package's ``default.safetensors``/``.json`` and write ``default.provenance.json`` beside them (plan, winner,
    CV row, the selection's provenance, the weights' sha256). Refuses a selection the plan does not count (an
    incomplete matrix, a subset of its methods) and weights not trained for the current ``selection.json``."""
    import hashlib

    from hypermeta.meta.model import default_weights_path

    selection = load_selection(plan)
    if selection.get("incomplete_tasks"):
        raise ValueError(f"the selection ran on an incomplete training matrix (`--allow-incomplete`, "
                         f"{len(selection['incomplete_tasks'])} task(s) missing): complete it and run `hypermeta meta2 "
                         f"cv {plan.path}` again before shipping")
    left_out = [m for m in plan.methods if m not in selection["methods"]]
    if left_out:
        raise ValueError(f"the selection left out the plan's method(s) {left_out} (`--methods`): run `hypermeta meta2 "
                         f"cv {plan.path}` with all of them before shipping")
    weights = Paths.of(plan).weights
    stamp, winner = weights / "selection.json", weights / "winner.safetensors"
    if not winner.is_file() or not stamp.is_file():
        raise ValueError(f"{str(winner)!r} does not exist: run `hypermeta meta2 train {plan.path}` first")
    if stamp.read_text() != json.dumps(selection, sort_keys=True):
        raise ValueError(f"the weights in {str(weights)!r} were trained for another selection.json: run "
                         f"`hypermeta meta2 train {plan.path}` again first")
    model = MetaModel.load(winner)  # the shipped file must load (format, space and feature versions)
    if model.method != selection["winner"]:
        raise ValueError(f"{str(winner)!r} holds {model.method!r}, the CV winner is {selection['winner']!r}: run "
                         f"`hypermeta meta2 train {plan.path} --retrain`")
    dest = Path(dest) if dest is not None else default_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    table = {row["method"]: row for row in selection["table"]}
    provenance = {"plan": str(plan.path), "winner": selection["winner"], "cv": table.get(selection["winner"]),
                  "methods": selection["methods"], "cv_ensemble": selection["cv_ensemble"],
                  "selection_created": selection.get("created"), "selection_commit": selection.get("commit"),
                  "selection_fingerprint": selection["fingerprint"],
                  "heldout_runs_existed_at_selection": selection.get("heldout_runs_existed"),
                  "training_tasks": len(selection["tasks"]), "fixed_settings": plan.fixed,
                  "sha256": hashlib.sha256(winner.read_bytes()).hexdigest(),
                  "shipped": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    install_weights(winner, dest, MetaModel.load, provenance)
    # `tune --sampler adapt` takes a network method's few-shot step; a winner without networks has none, so the
    # network method with the best CV score ships beside it as the adapt default (the few-shot plan's rule)
    adapt = dest.with_name("adapt.safetensors")
    networks = [row for row in selection["table"] if row["method"] != model.method
                and (weights / f"{row['method']}.safetensors").is_file()
                and MetaModel.load(weights / f"{row['method']}.safetensors").members]
    if model.members or not networks:
        for path in (adapt, adapt.with_suffix(".json"), adapt.with_name("adapt.provenance.json")):
            path.unlink(missing_ok=True)  # adapt uses the default weights themselves (or cannot run)
        return dest.with_suffix(".safetensors")
    best = max(networks, key=lambda row: row["cv_score"])
    source = weights / f"{best['method']}.safetensors"
    install_weights(source, adapt, MetaModel.load, {
        **provenance, "role": "the adapt sampler's meta-learner: the network method with the highest CV score (the "
        "default weights' method has no networks)", "method": best["method"], "cv": best, "source": str(source),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest()})
    return dest.with_suffix(".safetensors")


def named_schedules(plan: MatrixPlan, task: str) -> dict[str, DQNConfig]:
    """base, sb3-default and rl-zoo (where the env has an entry): their schedules over the plan's fixed settings,
    as in the portfolio."""
    sources = {"base": DQNConfig(), "sb3-default": SB3_DEFAULT}
    try:
        sources["rl-zoo"] = rl_zoo_config(task)
    except ValueError:
        pass
    return {n: plan.base.with_schedules(c) for n, c in sources.items()}


def oracle_config(plan: MatrixPlan, scores: pd.DataFrame, task: str) -> DQNConfig:
    """The portfolio configuration with the best mean on ``task``'s own matrix."""
    sel = scores[scores["task"] == task]
    if sel.empty:
        raise ValueError(f"held-out task {task!r} has no complete matrix with signal (some configuration above "
                         "the random policy); `hypermeta matrix PLAN --split heldout` completes it")
    return DQNConfig.from_dict(json.loads(sel.loc[sel["score"].idxmax(), "config"]))


def zero_shot(plan: MatrixPlan, models: dict[str, MetaModel], tasks: list[str]) -> pd.DataFrame:
    """Every method's prediction on every held-out task (the shipped behaviour: OOD falls back to best-fixed)."""
    from hypermeta.tasks.features import probe_features

    rows = []
    for task in tasks:
        features = probe_features(task, seed=FEATURE_SEED)
        for method, model in models.items():
            p = model.predict(features, warn=False)
            raw = model.predict(features, warn=False, fallback=False)
            rows.append({"task": task, "method": method, "config": json.dumps(p.config.to_dict()),
                         "raw_config": json.dumps(raw.config.to_dict()), "out_of_distribution": p.out_of_distribution,
                         "fallback": p.fallback, "ood_score": p.ood_score, "nearest_task": p.nearest_task,
                         "nearest_distance": p.nearest_distance, "disagreement": p.disagreement})
    return pd.DataFrame(rows)


def tpe_study(plan: MatrixPlan, task: str) -> tuple[str, str]:
    """The storage URL and study name of Optuna TPE on held-out ``task`` (the few-shot benchmark's cold study of
    that task, when its plan names this plan as ``cold_from``)."""
    return f"sqlite:///{Paths.of(plan).heldout / 'tpe.db'}", f"{plan.name}|{task}|tpe"


def tpe_configs(plan: MatrixPlan, task: str, workers: int, runner: str, progress: bool) -> dict[str, DQNConfig]:
    """Optuna TPE on the held-out task itself (resumable storage beside the plan); best of the first k trials.
    With the batched runner each worker asks :data:`TPE_BATCH` trials at once and TPE starts once that many have
    finished."""
    from hypermeta.search.study import StudySpec, best_config_of, run_study
    from hypermeta.space import get_space

    spec = StudySpec(task, plan.budget(task), "schedule", TPE_SEEDS_PER_TRIAL,
                     fixed=get_space("schedule").untuned(plan.base))
    storage, name = tpe_study(plan, task)
    batched = runner == "batched"
    study = run_study(spec, max(TPE_BEST_OF), study_name=name, storage=storage, sampler="tpe", pruner="none", workers=workers,
                      progress=progress, runner=runner, batch_size=TPE_BATCH if batched else 1,
                      n_startup_trials=TPE_BATCH if batched else None)
    return {f"optuna-tpe@{k}": best_config_of(study, k) for k in TPE_BEST_OF}


def heldout_jobs(plan: MatrixPlan, task: str, configs: dict[str, DQNConfig], n_seeds: int) -> list[Job]:
    measurement = Measurement(plan.budget(task))
    return [Job(task, name, config, measurement, seed) for name, config in configs.items() for seed in test_seeds(n_seeds)]


def heldout_configs(plan: MatrixPlan, selection: dict, preds: pd.DataFrame, scores: pd.DataFrame, task: str
                    ) -> dict[str, DQNConfig]:
    """Every configuration the evaluation trains on ``task`` except TPE's: each method's zero-shot prediction
    (``hypermeta-<method>``), ``winner`` and ``best-fixed`` (the same runs again under the names the targets use),
    base, sb3-default, rl-zoo and the oracle."""
    sel = preds[preds["task"] == task]
    configs = {f"hypermeta-{m}": DQNConfig.from_dict(json.loads(c)) for m, c in zip(sel["method"], sel["config"])}
    configs["winner"] = configs[f"hypermeta-{selection['winner']}"]
    configs["best-fixed"] = configs["hypermeta-best-fixed"]
    configs.update(named_schedules(plan, task))
    configs["oracle"] = oracle_config(plan, scores, task)
    return configs


#: The held-out evaluation's steps, in the order they run (``settings.json`` records those done): first every
#: step of the held-out contexts, whose targets are the primary ones, then the held-out family's; within a group
#: the key comparisons come first, so an unfinished evaluation has answered the most important question it can.
HELDOUT_STEPS = ("matrix", "key", "others", "tpe", "sb3")
HELDOUT_STEP_TEXT = {"matrix": "the held-out matrix (oracles)", "key": "the key comparisons (winner, base, best-fixed)",
                     "others": "every other method and baseline", "tpe": "the Optuna TPE baselines",
                     "sb3": "the SB3-runner confirmation"}


def heldout_groups(plan: MatrixPlan) -> list[tuple[str, list[str]]]:
    return [(g, ts) for g, ts in (("contexts", list(plan.heldout_contexts)), ("family", list(plan.heldout_family)))
            if ts]


def run_heldout(plan: MatrixPlan, workers: int = 1, runner: str = "batched", progress: bool = False,
                tpe: bool = True) -> Path:
    """Run (or resume) the held-out evaluation of the plan, group by group (:data:`HELDOUT_STEPS`); writes
    ``heldout/`` (predictions, runs, the runs by method after every step, and the steps done in
    ``settings.json``, so that ``meta2 report`` can report an unfinished evaluation as such)."""
    selection = load_selection(plan)
    models = train_methods(plan)
    out = Paths.of(plan).heldout
    out.mkdir(parents=True, exist_ok=True)
    path = out / "settings.json"  # for the report: the runner, the selection these runs are for, the steps done
    before = json.loads(path.read_text()) if path.is_file() else {}
    if before and (out / "runs.csv").is_file() and before.get("runner") != runner:
        raise ValueError(f"the held-out runs in {str(out)!r} were made with --runner {before.get('runner')}; resume "
                         "with the same runner (or move that folder away to start again with another; its tpe.db "
                         "also holds the few-shot benchmark's cold studies of these tasks)")
    # `done` lists the steps of *this* invocation only: the files are rebuilt from its steps (finished runs are
    # read back from the stores in minutes), so a step never reads as done while its rows are not in the files
    starts = [*before.get("starts", []), {"time": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                                          "workers": workers, "commit": git_commit()}]
    settings = {"runner": runner, "tpe": tpe, "selection": {
        k: selection.get(k) for k in ("winner", "fingerprint", "created", "commit")}, "done": [], "starts": starts}

    def record(step: str | None = None) -> None:
        settings["done"] = list(dict.fromkeys([*settings["done"], *([step] if step else [])]))
        write_text_atomic(path, json.dumps(settings, indent=2) + "\n")

    record()
    # predictions need only the tasks' features: all of them first, before any held-out run
    preds = zero_shot(plan, models, [t for _, ts in heldout_groups(plan) for t in ts])
    preds.to_csv(out / "predictions.csv", index=False)
    primary, confirm = RunStore(out / "runs.csv"), RunStore(out / "runs_sb3.csv")
    jobs: list[Job] = []
    checks: list[Job] = []

    def train(new: list[Job], store: RunStore, so_far: list[Job], by_method: str, step_runner: str) -> None:
        # runs.csv caches one row per distinct run; *_by_method.csv has a row per (method label, run), rewritten
        # after every step; a diverged test run is stored, scored as the random policy (the report counts them)
        so_far += new
        run_jobs_scoring_divergence(new, store, workers=workers, progress=progress, runner=step_runner)
        write_text_atomic(out / by_method, run_jobs_scoring_divergence(so_far, store, runner=step_runner).to_csv(
            index=False))

    excluded: dict[str, float] = {}
    for group, tasks in heldout_groups(plan):
        # the oracles are measured with the engine, as the training matrix (whatever runs the test seeds)
        runs = collect_matrix(plan, runner="batched", workers=workers, progress=progress, split="heldout", tasks=tasks)
        # a held-out task where no portfolio configuration beats the random policy cannot be normalised: it is
        # left out of the evaluation and the report lists it among the deviations
        gaps = matrix_gaps(plan, runs, tasks)
        excluded.update(gaps)
        write_text_atomic(out / "excluded.json", json.dumps(excluded, indent=2) + "\n")
        tasks = [t for t in tasks if t not in gaps]
        record(f"{group}:matrix")
        scores = matrix_scores(plan, runs, tasks)
        configs = {t: heldout_configs(plan, selection, preds, scores, t) for t in tasks}
        train([j for t in tasks for j in heldout_jobs(plan, t, {k: configs[t][k] for k in KEY_METHODS},
                                                            plan.test_seeds)], primary, jobs, "runs_by_method.csv", runner)
        record(f"{group}:key")
        train([j for t in tasks for j in heldout_jobs(plan, t, {k: c for k, c in configs[t].items()
                                                                 if k not in KEY_METHODS}, plan.test_seeds)],
              primary, jobs, "runs_by_method.csv", runner)
        record(f"{group}:others")
        if tpe:
            for t in tasks:  # the study, then its best-of-k on the test seeds, task by task
                train(heldout_jobs(plan, t, tpe_configs(plan, t, workers, runner, progress), plan.test_seeds),
                      primary, jobs, "runs_by_method.csv", runner)
            record(f"{group}:tpe")
        train([j for t in tasks for j in heldout_jobs(plan, t, {k: configs[t][k] for k in KEY_METHODS},
                                                            SB3_CONFIRM_SEEDS)], confirm, checks,
              "runs_sb3_by_method.csv", "sb3")
        record(f"{group}:sb3")
    record("complete")
    return out


def heldout_todo(plan: MatrixPlan, settings: dict) -> list[str]:
    """The steps of the held-out evaluation not done yet, as text (empty when it is complete)."""
    done = set(settings.get("done", []))
    if "complete" in done:
        return []
    return [f"{group}: {HELDOUT_STEP_TEXT[step]}" for group, _ in heldout_groups(plan) for step in HELDOUT_STEPS
            if f"{group}:{step}" not in done and not (step == "tpe" and not settings.get("tpe", True))]


def heldout_scores(plan: MatrixPlan, runs: pd.DataFrame, tasks: list[str], matrix: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """Test runs with ``score`` = their AUC over the task's best portfolio mean (the training normalisation);
    ``matrix`` is :func:`matrix_scores` of the tasks when the caller has it already."""
    if matrix is None:
        matrix = matrix_scores(plan, RunStore(plan.runs_path).frame(), tasks)
    best = matrix.groupby("task")["best_auc"].first()
    runs = runs[runs["task"].isin(best.index)].copy()
    runs["score"] = runs["auc"] / runs["task"].map(best)
    return runs


def score_array(runs: pd.DataFrame, method: str, tasks: list[str], seeds: list[int] | None = None) -> np.ndarray:
    """``(seeds, tasks)`` normalised scores of ``method`` (:func:`score_matrix` of the ``score`` column)."""
    return score_matrix(runs, method, tasks, "score", seeds)
