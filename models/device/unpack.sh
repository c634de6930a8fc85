#!/usr/bin/env bash
# Check and unpack what models/device/train_all.sh left in $OUT into DEST (default runs/device-models),
# then print the commands that install and re-measure each model. Nothing in models/ is touched.
#   bash models/device/unpack.sh FILES_AT [DEST]
set -eu
SRC=${1:?usage: unpack.sh FOLDER_WITH_PARTS [DEST]}
DEST=${2:-runs/device-models}
(cd "$SRC" && sha256sum -c reference-models.sha256)
rm -rf "$DEST.tmp"; mkdir -p "$DEST.tmp"
cat "$SRC"/reference-models.tar.part* | tar -C "$DEST.tmp" -xf -
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
for d in "$DEST"/spiffy-*; do
  m=$(basename "$d")
  [ -f "$d/training.json" ] || echo "WARNING: $m has no training.json (its run was cut short; the last checkpoint is there)"
  python -c "import json,sys; t=json.load(open('$d/config.json')); print('$m', t.get('model_type'), t.get('d_model', t.get('hidden_size')))"
done
du -sh "$DEST"/spiffy-*
cat <<EOF
Next (see models/device/README.md): for each model, copy its weights and training.json over models/NAME
(cp $DEST/NAME/{config.json,model.safetensors,training.json,generation_config.json} models/NAME/ where present),
then re-run the evaluation, speculatability, calibration and benches listed there, and the cards.
EOF
