#!/usr/bin/env bash
# CPU side: build the CUDA benchmark examples and gather what scripts/gpu/run-checks.sh needs on
# the GPU machine into .gpu/ (ignored by git; carry it: `carry: [".gpu"]`).
#
#   scripts/gpu/prepare.sh            # from the repository root; long (CUDA build, 2 cores)
#
# Needs the GPU kit of the machine that lends the GPU: a folder holding gpu/build-cuda.sh (builds
# with the CUDA 13 wheels from PyPI into target-cuda/), gpu/diffusers_baseline.py (the peer) and
# gpu/env-gpu.sh; give it as STRATA_GPU_KIT=DIR. The GPU machine has no network and only the
# repository travels, so the baseline script, env-gpu.sh and the diffusers / importlib_metadata /
# peft wheels are copied into .gpu/ too.
set -euo pipefail
SHARED=${STRATA_GPU_KIT:?set STRATA_GPU_KIT to the folder holding gpu/build-cuda.sh and gpu/diffusers_baseline.py}
mkdir -p .gpu/examples .gpu/whl
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
STRATA_BIN_NAME=examples/gpu_bench "$SHARED/gpu/build-cuda.sh" \
  --release --features cuda -p strata-models --example gpu_bench
STRATA_BIN_NAME=examples/gpu_lora_step "$SHARED/gpu/build-cuda.sh" \
  --release --features cuda -p strata-train --example gpu_lora_step
# only the compressed binaries travel (64 MiB limit on what is carried)
rm -f .gpu/examples/gpu_bench .gpu/examples/gpu_lora_step .gpu/strata
cp "$SHARED/gpu/diffusers_baseline.py" "$SHARED/gpu/env-gpu.sh" .gpu/
pip download --no-deps --only-binary=:all: --python-version 3.12 -q -d .gpu/whl \
  diffusers==0.42.1 importlib_metadata peft
du -sh .gpu; ls -la .gpu .gpu/examples .gpu/whl
