"""The few-shot benchmark (`hypermeta fewshot`) on a tiny plan: cold TPE best-of-k, tune per sampler, test runs on
the same seeds, the report and its targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hypermeta.cli import main
from hypermeta.lab.fewshot import FewShotPlan, check_test_runs_only, fewshot_progress
from hypermeta.seeds import test_seeds


def test_fewshot_end_to_end_on_a_tiny_plan(tmp_path, network_weights, no_network_weights, capsys):
    plan = {"name": "tiny", "tasks": [{"task": "cartpole:gravity=12", "timesteps": 300}],
            "samplers": ["tpe", "adapt"], "tune_trials": 3, "cold_trials": [2, 4], "seeds_per_trial": 1,
            "test_seeds": 2, "selection_tasks": [], "weights": no_network_weights}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    assert main(["fewshot", str(path)]) == 2  # adapt has no few-shot step there: refused before any run
    assert "set `adapt_weights` to a network method's weights" in capsys.readouterr().err
    assert not (tmp_path / "studies.db").exists()
    plan["weights"] = network_weights
    path.write_text(yaml.safe_dump(plan))
    files = sorted(tmp_path.rglob("*"))
    assert main(["fewshot", str(path), "--status"]) == 0  # nothing stored yet, and --status creates nothing
    assert "left in all: 0.0 core-hours of the runs' own time (not counting cartpole:gravity=12: no runs yet)" \
        in capsys.readouterr().out and sorted(tmp_path.rglob("*")) == files
    out = tmp_path / "report"
    assert main(["fewshot", str(path), "--out-dir", str(out)]) == 0
    status = fewshot_progress(FewShotPlan.load(path)).iloc[0]
    assert (status["cold"], status["tune-tpe"], status["tune-adapt"], status["remaining_core_h"]) == (4, 3, 3, 0.0)
    distinct = len(pd.read_csv(tmp_path / "runs_by_method.csv").drop_duplicates(["config_key", "seed"]))
    assert status["test_runs"] == status["test_planned"] == distinct and status["s_per_run"] > 0
    runs = pd.read_csv(tmp_path / "runs_by_method.csv")
    assert set(runs["method"]) == {"cold@2", "cold@4", "tune-tpe@3", "tune-adapt@3"}
    assert all(set(g["seed"]) == set(test_seeds(2)) for _, g in runs.groupby("method"))
    progress = pd.read_csv(tmp_path / "progress.csv")
    assert set(progress["study"]) == {"cold", "tune-tpe", "tune-adapt"}
    cold = progress[progress["study"] == "cold"]
    assert list(cold["trials"]) == [1, 2, 3, 4] and cold["env_steps"].is_monotonic_increasing
    report = (out / "report.md").read_text()
    assert "| tune-adapt@3 - cold@4 |" in report and (out / "progress.png").is_file()
    assert "the default stays `tpe`" in report and "neither cold@32 nor cold@64" in report
    choice = json.loads((tmp_path / "choice.json").read_text())  # recorded by the run stage, not the report
    assert choice["default"] == "tpe" and not choice["evaluation_runs_existed"]
    first = json.loads((tmp_path / "manifest.json").read_text())["starts"][0]
    assert choice["commit"] == first["commit"]  # the code of the start that recorded it
    assert f"by the run started {first['time']} (commit `{first['commit']}`); the first trial of an evaluation " \
        "task's `tune` study started " in report
    # resumes: nothing is trained again (the cache keeps its rows, no study gets a trial more)
    before = pd.read_csv(tmp_path / "runs.csv")
    assert main(["fewshot", str(path), "--out-dir", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "runs.csv"), before)
    assert len(pd.read_csv(tmp_path / "progress.csv")) == len(progress)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["workers"] for s in manifest["starts"]] == [1, 1]
    report = (out / "report.md").read_text()
    assert report.index("## Deviations and the run record") < report.index("## Targets")
    assert "Run in 2 start(s)" in report and "distinct test run(s) diverged" in report
    # --test-runs-only: a finished task's missing test runs, with other workers, and no study touched
    assert main(["fewshot", str(path), "--test-runs-only"]) == 2
    assert "--test-runs-only needs --tasks" in capsys.readouterr().err
    before.iloc[:-1].to_csv(tmp_path / "runs.csv", index=False)  # one test run lost
    assert main(["fewshot", str(path), "--tasks", "cartpole*", "--test-runs-only", "--workers", "2",
                 "--out-dir", str(out)]) == 0
    after = pd.read_csv(tmp_path / "runs.csv")
    assert len(after) == len(before) and after.iloc[-1]["config_key"] == before.iloc[-1]["config_key"]
    assert fewshot_progress(FewShotPlan.load(path)).iloc[0][["cold", "tune-tpe", "tune-adapt"]].tolist() == [4, 3, 3]
    last = json.loads((tmp_path / "manifest.json").read_text())["starts"][-1]
    assert last["workers"] == 2 and last["only"] == "the test runs of cartpole:gravity=12 (studies finished before)"
    report = (out / "report.md").read_text()
    assert "only the test runs of cartpole:gravity=12" in report and "The workers changed" not in report
    path.write_text(yaml.safe_dump({**plan, "tune_trials": 4}))  # another plan: refused as such
    assert main(["fewshot", str(path), "--tasks", "cartpole*", "--test-runs-only"]) == 2
    assert "were made with another plan" in capsys.readouterr().err
    short = FewShotPlan.load(path)
    record = (tmp_path / "manifest.json").rename(tmp_path / "record.json")  # none to compare: the studies refuse
    with pytest.raises(ValueError, match="'cartpole:gravity=12''s studies are not finished"):
        check_test_runs_only(short, short.tasks)
    record.rename(tmp_path / "manifest.json")
    path.write_text(yaml.safe_dump({**plan, "test_seeds": 3}))  # another benchmark: its runs are not these
    assert main(["fewshot", str(path), "--out-dir", str(out)]) == 2


def test_fewshot_runs_a_task_on_the_sb3_runner_as_its_minatar_games(tmp_path, network_weights):
    """The committed plan's MinAtar games use the SB3 runner (one run at a time, `tune`'s proposer rounds of 4):
    the same stages on a cartpole task at a tiny budget, two samplers side by side."""
    plan = {"name": "tinysb3", "tasks": [{"task": "cartpole:gravity=12", "timesteps": 300, "runner": "sb3"}],
            "samplers": ["tpe", "adapt"], "tune_trials": 3, "cold_trials": [2], "seeds_per_trial": 1,
            "test_seeds": 1, "selection_tasks": [], "weights": network_weights}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    assert main(["fewshot", str(path), "--workers", "2", "--out-dir", str(tmp_path / "report")]) == 0
    status = fewshot_progress(FewShotPlan.load(path)).iloc[0]
    assert (status["runner"], status["cold"], status["tune-tpe"], status["tune-adapt"]) == ("sb3", 2, 3, 3)
    runs = pd.read_csv(tmp_path / "runs_by_method.csv")
    assert set(runs["method"]) == {"cold@2", "tune-tpe@3", "tune-adapt@3"} and set(runs["timesteps"]) == {300}


@pytest.mark.parametrize("change,match", [
    ({"samplers": ["gp"]}, "unknown sampler"),
    ({"tasks": [{"task": "cartpole"}]}, "needs `task` and `timesteps`"),
    ({"tasks": [{"task": "cartpole", "timesteps": 100, "runner": "gpu"}]}, "runner must be one of"),
    ({"selection_tasks": ["acrobot"]}, "not among its tasks"),
    ({"selection_tasks": ["cartpole"]}, "leave no task to judge"),
])
def test_bad_plans_fail_in_one_line(tmp_path, change, match):
    plan = {"name": "bad", "tasks": [{"task": "cartpole", "timesteps": 300}], **change}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match=match):
        FewShotPlan.load(path)


def test_the_committed_plan_uses_meta2s_held_out_tasks_and_budgets():
    from pathlib import Path

    from hypermeta.lab.matrix import MatrixPlan

    root = Path(__file__).parent.parent / "studies"
    plan, meta2 = FewShotPlan.load(root / "tune" / "plan.yaml"), MatrixPlan.load(root / "meta2" / "plan.yaml")
    heldout = [*meta2.heldout_contexts, *meta2.heldout_family]
    tasks = [e["task"] for e in plan.tasks]
    assert set(heldout) <= set(tasks) and set(plan.selection_tasks) <= set(meta2.heldout_contexts)
    for e in plan.tasks:
        if e["task"] in heldout:
            assert e["timesteps"] == meta2.budget(e["task"]) and e["runner"] == "batched", e
    assert {e["task"] for e in plan.tasks if e["runner"] == "sb3"} == {"minatar-breakout", "minatar-freeway"}
    # their cold studies are meta2's TPE studies, which must then be the same study: same untuned settings
    from hypermeta.lab import meta2 as stages
    from hypermeta.space import get_space

    assert plan.shared_cold_studies() == {t: stages.tpe_study(MatrixPlan.load(plan.cold_from), t) for t in heldout}
    assert plan.fixed() == get_space("schedule").untuned(meta2.base)


def test_cold_studies_shared_with_a_meta2_plan_must_be_the_same_study(tmp_path, monkeypatch):
    from hypermeta.lab import meta2 as stages
    from hypermeta.lab.matrix import MatrixPlan

    other = {"name": "m2", "fixed": {"net_arch": "small", "gamma": 0.98}, "seed": 1, "train": {"cartpole": 1},
             "heldout_contexts": ["cartpole:gravity=12"], "heldout_family": [], "budgets": {"cartpole": 5000},
             "portfolio": {"sobol": 2}, "matrix_seeds": 1}
    (tmp_path / "m2.yaml").write_text(yaml.safe_dump(other))
    plan = {"name": "fs", "cold_from": str(tmp_path / "m2.yaml"), "selection_tasks": ["acrobot"],
            "tasks": [{"task": "cartpole:gravity=12", "timesteps": 5000}, {"task": "acrobot", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    calls, find = [], FewShotPlan._find_shared_cold_studies
    monkeypatch.setattr(FewShotPlan, "_find_shared_cold_studies", lambda self: calls.append(1) or find(self))
    loaded = FewShotPlan.load(path)
    shared = loaded.shared_cold_studies()  # acrobot is not meta2's: it keeps its own study
    assert loaded.shared_cold_studies() is shared and len(calls) == 1  # found and checked once, at load
    monkeypatch.setattr(FewShotPlan, "_find_shared_cold_studies", find)
    assert FewShotPlan.load(path).shared_runs().path == tmp_path / "heldout" / "runs.csv"  # its runs to copy
    assert shared == {"cartpole:gravity=12": stages.tpe_study(MatrixPlan.load(tmp_path / "m2.yaml"), "cartpole:gravity=12")}
    from hypermeta.lab import fewshot

    seen = []

    def cold_study(spec, n, **kw):
        seen.append(kw)
        raise KeyboardInterrupt  # stop after the cold study's call

    monkeypatch.setattr(fewshot, "run_study", cold_study)
    for entry in plan["tasks"]:
        with pytest.raises(KeyboardInterrupt):
            fewshot.run_task(FewShotPlan.load(path), {**entry, "runner": "batched"}, 2, False)
    assert [(k["storage"], k["study_name"]) for k in seen] == [
        shared["cartpole:gravity=12"], (f"sqlite:///{tmp_path / 'studies.db'}", "fs|acrobot|cold")]
    assert all((k["batch_size"], k["n_startup_trials"]) == (8, 8) for k in seen)  # TPE once a batch has finished
    for change, match in (({"tasks": [{"task": "cartpole:gravity=12", "timesteps": 6000}, plan["tasks"][1]]},
                           "needs that plan's budget"),
                          ({"cold_batch": 16}, "need cold_batch 8"), ({"cold_from": "nowhere.yaml"}, "does not exist")):
        path.write_text(yaml.safe_dump({**plan, **change}))
        with pytest.raises(ValueError, match=match):
            FewShotPlan.load(path)
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match="tune over that plan's fixed DQN settings"):  # gamma 0.98, the weights 0.99
        fewshot.check_inputs(FewShotPlan.load(path))
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "settings.json").write_text('{"runner": "sb3"}')
    with pytest.raises(ValueError, match="were run with the sb3 runner"):
        FewShotPlan.load(path)


def test_the_default_sampler_is_chosen_on_the_selection_tasks_only(tmp_path):
    """Synthetic runs: adapt beats tpe clearly on the selection task, so it becomes the default and the
    targets are judged with it, on the other task only."""
    import numpy as np

    from hypermeta.reports.fewshot import render_fewshot_report

    plan = {"name": "syn", "tasks": [{"task": "cartpole", "timesteps": 300}, {"task": "acrobot", "timesteps": 300}],
            "samplers": ["tpe", "adapt"], "tune_trials": 8, "cold_trials": [8, 32], "test_seeds": 10,
            "selection_tasks": ["cartpole"]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    rng = np.random.default_rng(0)
    means = {"cartpole": {"tune-tpe@8": 0.3, "tune-adapt@8": 0.6, "cold@8": 0.3, "cold@32": 0.4},
             "acrobot": {"tune-tpe@8": 0.9, "tune-adapt@8": 0.5, "cold@8": 0.4, "cold@32": 0.45}}
    rows = [{"task": t, "method": m, "seed": s, "auc": mu + rng.normal(0, 0.02)}
            for t, ms in means.items() for m, mu in ms.items() for s in test_seeds(10)]
    pd.DataFrame(rows).to_csv(tmp_path / "runs_by_method.csv", index=False)
    best = {("cold", 8): 0.5, ("cold", 32): 0.7, ("tune-tpe", 8): 0.95, ("tune-adapt", 8): 0.6}  # on tuning seeds
    pd.DataFrame([{"task": t, "study": study, "trials": k, "env_steps": 300 * k, "best_so_far": b}
                  for t in means for (study, k), b in best.items()]).to_csv(tmp_path / "progress.csv", index=False)
    report = render_fewshot_report(FewShotPlan.load(path), tmp_path / "out").read_text()
    assert "Default: `adapt`" in report
    # judged on acrobot only, where adapt (0.5) beats cold@32 (0.45) although tpe (0.9) would have done better
    assert "target: tune-adapt@8 >= cold@32: **met** (the plan's rule" in report
    assert "tune-adapt@8 scores higher on 1 of 1 tasks" in report
    # exploratory: the same difference on the selection task (~ +0.2) and on both tasks (~ (+0.2 + 0.05) / 2)
    mean = pd.DataFrame(rows).groupby(["task", "method"])["auc"].mean()
    on = {t: mean[t, "tune-adapt@8"] - mean[t, "cold@32"] for t in means}
    assert f"- tune-adapt@8 - cold@32 on the 1 selection tasks: {on['cartpole']:+.3f} [" in report
    assert f"- tune-adapt@8 - cold@32 on all 2 finished tasks: {(on['cartpole'] + on['acrobot']) / 2:+.3f} [" in report
    tested = mean["acrobot"]
    assert f"| cold@32 | 0.700 | {tested['cold@32']:.3f} | {0.7 - tested['cold@32']:+.3f} |" in report
    assert f"| tune-adapt@8 | 0.600 | {tested['tune-adapt@8']:.3f} |" in report
    assert "| tune-adapt@8 - cold@32 | +0.0" in report  # ~ +0.05 on acrobot, not the pooled +0.13
    assert "| 10 |" in report and "| 20 |" not in report  # 10 test seeds of one task in every table


def test_the_few_shot_report_pairs_runs_by_seed():
    from hypermeta.reports.fewshot import _diff

    runs = pd.DataFrame([{"method": m, "task": "t", "seed": s, "auc": (1.0 if m == "a" else 0.0) + s}
                         for m, seeds in (("a", [0, 1, 2]), ("b", [1, 2, 3])) for s in seeds])
    d = _diff(runs, "a", "b", ["t"])  # seeds 1 and 2 are shared: a - b = 1 exactly on each
    assert d["seeds"] == 2 and d["diff"] == pytest.approx(1.0)


def test_metatpe_data_must_not_hold_the_benchmarks_own_tasks(tmp_path):
    from hypermeta.lab.fewshot import check_inputs

    plan = {"name": "leak", "tasks": [{"task": "cartpole:gravity=12", "timesteps": 300},
                                      {"task": "acrobot", "timesteps": 300}],
            "samplers": ["tpe", "metatpe"], "meta_data": str(tmp_path / "data.csv")}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match="needs `meta_data`"):
        check_inputs(FewShotPlan.load(path))
    pd.DataFrame({"task": ["cartpole:gravity=12.0", "mountaincar"]}).to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(ValueError, match="own task 'cartpole:gravity=12'"):  # the same task, spelt otherwise
        check_inputs(FewShotPlan.load(path))
    pd.DataFrame({"task": ["mountaincar"]}).to_csv(tmp_path / "data.csv", index=False)
    check_inputs(FewShotPlan.load(path))


def test_the_default_is_recorded_before_any_evaluation_task_runs(tmp_path, monkeypatch):
    """The plan lists an evaluation task first; the run stage still runs the selection task first and writes
    choice.json before the evaluation task starts (no training: the stages are replaced)."""
    import hypermeta.lab.fewshot as fewshot
    from hypermeta import DQNConfig

    plan = {"name": "order", "tasks": [{"task": "cartpole", "timesteps": 300}, {"task": "acrobot", "timesteps": 300}],
            "samplers": ["tpe"], "tune_trials": 2, "cold_trials": [2], "test_seeds": 2, "selection_tasks": ["acrobot"]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    seen = []

    def fake_task(plan, entry, workers, progress):
        seen.append((entry["task"], (tmp_path / "choice.json").is_file()))
        return {"tune-tpe@2": DQNConfig(), "cold@2": DQNConfig(lr_initial=1e-3)}, []

    def fake_runs(jobs, store, **kwargs):
        return pd.DataFrame([{"task": j.task, "method": j.method, "seed": j.seed, "auc": 0.5, "config_key": "k",
                              "curve": "[0.5]"} for j in jobs])

    monkeypatch.setattr(fewshot, "run_task", fake_task)
    monkeypatch.setattr(fewshot, "run_jobs_scoring_divergence", fake_runs)
    fewshot.run_fewshot(FewShotPlan.load(path))
    assert seen == [("acrobot", False), ("cartpole", True)]
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert choice["default"] == "tpe" and not choice["evaluation_runs_existed"]
    assert not json.loads((tmp_path / "manifest.json").read_text())["preexisting"]
    # a folder with runs from before the run record: the choice cannot claim it preceded them
    for name in ("manifest.json", "choice.json"):
        (tmp_path / name).unlink()
    from hypermeta.engine.pipeline import RUN_COLUMNS

    old = {c: 0 for c in RUN_COLUMNS} | {"task": "cartpole", "method": "cold@2", "config_key": "k", "curve": "[0]"}
    pd.DataFrame([old], columns=RUN_COLUMNS).to_csv(tmp_path / "runs.csv", index=False)
    fewshot.run_fewshot(FewShotPlan.load(path))
    assert json.loads((tmp_path / "choice.json").read_text())["evaluation_runs_existed"]
    assert json.loads((tmp_path / "manifest.json").read_text())["preexisting"]


def test_records_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import os

    from hypermeta.files import write_text_atomic

    path = write_text_atomic(tmp_path / "choice.json", '{"default": "tpe"}\n')

    def killed(src, dst):  # the process dies between writing the temporary file and renaming it
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, '{"default": "adapt"')
    assert json.loads(path.read_text()) == {"default": "tpe"}  # the old record is intact


def test_status_counts_distinct_chosen_configurations_and_runs_cold_from_made(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hypermeta.lab import fewshot
    from hypermeta.engine.pipeline import config_key
    from hypermeta.space import DQNConfig

    plan = {"name": "fs", "samplers": ["tpe"], "tune_trials": 2, "cold_trials": [1, 2], "seeds_per_trial": 1,
            "test_seeds": 2, "selection_tasks": ["acrobot"],
            "tasks": [{"task": "cartpole:gravity=12", "timesteps": 5000}, {"task": "acrobot", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    a, b = DQNConfig(), DQNConfig(lr_initial=3e-4)
    trial = SimpleNamespace(user_attrs={"wall_time": 4.0})
    monkeypatch.setattr(fewshot, "stored_study", lambda storage, name: name)  # a study is its name here
    monkeypatch.setattr(fewshot, "finished_in_order", lambda study: [trial, trial] if "cartpole" in study else [])
    monkeypatch.setattr(fewshot, "best_config_of", lambda study, k=None: a if k == 1 else b)  # cold@2 = tune = b
    theirs = pd.DataFrame({"task": "cartpole:gravity=12", "timesteps": 5000, "config_key": config_key(a),
                           "seed": test_seeds(2), "wall_time": 2.0})  # cold@1's runs, made by cold_from
    monkeypatch.setattr(FewShotPlan, "shared_runs", lambda self: SimpleNamespace(frame=lambda: theirs))
    status = fewshot.fewshot_progress(FewShotPlan.load(path)).set_index("task")
    done = status.loc["cartpole:gravity=12"]
    assert (done["cold"], done["tune-tpe"], done["test_runs"], done["test_planned"]) == (2, 2, 2, 4)  # a and b
    assert done["s_per_run"] == 4.0 and done["remaining_core_h"] == pytest.approx(2 * 4.0 / 3600)  # b's 2 runs
    new = status.loc["acrobot"]
    assert (new["cold"], new["test_runs"], new["test_planned"]) == (0, 0, 3 * 2) and np.isnan(new["remaining_core_h"])


def test_tasks_runs_the_selection_tasks_and_the_matching_ones_and_the_report_says_interim(tmp_path, monkeypatch,
                                                                                           capsys):
    """`fewshot PLAN --tasks PATTERN`: the selection task first, then the matching evaluation tasks only; every task's
    rows are written when it finishes, a later run adds the rest and keeps them, and the report until then is
    marked interim and reads the finished tasks only (no training: the stages are replaced)."""
    import hypermeta.lab.fewshot as fewshot
    from hypermeta import DQNConfig

    plan = {"name": "part", "samplers": ["tpe"], "tune_trials": 2, "cold_trials": [2, 32], "test_seeds": 3,
            "selection_tasks": ["acrobot"], "tasks": [{"task": t, "timesteps": 300} for t in
                                                      ("cartpole:gravity=12", "acrobot", "cartpole", "mountaincar")]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    seen = []

    def fake_task(plan, entry, workers, progress):
        seen.append(entry["task"])
        rows = [{"task": entry["task"], "study": "cold", "trials": 1, "env_steps": 300, "best_so_far": 0.2}]
        return {"tune-tpe@2": DQNConfig(), "cold@2": DQNConfig(lr_initial=1e-3),
                "cold@32": DQNConfig(lr_initial=2e-3)}, rows

    def fake_runs(jobs, store, **kwargs):
        return pd.DataFrame([{"task": j.task, "method": j.method, "seed": j.seed, "config_key": j.method,
                              "auc": 0.5 + 0.1 * (j.method == "tune-tpe@2") + 0.01 * (j.seed % 3)} for j in jobs])

    monkeypatch.setattr(fewshot, "run_task", fake_task)
    monkeypatch.setattr(fewshot, "run_jobs_scoring_divergence", fake_runs)
    assert main(["fewshot", str(path), "--tasks", "lunar*"]) == 2  # matches nothing: refused before any run
    assert "--tasks 'lunar*' matches none" in capsys.readouterr().err and seen == []
    out = tmp_path / "report"
    assert main(["fewshot", str(path), "--tasks", "cartpole*", "--out-dir", str(out)]) == 0
    assert seen == ["acrobot", "cartpole:gravity=12", "cartpole"]
    runs = pd.read_csv(tmp_path / "runs_by_method.csv")
    assert list(dict.fromkeys(runs["task"])) == seen and len(runs) == 3 * 3 * 3
    report = (out / "report.md").read_text()
    assert "**An interim report: 3 of 4 tasks have finished** (2 of 3 evaluation tasks)" in report
    assert "still to run (`hypermeta fewshot" in report and "`mountaincar`." in report
    assert "target: tune-tpe@2 >= cold@32: **met so far (interim: 2 of 3 evaluation tasks)** (the plan's rule" in report
    assert "Difference +0.100 [+0.100, +0.100]; tune-tpe@2 scores higher on 2 of 2 tasks" in report
    assert "| mountaincar" not in report  # not run: not in the tables either
    seen.clear()
    assert main(["fewshot", str(path), "--out-dir", str(out)]) == 0  # the rest, the finished tasks resumed
    assert seen == ["acrobot", "cartpole:gravity=12", "cartpole", "mountaincar"]
    runs = pd.read_csv(tmp_path / "runs_by_method.csv")
    assert sorted(runs["task"].unique()) == sorted(seen) and len(runs) == 4 * 3 * 3  # no row twice
    assert len(pd.read_csv(tmp_path / "progress.csv")) == 4
    report = (out / "report.md").read_text()
    assert "interim" not in report and "| mountaincar | 0.6" in report


def test_samplers_tune_side_by_side_with_two_workers_as_one_by_one(tmp_path, network_weights):
    """With 2 workers the samplers' tune studies run in two processes alive at the same time; each is the study it is
    when run alone: the same best configuration and the same trials (separate storages, the same plan otherwise).
    Whether their trials' clock times overlap depends on how fast each process imports torch, so the live processes
    are counted, and the parent is checked to only read studies the processes finished."""
    import hypermeta.lab.fewshot as fewshot
    from hypermeta.lab.fewshot import tune_samplers

    import optuna

    import multiprocessing
    import time

    alive, sleep = [], time.sleep

    def polling(seconds):  # the parent polls its study processes with time.sleep: count the live ones each time
        alive.append(len(multiprocessing.active_children()))
        sleep(seconds)

    results = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        root.mkdir()
        plan = {"name": "side", "tasks": [{"task": "cartpole:gravity=12", "timesteps": 300}], "samplers": ["tpe", "adapt"],
                "tune_trials": 2, "cold_trials": [2], "seeds_per_trial": 1, "test_seeds": 1, "weights": network_weights,
                "adapt_weights": network_weights}  # adapt's only: tpe's study is refused it
        (root / "plan.yaml").write_text(yaml.safe_dump(plan))
        loaded = FewShotPlan.load(root / "plan.yaml")
        read = fewshot.tune_sampler

        def reading(plan, entry, sampler, progress):  # with 2 workers the parent only reads finished studies
            trials = optuna.load_study(study_name=plan.tune_study_name(entry["task"], sampler), storage=plan.storage,
                                       ).get_trials(states=[optuna.trial.TrialState.COMPLETE])
            assert len(trials) == plan.tune_trials
            return read(plan, entry, sampler, progress)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(time, "sleep", polling)
            if workers == 2:
                patch.setattr(fewshot, "tune_sampler", reading)
            results[workers] = tune_samplers(loaded, loaded.tasks[0], workers, False)
        assert multiprocessing.active_children() == []  # no study process outlives the call
        if workers == 1:
            assert max(alive, default=0) == 0  # one worker: the studies run in this process, one after the other
    assert [r[0] for r in results[2]] == ["tpe", "adapt"]
    assert max(alive) == 2  # with 2 workers both study processes were alive at once
    assert [(s, c, [(r["trials"], r["best_so_far"]) for r in rows]) for s, c, rows in results[1]] == \
        [(s, c, [(r["trials"], r["best_so_far"]) for r in rows]) for s, c, rows in results[2]]


def test_copied_runs_are_recorded_when_copied_even_if_the_run_is_killed_later(tmp_path, monkeypatch):
    import hypermeta.lab.fewshot as fewshot
    from hypermeta import DQNConfig
    from hypermeta.engine.pipeline import RunStore

    plan = {"name": "copy", "samplers": ["tpe"], "tune_trials": 2, "cold_trials": [2], "test_seeds": 2,
            "selection_tasks": ["acrobot"], "tasks": [{"task": "acrobot", "timesteps": 300},
                                                      {"task": "cartpole", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))

    def fake_task(plan, entry, workers, progress):
        if entry["task"] == "cartpole":
            raise KeyboardInterrupt  # killed in the second task
        return {"tune-tpe@2": DQNConfig(), "cold@2": DQNConfig()}, []

    monkeypatch.setattr(fewshot, "run_task", fake_task)
    monkeypatch.setattr(fewshot, "run_jobs_scoring_divergence", lambda jobs, store, **kw: pd.DataFrame(
        [{"task": j.task, "method": j.method, "seed": j.seed, "auc": 0.5} for j in jobs]))
    monkeypatch.setattr(FewShotPlan, "shared_cold_studies", lambda self: {"acrobot": ("sqlite:///x.db", "x")})
    monkeypatch.setattr(FewShotPlan, "shared_runs", lambda self: RunStore(tmp_path / "theirs.csv"))
    monkeypatch.setattr(RunStore, "adopt", lambda self, source, jobs: 3)
    with pytest.raises(KeyboardInterrupt):
        fewshot.run_fewshot(FewShotPlan.load(path))
    assert json.loads((tmp_path / "manifest.json").read_text())["copied_runs"] == 3


def test_an_interim_report_chooses_provisionally_on_the_finished_selection_tasks(tmp_path):
    from hypermeta.reports.fewshot import render_fewshot_report

    tasks = ["cartpole", "acrobot", "mountaincar"]
    plan = {"name": "prov", "tasks": [{"task": t, "timesteps": 300} for t in tasks], "samplers": ["tpe", "adapt"],
            "tune_trials": 8, "cold_trials": [8, 32], "test_seeds": 10, "selection_tasks": ["cartpole", "acrobot"]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    rng = np.random.default_rng(1)
    rows = [{"task": "cartpole", "method": m, "seed": s, "auc": mu + rng.normal(0, 0.01)}
            for m, mu in {"tune-tpe@8": 0.3, "tune-adapt@8": 0.6, "cold@8": 0.3, "cold@32": 0.4}.items()
            for s in test_seeds(10)]  # acrobot has not finished
    pd.DataFrame(rows).to_csv(tmp_path / "runs_by_method.csv", index=False)
    pd.DataFrame([{"task": "cartpole", "study": "cold", "trials": 1, "env_steps": 300, "best_so_far": 0.1}]).to_csv(
        tmp_path / "progress.csv", index=False)
    report = render_fewshot_report(FewShotPlan.load(path), tmp_path / "out").read_text()
    assert "Default: `adapt` (on 1 selection tasks" in report
    assert "**Provisional**: 1 of the 2 selection tasks have finished" in report
    assert "No evaluation task has finished yet" in report
    import re

    row = re.search(r"\| cartpole \(selection\) \| ([0-9.]+) \| ([0-9.]+) \|", report)  # the default first
    assert row and abs(float(row[1]) - 0.6) < 0.02 and abs(float(row[2]) - 0.3) < 0.02
    assert "| tune-adapt@8 | tune-tpe@8 | cold@8 | cold@32 |" in report


def test_the_report_counts_retried_trials_that_did_not_keep_their_seeds(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    from hypermeta.reports.fewshot import retried_seed_lines
    from hypermeta.seeds import tuning_seeds

    plan = {"name": "r", "samplers": ["tpe"], "seeds_per_trial": 2, "selection_tasks": [],
            "tasks": [{"task": "cartpole", "timesteps": 300}, {"task": "acrobot", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    loaded = FewShotPlan.load(path)
    study = optuna.create_study(storage=loaded.storage, study_name=loaded.tune_study_name("cartpole", "tpe"))
    dist = {"x": FloatDistribution(0, 1)}
    for number, (retries, seeds) in enumerate([(None, tuning_seeds(0, 2)), (0, tuning_seeds(1, 2)),  # moved
                                               (0, tuning_seeds(0, 2))]):  # kept its original's seeds
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.1,
                                                  user_attrs={"seeds": seeds},
                                                  system_attrs={} if retries is None else {"failed_trial": retries}))
    assert retried_seed_lines(loaded, ["acrobot"], "studies") == []  # no study there
    lines = retried_seed_lines(loaded, ["cartpole", "acrobot"], "evaluation tasks' studies")
    assert len(lines) == 1 and lines[0].startswith("- 1 retried trial(s) in 1 of the evaluation tasks' studies")


def test_a_failing_side_by_side_tune_study_stops_the_others_with_a_one_line_error(tmp_path, network_weights):
    from optuna.trial import TrialState

    from hypermeta.lab.fewshot import tune_samplers
    from hypermeta.search.study import stored_study

    plan = {"name": "fail", "tasks": [{"task": "cartpole", "timesteps": 300_000}], "samplers": ["tpe", "metatpe"],
            "tune_trials": 4, "cold_trials": [2], "seeds_per_trial": 2, "weights": network_weights}  # no meta_data
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    loaded = FewShotPlan.load(tmp_path / "plan.yaml")
    with pytest.raises(ValueError, match=r"failed \(metatpe: --sampler metatpe needs --meta-data"):
        tune_samplers(loaded, loaded.tasks[0], 2, False)
    # tpe's round 0 (4 runs of 300,000 steps: minutes) was stopped, not waited for: no trial of it finished
    tpe = stored_study(loaded.storage, loaded.tune_study_name("cartpole", "tpe"))
    assert tpe is None or not tpe.get_trials(states=(TrialState.COMPLETE,))


def test_the_report_says_whether_tunes_choice_came_from_round_0(tmp_path):
    """tune@8 has 4 round-0 trials (numbers 0-3): on cartpole its best is trial 2 (round 0), on acrobot trial 6
    (after); on frozenlake trial 7 is best but retries trial 1, so round 0; on mountaincar only the first 8
    finished trials count (trial 9, a retry of round-0 trial 0, is best of all; trial 7 of those)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from hypermeta.reports.fewshot import origin_lines

    values = {"cartpole": [0.1, 0.2, 0.9, 0.3, 0.4, 0.5, 0.6, 0.7], "acrobot": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.7],
              "frozenlake": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9],
              "mountaincar": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.0, 0.95]}
    plan = {"name": "o", "samplers": ["tpe"], "tune_trials": 8, "selection_tasks": [],
            "tasks": [{"task": t, "timesteps": 300} for t in values]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    loaded = FewShotPlan.load(path)
    dist = {"x": FloatDistribution(0, 1)}
    for task, vs in values.items():
        study = optuna.create_study(storage=loaded.storage, study_name=loaded.tune_study_name(task, "tpe"),
                                    direction="maximize")
        for number, v in enumerate(vs):
            retry = {("frozenlake", 7): {"failed_trial": 1}, ("mountaincar", 9): {"failed_trial": 0}}.get((task, number), {})
            study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=v,
                                                      system_attrs=retry))
    line = origin_lines(loaded, list(values), "tpe")[-1]
    assert line.startswith("tune-tpe@8 chose one of round 0's 4 candidates") and "on 2 of the 4 evaluation tasks, " \
        "and a trial its sampler (tpe) proposed after round 0 on `acrobot`, `mountaincar`." in line


