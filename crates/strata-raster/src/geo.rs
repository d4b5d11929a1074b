//! Georeferencing: the GeoTIFF tags, the affine geotransform, the CRS, and how a tile's
//! georeferencing follows from its pixel window in the source.

use serde::Serialize;

pub const TAG_MODEL_PIXEL_SCALE: u16 = 33550;
pub const TAG_MODEL_TIEPOINT: u16 = 33922;
pub const TAG_MODEL_TRANSFORMATION: u16 = 34264;
pub const TAG_GEO_KEY_DIRECTORY: u16 = 34735;
pub const TAG_GEO_DOUBLE_PARAMS: u16 = 34736;
pub const TAG_GEO_ASCII_PARAMS: u16 = 34737;
pub const TAG_GDAL_NODATA: u16 = 42113;

const KEY_RASTER_TYPE: u16 = 1025;
const KEY_CITATION: u16 = 1026;
const KEY_GEOGRAPHIC_TYPE: u16 = 2048;
const KEY_PROJECTED_CS_TYPE: u16 = 3072;
const USER_DEFINED: u16 = 32767;

/// An affine map from pixel (column, row) to model coordinates, in GDAL's order:
/// `X = gt[0] + col·gt[1] + row·gt[2]`, `Y = gt[3] + col·gt[4] + row·gt[5]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeoTransform(pub [f64; 6]);

impl GeoTransform {
    /// Model coordinates of pixel position (col, row) (corners are at integer positions).
    pub fn apply(&self, col: f64, row: f64) -> (f64, f64) {
        let g = &self.0;
        (
            g[0] + col * g[1] + row * g[2],
            g[3] + col * g[4] + row * g[5],
        )
    }

    /// The transform of a window whose top-left pixel is (col, row) in this raster.
    pub fn shifted(&self, col: f64, row: f64) -> GeoTransform {
        let (x, y) = self.apply(col, row);
        let g = &self.0;
        GeoTransform([x, g[1], g[2], y, g[4], g[5]])
    }
}

/// Georeferencing of a source raster: the raw GeoTIFF keys (copied verbatim into tiles) and
/// the affine transform.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoRef {
    /// The transform in the file's own raster-type convention (what the tags say).
    pub raw: GeoTransform,
    /// True for `PixelIsPoint` rasters, whose tie points refer to pixel centres.
    pub pixel_is_point: bool,
    pub key_directory: Vec<u16>,
    pub double_params: Option<Vec<f64>>,
    pub ascii_params: Option<String>,
}

impl GeoRef {
    /// The transform in GDAL's convention (corner of the top-left pixel), as `gdalinfo`
    /// reports it: `PixelIsPoint` rasters are shifted by half a pixel.
    pub fn gdal_transform(&self) -> GeoTransform {
        if self.pixel_is_point {
            self.raw.shifted(-0.5, -0.5)
        } else {
            self.raw
        }
    }

    /// `EPSG:n` when the key directory names an EPSG code, else the citation, else None.
    pub fn crs(&self) -> Option<String> {
        let keys = parse_keys(&self.key_directory);
        let short = |id: u16| {
            keys.iter()
                .find(|k| k.id == id && k.location == 0)
                .map(|k| k.value)
        };
        if let Some(code) = short(KEY_PROJECTED_CS_TYPE).filter(|&c| c != USER_DEFINED && c != 0) {
            return Some(format!("EPSG:{code}"));
        }
        if let Some(code) = short(KEY_GEOGRAPHIC_TYPE).filter(|&c| c != USER_DEFINED && c != 0) {
            return Some(format!("EPSG:{code}"));
        }
        let ascii = self.ascii_params.as_deref()?;
        let k = keys
            .iter()
            .find(|k| k.id == KEY_CITATION && k.location == TAG_GEO_ASCII_PARAMS)?;
        let start = k.value as usize;
        let end = (start + k.count as usize).min(ascii.len());
        ascii
            .get(start..end)
            .map(|s| s.trim_end_matches(['|', '\0']).to_string())
    }

