#!/usr/bin/env bash
# Train the three reference models (their recipes' `cuda` sections) at once on one GPU, inside one call of
# the device tool, and leave the checkpoints in $OUT as a tar split into parts of at most 15 MiB.
# See models/device/README.md. Environment (all optional except OUT):
#   OUT      folder whose files come back (set by the device tool)
#   PACK     training-only data pack            (default .data/train-pack; python -m spiffy_train.datapack)
#   DEVICE   cuda | cpu                          (default cuda)
#   VARIANT  recipe variant                      (default cuda: the GPU sizes, also on a CPU dry run)
#   MAX_MIN  wall budget of each run, data preparation included (default 6.9 min; dry runs pass e.g. 0.2)
#   LIMIT_S  hard wall limit per training run    (default 450; the tar is written after it either way)
#   SPEC     1: then measure the dLLM's speculatability on the machine's CPU cores (default 1)
#   EVAL     prompt file for it                  (default .data/eval/gsm8k-test-first24.jsonl)
#   SPEC_PROCS / SPEC_S  processes and time limit for that phase (default 12 / 110 s)
#   MODELS   which recipes                       (default: spiffy-dllm-ref spiffy-ar-ref spiffy-ar-draft)
set -u
: "${OUT:?set OUT to the folder that comes back}"
PACK=${PACK:-.data/train-pack}
DEVICE=${DEVICE:-cuda}
VARIANT=${VARIANT:-cuda}
LIMIT_S=${LIMIT_S:-450}
MAX_MIN=${MAX_MIN:-6.9}
SPEC=${SPEC:-1}
EVAL=${EVAL:-.data/eval/gsm8k-test-first24.jsonl}
SPEC_PROCS=${SPEC_PROCS:-12}
SPEC_S=${SPEC_S:-110}
MODELS=${MODELS:-"spiffy-dllm-ref spiffy-ar-ref spiffy-ar-draft"}
WORK=${WORK:-/tmp/spiffy-device-train}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PY=${PY:-python3}

[ -f "$PACK/MANIFEST.json" ] || { echo "no data pack at $PACK: run python -m spiffy_train.datapack and carry .data"; exit 2; }
rm -rf "$WORK"; mkdir -p "$WORK/ckpt" "$WORK/logs"
{
  date -u; uname -m; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  $PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
} > "$WORK/logs/env.txt" 2>&1
cat "$WORK/logs/env.txt"

pids=()
for m in $MODELS; do
  timeout -s INT "$LIMIT_S" $PY -m spiffy.cli train --recipe "models/recipes/$m.json" --data-dir "$PACK" \
    --device "$DEVICE" --variant "$VARIANT" --out "$WORK/ckpt/$m" --log "$WORK/logs/$m.jsonl" --max-minutes "$MAX_MIN" \
    > "$WORK/logs/$m.out" 2>&1 &
  pids+=($!)
done

# Wait; if a run fails, stop the others at once (a failure in the first minute costs a minute, not the call).
status=0
while :; do
  running=0
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [ -z "$pid" ] && continue
    if kill -0 "$pid" 2>/dev/null; then running=1; continue; fi
    wait "$pid"; rc=$?; pids[$i]=""
    m=$(echo $MODELS | cut -d' ' -f$((i + 1)))
    echo "$(date -u +%T) $m exited rc=$rc"
    if [ "$rc" -ne 0 ]; then
      status=1; tail -20 "$WORK/logs/$m.out"
      for p in "${pids[@]}"; do [ -n "$p" ] && kill -INT "$p" 2>/dev/null; done
    fi
  done
  [ "$running" -eq 0 ] && break
  sleep 5
done
wait

for m in $MODELS; do
  echo "== $m"; grep -h '"event": "stage_end"\|"event": "done"' "$WORK/logs/$m.jsonl" 2>/dev/null | cut -c1-300
done
# Speculatability of the new dLLM (the measure: first 24 GSM8K test questions, gen 256, block 32,
# no cache), traced on the CPU cores in SPEC_PROCS slices; the CPU numbers back home are the ones to ship.
D="$WORK/ckpt/spiffy-dllm-ref"
if [ "$SPEC" = 1 ] && [ -f "$D/model.safetensors" ] && [ -f "$EVAL" ]; then
  mkdir -p "$WORK/spec"
  n=$(grep -c . "$EVAL"); per=$(( (n + SPEC_PROCS - 1) / SPEC_PROCS ))
  for ((lo = 0; lo < n; lo += per)); do
    hi=$(( lo + per < n ? lo + per : n ))
    OMP_NUM_THREADS=1 timeout "$SPEC_S" $PY -m spiffy_train.speculatability "$D" --dataset "$EVAL" --n "$n" \
      --range "$lo:$hi" --threads 1 --out "$WORK/spec/part$lo.json" > "$WORK/logs/spec$lo.out" 2>&1 &
  done
  wait
  $PY -m spiffy_train.speculatability "$D" --merge "$WORK"/spec/part*.json --out "$D/speculatability-device.json" \
    > "$WORK/logs/spec-merge.out" 2>&1 && grep -A3 '"8"' "$WORK/logs/spec-merge.out" | tr -d '\n '; echo
fi
cp -r "$WORK/logs" "$WORK/ckpt/logs"
tar -C "$WORK/ckpt" -cf - . | split -b 15m -d -a 1 - "$OUT/reference-models.tar.part"
(cd "$OUT" && sha256sum reference-models.tar.part* > reference-models.sha256 && ls -l)
exit $status
