"""Meta-learner v3's evaluation pipeline (hypermeta.lab.v3, hypermeta.reports.v3) on a shrunken copy of the plan:
one context per family, one test seed, 2,000-step runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hypermeta.lab.v3 import (SB3_SETTINGS_METHODS, STARTS, STEP_METHODS, STEPS, TPE_RERUNS, EvaluationError,
                              V3Evaluation, run_step)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_plan(tmp_path, monkeypatch):
    plan = yaml.safe_load((ROOT / "studies/v3/plan.yaml").read_text())
    plan["matrix_plan"] = str(ROOT / plan["matrix_plan"])
    plan["init_starts"]["out"] = str(ROOT / plan["init_starts"]["out"])
    plan["evaluation"]["test_seeds"] = 1
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    contexts = yaml.safe_load((ROOT / "studies/v3/contexts.yaml").read_text())
    small = {fam: {"interpolation": parts["interpolation"][:1], "extrapolation": []} for fam, parts in contexts.items()}
    (tmp_path / "contexts.yaml").write_text(yaml.safe_dump(small))
    monkeypatch.setattr(V3Evaluation, "budget", lambda self, task: 2000)
    ev = V3Evaluation.load(tmp_path / "plan.yaml")
    monkeypatch.setattr(V3Evaluation, "family_tasks", ["taxi"])
    return ev


def test_v2_step_runs_the_fallback_variants_paired_and_the_report_shows_them(small_plan, tmp_path, monkeypatch):
    ev = small_plan
    with pytest.raises(EvaluationError, match="needs step 'predictions' first"):
        run_step(ev, "v2")
    run_step(ev, "predictions")
    preds = ev.predictions
    assert set(preds["variant"]) == {"v2-winner", "v2-winner-no-fallback", "v2-winner-structure-fallback"}
    assert len(preds) == 3 * 5
    # the structure rule falls back exactly where the structure is unknown: Taxi, never a training family's context
    structure = preds[preds["variant"] == "v2-winner-structure-fallback"].set_index("task")["fallback"]
    assert structure.to_dict() == {t: t == "taxi" for t in [*ev.context_tasks, "taxi"]}
    assert not preds.loc[preds["variant"] == "v2-winner-no-fallback", "fallback"].any()
    from hypermeta.engine.batched import BatchedRunner

    sizes, batches = [], BatchedRunner.batches
    monkeypatch.setattr(BatchedRunner, "batches", lambda self, jobs: [
        sizes.append((self.max_agents, len(b))) or b for b in batches(self, jobs)])
    run_step(ev, "v2", max_agents=2)  # --max-agents: smaller lock-step batches, each stored when it ends
    assert {cap for cap, _ in sizes} == {2} and max(n for _, n in sizes) == 2
    runs = ev.runs(["v2"])
    assert len(runs) == 4 * 5 and set(runs["seed"]) == {10_000_000}
    # a fallback is best-fixed's own run (the same stored row)
    fell_back = preds[(preds["variant"] == "v2-winner") & preds["fallback"]]["task"]
    for task in fell_back:
        sel = runs[runs["task"] == task].set_index("method")
        assert sel.loc["v2-winner", "config_key"] == sel.loc["best-fixed", "config_key"]
    from hypermeta.reports.v3 import render_v3_report

    text = render_v3_report(ev.plan_path, tmp_path / "report.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("- the same contexts, v2-winner-structure-fallback"))
    assert "not measured yet" not in line and "[" in line
    assert (f"- {len(ev.context_tasks)} new held-out contexts, controller - best-fixed > 0 with the paired 95% CI "
            "above 0: not measured yet") in text
    assert "Steps done: predictions, v2" in text


def test_controller_steps_wait_for_the_end_of_meta_training(small_plan, tmp_path):
    ev = small_plan
    state = {"theta": [0.0], "m": [0.0], "v": [0.0], "generation": 3, "cpu_seconds": 10.0}
    (tmp_path / "controller").mkdir()
    (tmp_path / "controller" / "es_state.json").write_text(json.dumps(state))
    ev.mark("init-choice", chosen="reptile")
    with pytest.raises(EvaluationError, match=r"meta-training has not ended \(generation 3 of 120"):
        run_step(ev, "controller")
    assert not (ev.out / "runs.csv").exists()


def _ended_meta_training(folder, ctl, generation=120):
    """An ES state that has ended, whose best validation check is ``ctl``, and ``ctl`` as its candidate file."""
    ctl.meta = {"generation": generation}
    (folder / "controller").mkdir(exist_ok=True)
    ctl.save(folder / "controller" / "controller")
    check = {"generation": generation, "theta": ctl.weights.ravel().tolist(), "mean_theta": 0.51, "mean_zero": 0.5,
             "mean_difference": 0.01, "se_difference": 0.02}
    state = {"theta": [0.0], "m": [0.0], "v": [0.0], "generation": 120, "cpu_seconds": 10.0, "validation": [check]}
    (folder / "controller" / "es_state.json").write_text(json.dumps(state))


def test_a_stale_candidate_file_is_refused_and_a_done_step_is_never_redone(small_plan, tmp_path):
    from hypermeta.controller import LinearController

    ev = small_plan
    problem = ev.problem
    ctl = LinearController.zeros(problem.feature_mean, problem.feature_std)
    ctl.weights[0, -1] = 0.3
    _ended_meta_training(tmp_path, ctl)
    stale = LinearController.zeros(problem.feature_mean, problem.feature_std)
    stale.meta = {"generation": 20}
    stale.save(tmp_path / "controller" / "controller")  # left by an earlier, shorter meta-training call
    ev.mark("init-choice", chosen="reptile")
    with pytest.raises(EvaluationError, match="is not the candidate of the ended meta-training"):
        run_step(ev, "controller")
    assert not (ev.out / "runs.csv").exists()
    first = ev.steps()["done"]["init-choice"]
    assert "skipped" in run_step(ev, "init-choice") and ev.steps()["done"]["init-choice"] == first


def test_a_start_applies_only_where_its_family_has_one(small_plan):
    ev = small_plan
    assert ev.method_job("init-reptile", "taxi", 10_000_000) is None
    job = ev.method_job("init-reptile", ev.context_tasks[0], 10_000_000)
    family = ev.context_tasks[0].partition(":")[0]
    assert job.init is not None and job.init.endswith(f"{family}-reptile.safetensors") and job.control is None
    assert ev.method_job("hand-rule", "taxi", 10_000_000).control == "rule"
    with pytest.raises(EvaluationError, match="unknown step"):
        run_step(ev, "everything")


def test_trajectories_step_records_what_the_controller_chose_and_the_report_plots_it(small_plan, tmp_path):
    import numpy as np

    from hypermeta.controller import LR_RANGE, LinearController
    from hypermeta.reports.v3 import render_v3_report

    ev = small_plan
    problem = ev.problem
    ctl = LinearController.zeros(problem.feature_mean, problem.feature_std)
    ctl.weights[:, -1] = [0.8, -0.5]  # a bias: lr up, epsilon down, whatever the signals
    _ended_meta_training(tmp_path, ctl)
    with pytest.raises(EvaluationError, match="needs step 'controller' first"):
        run_step(ev, "trajectories")
    choice = {"chosen": "reptile", "means": {"reptile": 0.5}, "tasks": ["cartpole"], "seeds": [42_100_000],
              "per_family": {"cartpole": {"reptile": 0.5}}}
    ev.out.mkdir(parents=True, exist_ok=True)
    (ev.out / "init_choice.json").write_text(json.dumps(choice))
    ev.mark("init-choice", chosen="reptile")
    ev.mark("controller")  # (its runs are not made: the trajectories step reruns its own)
    run_step(ev, "trajectories")
    frame = json.loads((ev.out / "steps.json").read_text())["done"]
    assert "trajectories" in frame
    import pandas as pd

    traj = pd.read_csv(ev.out / "trajectories.csv")
    assert traj["task"].nunique() == 5 and len(traj) == 5 * 101
    late = traj[traj["step"] > 1000]  # after the first control steps the offsets are in force
    assert (late["lr"] > late["base_lr"]).all() and (late["eps"] <= late["base_eps"]).all()
    assert traj["lr"].between(*LR_RANGE).all() and traj["eps"].between(0, 1).all()
    assert np.allclose(traj.loc[traj["step"] == 0, "lr"], traj.loc[traj["step"] == 0, "base_lr"])
    text = render_v3_report(ev.plan_path, tmp_path / "report" / "report.md").read_text()
    assert "![lr and epsilon chosen by the controller](trajectories.png)" in text
    assert "No re-run's curve differs from its stored run's." in text
    assert (tmp_path / "report" / "trajectories.png").stat().st_size > 10_000


def test_every_step_runs_end_to_end_and_the_report_fills_every_target(small_plan, tmp_path, monkeypatch):
    """The steps that wait for meta-training (and the two before them), on the shrunken plan with an ended
    meta-training: each runs, resumes as done, and the report has a verdict for every target."""
    from hypermeta.controller import LinearController
    from hypermeta.engine import pipeline
    from hypermeta.reports.v3 import render_v3_report

    monkeypatch.setattr("hypermeta.lab.v3.CONFIRM_SEEDS", 1)
    interval = pipeline._seeded_interval  # 200 bootstrap resamples, not 2,000: the report's ~130 CIs in seconds
    monkeypatch.setattr(pipeline, "_seeded_interval", lambda x, func, reps, *a, **k: interval(x, func, 200, *a, **k))
    tpe_tasks = V3Evaluation.tpe_tasks
    monkeypatch.setattr(V3Evaluation, "tpe_tasks", lambda self: tpe_tasks(self)[:2])
    ev = small_plan
    stored = ev.meta2_runs.assign(timesteps=2000)  # meta2's stored runs, as if made at this test's budget
    monkeypatch.setattr(V3Evaluation, "meta2_runs", property(lambda self: stored))
    ctl = LinearController.zeros(ev.problem.feature_mean, ev.problem.feature_std)
    ctl.weights[:, -1] = [0.4, -0.3]
    _ended_meta_training(tmp_path, ctl)
    ev.out.mkdir(parents=True, exist_ok=True)
    choice = {"chosen": "reptile", "means": {"reptile": 0.5, "fomaml": 0.4}, "tasks": ["cartpole"],
              "seeds": [42_100_000], "per_family": {"cartpole": {"reptile": 0.5, "fomaml": 0.4}}}
    (ev.out / "init_choice.json").write_text(json.dumps(choice))
    ev.mark("init-choice", chosen="reptile")
    run_step(ev, "predictions")
    for step in ("v2", "baselines", "starts", "controller", "trajectories", "sb3-settings", "tpe", "confirm"):
        assert "skipped" not in run_step(ev, step)
        assert "skipped" in run_step(ev, step)
    runs = ev.runs(list(STEP_METHODS) + ["sb3-settings", "tpe"])
    families = len(ev.contexts)
    assert (runs.groupby("method").size().to_dict()
            == {"best-fixed": families + 1, "v2-winner": families + 1, "v2-winner-no-fallback": families + 1,
                "v2-winner-structure-fallback": families + 1, "base": families + 1, "sb3-default": families + 1,
                "hand-rule": families + 1, **{f"init-{s}": families for s in STARTS}, "init-best+controller": families,
                "controller": families + 1 + len(ev.tpe_tasks()), **{m: len(ev.tpe_tasks()) for m in TPE_RERUNS},
                **{m: families for m in SB3_SETTINGS_METHODS}})
    reproduced = ev.steps()["done"]["tpe"]["reproduced"]  # one task per family of the tpe tasks, trained again
    assert set(reproduced["tasks"]) == {ev.tpe_tasks()[0]} and reproduced["identical"] in (0, 1)
    assert ev.steps()["done"]["tpe"]["platform"].startswith("torch ")
    # the controller's runs carry the candidate's key; the SB3 confirmation ran in the SB3 runner
    assert set(ev.runs(["confirm"], "sb3")["method"]) == {"controller", "best-fixed"}
    assert ev.steps()["done"]["controller"]["controller"] == ctl.key
    # the trajectories step trains the controller's runs on test seed 0 again, in another batch: the same curves
    assert ev.steps()["done"]["trajectories"]["differ_from_stored"] == []
    text = render_v3_report(ev.plan_path, tmp_path / "report" / "report.md").read_text()
    targets = text.split("## Targets")[1].split("\n## ")[0]
    assert "not measured yet" not in targets and targets.count("**m") == 5 + families
    assert "Steps done: " + ", ".join(STEPS) + "; to do: none." in text
    confirmation = text.split("### SB3 confirmation")[1].split("\n## ")[0]
    assert "| controller - best-fixed |" in confirmation
    assert "| tasks | SB3 runner | engine, same tasks x seeds |" in confirmation
    assert all(f"| {family} ({len(tasks)}) | " in confirmation for family, tasks in ev.contexts.items())
    assert "- Held-out runs: engine" in text  # every step done: not "so far"
    two_by_two = text.split("### The 2 x 2")[1].split("\n### ")[0]  # the chosen start (reptile) in its cells
    assert "| init-reptile - best-fixed |" in two_by_two and "| init-best+controller - init-reptile |" in two_by_two
    assert "| controller - rerun:optuna-tpe@20 |" in text and "Reproduction check before the step" in text
    assert "## Shipping (the plan's rule)" in text
    failures = text.split("## Failed runs")[1].split("\n## ")[0]
    assert f"| failed on the {len(ev.context_tasks)} contexts |" in failures and "| init-reptile | 4 |" in failures
    assert "- Q-network starts (4 families): " in text.split("## CPU spent")[1]  # from the artifacts' manifests
    per_task = text.split("## Per held-out task")[1].split("\n## ")[0]
    assert ("| task | best-fixed | controller - best-fixed | init-reptile - best-fixed | init-best+controller - "
            "best-fixed |") in per_task
    assert all(f"| {t} | " in per_task for t in [*ev.context_tasks, *ev.family_tasks])
    assert "## Reading" not in text  # no findings.md yet; once written, it follows the shipping rule's section
    (ev.root / "findings.md").write_text("- 2026-12-07: what the runs say.\n")
    text = render_v3_report(ev.plan_path, tmp_path / "report" / "report.md").read_text()
    assert "## Reading (written after the runs; dated)\n\n- 2026-12-07: what the runs say." in text
    # --ship: what the rule allows goes into the (here: a temporary) package folder, the rest is removed
    from hypermeta.reports.v3_ship import ship_v3
    from hypermeta.qstart import QStart
    from hypermeta.reports.v3 import _Data, shipping_decision

    decision = shipping_decision(_Data.load(ev))
    weights = tmp_path / "weights"
    (weights / "starts").mkdir(parents=True)
    stale = {f: weights / "starts" / f"{f}.safetensors" for f in ev.contexts}
    for path in [*stale.values(), weights / "controller.safetensors"]:
        path.write_bytes(b"left by an earlier decision")
    record = ship_v3(ev.plan_path, weights)
    assert record["controller"]["shipped"] is decision.controller
    assert set(record["controller"]["conditions"]) == {"heldout_contexts", "heldout_family", "sb3_confirmation_above_0"}
    if decision.controller:
        assert LinearController.load(weights / "controller.safetensors").key == ctl.key
    else:
        assert not (weights / "controller.safetensors").exists()
    for family, ship in decision.starts.items():
        assert record["starts"][family]["shipped"] is ship and stale[family].exists() is ship
        if ship:
            assert QStart.load(stale[family]).key == QStart.load(ev.start_path(family, "reptile")).key
    assert json.loads((weights / "v3.provenance.json").read_text()) == json.loads(json.dumps(record))
    # both ways, whatever these tiny runs decided: every condition met installs everything, none met removes it
    from hypermeta.reports import v3 as report

    results = report.target_results(_Data.load(ev))
    for met in (True, False):
        monkeypatch.setattr(report, "target_results", lambda data, met=met: {
            k: report.Target(t.label, met, t.text) for k, t in results.items()})
        record = ship_v3(ev.plan_path, weights)
        assert record["controller"]["shipped"] is met and (weights / "controller.safetensors").exists() is met
        if met:
            assert LinearController.load(weights / "controller.safetensors").key == ctl.key
        assert all(stale[f].exists() is met and e["shipped"] is met for f, e in record["starts"].items())
    assert not list((weights / "starts").iterdir())


def test_the_shipping_rule_needs_every_condition_and_a_finished_evaluation(small_plan, monkeypatch):
    from hypermeta.reports.v3_ship import ship_v3
    from hypermeta.reports import v3 as report

    ev = small_plan
    with pytest.raises(EvaluationError, match="the evaluation is not finished .steps to do: predictions, init-choice"):
        ship_v3(ev.plan_path)
    data = report._Data.load(ev)

    def decided(**met):
        results = {k: report.Target(k, met.get(k, True), "") for k in
                   ("heldout_contexts", "structure_fallback", "heldout_family", "failures", "stretch",
                    "sb3_confirmation_above_0", "start:cartpole", "start:acrobot")}
        monkeypatch.setattr(report, "target_results", lambda data: results)
        return report.shipping_decision(data)

    assert decided().controller is True and decided().starts == {"cartpole": True, "acrobot": True}
    # the structure rule, the failures and the stretch target are not conditions of the controller's shipping
    assert decided(structure_fallback=False, failures=False, stretch=False).controller is True
    assert decided(heldout_family=False).controller is False
    assert decided(sb3_confirmation_above_0=None).controller is None
    assert decided(sb3_confirmation_above_0=None, heldout_contexts=False).controller is False
    assert decided(**{"start:acrobot": False}).starts == {"cartpole": True, "acrobot": False}


def test_a_target_is_judged_only_on_every_registered_seed_and_failures_on_the_same_runs(small_plan):
    """A done step stores every run, so fewer pairs than registered mean missing runs: no verdict on them."""
    import pandas as pd

    from hypermeta.reports import v3 as report

    ev = small_plan
    ev.plan["evaluation"]["test_seeds"] = 2
    rows = [{"task": t, "method": m, "seed": 10_000_000 + j, "score": 0.05 if m == "best-fixed" else 0.5,
             "final_score": 0.5} for t in [*ev.context_tasks, *ev.family_tasks] for m in ("controller", "best-fixed")
            for j in range(2)]
    runs = pd.DataFrame(rows)

    def targets(frame):
        return report.target_results(report._Data(ev, frame, frame.iloc[:0], frame.iloc[:0], {}))

    complete = targets(runs)
    assert complete["heldout_contexts"].met is True and complete["failures"].met is True
    one_seed = targets(runs[runs["seed"] == 10_000_000])
    assert one_seed["heldout_contexts"].met is None
    assert one_seed["heldout_contexts"].text == "not measured yet (only 1 of the 2 registered seeds paired)"
    assert one_seed["failures"].met is None  # the registered seeds are not all there
    lost = runs.drop(runs.index[(runs["method"] == "best-fixed") & (runs["task"] == ev.context_tasks[0])][:1])
    assert targets(lost)["failures"].met is None  # best-fixed's failures would be counted on fewer runs
    assert complete["sb3_confirmation_above_0"].met is None  # no SB3 runs


def test_a_weights_install_that_fails_its_check_leaves_the_old_files(tmp_path):
    import numpy as np

    from hypermeta.files import install_weights, load_arrays, save_arrays

    def check(path):
        return load_arrays(path, "the weights")

    dest = save_arrays(tmp_path / "package" / "controller", {"w": np.zeros(3, np.float32)}, {"v": "old"})
    good = save_arrays(tmp_path / "new", {"w": np.ones(3, np.float32)}, {"v": "new"})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    bad.with_suffix(".json").write_text("{}")
    with pytest.raises(Exception):
        install_weights(bad, dest, check)
    assert load_arrays(dest, "x")[1] == {"v": "old"} and sorted(p.name for p in dest.parent.iterdir()) == [
        "controller.json", "controller.safetensors"]  # nothing staged is left behind
    digest = install_weights(good, dest, check, provenance={"why": "a test"})
    arrays, manifest = load_arrays(dest, "x")
    assert manifest == {"v": "new"} and arrays["w"].tolist() == [1, 1, 1] and len(digest) == 64
    assert json.loads(dest.with_name("controller.provenance.json").read_text()) == {"why": "a test"}


def test_the_sb3_confirmation_per_family_pairs_the_engine_on_the_sb3_runners_tasks_and_seeds():
    """The engine column uses only the (task, seed)s the SB3 runner has, so both columns compare the same pairs."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from hypermeta.reports.common import ci_text, paired_diff
    from hypermeta.reports.v3 import _confirmation_by_family

    rng = np.random.default_rng(0)
    tasks = {"cartpole": ["cartpole:a", "cartpole:b"], "acrobot": ["acrobot:a", "acrobot:b"]}
    context_tasks = [t for ts in tasks.values() for t in ts]
    every = [*context_tasks, "taxi", "taxi:b"]
    ev = SimpleNamespace(contexts=tasks, context_tasks=context_tasks, family_tasks=every[-2:], held_out_tasks=every)

    def frame(seeds_of, shift):
        return pd.DataFrame([{"task": t, "method": m, "seed": s, "score": rng.normal() + (shift * (m == "controller"))}
                             for t in every for s in seeds_of(t) for m in ("controller", "best-fixed")])

    engine = frame(lambda t: range(6), 0.1)
    # the SB3 runner's seeds differ by task: a filter on the union of its seeds would keep seeds 0-4 everywhere
    sb3 = frame(lambda t: [0, 1, 2, 3] if t in ev.context_tasks else [0, 1, 2, 4], 0.2)
    lines = _confirmation_by_family(SimpleNamespace(ev=ev, runs=engine, sb3=sb3))
    rows = {line.split(" (")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "(" in line}
    assert set(rows) == {"all held-out tasks", "cartpole", "acrobot", "taxi"}
    same = engine.merge(sb3[["task", "seed"]].drop_duplicates())
    assert len(same) == len(sb3) < len(engine)
    for label, group in [("all held-out tasks", every), ("cartpole", tasks["cartpole"]), ("taxi", ev.family_tasks)]:
        sb3_cell, engine_cell = rows[label].strip("| ").split(" | ")[1:]
        assert sb3_cell == ci_text(paired_diff(sb3, "controller", "best-fixed", group))
        assert engine_cell == ci_text(paired_diff(same, "controller", "best-fixed", group))
        union = engine[engine["seed"] <= 4]
        assert engine_cell not in (ci_text(paired_diff(engine, "controller", "best-fixed", group)),
                                   ci_text(paired_diff(union, "controller", "best-fixed", group)))
    assert _confirmation_by_family(SimpleNamespace(ev=ev, runs=engine, sb3=sb3.iloc[:0])) == []
