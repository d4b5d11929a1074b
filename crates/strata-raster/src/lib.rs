//! strata-raster: the `prepare` stage (paper section 3.1.1, Eq. 1).
//!
//! Raw rasters (GeoTIFF of any common layout and sample type, PNG, JPEG, or separate
//! single-band files) become RGB 8-bit tiles of `S × S` pixels:
//!
//! 1. **band selection** to three bands ([`source`]),
//! 2. **bit-depth stretch** to 8 bits ([`stretch`]), nodata excluded,
//! 3. **Eq. 1 tiling** per axis: slicing when the side is ≥ 2S, cropping when S < side < 2S,
//!    padding when side ≤ S ([`plan`]),
//! 4. **writing** PNG tiles and georeferenced GeoTIFF tiles atomically ([`write`]), with a
//!    `manifest.jsonl` ([`prepare`]).
//!
//! Sources are streamed: a tile row is decoded from the strips or tiles that cover it, so peak
//! memory is a few tile rows, not the whole raster.

pub mod error;
pub mod geo;
pub mod plan;
pub mod prepare;
pub mod source;
pub mod stretch;
pub mod write;

pub use error::{RasterError, Result};
pub use prepare::{prepare, FileFailure, PrepareOptions, PrepareReport, TileRecord};
