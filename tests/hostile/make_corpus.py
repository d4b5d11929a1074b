#!/usr/bin/env python3
"""Writes the hostile-input corpus under tests/hostile/ (committed; rerun only to change it).

Every file here is something a careless or hostile user can hand strata: truncated and
bit-flipped images and weights, decompression bombs, wrong tensor shapes and dtypes, LoRA
files for another architecture, NaN weights, broken caption files. `cases.toml` says which
command each goes to and what strata must answer; `crates/strata-cli/tests/hostile.rs` runs
them all.

    .venv/bin/python tests/hostile/make_corpus.py      # needs Pillow and torch (JPEG, WebP, .pt)

Deterministic: the same script writes the same bytes.
"""

import io
import json
import os
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent.parent


def write(rel, data):
    p = ROOT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


# ---------------------------------------------------------------- PNG (stdlib only)


def png_chunk(kind, body):
    c = kind + body
    return struct.pack(">I", len(body)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


def png(width, height, rows, bit_depth=8, colour=2, level=9):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows, level))
        + png_chunk(b"IEND", b"")
    )


def rgb_rows(w, h, seed):
    out = bytearray()
    for y in range(h):
        out.append(0)
        for x in range(w):
            out += bytes(((x * 7 + seed) % 256, (y * 5 + seed) % 256, ((x ^ y) + seed) % 256))
    return bytes(out)


def good_png(w=64, h=64, seed=0):
    return png(w, h, rgb_rows(w, h, seed))


def flip(data, at, mask=0x5A):
    b = bytearray(data)
    b[at] ^= mask
    return bytes(b)


