#!/usr/bin/python3
"""GDAL peer for `cargo bench -p strata-cli --bench prepare`: the work of `strata prepare`
(RGB tiles of a large raster as 8-bit PNG) written the way one would with GDAL's Python
bindings, in one script, with worker processes.

- The raster is opened once per worker process; each tile is one windowed
  `Dataset.ReadAsArray` of the three bands (GDAL's block cache serves neighbouring tiles).
- The 8-bit stretch is the one strata applies by default: per band, the 2nd and 98th
  percentiles (nearest rank, `round(p/100 * (n-1))`) of the valid pixels, computed over
  whole 256-row blocks (every k-th block when the raster has more than 2^24 pixels, k =
  ceil(pixels / 2^24)), then `clamp((v - lo) * 255 / (hi - lo), 0, 255)` rounded. The
  statistics pass runs in the main process before the tiles, as strata's does.
- PNG through GDAL's PNG driver (`CreateCopy` from an in-memory dataset), zlib level ZLEVEL.
- Windows: slicing every SIZE pixels with a last window flush with the edge (strata's
  default plan), so both write the same tiles.

Prints one JSON line: {"tiles", "seconds", "ranges": [[lo, hi], ...]}.

Run with Debian's python3-gdal:
    /usr/bin/python3 scripts/bench/prepare_gdal.py SRC OUT_DIR [--size 512] [--workers 2]
        [--zlevel 1] [--bands 1,2,3]
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import time

import numpy as np
from osgeo import gdal

gdal.UseExceptions()

STATS_BLOCK_ROWS = 256
STATS_PIXEL_BUDGET = 16 * 1024 * 1024

_ds = None
_job = None


def axis(length, size):
    """Window offsets along one axis (strata's slicing / cropping / padding rule)."""
    if length >= 2 * size:
        pos = list(range(0, length - size + 1, size))
        if pos[-1] + size < length:
            pos.append(length - size)
        return pos
    if length > size:
        return [(length - size) // 2]
    return [-((size - length) // 2)]


def percentile_range(hist, lo_p, hi_p):
    n = int(hist.sum())
    if n == 0:
        return 0.0, 255.0
    cum = np.cumsum(hist)

    def value_at(p):
        rank = min(max(round(p / 100.0 * (n - 1)), 0), n - 1)
        return float(np.searchsorted(cum, rank, side="right"))

    return value_at(lo_p), value_at(hi_p)


def band_ranges(ds, bands, nodata):
    """Per-band percentile 2-98 over a histogram of sampled 256-row blocks."""
    w, h = ds.RasterXSize, ds.RasterYSize
    pixels = w * h
    step = 1 if pixels <= STATS_PIXEL_BUDGET else math.ceil(pixels / STATS_PIXEL_BUDGET)
    hists = [np.zeros(65536, dtype=np.int64) for _ in bands]
    for b0 in range(0, math.ceil(h / STATS_BLOCK_ROWS), step):
        y0 = b0 * STATS_BLOCK_ROWS
        rows = min(STATS_BLOCK_ROWS, h - y0)
        block = ds.ReadAsArray(0, y0, w, rows, band_list=bands)
        for i, plane in enumerate(block):
            v = plane.ravel()
            if nodata is not None:
                v = v[v != nodata]
            hists[i] += np.bincount(v, minlength=65536)
    return [percentile_range(hh, 2.0, 98.0) for hh in hists]


def init(src):
    global _ds
    gdal.SetCacheMax(256 * 1024 * 1024)
    _ds = gdal.Open(src)


def do_row(task):
    row, y, xs, job = task
    size, bands, ranges, nodata, out, stem, zlevel = job
    png = gdal.GetDriverByName("PNG")
    mem_drv = gdal.GetDriverByName("MEM")
    lo = np.array([r[0] for r in ranges], dtype=np.float32)[:, None, None]
    span = np.array([r[1] - r[0] for r in ranges], dtype=np.float32)[:, None, None]
    scale = np.where(span > 0, np.float32(255.0) / np.where(span > 0, span, 1), 0)
    for col, x in enumerate(xs):
        a = _ds.ReadAsArray(x, y, size, size, band_list=bands).astype(np.float32)
        t = (a - lo) * scale
        np.clip(t, 0.0, 255.0, out=t)
        px = np.floor(t + 0.5).astype(np.uint8)
        flat = (span <= 0)[:, 0, 0]
        if flat.any():  # hi <= lo: values above lo are 255, the rest 0 (as strata)
            px[flat] = np.where(a[flat] > lo[flat], 255, 0)
        if nodata is not None:
            px[:, (a == nodata).any(axis=0)] = 0
        mem = mem_drv.Create("", size, size, 3, gdal.GDT_Byte)
        mem.WriteRaster(0, 0, size, size, px.tobytes())
        name = os.path.join(out, f"{stem}_{row:03d}_{col:03d}.png")
        png.CreateCopy(name, mem, options=[f"ZLEVEL={zlevel}"])
        mem = None
    return len(xs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--zlevel", type=int, default=1)
    p.add_argument("--bands", default="1,2,3")
    a = p.parse_args()
    t0 = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    bands = [int(b) for b in a.bands.split(",")]
    ds = gdal.Open(a.src)
    nodata = ds.GetRasterBand(bands[0]).GetNoDataValue()
    if ds.GetRasterBand(bands[0]).DataType not in (gdal.GDT_Byte, gdal.GDT_UInt16):
        raise SystemExit(f"{a.src}: this script handles 8- and 16-bit unsigned rasters only")
    ranges = band_ranges(ds, bands, nodata)
    xs = axis(ds.RasterXSize, a.size)
    ys = axis(ds.RasterYSize, a.size)
    stem = os.path.splitext(os.path.basename(a.src))[0]
    ds = None
    job = (a.size, bands, ranges, nodata, a.out, stem, a.zlevel)
    tasks = [(row, y, xs, job) for row, y in enumerate(ys)]
    with mp.Pool(a.workers, initializer=init, initargs=(a.src,)) as pool:
        tiles = sum(pool.imap_unordered(do_row, tasks))
    print(json.dumps({"tiles": tiles, "seconds": time.perf_counter() - t0, "ranges": ranges}))


if __name__ == "__main__":
    main()
