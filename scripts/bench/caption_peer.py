#!/usr/bin/env python3
"""Peer of crates/strata-captioner/benches/caption_speed.rs: the same captioning work in
transformers, on the same weights and images.

Builds, with random weights (transformers' own initialisation, torch seed 0):
* BLIP with the configuration of Salesforce/blip-image-captioning-base (ViT-B/16 at 384 px,
  12-layer BERT-base decoder with cross-attention, vocabulary 30524), saved as a
  BlipForConditionalGeneration folder (model.safetensors, config.json, processor files and a
  BERT tokenizer whose vocab.txt holds the 30522 BERT ids, then [DEC] and [ENC]);
* CLIP with the default CLIPConfig, i.e. openai/clip-vit-base-patch32's shapes (ViT-B/32 at
  224 px), saved as a CLIPModel folder with OpenAI's BPE vocabulary (vocab.json, merges.txt,
  built from open_clip's bpe_simple_vocab_16e6.txt.gz);
* N images of 384x384 (smooth random fields with noise, PNG);

then times, with torch.set_num_threads(2), one image at a time:
* BLIP greedy captioning: BlipProcessor (Pillow backend), generate(max_new_tokens=20,
  min_length=21) so [SEP] cannot end a caption early and every image costs 20 decoder steps,
  decode;
* the CLIP image tower: CLIPImageProcessor (Pillow backend) + get_image_features;

and writes OUT/peer.json. With --rust it then runs the Rust bench on the same folder.

Usage: .venv/bin/python scripts/bench/caption_peer.py --out /tmp/capbench --images 200
       [--rust [--cargo-profile dev]]
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEW_TOKENS = 20


def bert_vocab(path):
    # BERT's id layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, words
    toks = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(toks) < 30522:
        a, b, c = letters[i % 26], letters[(i // 26) % 26], letters[(i // 676) % 26]
        toks.append(("##" if i % 3 == 0 else "") + c + b + a + str(i // 17576))
        i += 1
    with open(path, "w") as f:
        f.write("\n".join(toks) + "\n")


def build_blip(out):
    os.makedirs(out, exist_ok=True)
    bert_vocab(os.path.join(out, "vocab.txt"))
    tok = BertTokenizer.from_pretrained(out)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    assert tok.convert_tokens_to_ids("[DEC]") == 30522 and len(tok) == 30524
    cfg = BlipConfig(
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=384, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-5,
        ),
        text_config=dict(
            vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=512, hidden_act="gelu",
            layer_norm_eps=1e-12, bos_token_id=30522, eos_token_id=2, pad_token_id=0,
            sep_token_id=102,
        ),
    )
    model = BlipForConditionalGeneration(cfg).eval()
    model.save_pretrained(out, safe_serialization=True)
    proc = BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=tok)
    proc.save_pretrained(out)
    return model, proc


def bytes_to_unicode():
    """GPT-2's byte -> printable character table that CLIP's BPE works on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def clip_vocab(out):
    gz = None
    try:
        import open_clip

        gz = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    except ImportError:
        pass
    if gz is None or not os.path.exists(gz):
        sys.exit("needs open_clip's bpe_simple_vocab_16e6.txt.gz (pip install open_clip_torch)")
    merges = gzip.open(gz).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def build_clip(out):
    os.makedirs(out, exist_ok=True)
    model = CLIPModel(CLIPConfig()).eval()  # openai/clip-vit-base-patch32 shapes
    model.save_pretrained(out, safe_serialization=True)
    clip_vocab(out)
    CLIPTokenizer.from_pretrained(out)  # the vocabulary loads
    ip = CLIPImageProcessorPil()
    ip.save_pretrained(out)
    return model, ip


def make_images(out, n):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:384, 0:384]
    paths = []
    for k in range(n):
        p = os.path.join(out, f"img_{k:04d}.png")
        if not os.path.exists(p):
            f = rng.uniform(0.01, 0.08, 6)
            base = np.stack(
                [
                    128 + 90 * np.sin(x * f[0] + y * f[1] + k),
                    128 + 90 * np.cos(x * f[2] - y * f[3]),
                    128 + 90 * np.sin((x + y) * f[4] + f[5] * k),
                ],
                axis=-1,
            )
            arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(p)
        paths.append(p)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the models, images and peer.json")
    ap.add_argument("--images", type=int, default=200, help="number of 384x384 images")
    ap.add_argument("--rust", action="store_true", help="run the Rust bench afterwards")
    ap.add_argument(
        "--cargo-profile", default="bench",
        help="cargo profile for --rust (bench = release; dev reuses a debug build, whose "
        "dependencies are optimised)",
    )
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    blip_dir = os.path.join(a.out, "blip")
    clip_dir = os.path.join(a.out, "clip")
    if os.path.exists(os.path.join(blip_dir, "model.safetensors")):
        model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
        proc = BlipProcessor.from_pretrained(blip_dir)
        proc.image_processor = BlipImageProcessorPil.from_pretrained(blip_dir)
    else:
        model, proc = build_blip(blip_dir)
    if os.path.exists(os.path.join(clip_dir, "model.safetensors")):
        clip = CLIPModel.from_pretrained(clip_dir).eval()
        cip = CLIPImageProcessorPil.from_pretrained(clip_dir)
    else:
        clip, cip = build_clip(clip_dir)
    paths = make_images(os.path.join(a.out, "images"), a.images)
    # a folder reused with fewer images: time only the first N
    paths = paths[: a.images]

    def caption(p):
        img = Image.open(p).convert("RGB")
        inputs = proc(images=img, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                pixel_values=inputs["pixel_values"], max_new_tokens=NEW_TOKENS,
                min_length=1 + NEW_TOKENS,
            )
        assert out.shape[1] == 1 + NEW_TOKENS
        return proc.decode(out[0], skip_special_tokens=True)

    def embed(p):
        img = Image.open(p).convert("RGB")
        px = cip(img, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return clip.get_image_features(pixel_values=px)

    caption(paths[0])  # warm-up
    t = time.perf_counter()
    first = None
    for p in paths:
        s = caption(p)
        first = first if first is not None else s
    blip_s = time.perf_counter() - t
    embed(paths[0])
    t = time.perf_counter()
    for p in paths:
        embed(p)
    clip_s = time.perf_counter() - t
    res = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": len(paths),
        "blip_seconds": blip_s,
        "blip_images_per_s": len(paths) / blip_s,
        "clip_seconds": clip_s,
        "clip_images_per_s": len(paths) / clip_s,
        "first_caption": first,
    }
    with open(os.path.join(a.out, "peer.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(
        f"transformers {res['transformers']} (torch {res['torch']}, {res['threads']} threads, "
        f"{len(paths)} images): BLIP greedy ({NEW_TOKENS} tokens) {res['blip_images_per_s']:.3f} "
        f"images/s ({blip_s:.1f} s), CLIP image tower {res['clip_images_per_s']:.3f} images/s "
        f"({clip_s:.1f} s); first caption {first[:60]!r}"
    )
    if a.rust:
        env = dict(os.environ, RAYON_NUM_THREADS="2")
        cmd = [
            "cargo", "bench", "--profile", a.cargo_profile, "-p", "strata-captioner",
            "--bench", "caption_speed", "--",
            "--dir", a.out, "--images", str(a.images),
        ]
        print("$", " ".join(cmd))
        sys.exit(subprocess.call(cmd, cwd=ROOT, env=env))


if __name__ == "__main__":
    main()
