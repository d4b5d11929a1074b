#!/usr/bin/env python3
"""Peer of crates/strata-train/benches/vs_pytorch.rs: the same diffusion work in PyTorch +
diffusers + PEFT, on the same weights (the diffusers folders the Rust bench reads) and the
same shapes.

Rows (names shared with the Rust bench):
* cfg_step: one classifier-free-guidance sampling step of the embedded base model: UNet at
  batch 2 (unconditional + conditional), 16x16 latents, 77-token context, then
  u + 7 (c - u);
* lora_step: one LoRA training step as the demo runs it: batch 8 of 64x64 images, VAE encode
  (sampled latents, times the scaling factor), DDPM noise at random timesteps, UNet forward,
  MSE against the noise, backward, AdamW update; LoRA rank 8 (alpha 8) on to_q, to_k, to_v,
  to_out.0, proj_in, proj_out, ff.net.0.proj and ff.net.2;
* base_vae_encode / base_vae_decode: the base model's VAE, batch 8, 64x64 images;
* sd15_fwd_32 / sd15_fwd_64b2: SD-1.5-size UNet forward, 32x32 latents batch 1 / 64x64 batch 2;
* sd15_lora_32 / sd15_lora_64b2: the same with LoRA rank 16 (alpha 16) on the attention
  projections, forward + MSE + backward (no optimiser step);
* sd15_vae_encode_256 / sd15_vae_decode_256: SD-1.5-size VAE, batch 1, 256x256 images.

Everything in float32 with torch.set_num_threads(THREADS). Each row: one warm-up, then REPS
timed runs; prints one JSON line per row, {"row", "ms" (minimum), "median_ms", "runs"}.

Usage: .venv/bin/python scripts/bench/diffusion_peer.py --base models/strata-base \
         --sd15 DIR --rows cfg_step,lora_step --reps 3 [--threads 2]
(DIR holds unet/ and vae/ in diffusers layout; the Rust bench writes it.)
"""
import argparse
import json
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel


def load(folder, cls):
    try:
        return cls.from_pretrained(folder, variant="fp16", torch_dtype=torch.float32)
    except (OSError, ValueError):
        return cls.from_pretrained(folder, torch_dtype=torch.float32)


def timed(fn, reps):
    fn()  # warm-up
    v = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        v.append((time.perf_counter() - t) * 1e3)
    return min(v), statistics.median(v), len(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--sd15", default=None)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = [r for r in a.rows.split(",") if r]
    cache = {}

    def base_unet():
        if "bu" not in cache:
            cache["bu"] = load(a.base + "/unet", UNet2DConditionModel).eval()
        return cache["bu"]

    def base_vae():
        if "bv" not in cache:
            cache["bv"] = load(a.base + "/vae", AutoencoderKL).eval()
        return cache["bv"]

    def sd_unet():
        if "su" not in cache:
            if a.sd15 is None:
                sys.exit("diffusion_peer: --sd15 DIR is needed for the SD-1.5 rows")
            cache["su"] = load(a.sd15 + "/unet", UNet2DConditionModel).eval()
        return cache["su"]

    def sd_vae():
        if "sv" not in cache:
            cache["sv"] = load(a.sd15 + "/vae", AutoencoderKL).eval()
        return cache["sv"]

    def unet_forward(unet, b, hw, reps):
        x = torch.randn(b, 4, hw, hw)
        ctx = torch.randn(b, 77, unet.config.cross_attention_dim)
        t = torch.full((b,), 500.0)

        def f():
            with torch.no_grad():
                unet(x, t, encoder_hidden_states=ctx).sample

        return timed(f, reps)

    def lora_fwd_bwd(unet, b, hw, rank, reps):
        from peft import LoraConfig

        unet.requires_grad_(False)
        name = f"r{rank}"
        unet.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
            adapter_name=name,
        )
        unet.train()
        x = torch.randn(b, 4, hw, hw)
        noise = torch.randn(b, 4, hw, hw)
        ctx = torch.randn(b, 77, unet.config.cross_attention_dim)
        t = torch.full((b,), 500.0)
        params = [p for p in unet.parameters() if p.requires_grad]

        def f():
            for p in params:
                p.grad = None
            pred = unet(x, t, encoder_hidden_states=ctx).sample
            torch.nn.functional.mse_loss(pred, noise).backward()

        r = timed(f, reps)
        unet.delete_adapters(name)
        unet.eval()
        return r

    for row in rows:
        if row == "cfg_step":
            unet = base_unet()
            x = torch.randn(1, 4, 16, 16)
            ctx = torch.randn(2, 77, unet.config.cross_attention_dim)
            t = torch.full((2,), 500.0)

            def f():
                with torch.no_grad():
                    e = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample
                    u, c = e.chunk(2)
                    u + 7.0 * (c - u)

            r = timed(f, a.reps)
        elif row == "lora_step":
            from peft import LoraConfig

            unet = load(a.base + "/unet", UNet2DConditionModel)  # its own copy: adapters stay
            vae = base_vae()
            unet.requires_grad_(False)
            vae.requires_grad_(False)
            unet.add_adapter(LoraConfig(
                r=8, lora_alpha=8, init_lora_weights="gaussian",
                target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out",
                                "ff.net.0.proj", "ff.net.2"]))
            unet.train()
            params = [p for p in unet.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
            sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear")
            images = torch.rand(8, 3, 64, 64) * 2 - 1
            ctx = torch.randn(8, 77, unet.config.cross_attention_dim)
            sf = vae.config.scaling_factor

            def f():
                with torch.no_grad():
                    lat = vae.encode(images).latent_dist.sample() * sf
                noise = torch.randn_like(lat)
                ts = torch.randint(0, 1000, (lat.shape[0],))
                xt = sched.add_noise(lat, noise, ts)
                pred = unet(xt, ts, encoder_hidden_states=ctx).sample
                loss = torch.nn.functional.mse_loss(pred, noise)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            r = timed(f, a.reps)
        elif row in ("base_vae_encode", "base_vae_decode", "sd15_vae_encode_256",
                     "sd15_vae_decode_256"):
            base = row.startswith("base")
            vae = base_vae() if base else sd_vae()
            b, px = (8, 64) if base else (1, 256)
            down = 2 ** (len(vae.config.block_out_channels) - 1)
            if row.endswith("encode") or row.endswith("encode_256"):
                images = torch.rand(b, 3, px, px) * 2 - 1

                def f():
                    with torch.no_grad():
                        vae.encode(images).latent_dist.sample()
            else:
                lat = torch.randn(b, 4, px // down, px // down)

                def f():
                    with torch.no_grad():
                        vae.decode(lat).sample

            r = timed(f, a.reps)
        elif row == "sd15_fwd_32":
            r = unet_forward(sd_unet(), 1, 32, a.reps)
        elif row == "sd15_fwd_64b2":
            r = unet_forward(sd_unet(), 2, 64, a.reps)
        elif row == "sd15_lora_32":
            r = lora_fwd_bwd(sd_unet(), 1, 32, 16, a.reps)
        elif row == "sd15_lora_64b2":
            r = lora_fwd_bwd(sd_unet(), 2, 64, 16, a.reps)
        else:
            sys.exit(f"diffusion_peer: unknown row {row!r}")
        print(json.dumps({"row": row, "ms": r[0], "median_ms": r[1], "runs": r[2]}), flush=True)


if __name__ == "__main__":
    main()
