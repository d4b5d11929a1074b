//! Bit-depth stretch to 8 bits: per-band linear maps from statistics of the whole raster
//! (so every tile of one source uses the same map), nodata and NaN excluded.

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::source::{BandReader, SampleType};

/// How source values become 0..=255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stretch {
    /// Percentile cut `(low, high)` in percent, e.g. (2, 98): values at or below the low
    /// percentile map to 0, at or above the high one to 255.
    Percentile(f64, f64),
    /// The band's minimum and maximum map to 0 and 255.
    MinMax,
    /// Values are rounded and clamped to 0..=255 as they are.
    None,
}

impl Stretch {
    /// The default: percentile 2–98 for data wider than 8 bits, none for 8-bit data.
    pub fn auto(sample_type: SampleType) -> Stretch {
        if sample_type.is_wide() {
            Stretch::Percentile(2.0, 98.0)
        } else {
            Stretch::None
        }
    }
}

/// The linear map of one band: `out = (v - lo) / (hi - lo) · 255`, clamped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BandMap {
    pub lo: f64,
    pub hi: f64,
}

impl BandMap {
    pub const IDENTITY: BandMap = BandMap { lo: 0.0, hi: 255.0 };

    #[inline]
    pub fn apply(&self, v: f32) -> u8 {
        let (lo, hi) = (self.lo as f32, self.hi as f32);
        if hi <= lo {
            return if v > lo { 255 } else { 0 };
        }
        let t = (v - lo) * (255.0 / (hi - lo));
        t.clamp(0.0, 255.0).round() as u8
    }
}

/// A band's [`BandMap`] as a table over every value of ≤16-bit integer data: one lookup
/// per sample instead of a multiply, clamp and round (rounding is a library call on
/// baseline x86-64). Values the table does not hold (a float band in a mixed stack) fall
/// back to [`BandMap::apply`].
#[derive(Debug, Clone)]
pub struct BandLut {
    map: BandMap,
    offset: i32,
    table: Vec<u8>,
}

impl BandLut {
    /// The table for `sample_type`, or `None` for types wider than 16 bits or float.
    pub fn new(map: BandMap, sample_type: SampleType) -> Option<BandLut> {
        let offset = match sample_type {
            SampleType::U8 | SampleType::U16 => 0,
            SampleType::I8 | SampleType::I16 => 32768,
            _ => return None,
        };
        let table = (0..65536i32)
            .map(|i| map.apply((i - offset) as f32))
            .collect();
        Some(BandLut { map, offset, table })
    }

    #[inline]
    pub fn apply(&self, v: f32) -> u8 {
        let i = v as i32 + self.offset;
        match self.table.get(i as usize) {
            Some(&out) if (i - self.offset) as f32 == v => out,
            _ => self.map.apply(v),
        }
    }
}

/// Whether a sample is valid (not NaN and not the nodata value).
#[inline]
pub fn is_valid(v: f32, nodata: Option<f32>) -> bool {
    !v.is_nan() && nodata != Some(v)
}

/// Rows read per block while gathering statistics.
const BLOCK_ROWS: u32 = 256;

/// Statistics gathered over at most this many pixels per band: larger rasters are sampled by
/// whole row blocks spread evenly over the image (like GDAL's approximate statistics).
pub const STATS_PIXEL_BUDGET: u64 = 16 * 1024 * 1024;

/// Values kept per band for float and 32-bit data (evenly strided over the pixels read);
/// 8- and 16-bit integer data use an exact histogram instead.
pub const FLOAT_SAMPLE_CAP: usize = 1 << 21;

/// Per-band accumulator: an exact histogram for ≤16-bit integers, strided samples otherwise.
enum Acc {
    Hist(Vec<u64>),
    Samples(Vec<f32>),
}

