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
# `meta2 train` is one process: the held-out oracles' matrix runs beside it, so no core idles meanwhile
stage meta2 train "$PLAN" &                                           # every method's weights, the winner
train=$!
stage matrix "$PLAN" --split heldout --runner batched --workers "$W" --max-agents 64   # held-out oracles
wait "$train"
stage meta2 heldout "$PLAN" --workers "$W"                            # test seeds, TPE best-of-k, SB3 check
stage meta2 report "$PLAN"
stage fewshot studies/tune/plan.yaml --workers "$W"
echo "=== $(date -u +%FT%TZ) all stages done"
