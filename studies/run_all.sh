#!/usr/bin/env bash
# Every remaining stage of meta-learner v2 and the few-shot benchmark, in order, unattended: each stage is
# resumable, so after a kill this script is simply started again (finished stages only re-read their files).
#   nohup bash studies/run_all.sh > run_all.log 2>&1 &
# WORKERS (default 2) sets the processes of the stages that run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
HM=${HM:-.venv/bin/hypermeta}
W=${WORKERS:-2}
PLAN=studies/meta2/plan.yaml
stage() { echo "=== $(date -u +%FT%TZ) $*"; "$HM" "$@"; }
stage matrix "$PLAN" --runner batched --workers "$W" --max-agents 64   # training matrix
stage matrix "$PLAN" --export-only                                    # dataset.csv
stage meta2 cv "$PLAN" --workers "$W"                                 # LOTO-CV -> selection.json
stage meta2 train "$PLAN"                                             # every method's weights, the winner
# held-out contexts first (matrix, key comparisons, the rest, TPE, SB3 check), then the held-out family;
# `meta2 report` reports an unfinished evaluation as interim
stage meta2 heldout "$PLAN" --workers "$W"
stage meta2 report "$PLAN"
stage fewshot studies/tune/plan.yaml --workers "$W"                   # continues meta2's TPE studies to 64 trials
echo "=== $(date -u +%FT%TZ) all stages done"