/// Compute one [`BandMap`] per selected band.
pub fn band_maps(
    reader: &mut dyn BandReader,
    bands: &[usize],
    stretch: Stretch,
    nodata: Option<f64>,
    exact: bool,
) -> Result<Vec<BandMap>> {
    let (lo_p, hi_p) = match stretch {
        Stretch::None => return Ok(vec![BandMap::IDENTITY; bands.len()]),
        Stretch::MinMax => (0.0, 100.0),
        Stretch::Percentile(a, b) => (a, b),
    };
    let info = reader.info().clone();
    let nodata = nodata.map(|v| v as f32);
    let blocks = info.height.div_ceil(BLOCK_ROWS);
    let pixels = info.width as u64 * info.height as u64;
    let step = if exact || pixels <= STATS_PIXEL_BUDGET {
        1
    } else {
        pixels.div_ceil(STATS_PIXEL_BUDGET) as u32
    };
    let read_pixels = pixels / step as u64;
    let stride = if exact {
        1
    } else {
        (read_pixels / FLOAT_SAMPLE_CAP as u64).max(1) as usize
    };
    // ≤16-bit integers index a 65536-bin histogram directly (signed data offset by 32768).
    let hist_offset = match info.sample_type {
        SampleType::U8 | SampleType::U16 => Some(0i64),
        SampleType::I8 | SampleType::I16 => Some(32768),
        _ => None,
    };
    let new_accs = || -> Vec<Acc> {
        bands
            .iter()
            .map(|_| {
                if hist_offset.is_some() {
                    Acc::Hist(vec![0; 65536])
                } else {
                    Acc::Samples(Vec::new())
                }
            })
            .collect()
    };
    // The row blocks read, split into one contiguous run per thread; each run reads with
    // its own reader (decoding is the cost) and the partial statistics are merged. The
    // float samples are strided by the global pixel count, so the kept values (a multiset:
    // percentiles do not depend on their order) are the same for any thread count.
    let read: Vec<u32> = (0..blocks).step_by(step as usize).collect();
    let runs = rayon::current_num_threads().clamp(1, read.len().max(1));
    let per_run = read.len().div_ceil(runs).max(1);
    let jobs: Vec<(usize, &[u32], Box<dyn BandReader>)> = read
        .chunks(per_run)
        .enumerate()
        .map(|(k, run)| Ok((k * per_run, run, reader.try_clone()?)))
        .collect::<Result<_>>()?;
    let partial: Vec<Vec<Acc>> = jobs
        .into_par_iter()
        .map(|(first_block, run, mut r)| -> Result<Vec<Acc>> {
            let mut accs = new_accs();
            // blocks before the last are whole, so the pixels read before this run are known
            let mut seen = first_block * BLOCK_ROWS as usize * info.width as usize;
            for &b in run {
                let y0 = b * BLOCK_ROWS;
                let h = BLOCK_ROWS.min(info.height - y0);
                let planes = r.read_rows(y0, h, bands)?;
                for (acc, plane) in accs.iter_mut().zip(&planes) {
                    match acc {
                        Acc::Hist(hist) => {
                            let off = hist_offset.unwrap_or(0);
                            for &v in plane.iter().filter(|&&v| is_valid(v, nodata)) {
                                hist[(v as i64 + off) as usize] += 1;
                            }
                        }
                        Acc::Samples(vals) => {
                            let first = (stride - seen % stride) % stride;
                            vals.extend(
                                plane
                                    .iter()
                                    .skip(first)
                                    .step_by(stride)
                                    .copied()
                                    .filter(|&v| is_valid(v, nodata)),
                            );
                        }
                    }
                }
                seen += planes.first().map_or(0, Vec::len);
            }
            Ok(accs)
        })
        .collect::<Result<_>>()?;
    let mut accs = new_accs();
    for part in partial {
        for (acc, p) in accs.iter_mut().zip(part) {
            match (acc, p) {
                (Acc::Hist(h), Acc::Hist(q)) => h.iter_mut().zip(q).for_each(|(a, b)| *a += b),
                (Acc::Samples(v), Acc::Samples(q)) => v.extend(q),
                _ => unreachable!("every run uses the same accumulator kind"),
            }
        }
    }
    Ok(accs
        .into_iter()
        .map(|acc| match acc {
            Acc::Hist(h) => histogram_map(&h, hist_offset.unwrap_or(0), lo_p, hi_p),
            Acc::Samples(mut v) => percentile_map(&mut v, lo_p, hi_p),
        })
        .collect())
}

