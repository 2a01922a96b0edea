#!/usr/bin/env bash
# Every remaining stage of meta-learner v2 and the few-shot benchmark, in order, unattended: each stage is
# resumable, so after a kill this script is simply started again (finished stages only re-read their files).
#   nohup bash studies/run_all.sh > run_all.log 2>&1 &
# WORKERS (default 2) sets the processes of the stages that run in parallel.
set -euo pipefail
# glibc: allocations of 64 KiB and more come from mmap and go back to the system when freed. Without it, the
# engine's LunarLander batches fragment the heap (Box2D's small allocations between torch's tensors): measured
# 2026-11-26, 64 agents x 10,000 steps grew to 2.7 GB (about 4 KB per agent-step; the matrix's 64 x 100,000-step
# batches reached 11-13 GB per worker and exhausted 24 GB), and 0.4 GB with this setting, 27% slower.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-65536}
cd "$(dirname "$0")/.."
HM=${HM:-.venv/bin/hypermeta}
W=${WORKERS:-2}
PLAN=studies/meta2/plan.yaml
stage() { echo "=== $(date -u +%FT%TZ) $*"; "$HM" "$@"; }
stage matrix "$PLAN" --runner batched --workers "$W" --max-agents 64   # training matrix
stage matrix "$PLAN" --export-only                                    # dataset.csv
stage meta2 cv "$PLAN" --workers "$W"                                 # LOTO-CV -> selection.json
stage meta2 train "$PLAN"                                             # every method's weights, the winner
# 2026-11-27: the few-shot benchmark of the 16 held-out contexts (whose meta2 TPE studies, its cold studies, are
# finished) runs before the held-out family's ~4 core-hours, so issue 11 gets its first numbers a session earlier
stage fewshot studies/tune/plan.yaml --workers "$W" --tasks 'cartpole*' 'acrobot*' 'frozenlake*' 'mountaincar*'
# held-out contexts first (matrix, key comparisons, the rest, TPE, SB3 check), then the held-out family;
# `meta2 report` reports an unfinished evaluation as interim
stage meta2 heldout "$PLAN" --workers "$W"
stage meta2 report "$PLAN"
stage fewshot studies/tune/plan.yaml --workers "$W"                   # continues meta2's TPE studies to 64 trials
echo "=== $(date -u +%FT%TZ) all stages done"
