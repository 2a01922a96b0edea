"""Report renderers: re-rendering the committed reports from their committed runs gives the committed numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hypermeta.lab.collect import TaskDistribution
from hypermeta.search.comparison import ComparisonSpec
from hypermeta.reports.comparison import render_comparison
from hypermeta.reports.meta import render_meta_report

ROOT = Path(__file__).resolve().parents[1]
REPORTS = {
    "baselines": (lambda: ComparisonSpec.load("studies/baselines.yaml"), render_comparison,
                  ["aggregates.csv", "best_so_far.csv", "per_task.csv"]),
    "meta": (lambda: TaskDistribution.load("studies/meta/tasks.yaml"), render_meta_report,
             ["aggregates_held-out_contexts.csv", "aggregates_held-out_family.csv",
              "aggregates_all_held-out_tasks.csv", "per_task.csv"]),
}


def _numbers(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("Generated")]


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_rerendering_a_committed_report_reproduces_its_numbers(tmp_path, monkeypatch, name):
    monkeypatch.chdir(ROOT)
    load, render, tables = REPORTS[name]
    spec = load()
    path = render(spec, tmp_path)
    committed = Path(spec.out_dir if name == "baselines" else spec.report_dir)
    for table in tables:
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / table), pd.read_csv(committed / table))
    assert _numbers(path.read_text()) == _numbers((committed / "report.md").read_text())


def test_run_health_lines_count_short_seeds_and_distinct_diverged_runs():
    from hypermeta.reports.common import diverged_line, seed_shortfall_line

    runs = pd.DataFrame({"method": ["a", "a", "b", "c"], "task": ["t"] * 4, "config_key": ["k1", "k1", "k1", "k2"],
                         "seed": [1, 2, 1, 1], "curve": ['"diverged: nan"', "[0.1]", '"diverged: nan"', "[0.2]"]})
    assert seed_shortfall_line(runs, 2) == ["- **Fewer test seeds than the plan's 2** for 2 (method, task) pair(s), "
                                            "e.g. b on `t` (1)."]
    assert seed_shortfall_line(runs, 1) == []
    # methods a and b share the run (t, k1, seed 1): it counts once
    assert diverged_line(runs) == ["- 1 of 3 distinct test run(s) diverged; each is scored as the random policy (0)."]
    assert diverged_line(runs.drop(columns="curve")) == []


def test_git_commit_stamps_this_checkout_and_not_a_repository_around_an_installed_copy(tmp_path, monkeypatch):
    import hypermeta.files as files

    stamp = files.git_commit()
    assert stamp is None or stamp.split("-")[0].isalnum()  # None only where git itself is missing
    fake = tmp_path / "site-packages" / "hypermeta" / "files.py"  # an installed copy: no pyproject.toml above it
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(files, "__file__", str(fake))
    assert files.git_commit() is None
