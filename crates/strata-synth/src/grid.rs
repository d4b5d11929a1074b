//! A contact sheet: `per_class` scenes of every class in one RGB image, one row per class
//! (in [`SceneClass::ALL`] order), optionally each followed by its colour-coded mask.

use crate::scenes::generate;
use crate::types::{Element, SceneClass};

/// Render the grid; returns `(width, height, rgb)`. Scene `j` of class row `i` uses seed
/// `seed + j`, so a grid is reproducible.
pub fn render_grid(
    size: u32,
    per_class: usize,
    seed: u64,
    with_masks: bool,
) -> (u32, u32, Vec<u8>) {
    let gap = 4usize;
    let s = size as usize;
    let cols = per_class * if with_masks { 2 } else { 1 };
    let rows = SceneClass::ALL.len();
    let w = cols * s + (cols + 1) * gap;
    let h = rows * s + (rows + 1) * gap;
    let mut img = vec![255u8; w * h * 3];
    for (r, &class) in SceneClass::ALL.iter().enumerate() {
        for j in 0..per_class {
            let scene = generate(class, size, seed + j as u64);
            let tiles: Vec<Vec<u8>> = if with_masks {
                let m: Vec<u8> = scene
                    .mask
                    .iter()
                    .flat_map(|&id| {
                        Element::from_id(id)
                            .map(|e| e.colour())
                            .unwrap_or([0, 0, 0])
                    })
                    .collect();
                vec![scene.rgb.clone(), m]
            } else {
                vec![scene.rgb.clone()]
            };
            for (t, tile) in tiles.iter().enumerate() {
                let col = j * tiles.len() + t;
                let (ox, oy) = (gap + col * (s + gap), gap + r * (s + gap));
                for y in 0..s {
                    let dst = ((oy + y) * w + ox) * 3;
                    img[dst..dst + s * 3].copy_from_slice(&tile[y * s * 3..(y + 1) * s * 3]);
                }
            }
        }
    }
    (w as u32, h as u32, img)
}
