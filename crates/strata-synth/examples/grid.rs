//! Write the 44-scene grid (4 per class, one row per class):
//! `cargo run --release -p strata-synth --example grid -- grid.png [size] [seed] [--masks]`
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let masks = args.iter().any(|a| a == "--masks");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let out = PathBuf::from(pos.first().map(|s| s.as_str()).unwrap_or("synth-grid.png"));
    let size: u32 = pos.get(1).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let seed: u64 = pos.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let (w, h, rgb) = strata_synth::render_grid(size, 4, seed, masks);
    let bytes = strata_image::encode_png_rgb8(&out, w as usize, h as usize, &rgb)?;
    strata_synth::png_io::write_atomic(&out, &bytes)?;
    println!("wrote {} ({w}x{h})", out.display());
    Ok(())
}
