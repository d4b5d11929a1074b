"""Ratios of our CUDA build to diffusers on the same GPU, from scripts/gpu/run-checks.sh output.

    python3 scripts/gpu/compare.py RESULTS_DIR

Speed ratio = diffusers time / our time (> 1: we are faster). Memory: for the LoRA step,
diffusers' torch.cuda.max_memory_allocated beside the peak of nvidia-smi's used memory
during our run (which also counts the CUDA context, ~0.5 GiB: it favours diffusers).
"""
import json, sys, pathlib

r = pathlib.Path(sys.argv[1])


def rows(name):
    p = r / f"{name}.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


ours = rows("ours_infer") + rows("ours_lora")
ref = rows("diffusers")


def find(rs, bench, **kw):
    for x in rs:
        if x.get("bench") == bench and all(str(x.get(k)) == str(v) for k, v in kw.items()):
            return x
    return None


print("| measure | strata | diffusers | speed ratio (diffusers time / ours) |")
print("|---|---|---|---|")
for dt_ours, dt_ref in [("f32", "torch.float32"), ("f16", "torch.float16")]:
    a = find(ours, "unet_forward_64x64", dtype=dt_ours)
    b = find(ref, "unet_forward_64x64", dtype=dt_ref)
    if a and b:
        print(f"| UNet forward 64x64 b1 {dt_ours} | {a['median_s']*1e3:.1f} ms | "
              f"{b['median_s']*1e3:.1f} ms | {b['median_s']/a['median_s']:.2f}x |")
for batch in [1, 8]:
    a = find(ours, "generate_30step_cfg7_512", batch=batch)
    b = find(ref, "generate_30step_cfg7_512", batch=batch, segments=1)
    if a and b:
        print(f"| generate 30 steps CFG 7 512² b{batch} f16 (s/image) | {a['s_per_image']:.3f} s | "
              f"{b['s_per_image']:.3f} s | {b['s_per_image']/a['s_per_image']:.2f}x |")
a = find(ours, "lora_train_step_r16_bs10_512")
b = find(ref, "lora_train_step_r16_bs10_512")
if a and b:
    print(f"| LoRA step r16 bs10 512² f16 (img/s) | {a['images_per_s']:.1f} | "
          f"{b['images_per_s']:.1f} | {a['images_per_s']/b['images_per_s']:.2f}x |")
    peaks = {}
    if (r / "peaks.txt").exists():
        for line in (r / "peaks.txt").read_text().splitlines():
            k, _, v = line.partition(" ")
            peaks[k] = int(v or 0)
    if "ours_lora" in peaks:
        ours_gib = peaks["ours_lora"] / 1024
        ref_gib = b["peak_mem_gib"]
        print(f"| LoRA step peak memory | {ours_gib:.1f} GiB (nvidia-smi) | {ref_gib:.1f} GiB "
              f"(torch allocated) | memory ratio ours/diffusers {ours_gib/ref_gib:.2f} |")
if not (ours and ref):
    print("missing results:", "ours" if not ours else "", "diffusers" if not ref else "")
