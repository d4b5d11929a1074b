#!/usr/bin/env bash
# Trains the embedded default captioner (docs/caption-default.md) and writes its weights
# with the recipe, step count, seeds and validation figures as safetensors metadata.
# Usage: scripts/train-captioner.sh [OUT] [extra options of the train_captioner example]
#   OUT: default crates/strata-captioner/weights/embedded-captioner.safetensors (the file
#   compiled into the binary; rebuild afterwards).
# Env: PROFILE (cargo profile, default release; `dev` gives the same numbers, since the
#   dependencies that do the arithmetic are optimised in both), THREADS (default 1: on a
#   shared machine one thread per trainer avoids the thread pool's spin-waits).
# All seeds are fixed in the example's defaults: the same command gives the same weights.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/crates/strata-captioner/weights/embedded-captioner.safetensors}
shift || true
profile=${PROFILE:-release}
cd "$root"
cargo build --profile "$profile" -p strata-captioner --example train_captioner
dir=$profile
[ "$profile" = dev ] && dir=debug
# glibc: keep freed tensor buffers instead of returning them to the kernel every step
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4000000000
RAYON_NUM_THREADS=${THREADS:-1} "target/$dir/examples/train_captioner" \
  --steps 800 --batch 8 --validation-scenes 220 --checkpoint-every 100 --out "$out" "$@"
