//! strata-raster
