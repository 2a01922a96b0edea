"""Meta-learner v3's shipping rule (``shipping`` in ``studies/v3/plan.yaml``), applied by
``hypermeta meta-eval PLAN --ship`` once every step of the evaluation is done.

It lives with the reports because it acts on their verdicts: the rule is decided by
:func:`hypermeta.reports.v3.shipping_decision`, from the same numbers the report prints:

* the controller, the candidate of the ended meta-training, is copied to ``hypermeta/weights/controller.safetensors``
  (what ``controller="default"`` loads) only if every condition the plan names is met;
* a family's chosen start (the ``init-choice`` step's) is copied to ``hypermeta/weights/starts/FAMILY.safetensors``
  (what ``init="default"`` loads for an env of that family) only where that family's start target is met.

Where the controller ships, making it the default of ``HyperMetaCallback`` and ``hypermeta train`` (the plan's rule)
is the change to their ``controller`` argument made in the same commit as the weights, with its CHANGELOG entry.
What is not shipped is removed from the package folder, so that running it again after a change of the runs can
never leave a file the rule no longer allows. Every decision, with its numbers, the files' sha256 and the commit, is
written to ``hypermeta/weights/v3.provenance.json``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypermeta.files import git_commit, install_weights, write_text_atomic
from hypermeta.lab.v3 import STEPS, EvaluationError, V3Evaluation, check_candidate
from hypermeta.reports.v3 import _Data, shipping_decision

PROVENANCE = "v3.provenance.json"


def package_weights() -> Path:
    """The package's weights folder: ``controller.safetensors`` and ``starts/`` (``qstart.SHIPPED_STARTS``)."""
    from hypermeta.controller import SHIPPED_CONTROLLER

    return SHIPPED_CONTROLLER.parent


def ship_v3(plan: str | Path, weights: str | Path | None = None) -> dict[str, Any]:
    """Apply the plan's shipping rule to the finished evaluation; returns the record written to
    ``WEIGHTS/v3.provenance.json`` (``weights``: the package's folder by default)."""
    ev = V3Evaluation.load(plan)
    missing = [s for s in STEPS if not ev.done(s)]
    if missing:
        raise EvaluationError(f"the evaluation is not finished (steps to do: {', '.join(missing)}): run `hypermeta "
                              f"meta-eval {ev.plan_path}` first")
    key = check_candidate(ev)
    decision = shipping_decision(_Data.load(ev))
    if decision.controller is None or None in decision.starts.values():
        raise EvaluationError("a condition of the shipping rule is not measured (runs missing from a done step): "
                              "render the report to see which")
    dest = Path(weights) if weights is not None else package_weights()
    record: dict[str, Any] = {"plan": str(ev.plan_path), "commit": git_commit(),
                              "shipped": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    controller = dest / "controller.safetensors"
    from hypermeta.controller import LinearController
    from hypermeta.qstart import QStart

    record["controller"] = {"shipped": decision.controller, "key": key,
                            "generation": LinearController.load(ev.controller_path).meta.get("generation"),
                            "conditions": {n: {"met": t.met, "verdict": t.text}
                                           for n, t in decision.conditions.items()}}
    if decision.controller:
        record["controller"]["sha256"] = install_weights(ev.controller_path, controller, LinearController.load)
    else:
        _remove(controller)
    method = ev.chosen_start()
    record["starts"] = {}
    for family, ship in decision.starts.items():
        target = dest / "starts" / f"{family}.safetensors"
        entry = {"shipped": ship, "method": method, "verdict": decision.start_targets[family].text}
        source = ev.start_path(family, method)
        if ship and source is not None:
            entry["sha256"] = install_weights(source, target, QStart.load)
        else:
            entry["shipped"] = False
            _remove(target)
        record["starts"][family] = entry
    write_text_atomic(dest / PROVENANCE, json.dumps(record, indent=2) + "\n")
    return record


def _remove(dest: Path) -> None:
    for suffix in (".safetensors", ".json"):
        dest.with_suffix(suffix).unlink(missing_ok=True)
