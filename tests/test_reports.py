"""Report renderers: re-rendering the committed reports from their committed runs gives the committed numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hypermeta.experiments.collect import TaskDistribution
from hypermeta.experiments.comparison import ComparisonSpec
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
