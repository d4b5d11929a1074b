#!/usr/bin/env python3
"""Where strata may put the record of a run's fusion so other tools still load its outputs.

Builds a tiny Stable-Diffusion-layout pipeline with diffusers and checks:
  1. a kohya-layout LoRA with strata_* header metadata loads with `load_lora_weights`;
  2. the same LoRA with the learned schedule's tensors (hierarchical_fusion.*) added is
     refused, which is why strata writes those tensors to a `<lora>.fusion.safetensors`
     sidecar instead;
  3. a diffusers folder with an extra `fusion/` subfolder (config.json + safetensors) loads
     with StableDiffusionPipeline / DiffusionPipeline.from_pretrained.

Run: python3 scripts/check_fusion_record_loaders.py [WORK_DIR]   (needs torch, diffusers,
transformers, safetensors). Prints one line per check and exits non-zero if one is not as
expected.
"""
import json
import os
import sys
import tempfile

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DiffusionPipeline,
                       StableDiffusionPipeline, UNet2DConditionModel)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel


def tiny_pipeline():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32,), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        latent_channels=4, norm_num_groups=32)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37,
                                      num_attention_heads=4, num_hidden_layers=2,
                                      vocab_size=100))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=None, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def kohya_lora(unet):
    sd = {}
    for name, mod in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn2.to_q", "attn2.to_v")):
            k = "lora_unet_" + name.replace(".", "_")
            sd[k + ".lora_down.weight"] = torch.randn(2, mod.in_features) * 0.1
            sd[k + ".lora_up.weight"] = torch.randn(mod.out_features, 2) * 0.1
            sd[k + ".alpha"] = torch.tensor(2.0)
    return sd


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    os.makedirs(work, exist_ok=True)
    pipe = tiny_pipeline()
    meta = {"ss_network_module": "networks.lora", "strata_captions": "hierarchical",
            "strata_fusion_mode": "decoupled", "strata_fusion_schedule": "learned",
            "strata_fusion_weights": "lora.fusion.safetensors"}
    sd = kohya_lora(pipe.unet)
    save_file(sd, os.path.join(work, "metadata.safetensors"), metadata=meta)
    extra = dict(sd)
    extra["hierarchical_fusion.linear_1.weight"] = torch.randn(64, 32)
    extra["hierarchical_fusion.linear_1.bias"] = torch.randn(64)
    save_file(extra, os.path.join(work, "extra_keys.safetensors"), metadata=meta)
    ok = True

    def load(name):
        try:
            pipe.load_lora_weights(work, weight_name=name, adapter_name=name.split(".")[0])
            return None
        except Exception as e:  # noqa: BLE001 - the point is to see what diffusers raises
            return f"{type(e).__name__}: {e}"

    err = load("metadata.safetensors")
    print("1. kohya LoRA + strata_* metadata:", "loads" if err is None else f"refused ({err})")
    ok &= err is None
    err = load("extra_keys.safetensors")
    print("2. kohya LoRA + hierarchical_fusion.* tensors:",
          "loads" if err is None else f"refused ({err[:160]})")
    ok &= err is not None

    folder = os.path.join(work, "pipe")
    pipe.save_pretrained(folder)
    os.makedirs(os.path.join(folder, "fusion"), exist_ok=True)
    with open(os.path.join(folder, "fusion", "config.json"), "w") as f:
        json.dump({"captions": "hierarchical", "mode": "decoupled", "schedule": "learned",
                   "weights": "schedule.safetensors"}, f)
    save_file({"hierarchical_fusion.linear_1.weight": torch.randn(64, 32)},
              os.path.join(folder, "fusion", "schedule.safetensors"))
    none = dict(tokenizer=None, feature_extractor=None, image_encoder=None, safety_checker=None)
    try:
        StableDiffusionPipeline.from_pretrained(folder, requires_safety_checker=False, **none)
        DiffusionPipeline.from_pretrained(folder, **none)
        print("3. diffusers folder + fusion/: loads")
    except Exception as e:  # noqa: BLE001
        print(f"3. diffusers folder + fusion/: refused ({type(e).__name__}: {e})")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
