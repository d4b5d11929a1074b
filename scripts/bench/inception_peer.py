#!/usr/bin/env python3
"""Peer for `cargo bench -p strata-eval --bench inception`: pytorch-fid's InceptionV3
(the FID network, pool3 features) on CPU.

    prepare WEIGHTS IMAGES N SEED
        Writes random weights in the layout of pytorch-fid's published
        `pt_inception-2015-12-05-*.pth` (a torch.save'd state dict, He-normal convolutions,
        identity batch norms with small random shifts) and N random RGB images of 299x299 in
        [0, 1] as raw little-endian float32 (N x 3 x 299 x 299). Speed does not depend on the
        values; the benchmark's strata side loads the same two files.
    run WEIGHTS IMAGES N BATCH THREADS FEATURES_OUT
        Loads the weights into pytorch_fid.inception.InceptionV3([3]) (resize_input and
        normalize_input on, as in FID), runs one warm-up batch, then times the forward over
        all N images in batches of BATCH with torch.set_num_threads(THREADS). Writes the
        N x 2048 features as raw float32 and prints {"seconds", "images_per_s"} as JSON.

Needs torch, torchvision and pytorch-fid (the `.venv` of the repository).
"""
import json
import math
import sys
import time

import numpy as np
import torch

import pytorch_fid.inception as pfi

SIDE = 299


def template_state_dict():
    """Keys and shapes of pytorch-fid's `pt_inception-2015-12-05` state dict."""
    m = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    m.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    m.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    m.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    m.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    m.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    m.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    m.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    m.Mixed_7b = pfi.FIDInceptionE_1(1280)
    m.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return m.state_dict()


def prepare(weights, images, n, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in template_state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros_like(v)
        elif k.endswith("conv.weight") or k == "fc.weight":
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif k.endswith("bn.weight") or k.endswith("running_var"):
            sd[k] = torch.ones(v.shape)
        else:  # bn.bias, running_mean, fc.bias
            sd[k] = 0.05 * torch.randn(v.shape, generator=g)
    torch.save(sd, weights)
    rng = np.random.default_rng(seed)
    rng.random((n, 3, SIDE, SIDE), dtype=np.float32).astype("<f4").tofile(images)


def run(weights, images, n, batch, threads, features_out):
    torch.set_num_threads(threads)
    sd = torch.load(weights, map_location="cpu")
    pfi.load_state_dict_from_url = lambda *a, **k: sd
    model = pfi.InceptionV3([3]).eval()
    x = torch.from_numpy(np.fromfile(images, dtype="<f4").reshape(n, 3, SIDE, SIDE))
    out = []
    with torch.no_grad():
        model(x[:batch])  # warm-up
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            out.append(model(x[s:s + batch])[0].reshape(-1, 2048))
        dt = time.perf_counter() - t0
    torch.cat(out).numpy().astype("<f4").tofile(features_out)
    print(json.dumps({"seconds": dt, "images_per_s": n / dt}))


def main():
    a = sys.argv[1:]
    if a[:1] == ["prepare"] and len(a) == 5:
        prepare(a[1], a[2], int(a[3]), int(a[4]))
    elif a[:1] == ["run"] and len(a) == 7:
        run(a[1], a[2], int(a[3]), int(a[4]), int(a[5]), a[6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
