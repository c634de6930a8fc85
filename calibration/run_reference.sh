#!/usr/bin/env bash
# Calibrates the shipped draft graphs of the reference dLLM (models/spiffy-dllm-ref), one process per
# setting, 1 thread each. Calibration prompts: the first 12 of GSM8K train + the first 12 of MBPP train
# (ids 1-10, 511-...); held-out: the first 12 GSM8K test questions and the first 12 HumanEval prompts.
# Usage: calibration/run_reference.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${SPIFFY_DATA:-../shared/data}}
export OMP_NUM_THREADS=1
common=(--dataset gsm8k-train,mbpp-train --limit 12 --budgets 3,5,8,10 --heldout gsm8k,humaneval --heldout-limit 12
        --gen-length 256 --block-length 32 --data-dir "$data" --out calibration --force --plot)
mkdir -p runs
spiffy calibrate "${common[@]}" --cache none --prune 10:3 > runs/calib_k1_none.log 2>&1 &
spiffy calibrate "${common[@]}" --cache dual > runs/calib_k1_dual.log 2>&1 &
spiffy calibrate "${common[@]}" --cache dual --threshold 0.9 > runs/calib_thr09_dual.log 2>&1 &
wait