def test_tune_is_set_against_the_zero_shot_runs_of_the_same_tasks_and_seeds(tmp_path, monkeypatch):
    """The exploratory zero-shot section pairs tune's test runs with meta2's held-out runs seed by seed, on the
    evaluation tasks and budgets both have, with a known answer: tune - winner = +0.1, tune - base = +0.3."""
    from hypermeta.reports.fewshot import zero_shot_lines

    plan = {"name": "z", "samplers": ["tpe"], "tune_trials": 8, "cold_trials": [8], "test_seeds": 4,
            "selection_tasks": [], "tasks": [{"task": "cartpole", "timesteps": 300}, {"task": "acrobot", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    loaded = FewShotPlan.load(path)
    assert zero_shot_lines(loaded, pd.DataFrame(), ["cartpole"], "tpe") == []  # no meta2 runs to pair with
    seeds = test_seeds(4)
    noise = dict(zip(seeds, [0.05, -0.02, 0.0, 0.1]))  # shared by a seed's runs: the pairing removes it
    ours = pd.DataFrame([{"task": t, "method": "tune-tpe@8", "seed": s, "timesteps": 300, "auc": 0.6 + noise[s]}
                         for t in ("cartpole", "acrobot") for s in seeds])
    theirs = pd.DataFrame(
        [{"task": t, "method": method, "seed": s, "timesteps": 300, "auc": mu + noise[s]}
         for t in ("cartpole", "acrobot") for s in seeds for method, mu in (("winner", 0.5), ("base", 0.3), ("rl-zoo", 0.0))
         if not (method == "base" and t == "acrobot")]  # base ran on cartpole only
        + [{"task": t, "method": "winner", "seed": s, "timesteps": 999, "auc": 9.0} for t in ("cartpole", "acrobot")
           for s in seeds])  # another budget
    monkeypatch.setattr(FewShotPlan, "shared_method_runs", lambda self: theirs)
    lines = "\n".join(zero_shot_lines(loaded, ours, ["cartpole", "acrobot"], "tpe"))
    assert "- tune-tpe@8 - zero-shot winner on 2 of the 2 evaluation tasks (4 seeds): +0.100 [+0.100, +0.100]; " \
           "tune-tpe@8 scores higher on 2 of 2." in lines  # the runs at another budget are not paired
    assert "- tune-tpe@8 - zero-shot base on 1 of the 2 evaluation tasks (4 seeds): +0.300 [+0.300, +0.300]" in lines
    assert "zero-shot best-fixed" not in lines  # it has no runs there
    assert "round 0 holds both the prediction without the fallback and best-fixed" in lines


def test_the_report_checks_the_recorded_choice_against_the_evaluation_tune_studies_storage(tmp_path):
    """The report reads when the first evaluation task's tune trial started from the studies' storage, and says
    so plainly if that was before the sampler choice was recorded."""
    import optuna
    from optuna.distributions import FloatDistribution

    from hypermeta.reports.fewshot import choose_sampler

    plan = {"name": "c", "samplers": ["tpe"], "selection_tasks": ["acrobot"],
            "tasks": [{"task": "acrobot", "timesteps": 300}, {"task": "cartpole", "timesteps": 300}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    loaded = FewShotPlan.load(path)
    runs = pd.DataFrame({"task": ["acrobot"], "method": ["tune-tpe@8"], "seed": [0], "auc": [0.5]})

    def note(created):
        (tmp_path / "choice.json").write_text(json.dumps({"default": "tpe", "lines": [], "created": created}))
        return choose_sampler(loaded, runs)[1][-1]

    assert "no evaluation task's `tune` study has a trial yet" in note("2026-01-01 00:00 UTC")
    dist = {"x": FloatDistribution(0, 1)}
    for task in ("acrobot", "cartpole"):
        study = optuna.create_study(storage=loaded.storage, study_name=loaded.tune_study_name(task, "tpe"))
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.1))
        if task == "acrobot":  # the selection task's study does not count
            assert "no evaluation task's `tune` study has a trial yet" in note("2999-01-01 00:00 UTC")
    assert "the first trial of an evaluation task's `tune` study started 20" in note("2000-01-01 00:00 UTC")
    assert note("2999-01-01 00:00 UTC").startswith("**Recorded 2999-01-01 00:00 UTC, after the first trial of an "
                                                   "evaluation task's `tune` study**")
