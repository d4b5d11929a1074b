#!/usr/bin/env bash
# GPU side, the one command: our CUDA build beside diffusers on the same GPU, in one call.
#
#   scripts/gpu/run-checks.sh         # repository root, .gpu/ from scripts/gpu/prepare.sh
#
# Runs, in order: our UNet forward f32/f16 and 30-step CFG-7 generation at batch 1 and 8
# (examples/gpu_bench), our LoRA step r16 bs10 512² f16 mixed precision with VAE encode
# (examples/gpu_lora_step), then the kit's diffusers_baseline.py (copied into .gpu/ by prepare.sh),
# each with nvidia-smi sampling the GPU's used memory every 50 ms. Then prints ratios
# (ours ÷ diffusers in images/s, and peak memory) with scripts/gpu/compare.py.
# Results (7 files): $OUT (the device tool's output folder) or .gpu/results: NAME.jsonl per
# run, stderr.log, peaks.txt ("NAME MiB" lines), gpu.txt, summary.md.
set -uo pipefail
G=.gpu
R=${OUT:-$G/results}
mkdir -p "$R"
rm -f "$R/peaks.txt" "$R/stderr.log"
# shellcheck disable=SC1091
source "$G/env-gpu.sh"
for b in gpu_bench gpu_lora_step; do
  [ -x "$G/examples/$b" ] || xz -dk "$G/examples/$b.xz"
done
if ls "$G"/whl/*.whl >/dev/null 2>&1; then
  pip install -q --no-index --no-deps --target /tmp/site "$G"/whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$R/gpu.txt"

# run NAME CMD...: stdout to $R/NAME.jsonl, stderr appended to $R/stderr.log, peak used GPU
# memory (MiB, whole card, minus what was used before) appended to $R/peaks.txt
run() {
  local name=$1; shift
  local base; base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
  local smi_log=/tmp/strata-$name.smi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$smi_log" &
  local smi=$!
  local t0=$SECONDS
  echo "== $name: $*" >>"$R/stderr.log"
  "$@" >"$R/$name.jsonl" 2>>"$R/stderr.log"
  local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  local peak; peak=$(sort -n "$smi_log" | tail -n1)
  echo "$name $((${peak:-0} - ${base:-0}))" >>"$R/peaks.txt"
  echo "== $name: rc $rc, $((SECONDS - t0)) s, peak ${peak:-?} MiB (${base:-?} before)"
  cat "$R/$name.jsonl"
}

run ours_infer "$G/examples/gpu_bench"
run ours_lora "$G/examples/gpu_lora_step" 10 512 10 --mixed-precision f16
run diffusers python3 "$G/diffusers_baseline.py"
tail -n 20 "$R/stderr.log"
python3 scripts/gpu/compare.py "$R" | tee "$R/summary.md"