    /// Tags describing the transform of a tile at window offset (col, row), in the file's own
    /// convention: (pixel scale, tie point) for north-up rasters, else a transformation matrix.
    pub fn tile_tags(&self, col: f64, row: f64) -> TransformTags {
        let g = self.raw.shifted(col, row).0;
        if g[2] == 0.0 && g[4] == 0.0 {
            TransformTags::ScaleTiepoint {
                scale: [g[1], -g[5], 0.0],
                tiepoint: [0.0, 0.0, 0.0, g[0], g[3], 0.0],
            }
        } else {
            TransformTags::Matrix([
                g[1], g[2], 0.0, g[0], g[4], g[5], 0.0, g[3], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                1.0,
            ])
        }
    }
}

/// How a tile's transform is written.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformTags {
    ScaleTiepoint { scale: [f64; 3], tiepoint: [f64; 6] },
    Matrix([f64; 16]),
}

#[derive(Debug, Clone, Copy)]
struct GeoKey {
    id: u16,
    location: u16,
    count: u16,
    value: u16,
}

fn parse_keys(dir: &[u16]) -> Vec<GeoKey> {
    if dir.len() < 4 {
        return Vec::new();
    }
    let n = dir[3] as usize;
    dir[4..]
        .chunks_exact(4)
        .take(n)
        .map(|c| GeoKey {
            id: c[0],
            location: c[1],
            count: c[2],
            value: c[3],
        })
        .collect()
}

/// Build a [`GeoRef`] from the raw tag values. Returns `Ok(None)` when the file carries no
/// usable transform (no tags, or only ground control points).
pub fn georef_from_tags(
    scale: Option<Vec<f64>>,
    tiepoints: Option<Vec<f64>>,
    matrix: Option<Vec<f64>>,
    key_directory: Option<Vec<u16>>,
    double_params: Option<Vec<f64>>,
    ascii_params: Option<String>,
) -> Option<GeoRef> {
    let raw = if let Some(m) = matrix.filter(|m| m.len() >= 16) {
        GeoTransform([m[3], m[0], m[1], m[7], m[4], m[5]])
    } else {
        let s = scale.filter(|s| s.len() >= 2)?;
        let t = tiepoints.filter(|t| t.len() == 6)?;
        let (i, j, x, y) = (t[0], t[1], t[3], t[4]);
        GeoTransform([x - i * s[0], s[0], 0.0, y + j * s[1], 0.0, -s[1]])
    };
    let key_directory = key_directory.unwrap_or_default();
    let pixel_is_point = parse_keys(&key_directory)
        .iter()
        .any(|k| k.id == KEY_RASTER_TYPE && k.location == 0 && k.value == 2);
    Some(GeoRef {
        raw,
        pixel_is_point,
        key_directory,
        double_params,
        ascii_params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm_ref() -> GeoRef {
        georef_from_tags(
            Some(vec![30.0, 30.0, 0.0]),
            Some(vec![0.0, 0.0, 0.0, 500000.0, 4200000.0, 0.0]),
            None,
            Some(vec![1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32633]),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn window_offset_moves_origin_by_pixels() {
        let g = utm_ref();
        assert_eq!(g.crs().as_deref(), Some("EPSG:32633"));
        let t = g.gdal_transform().shifted(512.0, 1024.0);
        assert_eq!(
            t.0,
            [
                500000.0 + 512.0 * 30.0,
                30.0,
                0.0,
                4200000.0 - 1024.0 * 30.0,
                0.0,
                -30.0
            ]
        );
        match g.tile_tags(-10.0, 0.0) {
            TransformTags::ScaleTiepoint { tiepoint, .. } => {
                assert_eq!(tiepoint[3], 500000.0 - 300.0)
            }
            m => panic!("expected scale/tiepoint, got {m:?}"),
        }
    }

    #[test]
    fn pixel_is_point_is_shifted_half_a_pixel_like_gdal() {
        let mut g = utm_ref();
        g.pixel_is_point = true;
        assert_eq!(g.gdal_transform().0[0], 500000.0 - 15.0);
        assert_eq!(g.gdal_transform().0[3], 4200000.0 + 15.0);
    }

    #[test]
    fn gcps_only_is_not_a_transform() {
        assert!(georef_from_tags(
            Some(vec![1.0, 1.0, 0.0]),
            Some(vec![0.0; 12]),
            None,
            None,
            None,
            None
        )
        .is_none());
    }
}