def bomb_png(side):
    # 1-bit greyscale, all zero: ~side²/8 bytes raw, compresses about 1000:1, and decodes to
    # side² × 3 bytes of RGB.
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def images():
    ok = good_png()
    write("images/ok.png", ok)
    write("images/png-truncated.png", ok[: len(ok) // 2])
    idat = ok.index(b"IDAT")
    write("images/png-bitflip.png", flip(ok, idat + 40))
    write("images/png-bomb-30000.png", bomb_png(30000))
    # IHDR saying 0 × 64
    z = bytearray(ok)
    z[16:20] = struct.pack(">I", 0)
    crc = zlib.crc32(bytes(z[12:29])) & 0xFFFFFFFF
    z[29:33] = struct.pack(">I", crc)
    write("images/png-zero-width.png", bytes(z))
    write("images/empty.png", b"")
    write("images/text-named.png", b"this is a text file with an image extension\n")

    # BMP header declaring 60000 x 60000 x 24 bit with no pixel data
    w = h = 60000
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40)
    write("images/bmp-bomb.bmp", head + info + b"\x00" * 16)

    # TIFF: little-endian, one strip, declaring 200000 x 200000 RGB8 (120 GB) with 16 bytes
    write("images/tiff-bomb.tif", tiff_header(200000, 200000, b"\x00" * 16))
    good = tiff_header(64, 64, raw_rgb(64, 64, 3))
    write("images/tiff-truncated.tif", good[: len(good) // 3])

    try:
        from PIL import Image
    except ImportError:
        print("Pillow missing: JPEG/WebP entries not rewritten")
        return
    im = Image.frombytes("RGB", (64, 64), raw_rgb(64, 64, 1))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    jpg = buf.getvalue()
    write("images/ok.jpg", jpg)
    write("images/jpeg-truncated.jpg", jpg[: len(jpg) // 2])
    sos = jpg.index(b"\xff\xda")
    write("images/jpeg-bitflip.jpg", flip(flip(jpg, sos + 30), sos + 31, 0xFF))
    # SOF0 rewritten to 65500 x 65500
    sof = jpg.index(b"\xff\xc0")
    b = bytearray(jpg)
    b[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    write("images/jpeg-bomb-65500.jpg", bytes(b))
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=80)
    webp = buf.getvalue()
    write("images/webp-truncated.webp", webp[: len(webp) // 2])
    # mismatched sizes for an eval folder
    Image.frombytes("RGB", (48, 48), raw_rgb(48, 48, 2)).save(ROOT / "images/ok-48.png")


def raw_rgb(w, h, seed):
    return bytes(
        v
        for y in range(h)
        for x in range(w)
        for v in ((x * 7 + seed) % 256, (y * 5 + seed) % 256, ((x ^ y) + seed) % 256)
    )


def tiff_header(w, h, strip):
    # baseline RGB8 chunky TIFF with one uncompressed strip
    entries = [
        (256, 4, 1, w),  # ImageWidth LONG
        (257, 4, 1, h),  # ImageLength
        (258, 3, 3, None),  # BitsPerSample -> offset
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, None),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, min(w * h * 3, 0xFFFFFFFF)),  # StripByteCounts (as declared)
        (284, 3, 1, 1),  # PlanarConfig chunky
    ]
    n = len(entries)
    ifd_at = 8
    after = ifd_at + 2 + n * 12 + 4
    bps_at = after
    strip_at = bps_at + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at))
    out += struct.pack("<H", n)
    for tag, typ, cnt, val in entries:
        if tag == 258:
            val = bps_at
        if tag == 273:
            val = strip_at
        if typ == 3 and cnt == 1:
            out += struct.pack("<HHIHH", tag, typ, cnt, val, 0)
        else:
            out += struct.pack("<HHII", tag, typ, cnt, val)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 8, 8, 8)
    out += strip
    return bytes(out)


# ---------------------------------------------------------------- safetensors (stdlib only)


def safetensors(tensors, header_extra=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    head = {}
    off = 0
    blob = b""
    for name, dt, shape, raw in tensors:
        head[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blob += raw
    head["__metadata__"] = {"format": "pt"}
    if header_extra:
        head.update(header_extra)
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def lora_pair(path, out_dim, in_dim, rank=4, fill=0.01):
    key = "lora_unet_" + path.replace(".", "_")
    down = f32([fill] * (rank * in_dim))
    up = f32([fill] * (out_dim * rank))
    return [
        (key + ".lora_down.weight", "F32", [rank, in_dim], down),
        (key + ".lora_up.weight", "F32", [out_dim, rank], up),
        (key + ".alpha", "F32", [], f32([float(rank)])),
    ]


BASE_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def weights():
    ok = safetensors(lora_pair(BASE_Q, 48, 48))
    write("weights/lora-ok.safetensors", ok)
    write("weights/lora-truncated.safetensors", ok[: len(ok) - 100])
    write("weights/lora-huge-header.safetensors", struct.pack("<Q", 1 << 62) + ok[8:])
    write("weights/lora-header-past-end.safetensors", struct.pack("<Q", 10_000) + ok[8:200])
    write("weights/lora-bad-json.safetensors", struct.pack("<Q", 16) + b"{\"a\": [1, 2,,  " + b"\x00" * 64)
    n = struct.unpack("<Q", ok[:8])[0]
    write("weights/lora-bitflip-header.safetensors", flip(ok, 8 + n // 2, 0x20 ^ 0x7B))
    bad_off = safetensors(lora_pair(BASE_Q, 48, 48))
    hdr = json.loads(bad_off[8 : 8 + struct.unpack("<Q", bad_off[:8])[0]])
    k0 = next(k for k in hdr if k.endswith("lora_down.weight"))
    hdr[k0]["data_offsets"] = [0, 1 << 40]
    h = json.dumps(hdr, separators=(",", ":")).encode()
    write("weights/lora-offsets-out-of-range.safetensors", struct.pack("<Q", len(h)) + h + bad_off[8 + struct.unpack("<Q", bad_off[:8])[0] :])
    # I64 tensors where floats belong
    write(
        "weights/lora-int-dtype.safetensors",
        safetensors(
            [
                ("lora_unet_" + BASE_Q.replace(".", "_") + ".lora_down.weight", "I64", [4, 48], b"\x01" * (8 * 4 * 48)),
                ("lora_unet_" + BASE_Q.replace(".", "_") + ".lora_up.weight", "I64", [48, 4], b"\x01" * (8 * 48 * 4)),
            ]
        ),
    )
    # right key, wrong width (SD-1.5's 320 channels on a 48-channel layer)
    write("weights/lora-wrong-shape.safetensors", safetensors(lora_pair(BASE_Q, 320, 320)))
    # SDXL-style key names (input_blocks / transformer depth) that no SD-1.5 layer has
    write(
        "weights/lora-sdxl-keys.safetensors",
        safetensors(lora_pair("input_blocks.4.1.transformer_blocks.0.attn1.to_q", 640, 640)),
    )
    nan = safetensors(
        [
            (k, d, s, f32([float("nan")] * (len(r) // 4)) if "lora_down" in k else r)
            for k, d, s, r in lora_pair(BASE_Q, 48, 48)
        ]
    )
    write("weights/lora-nan.safetensors", nan)
    write("weights/text-as-lora.safetensors", b"# not weights\nlr = 1e-4\n")
    # textual-inversion embedding with the wrong width (SD-1.5's 768 on a 64-wide encoder)
    write("weights/embedding-wrong-dim.safetensors", safetensors([("emb_params", "F32", [1, 768], f32([0.0] * 768))]))
    try:
        import torch
    except ImportError:
        print("torch missing: .pt entries not rewritten")
        return
    buf = io.BytesIO()
    torch.save({"string_to_param": {"*": torch.zeros(1, 64)}, "name": "x"}, buf)
    pt = buf.getvalue()
    write("weights/embedding-truncated.pt", pt[: len(pt) // 2])
    write("weights/embedding-not-zip.pt", bytes((i * 37 + 11) % 256 for i in range(4096)))


# ---------------------------------------------------------------- captions / datasets


def dataset(name, lines, files=("a.png",), raw=None):
    d = ROOT / "datasets" / name
    d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (d / f).write_bytes(good_png(64, 64, i))
    body = raw if raw is not None else "".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines)
    (d / "metadata.jsonl").write_bytes(body if isinstance(body, bytes) else body.encode())


def caption(scene, relation, elements):
    return {
        "scene": scene,
        "relation": relation,
        "elements": elements,
        "text": f"{scene}. {relation}. {', '.join(elements)}",
    }


def datasets():
    good = {"file_name": "a.png", **caption("park", "a lake lies in the park", ["lake", "trees"])}
    dataset("non-utf8", [], raw=b'{"file_name": "a.png", "scene": "park\xff\xfe", "relation": "x", "elements": ["lake"]}\n')
    dataset("malformed-json", [], raw=b'{"file_name": "a.png", "scene": "park", \n')
    dataset("dotdot", [dict(good, file_name="../escape.png")])
    dataset("long-caption", [dict(good, relation="a lake lies in the park " * 60000)])
    dataset("control-chars", [dict(good, relation="a lake\u0000 lies \u001b[31min the park")])
    dataset("missing-image", [dict(good, file_name="gone.png")])
    dataset("empty", [], raw=b"")
    d = ROOT / "datasets" / "bomb-image"
    dataset("bomb-image", [dict(good, file_name="a.png")], files=())
    (d / "a.png").write_bytes((ROOT / "images/png-bomb-30000.png").read_bytes())


def configs():
    c = ROOT / "configs"
    c.mkdir(exist_ok=True)
    (c / "train-nan-lr.toml").write_text('method = "lora"\nlr = nan\n')
    (c / "train-unknown-key.toml").write_text('method = "lora"\nlearning_rate_typo = 1e-4\n')
    (c / "knowledge-broken.toml").write_text('[scene.park]\nelements = ["lake", \n')


if __name__ == "__main__":
    images()
    weights()
    datasets()
    configs()
    print("corpus written under", ROOT)