/// [`percentile_map`] on a histogram whose bin `i` counts the value `i - offset`.
pub fn histogram_map(hist: &[u64], offset: i64, lo_p: f64, hi_p: f64) -> BandMap {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return BandMap::IDENTITY;
    }
    let rank = |p: f64| {
        ((p / 100.0) * (n - 1) as f64)
            .round()
            .clamp(0.0, (n - 1) as f64) as u64
    };
    let value_at = |r: u64| {
        let mut c = 0;
        for (i, &k) in hist.iter().enumerate() {
            c += k;
            if c > r {
                return (i as i64 - offset) as f64;
            }
        }
        (hist.len() as i64 - 1 - offset) as f64
    };
    BandMap {
        lo: value_at(rank(lo_p)),
        hi: value_at(rank(hi_p)),
    }
}

/// Nearest-rank percentiles of `values` (reordered in place): the value at sorted index
/// `round(p/100 · (n-1))`. An empty band (all nodata) maps to the identity.
pub fn percentile_map(values: &mut [f32], lo_p: f64, hi_p: f64) -> BandMap {
    if values.is_empty() {
        return BandMap::IDENTITY;
    }
    let n = values.len();
    let rank = |p: f64| {
        ((p / 100.0) * (n - 1) as f64)
            .round()
            .clamp(0.0, (n - 1) as f64) as usize
    };
    let (i_lo, i_hi) = (rank(lo_p), rank(hi_p));
    let lo = *values.select_nth_unstable_by(i_lo, f32::total_cmp).1 as f64;
    let hi = *values.select_nth_unstable_by(i_hi, f32::total_cmp).1 as f64;
    BandMap { lo, hi }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_sorted_reference() {
        let mut v: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1001) as f32).collect();
        let m = percentile_map(&mut v, 2.0, 98.0);
        assert_eq!((m.lo, m.hi), (20.0, 980.0));
    }

    #[test]
    fn histogram_percentiles_equal_sorted_percentiles() {
        let vals: Vec<f32> = (0..5000)
            .map(|i| (((i * 7919) % 4093) as i64 - 1000) as f32)
            .collect();
        let mut hist = vec![0u64; 65536];
        for &v in &vals {
            hist[(v as i64 + 32768) as usize] += 1;
        }
        let mut sorted = vals.clone();
        for (a, b) in [(2.0, 98.0), (0.0, 100.0), (25.0, 75.0)] {
            assert_eq!(
                histogram_map(&hist, 32768, a, b),
                percentile_map(&mut sorted, a, b)
            );
        }
    }

    #[test]
    fn map_clamps_and_rounds() {
        let m = BandMap {
            lo: 100.0,
            hi: 1120.0,
        };
        assert_eq!(m.apply(50.0), 0);
        assert_eq!(m.apply(100.0), 0);
        assert_eq!(m.apply(610.0), 128);
        assert_eq!(m.apply(5000.0), 255);
        assert_eq!(BandMap { lo: 3.0, hi: 3.0 }.apply(4.0), 255);
    }

    #[test]
    fn table_equals_the_map_for_every_value() {
        let m = BandMap {
            lo: 3994.0,
            hi: 8804.0,
        };
        let lut = BandLut::new(m, SampleType::U16).unwrap();
        for v in 0..65536 {
            assert_eq!(lut.apply(v as f32), m.apply(v as f32), "{v}");
        }
        let s = BandLut::new(m, SampleType::I16).unwrap();
        for v in -32768..32768 {
            assert_eq!(s.apply(v as f32), m.apply(v as f32), "{v}");
        }
        // values outside the table's type fall back to the map
        for v in [0.5f32, -40000.0, 70000.0, 5000.25] {
            assert_eq!(lut.apply(v), m.apply(v), "{v}");
        }
        assert!(BandLut::new(m, SampleType::F32).is_none());
    }

    #[test]
    fn nodata_and_nan_are_invalid() {
        assert!(!is_valid(f32::NAN, None));
        assert!(!is_valid(-9999.0, Some(-9999.0)));
        assert!(is_valid(0.0, Some(-9999.0)));
    }
}
