#!/usr/bin/env bash
# Train every Q-network start of studies/v3/plan.yaml (init_starts), one after another; resumable: an artifact that
# exists is kept, a Reptile/FOMAML run resumes from its state file. Run from the repository root.
set -euo pipefail
for family in cartpole acrobot frozenlake mountaincar; do
  for method in transfer multitask reptile fomaml; do
    out="studies/v3/init/${family}-${method}"
    if [ -f "${out}.safetensors" ]; then echo "kept ${out}"; continue; fi
    hypermeta meta-init "${family}" --method "${method}" --out "${out}"
  done
done
