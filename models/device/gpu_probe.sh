#!/usr/bin/env bash
# One call of the device tool (issue 16): per-call cost curves of LLaDA-8B / Dream-7B shapes (random bf16
# weights, eager and torch.compile), the identical-output rate of the bundled reference dLLM on the GPU
# (baseline vs Spiffy, batch and packed verification), and the projected wall ratio on the 8B shapes.
# No network: run from the repository root, e.g.
#   run(command="bash models/device/gpu_probe.sh", timeout_s=560)
# It stops starting new sections after BUDGET_S seconds and writes $OUT/device-probe.json as it goes.
set -euo pipefail
OUT="${OUT:-runs/device}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>/dev/null || true
PYTHONPATH=. timeout "${LIMIT_S:-540}" python -m spiffy.bench.device_probe --out "$OUT/device-probe.json" \
  --budget-s "${BUDGET_S:-400}" "$@"
