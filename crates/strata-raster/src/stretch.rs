//! Bit-depth stretch to 8 bits: per-band linear maps from statistics of the whole raster
//! (so every tile of one source uses the same map), nodata and NaN excluded.

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
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); bands.len()];
    let mut b = 0;
    while b < blocks {
        let y0 = b * BLOCK_ROWS;
        let h = BLOCK_ROWS.min(info.height - y0);
        let planes = reader.read_rows(y0, h, bands)?;
        for (vals, plane) in values.iter_mut().zip(planes) {
            vals.extend(plane.into_iter().filter(|&v| is_valid(v, nodata)));
        }
        b += step;
    }
    Ok(values
        .into_iter()
        .map(|mut v| percentile_map(&mut v, lo_p, hi_p))
        .collect())
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
    fn nodata_and_nan_are_invalid() {
        assert!(!is_valid(f32::NAN, None));
        assert!(!is_valid(-9999.0, Some(-9999.0)));
        assert!(is_valid(0.0, Some(-9999.0)));
    }
}
