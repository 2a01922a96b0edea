"""Draw meta-learner v3's 40 new held-out contexts by the rule of studies/v3/plan.yaml and write
studies/v3/contexts.yaml: `python studies/v3/contexts.py`.

Per training family, at its position p in [cartpole, acrobot, frozenlake, mountaincar]:

* 7 interpolation contexts: context i varies 2 of the family's context features, drawn (without replacement) with
  ``numpy.random.default_rng(3130 + 100 p + i)``, sampled by ``TaskFamily.sample_contexts(1, seed=3030 + 100 p + i,
  features=those 2)`` (inside the sampling ranges, 4 significant digits);
* 3 extrapolation contexts: with ``default_rng(3230 + p)``, context j takes one feature, a side (below or above the
  sampling range) and a distance beyond it of U(0.1, 0.5) x the smaller of the range's width and the room between
  the sampling bound and the valid bound on that side (so values stay valid and distinct), rounded to 4 significant
  digits; a side whose valid range ends at the sampling range is replaced by the other side.

A context that equals one already used by meta2 (training or held-out) or the few-shot benchmark would be drawn
again with the next seed; none did when this was run (the script checks and says so).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from hypermeta.lab.matrix import MatrixPlan
from hypermeta.tasks.families import get_family

FAMILIES = ["cartpole", "acrobot", "frozenlake", "mountaincar"]
ROOT = Path(__file__).resolve().parents[2]


def used_tasks() -> set[str]:
    """Every context meta2 used (training and held-out) and every task id the few-shot plan names."""
    import re

    plan = MatrixPlan.load(ROOT / "studies" / "meta2" / "plan.yaml")
    text = (ROOT / "studies" / "tune" / "plan.yaml").read_text()
    named = set(re.findall(r"\b[a-z]+:[a-z_0-9]+=[-0-9.e]+(?:,[a-z_0-9]+=[-0-9.e]+)*", text))
    return set(plan.all_tasks()) | named


def interpolation(p: int, family) -> list[str]:
    names = list(family.context_space)
    out = []
    for i in range(7):
        features = list(np.random.default_rng(3130 + 100 * p + i).choice(names, size=2, replace=False))
        ctx = family.sample_contexts(1, seed=3030 + 100 * p + i, features=features)[0]
        out.append(family.task(ctx).id)
    return out


def extrapolation(p: int, family) -> list[str]:
    rng = np.random.default_rng(3230 + p)
    names = list(family.context_space)
    out = []
    for _ in range(3):
        key = str(rng.choice(names))
        param = family.context_space[key]
        side = str(rng.choice(["low", "high"]))
        fraction = float(rng.uniform(0.1, 0.5))
        if (side == "low" and param.hard_low >= param.low) or (side == "high" and param.hard_high <= param.high):
            side = "high" if side == "low" else "low"
        room = param.low - param.hard_low if side == "low" else param.hard_high - param.high
        distance = fraction * min(param.high - param.low, room)
        value = float(f"{param.low - distance if side == 'low' else param.high + distance:.4g}")
        out.append(family.task({key: value}).id)
    return out


def main() -> Path:
    used = used_tasks()
    contexts = {}
    for p, name in enumerate(FAMILIES):
        family = get_family(name)
        drawn = interpolation(p, family) + extrapolation(p, family)
        clashes = [t for t in drawn if t in used]
        if clashes:
            raise SystemExit(f"{clashes} were used before: the rule says draw again with the next seed (not needed "
                             "when this was written)")
        if len(set(drawn)) != len(drawn):
            raise SystemExit(f"{name}: a context was drawn twice")
        contexts[name] = {"interpolation": drawn[:7], "extrapolation": drawn[7:]}
    out = Path(__file__).with_name("contexts.yaml")
    header = ("# Meta-learner v3's 40 new held-out contexts, drawn by `python studies/v3/contexts.py` (the rule is in "
              "its docstring\n# and studies/v3/plan.yaml), before any held-out run. Never used for training or "
              "selection.\n")
    out.write_text(header + yaml.safe_dump(contexts, sort_keys=False, width=200))
    return out


if __name__ == "__main__":
    print(main())
