//! The w(t) plot: a bitmap font, `plot_rgb` and `write_png`.

use std::path::Path;

use super::FusionError;
use crate::segments::NUM_SEGMENTS;

/// Colours of the curves in [`plot_png`]: scene, relation, elements.
pub const PLOT_COLOURS: [[u8; 3]; NUM_SEGMENTS] = [[214, 39, 40], [31, 119, 180], [44, 160, 44]];

/// A 5×7 bitmap glyph (rows top to bottom, `#` = ink).
fn glyph(c: char) -> Option<[&'static str; 7]> {
    Some(match c {
        '0' => [
            " ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### ",
        ],
        '1' => [
            "  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        '2' => [
            " ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####",
        ],
        '3' => [
            "#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### ",
        ],
        '4' => [
            "   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # ",
        ],
        '5' => [
            "#####", "#    ", "#### ", "    #", "    #", "#   #", " ### ",
        ],
        '6' => [
            "  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### ",
        ],
        '7' => [
            "#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   ",
        ],
        '8' => [
            " ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### ",
        ],
        '9' => [
            " ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  ",
        ],
        '.' => [
            "     ", "     ", "     ", "     ", "     ", " ##  ", " ##  ",
        ],
        '(' => [
            "  #  ", " #   ", "#    ", "#    ", "#    ", " #   ", "  #  ",
        ],
        ')' => [
            "  #  ", "   # ", "    #", "    #", "    #", "   # ", "  #  ",
        ],
        '=' => [
            "     ", "     ", "#####", "     ", "#####", "     ", "     ",
        ],
        '-' => [
            "     ", "     ", "     ", "#####", "     ", "     ", "     ",
        ],
        ' ' => ["     "; 7],
        'a' => [
            "     ", "     ", " ### ", "    #", " ####", "#   #", " ####",
        ],
        'c' => [
            "     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### ",
        ],
        'd' => [
            "    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####",
        ],
        'e' => [
            "     ", "     ", " ### ", "#   #", "#####", "#    ", " ### ",
        ],
        'f' => [
            "  ## ", " #   ", "#### ", " #   ", " #   ", " #   ", " #   ",
        ],
        'g' => [
            "     ", " ####", "#   #", "#   #", " ####", "    #", " ### ",
        ],
        'h' => [
            "#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'i' => [
            "  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'l' => [
            " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'm' => [
            "     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #",
        ],
        'n' => [
            "     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'o' => [
            "     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### ",
        ],
        'r' => [
            "     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    ",
        ],
        's' => [
            "     ", "     ", " ####", "#    ", " ### ", "    #", "#### ",
        ],
        't' => [
            " #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## ",
        ],
        'w' => [
            "     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # ",
        ],
        'T' => [
            "#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
        _ => return None,
    })
}

fn draw_text(
    img: &mut [u8],
    width: usize,
    x: usize,
    y: usize,
    text: &str,
    colour: [u8; 3],
    scale: usize,
) {
    let height = img.len() / (3 * width);
    for (ci, c) in text.chars().enumerate() {
        let Some(g) = glyph(c) else { continue };
        for (gy, row) in g.iter().enumerate() {
            for (gx, ch) in row.chars().enumerate() {
                if ch != '#' {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (ci * 6 + gx) * scale + dx;
                        let py = y + gy * scale + dy;
                        if px < width && py < height {
                            img[(py * width + px) * 3..(py * width + px) * 3 + 3]
                                .copy_from_slice(&colour);
                        }
                    }
                }
            }
        }
    }
}

/// An RGB plot (row-major, 3 bytes per pixel) of w(t) over `t ∈ [0, T)`: x axis t (0 at
/// the left, T−1 = start of denoising at the right), y axis weight 0…1, one curve per
/// segment in [`PLOT_COLOURS`], with a legend. `weights` gives w(t).
pub fn plot_rgb(
    weights: &dyn Fn(f64) -> [f64; NUM_SEGMENTS],
    num_train_timesteps: usize,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut img = vec![255u8; width * height * 3];
    let (left, right, top, bottom) = (56usize, 16usize, 40usize, 44usize);
    let pw = width.saturating_sub(left + right).max(1);
    let ph = height.saturating_sub(top + bottom).max(1);
    let put = |img: &mut Vec<u8>, x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
            let i = (y as usize * width + x as usize) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    let grey = [220, 220, 220];
    let black = [40, 40, 40];
    // Grid and axes.
    for q in 0..=4 {
        let y = (top + ph - q * ph / 4) as i64;
        for x in left..=left + pw {
            put(&mut img, x as i64, y, if q == 0 { black } else { grey });
        }
        let x = (left + q * pw / 4) as i64;
        for y in top..=top + ph {
            put(&mut img, x, y as i64, if q == 0 { black } else { grey });
        }
    }
    let t_max = (num_train_timesteps - 1) as f64;
    // Curves, 3 px thick.
    let ys: Vec<[f64; NUM_SEGMENTS]> = (0..=pw)
        .map(|px| weights(t_max * px as f64 / pw as f64))
        .collect();
    for seg in 0..NUM_SEGMENTS {
        for px in 0..pw {
            let y0 = top as f64 + ph as f64 * (1.0 - ys[px][seg]);
            let y1 = top as f64 + ph as f64 * (1.0 - ys[px + 1][seg]);
            let (lo, hi) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
            for y in lo..=hi {
                for d in -1..=1 {
                    put(&mut img, (left + px) as i64, y + d, PLOT_COLOURS[seg]);
                    put(&mut img, (left + px + 1) as i64, y + d, PLOT_COLOURS[seg]);
                }
            }
        }
    }
    // Tick labels.
    for q in 0..=4 {
        let label = format!("{:.2}", q as f64 / 4.0);
        draw_text(
            &mut img,
            width,
            8,
            top + ph - q * ph / 4 - 7,
            &label,
            black,
            2,
        );
        let t = (t_max * q as f64 / 4.0).round() as usize;
        let label = t.to_string();
        let x = (left + q * pw / 4).saturating_sub(label.len() * 6);
        draw_text(&mut img, width, x, top + ph + 8, &label, black, 2);
    }
    draw_text(
        &mut img,
        width,
        left + pw / 2 - 120,
        height - 16,
        "t  (T-1 = start of denoising)",
        black,
        2,
    );
    // Legend.
    let mut x = left + 8;
    for (seg, name) in ["scene", "relation", "elements"].iter().enumerate() {
        for yy in 10..24 {
            for xx in x..x + 14 {
                put(&mut img, xx as i64, yy as i64, PLOT_COLOURS[seg]);
            }
        }
        draw_text(&mut img, width, x + 20, 10, name, black, 2);
        x += 20 + name.len() * 12 + 28;
    }
    img
}

/// Encode RGB pixels as PNG and write them to `path` (temporary name, then renamed).
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), FusionError> {
    let werr = |p: &Path, e: String| FusionError::Write {
        path: p.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| werr(path, e.to_string()))?;
        w.write_image_data(rgb)
            .map_err(|e| werr(path, e.to_string()))?;
    }
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, &buf).map_err(|source| FusionError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| FusionError::Write {
        path: path.to_path_buf(),
        source,
    })
}
