"""Meta-learner v2 on synthetic data with known answers: the matrix dataset, best-fixed, LOTO-CV selection, the
OOD threshold and fallback, and the paired statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hypermeta import DQNConfig, MetaModel, MetaTrainConfig, meta_train
from hypermeta.lab.matrix import MatrixPlan, collect_matrix, matrix_dataset, matrix_scores
from hypermeta.engine.pipeline import RunStore, paired_difference, run_row
from hypermeta.guard import DivergenceError
from hypermeta.meta.data import SPACE, TaskData, best_fixed_code
from hypermeta.meta.selection import auroc, cv_table, cv_winner, loto_cv, ood_threshold, portfolio_score
from hypermeta.tasks.features import FEATURE_NAMES

D = len(FEATURE_NAMES)


# --- paired statistics ---------------------------------------------------------------------------------------
def test_paired_difference_finds_a_known_effect_and_no_effect():
    rng = np.random.default_rng(0)
    task_effect = rng.normal(0, 0.3, 16)  # tasks differ a lot; pairing removes it
    b = task_effect + rng.normal(0, 0.05, (10, 16))
    a = b + 0.1 + rng.normal(0, 0.05, (10, 16))
    res = paired_difference(a, b, reps=500)
    assert res["ci_low"] > 0.05 and res["ci_high"] < 0.15 and res["diff"] == pytest.approx(0.1, abs=0.02)
    assert res["tasks"] == 16 and res["seeds"] == 10
    null = paired_difference(b + rng.normal(0, 0.05, (10, 16)), b, reps=500)
    assert null["ci_low"] < 0 < null["ci_high"]
    assert paired_difference(a, b, reps=500) == res  # seeded: reproducible


def test_minimum_detectable_difference_shrinks_with_seeds_and_matches_the_standard_error():
    rng = np.random.default_rng(1)
    small = paired_difference(rng.normal(0, 0.2, (4, 16)), np.zeros((4, 16)), reps=1000)
    large = paired_difference(rng.normal(0, 0.2, (64, 16)), np.zeros((64, 16)), reps=1000)
    # s.e. of a mean of n iid N(0, 0.2) scores (tasks resampled too, so a little more): 0.2 / sqrt(n)
    assert small["se"] == pytest.approx(0.2 / np.sqrt(64), rel=0.3)
    assert small["mdd"] == pytest.approx(2.8 * small["se"], rel=0.01)
    assert large["mdd"] < 0.4 * small["mdd"]
    with pytest.raises(ValueError, match="same shape|one shape"):
        paired_difference(np.zeros((3, 2)), np.zeros((2, 3)))


# --- best-fixed, portfolio lookups, selection ----------------------------------------------------------------
PORTFOLIO = np.random.default_rng(3).uniform(size=(12, SPACE.dim))
LR = SPACE.encoded_names.index("lr_initial")


def task_family(n: int, seed: int) -> list[TaskData]:
    """Tasks sharing PORTFOLIO whose best configuration's lr follows feature 0 (the only feature that varies),
    so the features carry the answer and no single configuration is best everywhere."""
    rng = np.random.default_rng(seed)
    tasks = []
    for k in range(n):
        f = np.zeros(D)
        f[0] = rng.normal()
        target = 1 / (1 + np.exp(-2 * f[0]))
        y = 1 - 4 * (PORTFOLIO[:, LR] - target) ** 2
        tasks.append(TaskData(f"t{seed}-{k}", f, PORTFOLIO, y))
    return tasks


def test_best_fixed_is_the_best_mean_over_tasks_not_a_best_of_one():
    a = TaskData("a", np.zeros(D), PORTFOLIO[:3], [1.0, 0.0, 0.8])
    b = TaskData("b", np.ones(D), PORTFOLIO[:3], [0.0, 1.0, 0.8])
    np.testing.assert_array_equal(best_fixed_code([a, b]), PORTFOLIO[2])  # 0.8 mean beats two 0.5s
    c = TaskData("c", np.ones(D), PORTFOLIO[3:5], [1.0, 1.0])
    assert best_fixed_code([a, c]) is None  # nothing tried on every task
    model = meta_train([a, b], MetaTrainConfig(method="best-fixed"))
    np.testing.assert_array_equal(model.predict(np.full(D, 7.0), warn=False).code, PORTFOLIO[2])
    trials = [(SPACE.decode(PORTFOLIO[5]), 0.3), (SPACE.decode(PORTFOLIO[6]), 0.9)]
    adapted = model.adapt(trials, np.zeros(D))  # adapted to observed trials: the best of them
    np.testing.assert_allclose(adapted.predict(np.zeros(D), warn=False).config.lr_initial,
                               SPACE.decode(PORTFOLIO[6]).lr_initial)
    np.testing.assert_array_equal(model.predict(np.zeros(D), warn=False).code, PORTFOLIO[2])  # original unchanged
    with pytest.raises(ValueError, match="share their configurations"):
        meta_train([a, c], MetaTrainConfig(method="best-fixed"))


def test_k_nearest_averages_the_portfolio_over_the_nearest_tasks(tmp_path):
    a, b, c = PORTFOLIO[0], PORTFOLIO[1], PORTFOLIO[2]
    tasks = []
    for i in range(9):  # feature 0 = i; tasks 0-3 prefer A (task 0, noisily, C by a hair), tasks 4-8 prefer B
        y = [0.6, 0.0, 0.7] if i == 0 else [1.0, 0.0, 0.0] if i < 4 else [0.0, 1.0, 0.0]
        f = np.zeros(D)
        f[0] = i
        tasks.append(TaskData(f"t{i}", f, np.stack([a, b, c]), y))
    query = np.zeros(D)  # task 0's features: its k = ceil(sqrt(9)) = 3 nearest are tasks 0, 1, 2
    models = {m: meta_train(tasks, MetaTrainConfig(method=m)) for m in ("k-nearest", "nearest-task", "best-fixed")}
    predicted = {m: model.predict(query, warn=False).code for m, model in models.items()}
    np.testing.assert_array_equal(predicted["k-nearest"], a)  # mean over tasks 0-2: A 0.87, C 0.23
    np.testing.assert_array_equal(predicted["nearest-task"], c)  # one noisy task decides
    np.testing.assert_array_equal(predicted["best-fixed"], b)  # the features do not matter
    far = np.zeros(D)
    far[0] = 8
    np.testing.assert_array_equal(models["k-nearest"].predict(far, warn=False).code, b)
    loaded = MetaModel.load(models["k-nearest"].save(tmp_path / "k"))
    np.testing.assert_array_equal(loaded.predict(query, warn=False).code, a)
    assert json.loads((tmp_path / "k.json").read_text())["format_version"] == "2"  # older versions refuse it
    adapted = loaded.adapt([(SPACE.decode(PORTFOLIO[5]), 0.3), (SPACE.decode(PORTFOLIO[6]), 0.9)], query)
    np.testing.assert_allclose(adapted.predict(query, warn=False).config.lr_initial, SPACE.decode(PORTFOLIO[6]).lr_initial)
    with pytest.raises(ValueError, match="share their configurations"):
        meta_train([tasks[0], TaskData("x", np.ones(D), PORTFOLIO[3:5], [1.0, 1.0])], MetaTrainConfig(method="k-nearest"))


def test_ridge_portfolio_follows_the_features_when_they_predict_and_is_best_fixed_when_not(tmp_path):
    from hypermeta.meta.data import fit_portfolio_ridge

    rng = np.random.default_rng(3)
    a, b, c = PORTFOLIO[0], PORTFOLIO[1], PORTFOLIO[2]
    informative, noise = [], []
    for i, f0 in enumerate(np.linspace(-2, 2, 17)):  # A improves with feature 0, B worsens, C is flat (best mean)
        f = np.zeros(D)
        f[0], f[1] = f0, rng.normal()
        y = np.array([0.5 + 0.2 * f0, 0.5 - 0.2 * f0, 0.55]) + rng.normal(0, 0.01, 3)
        informative.append(TaskData(f"i{i}", f, np.stack([a, b, c]), y))
        noise.append(TaskData(f"n{i}", f, np.stack([a, b, c]), np.array([0.5, 0.5, 0.55]) + rng.normal(0, 0.05, 3)))
    model = meta_train(informative, MetaTrainConfig(method="ridge-portfolio"))
    for f0, want in ((1.8, a), (-1.8, b), (0.0, c)):
        query = np.zeros(D)
        query[0] = f0
        np.testing.assert_array_equal(model.predict(query, warn=False).code, want)
    assert fit_portfolio_ridge(model._z(model.task_features), model.portfolio[1])[2] < 10  # a small penalty
    np.testing.assert_array_equal(best_fixed_code(informative), c)  # one configuration for all: the flat one
    # features that carry nothing: a large penalty wins and the prediction is best-fixed's everywhere
    flat = meta_train(noise, MetaTrainConfig(method="ridge-portfolio"))
    assert fit_portfolio_ridge(flat._z(flat.task_features), flat.portfolio[1])[2] >= 100
    for f0 in (-2.0, 0.0, 2.0):
        query = np.zeros(D)
        query[0] = f0
        np.testing.assert_array_equal(flat.predict(query, warn=False).code, best_fixed_code(noise))
    loaded = MetaModel.load(model.save(tmp_path / "r"))
    query = np.zeros(D)
    query[0] = 1.8
    np.testing.assert_array_equal(loaded.predict(query, warn=False).code, a)


@pytest.mark.parametrize("n, d", [(12, 3), (8, 20)])  # more tasks than features, and fewer
def test_the_ridge_penalty_is_chosen_by_exact_leave_one_out_error(n, d):
    from hypermeta.meta.data import RIDGE_ALPHAS, fit_portfolio_ridge, ridge_loo_errors

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    y = x[:, :1] @ np.array([[0.8, -0.5]]) + rng.normal(0, 0.3, size=(n, 2))  # feature 0 predicts: a finite penalty

    def brute_force(alpha):  # refit without each task in turn (with its own centring)
        err = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            xm, ym = x[keep].mean(0), y[keep].mean(0)
            xc = x[keep] - xm
            wi = np.zeros((d, 2)) if np.isinf(alpha) else np.linalg.solve(xc.T @ xc + alpha * np.eye(d),
                                                                           xc.T @ (y[keep] - ym))
            err += float((((x[i] - xm) @ wi + ym - y[i]) ** 2).sum())
        return err

    shortcut = ridge_loo_errors(x, y)
    for alpha in RIDGE_ALPHAS:
        assert shortcut[alpha][0] == pytest.approx(brute_force(alpha), rel=1e-9), alpha
    w, b, alpha = fit_portfolio_ridge(x, y)
    assert alpha == min(shortcut, key=lambda a: shortcut[a][0]) and np.isfinite(alpha)
    xc = x - x.mean(0)
    np.testing.assert_allclose(w, np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ (y - y.mean(0))), atol=1e-10)
    np.testing.assert_allclose(x @ w + b, xc @ w + y.mean(0))  # unpenalised intercept: the means are kept


def test_k_nearest_uses_the_ceiling_of_the_square_root():
    from hypermeta.meta.data import knn_size

    assert [knn_size(n) for n in (1, 9, 10, 20, 67)] == [1, 3, 4, 5, 9]


def test_portfolio_score_looks_up_the_nearest_measured_configuration():
    task = TaskData("t", np.zeros(D), PORTFOLIO[:4], [0.1, 0.2, 0.3, 0.4])
    assert portfolio_score(task, PORTFOLIO[2]) == 0.3
    assert portfolio_score(task, PORTFOLIO[1] + 1e-3) == 0.2


def test_loto_cv_prefers_the_method_that_uses_the_features_and_resumes(tmp_path, monkeypatch):
    import hypermeta.meta.selection as selection

    tasks = task_family(24, seed=0)
    cfg = MetaTrainConfig(ensemble=1)
    out = tmp_path / "cv.csv"
    cv = loto_cv(tasks, ["best-fixed", "nearest-task"], cfg, out=out)
    assert len(cv) == 48 and set(cv["task"]) == {t.task for t in tasks}
    table = cv_table(cv, ["best-fixed", "nearest-task"]).set_index("method")
    # the features decide the best lr here: nearest-task beats one configuration for all, in CV
    assert table.loc["nearest-task", "cv_score"] > table.loc["best-fixed", "cv_score"] + 0.05
    assert table.loc["best-fixed", "minus_best_fixed"] == 0.0
    assert cv_winner(cv, ["best-fixed", "nearest-task"]) == "nearest-task"
    # the left-out task is never in its own fold's training set: with a single copy of each task,
    # nearest-task's CV prediction is another task's best, so it is not the oracle everywhere
    assert (cv[cv["method"] == "nearest-task"]["score"] < cv["oracle"][cv["method"] == "nearest-task"]).any()
    calls = []
    monkeypatch.setattr(selection, "cv_fold", lambda *a: calls.append(a) or {})
    again = loto_cv(tasks, ["best-fixed", "nearest-task"], cfg, out=out)  # every fold read back, none retrained
    assert calls == [] and len(again) == 48
    loto_cv(tasks[:20], ["best-fixed"], cfg, out=out)  # other training tasks: no stored fold is reused
    assert len(calls) == 20
    with pytest.raises(ValueError, match="complete set of CV folds"):
        cv_winner(cv[cv.index % 5 != 0], ["best-fixed", "nearest-task"])


def test_ood_threshold_and_auroc_on_known_separations():
    scores = np.array([0.5, 0.8, 1.0, 1.2, 2.5, 3.0, 4.0])
    worse = np.array([0, 0, 0, 0, 1, 1, 1], bool)
    t = ood_threshold(scores, worse)
    assert 1.2 < t < 2.5 and auroc(scores, worse) == 1.0
    assert auroc(scores, ~worse) == 0.0 and np.isnan(auroc(scores, np.zeros(7, bool)))
    assert ood_threshold(scores, np.zeros(7, bool)) > scores.max()  # never worse: never OOD
    assert ood_threshold(scores, np.ones(7, bool)) < scores.min()  # always worse: always best-fixed


def test_out_of_distribution_falls_back_to_best_fixed_and_survives_save(tmp_path):
    tasks = task_family(10, seed=2)
    model = meta_train(tasks, MetaTrainConfig(method="nearest-task"))
    fixed = best_fixed_code(tasks)
    far = tasks[0].features + 50.0
    pred = model.predict(far, warn=False)
    assert pred.out_of_distribution and pred.fallback and "best-fixed" in pred.reasons[-1]
    np.testing.assert_array_equal(pred.code, fixed)
    raw = model.predict(far, warn=False, fallback=False)
    assert not raw.fallback and not np.array_equal(raw.code, fixed)
    assert not model.predict(tasks[3].features, warn=False).fallback
    model.set_ood_threshold(1e9)  # a cross-validated threshold replaces the two default rules
    assert not model.predict(far, warn=False).out_of_distribution
    loaded = MetaModel.load(model.save(tmp_path / "w"))
    assert loaded.thresholds["score"] == 1e9
    np.testing.assert_array_equal(loaded.fallback, fixed)
    with pytest.raises(ValueError, match="positive number"):
        model.set_ood_threshold(float("nan"))


# --- the matrix dataset --------------------------------------------------------------------------------------
def tiny_plan(tmp_path) -> MatrixPlan:
    plan = {"name": "tiny", "fixed": {"net_arch": "small", "learning_starts": 100}, "seed": 1,
            "train": {"cartpole": 1}, "calibration": ["cartpole"], "heldout_contexts": ["cartpole:gravity=12"],
            "heldout_family": [], "budgets": {"cartpole": 300}, "portfolio": {"sobol": 2, "named": ["base"]},
            "matrix_seeds": 2}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return MatrixPlan.load(path)


def fake_runs(plan: MatrixPlan, tasks: list[str], auc: dict[str, float]) -> pd.DataFrame:
    from hypermeta.engine.measurement import Curve

    rows = []
    for job in plan.jobs(tasks):
        row = run_row(job, Curve([300], [20.0], 1.0, 300))
        row["auc"] = auc[job.method] + 0.01 * (job.seed % 2)
        rows.append(row)
    return pd.DataFrame(rows)


def test_matrix_scores_normalise_per_task_and_skip_incomplete_tasks(tmp_path):
    plan = tiny_plan(tmp_path)
    train, held = plan.train_tasks(), plan.heldout_contexts
    runs = fake_runs(plan, train + held, {"sobol-00": 0.2, "sobol-01": 0.4, "base": 0.1})
    old_budget = runs.iloc[:3].assign(timesteps=999, auc=5.0)  # another budget's runs are not the matrix
    scores = matrix_scores(plan, pd.concat([runs.iloc[:-1], old_budget]))
    assert set(scores["task"]) == set(train[:2])  # the held-out task misses a run
    one = scores[scores["task"] == train[0]].set_index("method")
    assert one.loc["sobol-01", "score"] == pytest.approx(1.0) and one["n_seeds"].eq(2).all()
    assert one.loc["sobol-00", "score"] == pytest.approx(0.205 / 0.405)
    data = matrix_dataset(plan, runs)
    assert len(data) == 3 * len(train) and {f"f_{FEATURE_NAMES[0]}", "objective", "x_lr_initial"} <= set(data.columns)
    # the dataset is what meta-train reads
    from hypermeta.meta.data import settings_from_frame, tasks_from_frame

    assert [t.task for t in tasks_from_frame(data)] == sorted(train)
    assert settings_from_frame(data) == plan.base  # the plan's fixed settings travel with the data


def test_a_diverged_matrix_run_scores_as_random_and_is_not_retried(tmp_path, monkeypatch):
    import hypermeta.engine.batched as engine

    plan = tiny_plan(tmp_path)

    real = engine.train_group
    monkeypatch.setattr(engine, "train_group", lambda jobs, *a, **k: [
        DivergenceError("non-finite loss") if j.method == "base" else c
        for j, c in zip(jobs, real(jobs, *a, **k))])
    runs = collect_matrix(plan, n_tasks=1)
    base = runs[runs["method"] == "base"]
    assert len(runs) == 6 and (base["auc"] == 0.0).all() and base["curve"].str.contains("diverged").all()
    monkeypatch.setattr(engine, "train_group", lambda jobs, *a, **k: pytest.fail("nothing is left to run"))
    assert len(collect_matrix(plan, n_tasks=1)) == 6
    assert json.loads(RunStore(plan.runs_path).frame()["curve"].iloc[-1]).startswith("diverged")


def test_meta2_stages_end_to_end_on_a_tiny_plan(tmp_path):
    """matrix -> cv -> train -> heldout on 4 training tasks of 5,000 steps: the selection, weights with their
    OOD threshold and the plan's fixed settings, and test runs of every configuration on the test seeds."""
    from hypermeta.cli import main
    from hypermeta.lab import meta2
    from hypermeta.seeds import test_seeds

    plan = {"name": "tiny", "fixed": {"net_arch": "small", "learning_starts": 100}, "seed": 1,
            "train": {"cartpole": 3}, "calibration": ["cartpole"], "heldout_contexts": ["cartpole:gravity=12"],
            "heldout_family": [], "budgets": {"cartpole": 5000}, "portfolio": {"sobol": 2, "named": ["base"]},
            "matrix_seeds": 2, "methods": ["nearest-task", "best-fixed"], "test_seeds": 2}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    assert main(["matrix", str(path), "--tasks", "3"]) == 0  # 3 of the 4 training tasks
    assert main(["meta2", "cv", str(path)]) == 2  # refused in one line: the plan selects on all training tasks
    assert main(["meta2", "cv", str(path), "--allow-incomplete"]) == 0
    partial = json.loads((tmp_path / "selection.json").read_text())
    assert len(partial["tasks"]) == 3 and len(partial["incomplete_tasks"]) == 1
    assert main(["matrix", str(path)]) == 0
    assert main(["meta2", "cv", str(path)]) == 0
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["winner"] in ("nearest-task", "best-fixed") and len(selection["tasks"]) == 4
    assert main(["meta2", "report", str(path), "--out", str(tmp_path / "report.md")]) == 0  # before held-out runs:
    assert not (tmp_path / "report.md").exists()  # the model selection alone
    assert f"| {selection['winner']} (winner) |" in (tmp_path / "selection.md").read_text()
    assert "flagged out of distribution" in (tmp_path / "selection.md").read_text()
    assert main(["meta2", "heldout", str(path), "--no-tpe"]) == 0  # trains the weights first
    model = MetaModel.load(tmp_path / "weights" / "winner.safetensors")
    assert model.thresholds["score"] == selection["ood_thresholds"][selection["winner"]]
    assert model.base.net_arch == "small" and model.base.learning_starts == 100
    runs = pd.read_csv(tmp_path / "heldout" / "runs.csv")
    assert set(runs["seed"]) == set(test_seeds(2)) and len(runs) >= 2  # identical configs share their runs
    sb3 = pd.read_csv(tmp_path / "heldout" / "runs_sb3.csv")
    assert len(sb3) >= 5 and set(sb3["seed"]) <= set(test_seeds(meta2.SB3_CONFIRM_SEEDS))
    preds = pd.read_csv(tmp_path / "heldout" / "predictions.csv")
    assert set(preds["method"]) == {"nearest-task", "best-fixed"}
    shipped = meta2.ship_winner(MatrixPlan.load(path), dest=tmp_path / "package" / "default.safetensors")
    assert shipped.read_bytes() == (tmp_path / "weights" / "winner.safetensors").read_bytes()  # the CV winner
    assert MetaModel.load(shipped).method == selection["winner"] and not list(shipped.parent.glob("*staged*"))
    provenance = json.loads((tmp_path / "package" / "default.provenance.json").read_text())
    assert provenance["winner"] == selection["winner"] and provenance["cv"]["method"] == selection["winner"]
    assert not (tmp_path / "package" / "adapt.safetensors").exists()  # no method with networks to adapt with
    assert main(["meta2", "cv", str(path), "--methods", "anil"]) == 2  # one-line error, exit 2
    (tmp_path / "calibration.md").write_text("# log\n\n## 2026-11-26: a logged deviation\n")
    assert main(["meta2", "report", str(path), "--out", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "incomplete training matrix" not in report
    for text in ("a logged deviation", "| winner - best-fixed | 1 x 2 |", "optuna-tpe@5 | missing runs",
                 "gap closed by the winner", "AUROC", "## Confirmation with the SB3 runner", "| oracle |",
                 f"Shipped zero-shot method (the CV winner): `{selection['winner']}`", "were not run** (`--no-tpe`)",
                 "## Every method against best-fixed and base", f"on commit `{selection['commit'] or 'unrecorded'}`",
                 "| nearest-task (winner) | 1 |" if selection["winner"] == "nearest-task" else "| nearest-task | 1 |",
                 "Primary test runs: the `batched` runner", "| contexts | winner - best-fixed | 1 x 5 |",
                 "| family cartpole | 1 |", "| interpolation | 1 |", "Run by run (the same task, configuration and seed", "## Setup", "- Budgets (training steps per run): "
                 "cartpole 5,000.", "## Per held-out task: where the winner wins and loses",
                 "## CV against the held-out contexts (exploratory)", "| nearest-task"):
        assert text in report, text
    assert report.index("## Deviations") < report.index("## Targets")  # deviations at the top
    assert ("The cross-validation selected best-fixed" in report) == (selection["winner"] == "best-fixed")
    assert not selection["heldout_runs_existed"] and selection["no_signal_tasks"] == {}
    # the CV table is this selection's, although cv_runs.csv still holds the folds of the trial on 3 tasks
    for row in selection["table"]:
        assert f"| {row['method']}{' (winner)' if row['method'] == selection['winner'] else ''} | " \
               f"{row['cv_score']:.3f} |" in report
    assert main(["meta2", "heldout", str(path), "--no-tpe", "--runner", "sb3"]) == 2  # refused: runs of another runner
    settings = json.loads((tmp_path / "heldout" / "settings.json").read_text())
    assert settings["done"] == ["contexts:matrix", "contexts:key", "contexts:others", "contexts:sb3", "complete"]
    assert "An interim report" not in report and "`meta2 heldout` started 1 time(s): " in report
    assert "of 1 contexts (" in report and "(the SB3 confirmation is below)" in report
    # an evaluation stopped after its key comparisons, with a held-out family not reached yet (no matrix, no
    # runs, only its prediction): the report says what is still to run and renders what it has
    (tmp_path / "heldout" / "settings.json").write_text(json.dumps({**settings, "done": settings["done"][:2]}))
    path.write_text(yaml.safe_dump({**plan, "heldout_family": ["acrobot"], "budgets": {"cartpole": 5000, "acrobot": 5000}}))
    preds = pd.read_csv(tmp_path / "heldout" / "predictions.csv")
    pd.concat([preds, preds.assign(task="acrobot")]).to_csv(tmp_path / "heldout" / "predictions.csv", index=False)
    assert main(["meta2", "report", str(path), "--out", str(tmp_path / "interim.md")]) == 0
    interim = (tmp_path / "interim.md").read_text()
    assert "An interim report" in interim and "contexts: every other method and baseline; contexts: the SB3" in interim
    assert "family: the held-out matrix (oracles)" in interim and "| not measured | - |" in interim
    assert "held-out family, not significantly worse than best-fixed: not measured yet" in interim
    path.write_text(yaml.safe_dump(plan))
    preds.to_csv(tmp_path / "heldout" / "predictions.csv", index=False)
    (tmp_path / "heldout" / "settings.json").write_text(json.dumps(settings))
    before = (tmp_path / "selection.json").read_bytes()
    assert main(["meta2", "cv", str(path), "--methods", "nearest-task"]) == 0  # best-fixed always joins
    assert (tmp_path / "selection.json").read_bytes() == before  # the same result: neither restamped nor flagged
    stale = {**selection, "ood_thresholds": {**selection["ood_thresholds"], "best-fixed": -1.0}}
    (tmp_path / "selection.json").write_text(json.dumps(stale))  # a selection this CV does not reproduce
    assert main(["meta2", "cv", str(path), "--methods", "nearest-task"]) == 0
    again = json.loads((tmp_path / "selection.json").read_text())
    assert again["methods"] == ["nearest-task", "best-fixed"] and again["heldout_runs_existed"]
    # other matrix data, after held-out runs: refused before the dataset or the selection is rewritten
    runs_path, dataset, chosen = MatrixPlan.load(path).runs_path, tmp_path / "dataset.csv", tmp_path / "selection.json"
    matrix_text, files = runs_path.read_text(), {f: f.read_bytes() for f in (dataset, chosen)}
    runs = pd.read_csv(runs_path)
    runs.assign(auc=runs["auc"] + 0.01).to_csv(runs_path, index=False)
    assert main(["meta2", "cv", str(path), "--methods", "nearest-task"]) == 2
    assert all(f.read_bytes() == b for f, b in files.items())
    runs_path.write_text(matrix_text)
    with pytest.raises(ValueError, match="trained for another selection.json"):  # weights of the old selection
        meta2.ship_winner(MatrixPlan.load(path), dest=tmp_path / "package" / "default.safetensors")
    assert main(["meta2", "report", str(path), "--out", str(tmp_path / "report.md")]) == 0
    assert "after held-out test runs existed" in (tmp_path / "report.md").read_text()


def test_extrapolation_means_a_value_outside_the_sampling_range():
    from hypermeta.reports.meta2 import extrapolates

    assert not extrapolates("cartpole:gravity=12,length=0.7") and extrapolates("cartpole:gravity=24")
    assert not extrapolates("acrobot") and extrapolates("frozenlake:success_rate=0.25")


def test_the_report_scores_a_baseline_on_the_tasks_it_has_runs_on():
    from types import SimpleNamespace

    from hypermeta.reports.meta2 import every_method_section, iqm_section

    rows = []
    for t, task in enumerate(["cartpole:gravity=12", "frozenlake:success_rate=0.6"]):
        for seed in range(4):
            for method, score in (("base", 0.4), ("oracle", 0.9), ("best-fixed", 0.6), ("winner", 0.6),
                                  ("rl-zoo", 0.5 + 0.01 * seed)):
                if not (method == "rl-zoo" and task.startswith("frozenlake")):  # rl-zoo has no FrozenLake entry
                    rows.append({"method": method, "task": task, "seed": seed, "score": score + 0.1 * t})
    data = SimpleNamespace(runs=pd.DataFrame(rows), contexts=["cartpole:gravity=12", "frozenlake:success_rate=0.6"],
                           family=[])
    iqm = "\n".join(iqm_section(data))
    assert "| rl-zoo | 0.515 [" in iqm and "| 1 of 2 | 4 |" in iqm and "nan" not in iqm
    assert iqm.splitlines()[-1].startswith("| rl-zoo |")  # above base's 0.450, but on 1 task: listed last
    table = "\n".join(every_method_section(data))
    assert "| rl-zoo | 1 of 2 | -0.085 [" in table and table.endswith("| 23% |")  # (0.515 - 0.4) / (0.9 - 0.4)
    assert "| winner | 2 of 2 | +0.000 [+0.000, +0.000] (includes 0) | +0.200 [" in table and "| 40% |" in table
    assert "family" not in table + iqm  # no held-out family: no section for it
    # the held-out family gets its own tables, scored on its tasks only
    rows += [{"method": m, "task": "lunarlander", "seed": seed, "score": v}
             for seed in range(4) for m, v in (("base", 0.2), ("oracle", 0.7), ("best-fixed", 0.45), ("winner", 0.45))]
    data = SimpleNamespace(runs=pd.DataFrame(rows), contexts=data.contexts, family=["lunarlander"])
    table = "\n".join(every_method_section(data))
    contexts, family = table.split("## Every method against best-fixed and base (held-out family)")
    assert "| winner | 2 of 2 |" in contexts and "lunarlander" not in contexts
    assert "| winner | 1 of 1 | +0.000 [+0.000, +0.000] (includes 0) | +0.250 [" in family and "| 50% |" in family
    assert "rl-zoo" not in family  # no runs there
    iqm = "\n".join(iqm_section(data)).split("## Every method on the held-out family (secondary)")[1]
    assert "| winner | 0.450 [0.450, 0.450] | 1 of 1 | 4 |" in iqm and "| base | 0.200 [" in iqm


def test_the_oracle_is_the_best_portfolio_mean_of_the_task_itself(tmp_path):
    from hypermeta.lab.meta2 import named_schedules, oracle_config

    plan = tiny_plan(tmp_path)
    task = plan.heldout_contexts[0]
    runs = fake_runs(plan, [task], {"sobol-00": 0.2, "sobol-01": 0.1, "base": 0.3})
    scores = matrix_scores(plan, runs, [task])
    assert oracle_config(plan, scores, task) == plan.portfolio_for(task)["base"]
    with pytest.raises(ValueError, match="no complete matrix with signal"):
        oracle_config(plan, scores, "cartpole:gravity=5")
    named = named_schedules(plan, task)  # the named schedules over the plan's fixed settings, as in the portfolio
    assert named["base"] == plan.portfolio_for(task)["base"] and named["rl-zoo"].net_arch == "small"


def test_tasks_without_signal_are_listed_not_silently_dropped(tmp_path):
    from hypermeta.lab.matrix import matrix_gaps

    plan = tiny_plan(tmp_path)
    tasks = plan.train_tasks()[:2]
    runs = fake_runs(plan, tasks, {"sobol-00": 0.2, "sobol-01": 0.4, "base": 0.1})
    flat = runs["task"] == tasks[1]
    runs.loc[flat, "auc"] = -0.05  # nothing beats the random policy on the second task
    assert set(matrix_scores(plan, runs, tasks)["task"]) == {tasks[0]}
    assert matrix_gaps(plan, runs, tasks) == {tasks[1]: pytest.approx(-0.05)}


def test_float_parsing_noise_does_not_change_the_data_fingerprint():
    from hypermeta.meta.data import MetaTrainConfig, TaskData
    from hypermeta.meta.selection import fingerprint

    def fp(objectives) -> str:
        codes = np.zeros((2, len(SPACE.encoded_names)))
        return fingerprint([TaskData("cartpole", np.ones(2), codes, np.array(objectives))], MetaTrainConfig(seed=0))

    assert fp([1e-14, 0.3]) == fp([-1e-14, 0.3 + 1e-14]) == fp([0.0, 0.3])  # -0.0 after rounding is 0.0
    assert fp([0.0, 0.3]) != fp([0.0, 0.31]) and fp([-0.1, 0.3]) != fp([0.1, 0.3])


def test_a_selection_recomputed_with_float_rounding_is_the_same_selection():
    from hypermeta.lab.meta2 import same_selection

    a = {"winner": "k-nearest", "ood_thresholds": {"k-nearest": 0.06323099570229854}, "table": [{"cv_score": 0.7}],
         "created": "2026-11-26 14:53 UTC", "heldout_runs_existed": False}
    rounded = {**a, "ood_thresholds": {"k-nearest": 0.0632309957022985}, "created": "later",
               "heldout_runs_existed": True}
    assert same_selection(a, rounded)
    assert not same_selection(a, {**a, "ood_thresholds": {"k-nearest": 0.0633}})
    assert not same_selection(a, {**a, "winner": "best-fixed"})
    assert same_selection({**a, "table": [{"gap_closed": float("nan")}]}, {**a, "table": [{"gap_closed": float("nan")}]})
    assert not same_selection(a, {**a, "table": [{"cv_score": 0.7}, {"cv_score": 0.6}]})


def test_the_callback_says_out_of_distribution_and_applies_best_fixed(recwarn):
    from stable_baselines3 import DQN

    from hypermeta import DQNConfig, HyperMetaCallback, OutOfDistributionWarning, make_env, predict_config

    tasks = task_family(10, seed=2)  # synthetic features: CartPole is far from all of them
    predictor = meta_train(tasks, MetaTrainConfig(method="nearest-task"))
    model = DQN("MlpPolicy", make_env("cartpole"), **DQNConfig(net_arch="small", learning_starts=100).sb3_kwargs())
    callback = HyperMetaCallback(predictor=predictor)
    model.learn(120, callback=callback)
    assert callback.prediction.out_of_distribution and callback.prediction.fallback
    fixed = SPACE.decode(best_fixed_code(tasks))
    assert callback.config.lr_initial == pytest.approx(fixed.lr_initial)
    assert model.lr_schedule(1.0) == pytest.approx(fixed.lr_initial)
    warning = [w for w in recwarn if issubclass(w.category, OutOfDistributionWarning)]
    assert warning and "falling back to best-fixed" in str(warning[0].message)
    # fallback=False: still flagged, but the meta-learner's own prediction is applied
    own = predict_config("cartpole", predictor, warn=False, fallback=False).prediction
    assert own.config.lr_initial != pytest.approx(fixed.lr_initial)
    model = DQN("MlpPolicy", make_env("cartpole"), **DQNConfig(net_arch="small", learning_starts=100).sb3_kwargs())
    callback = HyperMetaCallback(predictor=predictor, fallback=False)
    model.learn(120, callback=callback)
    assert callback.prediction.out_of_distribution and not callback.prediction.fallback
    assert model.lr_schedule(1.0) == pytest.approx(own.config.lr_initial)
    with pytest.raises(ValueError, match="not both"):  # a given config is applied as it is: nothing falls back
        HyperMetaCallback(fixed, fallback=False)


def test_the_callback_warns_when_the_models_settings_differ_from_those_the_weights_learned_with(tmp_path):
    import warnings

    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    from hypermeta import DQNConfig, HyperMetaCallback, make_env
    from hypermeta.callback import SettingsMismatchWarning, settings_mismatch
    from hypermeta.tasks.families import env_factory

    learned = DQNConfig(net_arch="small", batch_size=64, learning_starts=100, target_update_interval=250)
    predictor = meta_train(task_family(6, seed=3), MetaTrainConfig(method="nearest-task"), base=learned)
    loaded = MetaModel.load(predictor.save(tmp_path / "w"))
    assert loaded.trained_settings == learned and predictor.trained_settings == learned

    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsMismatchWarning)  # the settings it learned with: silent
        same = HyperMetaCallback(predictor=loaded)
        DQN("MlpPolicy", make_env("cartpole"), **learned.sb3_kwargs()).learn(10, callback=same)
    assert same.settings_mismatch == {}

    sb3_defaults = HyperMetaCallback(predictor=loaded)
    with pytest.warns(SettingsMismatchWarning, match=r"batch_size 32 \(learned with 64\)"):
        DQN("MlpPolicy", make_env("cartpole"), learning_starts=100).learn(10, callback=sb3_defaults)
    assert sb3_defaults.settings_mismatch == {"batch_size": (64, 32), "target_update_interval": (250, 10000),
                                              "buffer_size": (50000, 1000000)}

    # SB3 counts train_freq in VecEnv steps: two envs train half as often per transition
    two_envs = DQN("MlpPolicy", make_vec_env(env_factory("cartpole"), n_envs=2), **learned.sb3_kwargs())
    assert settings_mismatch(learned, two_envs) == {"train_freq": (4, 8)}
    other = DQN("MlpPolicy", make_env("cartpole"), **{**learned.sb3_kwargs(), "train_freq": (1, "episode"), "tau": 0.5,
                                                      "policy_kwargs": {"net_arch": [32]}, "gamma": 0.98})
    assert settings_mismatch(learned, other) == {"net": ("[64, 64] ReLU", "[32] ReLU"), "gamma": (0.99, 0.98),
                                                 "train_freq": (4, "1 episode"), "tau": (1.0, 0.5)}
    every_step = learned.replace(train_freq=1, subsample_steps=1)  # gradient_steps=-1: one per transition, as SB3
    minus_one = DQN("MlpPolicy", make_env("cartpole"), **{**every_step.sb3_kwargs(), "gradient_steps": -1})
    assert settings_mismatch(every_step, minus_one) == {}
    breakout = make_env("minatar-breakout")  # images: MinAtar's CNN, as sb3_kwargs(observation_space) builds it
    cnn = DQN("MlpPolicy", breakout, **learned.sb3_kwargs(breakout.observation_space))
    assert settings_mismatch(learned, cnn) == {}
    mlp = settings_mismatch(learned, DQN("MlpPolicy", breakout, **learned.sb3_kwargs()))
    assert mlp == {"net": ("MinAtarCNN, then no hidden layers", "[64, 64] ReLU")}
    kwargs = learned.sb3_kwargs(breakout.observation_space)
    wider = DQN("MlpPolicy", breakout, **{**kwargs, "policy_kwargs": {**kwargs["policy_kwargs"],
                                                                       "features_extractor_kwargs": {"channels": 32}}})
    assert settings_mismatch(learned, wider) == {"features_extractor_kwargs": ({}, {"channels": 32})}

    # weights that do not record their settings (meta-learner v1's): nothing to compare, no warning
    meta = json.loads((tmp_path / "w.json").read_text())
    (tmp_path / "w.json").write_text(json.dumps({**meta, "fixed": None}))
    unknown = HyperMetaCallback(predictor=MetaModel.load(tmp_path / "w.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsMismatchWarning)
        DQN("MlpPolicy", make_env("cartpole"), learning_starts=100).learn(10, callback=unknown)
    assert unknown.settings_mismatch == {}


def test_cv_folds_in_worker_processes_give_the_same_rows():
    tasks = task_family(6, seed=4)
    cfg = MetaTrainConfig(ensemble=1)
    one = loto_cv(tasks, ["best-fixed", "nearest-task"], cfg).sort_values(["method", "task"]).reset_index(drop=True)
    two = loto_cv(tasks, ["best-fixed", "nearest-task"], cfg, workers=2)
    pd.testing.assert_frame_equal(one, two.sort_values(["method", "task"]).reset_index(drop=True))


def test_push_right_solves_a_strong_engine_context_and_not_the_default():
    from hypermeta.reports.meta2 import push_right_return

    assert push_right_return("mountaincar", episodes=3) == (-200.0, 0)
    ret, solved = push_right_return("mountaincar:force=0.0025,goal_position=0.58", episodes=3)
    assert solved == 3 and -200 < ret < -30


def test_the_planned_mdd_matches_the_bootstrap():
    from hypermeta.engine.pipeline import planned_mdd

    rng = np.random.default_rng(0)
    n, k, task_var, seed_var = 16, 10, 0.01, 0.25
    mdds = []
    for _ in range(12):  # the bootstrap's MDD of one dataset is noisy: compare the average
        a = rng.normal(0.0, np.sqrt(task_var), n) + rng.normal(0.0, np.sqrt(seed_var), (k, n))
        mdds.append(paired_difference(a, np.zeros_like(a))["mdd"])
    assert np.mean(mdds) == pytest.approx(planned_mdd(task_var, seed_var, n, k), rel=0.12)
    # the naive standard error sqrt(task_var / n + seed_var / (n k)) would be ~25% too small here
    assert planned_mdd(0.0, seed_var, n, k) > 1.3 * 2.8 * np.sqrt(seed_var / (n * k))


def _report_data(winner: str, shift: dict[str, float]):
    """Synthetic held-out runs for the report's sections: two contexts and one family task, 4 seeds each."""
    from types import SimpleNamespace

    rows = []
    for task in ("cartpole:gravity=12", "acrobot:link_length_1=1.3", "lunarlander"):
        for seed in range(4):
            for method, score in (("base", 0.4), ("oracle", 0.9), ("best-fixed", 0.6)):
                rows.append({"method": method, "task": task, "seed": seed, "score": score + 0.01 * seed})
            winner_score = 0.6 + shift.get(task, 0.0) + 0.01 * seed
            rows.append({"method": "winner", "task": task, "seed": seed, "score": winner_score})
    tasks = ["cartpole:gravity=12", "acrobot:link_length_1=1.3", "lunarlander"]
    fixed, own = json.dumps(DQNConfig().to_dict()), json.dumps(DQNConfig(lr_initial=3e-4).to_dict())
    preds = pd.DataFrame({"method": [winner] * 3, "task": tasks, "fallback": [False, False, True],
                          "config": [fixed if winner == "best-fixed" else own, own, fixed]})
    if winner != "best-fixed":
        preds = pd.concat([preds, pd.DataFrame({"method": ["best-fixed"] * 3, "task": tasks, "fallback": False,
                                                "config": fixed})])
    return SimpleNamespace(runs=pd.DataFrame(rows), contexts=tasks[:2], family=tasks[2:], winner=winner, preds=preds,
                           sb3=None)


def test_the_targets_say_plainly_when_best_fixed_wins_and_when_a_method_loses():
    from hypermeta.reports.meta2 import per_task_section, targets_section

    text = "\n".join(targets_section(_report_data("best-fixed", {})))
    assert "The cross-validation selected best-fixed" in text and "met trivially" in text
    assert "winner beats best-fixed (paired CI above 0): **missed** (+0.000" in text
    text = "\n".join(targets_section(_report_data("k-nearest", {"cartpole:gravity=12": 0.2, "acrobot:link_length_1=1.3": 0.2})))
    assert "selected best-fixed" not in text and "winner beats best-fixed (paired CI above 0): **met** (+0.200" in text
    assert "best-fixed's own on 0 of 2 contexts (0 OOD fallbacks)" in text and "(the SB3 confirmation is pending)" in text
    # (0.8 - 0.4) / (0.9 - 0.4); its CI: 0.8 against the midpoint (0.4 + 0.9) / 2, equal on every seed
    assert ("closes >= 50% of the base-to-oracle gap: **met** (80%; winner - (base + oracle)/2 = +0.150 "
            "[+0.150, +0.150]: the CI is above 50%)") in text
    text = "\n".join(targets_section(_report_data("k-nearest", {"cartpole:gravity=12": 0.2})))
    assert "(60%; winner - (base + oracle)/2 = +0.050 [" in text  # tasks resampled: +0.15 on one, -0.05 on the other
    assert "the CI includes 50%" in text
    losing = "\n".join(per_task_section(_report_data("k-nearest", {"cartpole:gravity=12": -0.1})))
    assert "| cartpole:gravity=12 | -0.100 |" in losing and "below best-fixed on 1 of 3" in losing


def test_cv_against_heldout_scores_both_sides_the_same_way_per_family():
    from types import SimpleNamespace

    from hypermeta.meta.data import TaskData
    from hypermeta.reports.meta2 import cv_against_heldout_section

    a, b = DQNConfig(), DQNConfig(lr_initial=3e-4)  # portfolio configurations, with c below
    enc = {"a": SPACE.encode(a), "b": SPACE.encode(b)}
    lr, const, cosine = (SPACE.encoded_names.index(n) for n in ("lr_initial", "lr_shape=constant", "lr_shape=cosine"))
    enc["c"] = enc["a"].copy()
    enc["c"][[lr, const, cosine]] = [enc["a"][lr] - 0.55, 0.0, 1.0]  # another lr, and a cosine lr
    soft = enc["a"].copy()  # an undecoded prediction: a's lr, its lr shape between a's and c's (cosine wins)
    soft[[const, cosine]] = [0.45, 0.55]
    assert np.argmin([np.linalg.norm(soft - enc[k]) for k in "abc"]) == 0  # undecoded, it is nearest to a ...
    decoded = SPACE.encode(SPACE.decode(soft))
    assert np.argmin([np.linalg.norm(decoded - enc[k]) for k in "abc"]) == 2  # ... and decoded (cosine), to c
    near_b = json.dumps(DQNConfig(lr_initial=2.9e-4).to_dict())  # not in the matrix: looked up as b
    ctx = ["cartpole:gravity=12", "acrobot:link_length_1=1.3"]
    matrix = pd.DataFrame({"task": [ctx[0], ctx[0], ctx[1], ctx[1]], "score": [0.5, 0.8, 0.6, 0.4],
                           "config": [json.dumps(x.to_dict()) for x in (a, b, a, b)]})
    raw = {"k-nearest": json.dumps(b.to_dict()), "nearest-task": json.dumps(a.to_dict()), "ridge-portfolio": near_b}
    preds = pd.DataFrame([{"method": m, "task": t, "raw_config": x, "config": x, "ood_score": 0.0,
                           "fallback": m == "k-nearest" and t == ctx[1]}
                          for m, x in {**raw, "best-fixed": json.dumps(a.to_dict())}.items() for t in ctx])
    # training tasks: best-fixed (a) scores 0.5; k-nearest predicts b, nearest-task c, ridge-portfolio a
    cv_tasks = ["cartpole:gravity=9", "cartpole:gravity=11", "acrobot:link_length_1=0.9"]
    kn, nt = [0.1, 0.3, -0.1], [-0.2, -0.2, -0.2]
    training = {t: TaskData(t, np.zeros(1), np.stack([enc["a"], enc["b"], enc["c"]]), np.array([0.5, 0.5 + d, 0.5 + e]))
                for t, d, e in zip(cv_tasks, kn, nt)}
    codes = {"k-nearest": enc["b"], "nearest-task": soft, "ridge-portfolio": enc["a"]}
    cv = pd.DataFrame([{"method": m, "task": t, "score": np.nan, "best_fixed": 0.5, "fingerprint": fp,
                        "code": " ".join(f"{v:.6f}" for v in code)}
                       for fp in ("this", "an older selection") for m, code in codes.items() for t in cv_tasks])
    data = SimpleNamespace(cv=cv, selection={"fingerprint": "this", "methods": [*codes, "best-fixed"], "cv_ensemble": 1},
                           winner="k-nearest", contexts=ctx, preds=preds, matrix=matrix, training_tasks=training,
                           plan=SimpleNamespace(matrix_seeds=4))
    text = "\n".join(cv_against_heldout_section(data))
    assert "| method | all (3 / 2) | acrobot (1 / 1) | cartpole (2 / 1) |" in text
    # CV: all +0.1, acrobot -0.1, cartpole +0.2; held-out (matrix): acrobot 0.4 - 0.6, cartpole 0.8 - 0.5
    assert "| k-nearest (winner) | +0.100 / +0.050 | -0.100 / -0.200 | +0.200 / +0.300 |" in text
    assert "| nearest-task | -0.200 / +0.000 |" in text and "| ridge-portfolio | +0.000 / +0.050 |" in text
    assert "Spearman correlation, across the methods, of their mean CV difference and their mean held-out " \
           "difference: +0.87 (3 methods)" in text  # ranks (3, 1, 2) against (2.5, 1, 2.5)
    assert "replaced its own prediction on 1 of 2 held-out contexts. There, its own prediction minus best-fixed " \
           "(matrix lookup) was -0.200 on average (above on 0, below on 1): `acrobot:link_length_1=1.3` -0.200." in text


def test_the_report_says_which_tpe_best_of_k_are_random_search():
    from hypermeta.reports.meta2 import tpe_random_start_line

    def line(workers, **settings):
        return "".join(tpe_random_start_line({"tpe": True, "runner": "batched", **settings,
                                              "starts": [{"workers": w} for w in workers]}))

    assert "first 16 trials are its random start, so @5 is random search, @10 is random search, @20 is 16 random " \
           "+ at most 4 TPE-guided trials, @50 is 16 random + at most 34 TPE-guided trials." in line([2, 2])
    assert "first 8 trials" in line([1]) and "may differ" in line([1, 2])
    assert line([2], tpe=False) == "" and line([2], runner="sb3") == ""  # no TPE; one trial at a time


def test_paired_statistics_pair_runs_by_seed_not_by_position():
    from hypermeta.reports.meta2 import _diff

    runs = pd.DataFrame([{"method": m, "task": "t", "seed": s, "score": (1.0 if m == "a" else 0.0) + s}
                         for m, seeds in (("a", [0, 1, 2]), ("b", [1, 2, 3])) for s in seeds])
    d = _diff(runs, "a", "b", ["t"])  # seeds 1 and 2 are shared: a - b = 1 exactly on each
    assert d["seeds"] == 2 and d["diff"] == pytest.approx(1.0)


def test_runner_agreement_pairs_the_same_runs_of_both_runners():
    from hypermeta.reports.meta2 import runner_agreement

    def runs(offset):
        return pd.DataFrame([{"task": "t", "config_key": k, "seed": s, "score": 0.5 + offset * (k == "b"),
                              "curve": f"[{offset * (k == 'b')}]"} for k in ("a", "b") for s in range(3)])
    text = runner_agreement(runs(0.1), runs(0.0))[0]
    assert "6 runs" in text and "+0.050 [" in text and "identical evaluation curves: 3 of 6" in text


def test_score_matrix_refuses_what_it_cannot_pair_instead_of_dropping_it():
    from hypermeta.engine.pipeline import score_matrix

    runs = pd.DataFrame({"method": "a", "task": ["x", "x", "y", "y"], "seed": [0, 1, 0, 1], "auc": [0.1, 0.2, 0.3, 0.4]})
    assert score_matrix(runs, "a", ["y", "x"]).tolist() == [[0.3, 0.1], [0.4, 0.2]]  # tasks in the order asked
    with pytest.raises(ValueError, match="NaN"):
        score_matrix(runs.assign(auc=[0.1, np.nan, 0.3, 0.4]), "a", ["x", "y"])
    with pytest.raises(ValueError, match="two different"):
        score_matrix(pd.concat([runs, runs.iloc[:1].assign(auc=9.0)]), "a", ["x", "y"])
    with pytest.raises(ValueError, match="no seed in common"):
        score_matrix(runs.assign(seed=[0, 1, 2, 3]), "a", ["x", "y"])
    with pytest.raises(ValueError, match="lacks seed 5"):
        score_matrix(runs, "a", ["x", "y"], seeds=[0, 5])
