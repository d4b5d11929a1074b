//! Eq. 1 of the paper, applied per axis: for a side of length L and tile size S,
//!
//! * **slicing** when L ≥ 2S: windows every `S - overlap` pixels; the remainder at the edge is
//!   handled by [`EdgeMode`] (default: one more window flush with the edge, overlapping its
//!   neighbour, so no pixel is lost and no tile is padded);
//! * **cropping** when S < L < 2S: one window, centred or at a seeded random offset;
//! * **padding** when L ≤ S: one window centred on the image, the outside filled by
//!   [`PadMode`].
//!
//! A non-square image takes the rule of each axis on its own, so a 3000 × 700 strip with
//! S = 512 is sliced along x and cropped along y ("slicing+cropping" in the manifest).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{RasterError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AxisOp {
    Slicing,
    Cropping,
    Padding,
}

impl AxisOp {
    pub fn name(self) -> &'static str {
        match self {
            AxisOp::Slicing => "slicing",
            AxisOp::Cropping => "cropping",
            AxisOp::Padding => "padding",
        }
    }
}

/// What slicing does with the strip left over at the right/bottom edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeMode {
    /// Add a last window flush with the edge (overlaps the previous one). Default.
    Shift,
    /// Add a last window past the edge and pad it.
    Pad,
    /// Drop the leftover pixels.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    Centre,
    /// Offsets drawn from a generator seeded with this value (per source file).
    Random(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadMode {
    /// Fill with this 8-bit value in every band.
    Constant(u8),
    /// Mirror the image at its border without repeating the edge pixel (numpy "reflect").
    Reflect,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    pub size: u32,
    pub overlap: u32,
    pub edge: EdgeMode,
    pub crop: CropMode,
}

/// One output tile: its window in source pixel coordinates (may extend past the image when
/// padded) and its row/column in the tile grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub x: i64,
    pub y: i64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSpec {
    pub row: usize,
    pub col: usize,
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub op_x: AxisOp,
    pub op_y: AxisOp,
    pub tiles: Vec<TileSpec>,
}

impl Plan {
    /// "slicing", "cropping", "padding", or "slicing+cropping" (x rule first) when they differ.
    pub fn operation(&self) -> String {
        if self.op_x == self.op_y {
            self.op_x.name().to_string()
        } else {
            format!("{}+{}", self.op_x.name(), self.op_y.name())
        }
    }
}

/// Window offsets along one axis of length `len`.
pub fn axis(len: u32, o: &PlanOptions, rng: &mut ChaCha8Rng) -> (AxisOp, Vec<i64>) {
    let (l, s) = (len as i64, o.size as i64);
    if l >= 2 * s {
        let stride = s - o.overlap as i64;
        let mut pos = Vec::new();
        let mut p = 0;
        while p + s <= l {
            pos.push(p);
            p += stride;
        }
        let end = pos.last().map_or(0, |&q| q + s);
        if end < l {
            match o.edge {
                EdgeMode::Shift => pos.push(l - s),
                EdgeMode::Pad => pos.push(p),
                EdgeMode::Drop => {}
            }
        }
        (AxisOp::Slicing, pos)
    } else if l > s {
        let off = match o.crop {
            CropMode::Centre => (l - s) / 2,
            CropMode::Random(_) => rng.gen_range(0..=l - s),
        };
        (AxisOp::Cropping, vec![off])
    } else {
        (AxisOp::Padding, vec![-((s - l) / 2)])
    }
}

/// The tile grid of a `width × height` raster.
pub fn plan(width: u32, height: u32, o: &PlanOptions) -> Result<Plan> {
    if o.size == 0 {
        return Err(RasterError::Options("--size must be at least 1".into()));
    }
    if o.overlap >= o.size {
        return Err(RasterError::Options(format!(
            "--overlap {} must be smaller than --size {}",
            o.overlap, o.size
        )));
    }
    let seed = match o.crop {
        CropMode::Random(s) => s,
        CropMode::Centre => 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (op_x, xs) = axis(width, o, &mut rng);
    let (op_y, ys) = axis(height, o, &mut rng);
    let mut tiles = Vec::with_capacity(xs.len() * ys.len());
    for (row, &y) in ys.iter().enumerate() {
        for (col, &x) in xs.iter().enumerate() {
            tiles.push(TileSpec {
                row,
                col,
                window: Window {
                    x,
                    y,
                    width: o.size,
                    height: o.size,
                },
            });
        }
    }
    Ok(Plan { op_x, op_y, tiles })
}

/// Map an output coordinate that may fall outside `0..len` back into the image, or `None`
/// for constant padding.
#[inline]
pub fn source_index(i: i64, len: i64, pad: PadMode) -> Option<usize> {
    if (0..len).contains(&i) {
        return Some(i as usize);
    }
    match pad {
        PadMode::Constant(_) => None,
        PadMode::Reflect => {
            if len == 1 {
                return Some(0);
            }
            let period = 2 * (len - 1);
            let m = i.rem_euclid(period);
            Some(if m < len { m } else { period - m } as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(size: u32) -> PlanOptions {
        PlanOptions {
            size,
            overlap: 0,
            edge: EdgeMode::Shift,
            crop: CropMode::Centre,
        }
    }

    #[test]
    fn eq1_thresholds() {
        // S_image ≥ 2·S → slicing; S < S_image < 2S → cropping; S_image ≤ S → padding.
        assert_eq!(plan(1024, 1024, &opts(512)).unwrap().operation(), "slicing");
        assert_eq!(
            plan(1023, 1023, &opts(512)).unwrap().operation(),
            "cropping"
        );
        assert_eq!(plan(513, 513, &opts(512)).unwrap().operation(), "cropping");
        assert_eq!(plan(512, 512, &opts(512)).unwrap().operation(), "padding");
        assert_eq!(plan(100, 300, &opts(512)).unwrap().operation(), "padding");
        let mixed = plan(3000, 700, &opts(512)).unwrap();
        assert_eq!(mixed.operation(), "slicing+cropping");
        assert!(mixed.tiles.iter().all(|t| t.window.y == 94));
    }

    #[test]
    fn slicing_edges() {
        let p = plan(1100, 1100, &opts(512)).unwrap();
        let xs: Vec<i64> = p
            .tiles
            .iter()
            .filter(|t| t.row == 0)
            .map(|t| t.window.x)
            .collect();
        assert_eq!(xs, vec![0, 512, 588]);
        let mut o = opts(512);
        o.edge = EdgeMode::Drop;
        assert_eq!(plan(1100, 1100, &o).unwrap().tiles.len(), 4);
        o.edge = EdgeMode::Pad;
        let xs: Vec<i64> = plan(1100, 1100, &o)
            .unwrap()
            .tiles
            .iter()
            .filter(|t| t.row == 0)
            .map(|t| t.window.x)
            .collect();
        assert_eq!(xs, vec![0, 512, 1024]);
        o.edge = EdgeMode::Shift;
        o.overlap = 256;
        let xs: Vec<i64> = plan(1024, 1024, &o)
            .unwrap()
            .tiles
            .iter()
            .filter(|t| t.row == 0)
            .map(|t| t.window.x)
            .collect();
        assert_eq!(xs, vec![0, 256, 512]);
    }

    #[test]
    fn padding_is_centred_and_reflect_mirrors() {
        let p = plan(300, 301, &opts(512)).unwrap();
        assert_eq!((p.tiles[0].window.x, p.tiles[0].window.y), (-106, -105));
        assert_eq!(source_index(-1, 5, PadMode::Reflect), Some(1));
        assert_eq!(source_index(5, 5, PadMode::Reflect), Some(3));
        assert_eq!(source_index(-9, 5, PadMode::Reflect), Some(1));
        assert_eq!(source_index(-1, 5, PadMode::Constant(0)), None);
    }

    #[test]
    fn random_crop_is_seeded() {
        let mut o = opts(512);
        o.crop = CropMode::Random(7);
        let a = plan(900, 900, &o).unwrap();
        assert_eq!(a, plan(900, 900, &o).unwrap());
        assert!(a.tiles[0].window.x >= 0 && a.tiles[0].window.x <= 388);
    }

    #[test]
    fn overlap_must_be_smaller_than_size() {
        let mut o = opts(512);
        o.overlap = 512;
        assert!(plan(2000, 2000, &o).is_err());
    }
}
