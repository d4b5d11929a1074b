//! The drawing surface: RGB (f32), element mask and a height field for soft shadows, plus
//! rasterisers (rotated rectangles, ellipses, strokes along polylines) and one painter per
//! element that gives it its aerial look.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::noise;
use crate::types::Element;

pub type Rgb = [f32; 3];
pub type Pt = (f32, f32);

pub struct Canvas {
    pub size: usize,
    /// Side in pixels as f32.
    pub s: f32,
    /// Pixels per "512-pixel" unit: heights and texture scales are given at 512 px.
    pub k: f32,
    pub rgb: Vec<Rgb>,
    pub mask: Vec<u8>,
    pub height: Vec<f32>,
    salt: u32,
}

pub fn jitter(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    let b = 1.0 + rng.gen_range(-amount..amount);
    [
        c[0] * b * (1.0 + rng.gen_range(-amount..amount) * 0.4),
        c[1] * b * (1.0 + rng.gen_range(-amount..amount) * 0.4),
        c[2] * b * (1.0 + rng.gen_range(-amount..amount) * 0.4),
    ]
}

fn scale(c: Rgb, f: f32) -> Rgb {
    [c[0] * f, c[1] * f, c[2] * f]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

const SUN: Pt = (
    -std::f32::consts::FRAC_1_SQRT_2,
    -std::f32::consts::FRAC_1_SQRT_2,
);

/// Visit the pixels of a rotated rectangle: `f(x, y, u, v)` with `u` along the `w` side
/// (direction `ang`), `v` along the `h` side, both centred.
pub fn rect_px(
    size: usize,
    c: Pt,
    w: f32,
    h: f32,
    ang: f32,
    mut f: impl FnMut(usize, usize, f32, f32),
) {
    let (sn, cs) = ang.sin_cos();
    let ex = (w * 0.5 * cs).abs() + (h * 0.5 * sn).abs();
    let ey = (w * 0.5 * sn).abs() + (h * 0.5 * cs).abs();
    let x0 = ((c.0 - ex).floor().max(0.0)) as usize;
    let y0 = ((c.1 - ey).floor().max(0.0)) as usize;
    let x1 = ((c.0 + ex).ceil().min(size as f32)).max(0.0) as usize;
    let y1 = ((c.1 + ey).ceil().min(size as f32)).max(0.0) as usize;
    for y in y0..y1 {
        let dy = y as f32 + 0.5 - c.1;
        for x in x0..x1 {
            let dx = x as f32 + 0.5 - c.0;
            let u = dx * cs + dy * sn;
            let v = -dx * sn + dy * cs;
            if u.abs() <= w * 0.5 && v.abs() <= h * 0.5 {
                f(x, y, u, v);
            }
        }
    }
}

/// Visit the pixels of a rotated ellipse with a wobbly edge: `f(x, y, nu, nv, r)` with
/// normalised coordinates and `r` in [0, 1] the normalised radius.
pub fn blob_px(
    size: usize,
    c: Pt,
    rx: f32,
    ry: f32,
    ang: f32,
    wobble: &[(f32, f32, f32)],
    mut f: impl FnMut(usize, usize, f32, f32, f32),
) {
    let (sn, cs) = ang.sin_cos();
    let amp: f32 = wobble.iter().map(|w| w.0.abs()).sum();
    let e = rx.max(ry) * (1.0 + amp) + 1.0;
    let x0 = (c.0 - e).floor().max(0.0) as usize;
    let y0 = (c.1 - e).floor().max(0.0) as usize;
    let x1 = (c.0 + e).ceil().min(size as f32).max(0.0) as usize;
    let y1 = (c.1 + e).ceil().min(size as f32).max(0.0) as usize;
    for y in y0..y1 {
        let dy = y as f32 + 0.5 - c.1;
        for x in x0..x1 {
            let dx = x as f32 + 0.5 - c.0;
            let nu = (dx * cs + dy * sn) / rx;
            let nv = (-dx * sn + dy * cs) / ry;
            let r2 = nu * nu + nv * nv;
            let lim = if wobble.is_empty() {
                1.0
            } else {
                let th = nv.atan2(nu);
                let m: f32 = wobble
                    .iter()
                    .map(|(a, fr, ph)| a * (fr * th + ph).sin())
                    .sum();
                (1.0 + m) * (1.0 + m)
            };
            if r2 <= lim {
                f(x, y, nu, nv, (r2 / lim).sqrt());
            }
        }
    }
}

/// Visit the pixels within `width / 2` of a polyline: `f(x, y, along, across)` (pixels).
pub fn stroke_px(size: usize, pts: &[Pt], width: f32, mut f: impl FnMut(usize, usize, f32, f32)) {
    let hw = width * 0.5;
    let mut acc = 0.0;
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (tx, ty) = (dx / len, dy / len);
        let x0 = (a.0.min(b.0) - hw - 1.0).floor().max(0.0) as usize;
        let y0 = (a.1.min(b.1) - hw - 1.0).floor().max(0.0) as usize;
        let x1 = (a.0.max(b.0) + hw + 1.0).ceil().min(size as f32).max(0.0) as usize;
        let y1 = (a.1.max(b.1) + hw + 1.0).ceil().min(size as f32).max(0.0) as usize;
        for y in y0..y1 {
            let py = y as f32 + 0.5 - a.1;
            for x in x0..x1 {
                let px = x as f32 + 0.5 - a.0;
                let t = px * tx + py * ty;
                let tc = t.clamp(0.0, len);
                let across = -px * ty + py * tx;
                let (ex, ey) = (px - tc * tx, py - tc * ty);
                if ex * ex + ey * ey <= hw * hw {
                    f(x, y, acc + t, across);
                }
            }
        }
        acc += len;
    }
}

/// Visit the pixels of a stadium (a segment of length `len` along `ang`, thickened by `r`):
/// `f(x, y, d, u)` with `d` the distance to the segment and `u` the position along it.
pub fn stadium_px(
    size: usize,
    c: Pt,
    len: f32,
    r: f32,
    ang: f32,
    mut f: impl FnMut(usize, usize, f32, f32),
) {
    let (sn, cs) = ang.sin_cos();
    let e = len * 0.5 + r + 1.0;
    let x0 = (c.0 - e).floor().max(0.0) as usize;
    let y0 = (c.1 - e).floor().max(0.0) as usize;
    let x1 = (c.0 + e).ceil().min(size as f32).max(0.0) as usize;
    let y1 = (c.1 + e).ceil().min(size as f32).max(0.0) as usize;
    for y in y0..y1 {
        let dy = y as f32 + 0.5 - c.1;
        for x in x0..x1 {
            let dx = x as f32 + 0.5 - c.0;
            let u = dx * cs + dy * sn;
            let v = -dx * sn + dy * cs;
            let uc = u.clamp(-len * 0.5, len * 0.5);
            let d = ((u - uc) * (u - uc) + v * v).sqrt();
            if d <= r {
                f(x, y, d, u);
            }
        }
    }
}

impl Canvas {
    pub fn new(size: usize, salt: u32) -> Canvas {
        Canvas {
            size,
            s: size as f32,
            k: size as f32 / 512.0,
            rgb: vec![[0.0; 3]; size * size],
            mask: vec![0; size * size],
            height: vec![0.0; size * size],
            salt,
        }
    }

    /// Unit coordinates → pixels.
    pub fn p(&self, x: f32, y: f32) -> Pt {
        (x * self.s, y * self.s)
    }

    /// Smooth texture in [-1, 1]; `freq` in cycles per 512-pixel tile unit, `salt` offsets.
    #[inline]
    pub fn tex(&self, x: usize, y: usize, freq: f32, salt: u32) -> f32 {
        let f = freq / self.k;
        let o = (salt
            .wrapping_mul(97)
            .wrapping_add(self.salt.wrapping_mul(31))
            & 0xFFFF) as i32;
        noise::at((x as f32 * f) as i32 + o, (y as f32 * f) as i32 + o * 3)
    }

    #[inline]
    pub fn put(&mut self, x: usize, y: usize, el: Element, c: Rgb, h: f32) {
        let i = y * self.size + x;
        self.rgb[i] = c;
        self.mask[i] = el as u8;
        self.height[i] = h;
    }

    #[inline]
    pub fn class_at(&self, x: usize, y: usize) -> Element {
        Element::from_id(self.mask[y * self.size + x]).unwrap_or(Element::BareLand)
    }

    /// Whether every pixel of the rectangle (inside the image) is one of `allowed`, and at
    /// least `min_inside` of its area lies inside the image.
    pub fn rect_free(&self, c: Pt, w: f32, h: f32, ang: f32, allowed: &[Element]) -> bool {
        let mut ok = true;
        let mut n = 0usize;
        rect_px(self.size, c, w, h, ang, |x, y, _, _| {
            n += 1;
            if !allowed.contains(&self.class_at(x, y)) {
                ok = false;
            }
        });
        ok && (n as f32) >= 0.6 * w * h
    }

    pub fn circle_free(&self, c: Pt, r: f32, allowed: &[Element]) -> bool {
        let mut ok = true;
        let mut n = 0usize;
        blob_px(self.size, c, r, r, 0.0, &[], |x, y, _, _, _| {
            n += 1;
            if !allowed.contains(&self.class_at(x, y)) {
                ok = false;
            }
        });
        ok && (n as f32) >= 0.6 * std::f32::consts::PI * r * r
    }

    // ---------------------------------------------------------------- ground covers

    pub fn bare_ground(&mut self, rng: &mut ChaCha8Rng) {
        let base = jitter(rng, [164.0, 150.0, 126.0], 0.08);
        let alt = jitter(rng, [140.0, 132.0, 108.0], 0.08);
        let salt = rng.gen();
        for y in 0..self.size {
            for x in 0..self.size {
                let n = self.tex(x, y, 1.0, salt);
                let m = self.tex(x, y, 6.0, salt + 1);
                let c = scale(
                    mix(base, alt, (n * 0.8 + 0.5).clamp(0.0, 1.0)),
                    1.0 + 0.06 * m,
                );
                self.put(x, y, Element::BareLand, c, 0.0);
            }
        }
    }

    pub fn grass_ground(&mut self, rng: &mut ChaCha8Rng, lush: bool) {
        let base = if lush {
            jitter(rng, [82.0, 128.0, 62.0], 0.08)
        } else {
            jitter(rng, [118.0, 136.0, 80.0], 0.08)
        };
        let dry = jitter(rng, [140.0, 140.0, 95.0], 0.06);
        let salt = rng.gen();
        for y in 0..self.size {
            for x in 0..self.size {
                let n = self.tex(x, y, 1.5, salt);
                let m = self.tex(x, y, 8.0, salt + 1);
                let c = scale(
                    mix(base, dry, (n * 0.5 + 0.2).clamp(0.0, 0.6)),
                    1.0 + 0.07 * m,
                );
                self.put(x, y, Element::Grass, c, 0.0);
            }
        }
    }

    /// Grass lawn inside a rectangle (mowing stripes).
    pub fn lawn_rect(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let base = jitter(rng, [88.0, 138.0, 66.0], 0.08);
        let salt = rng.gen();
        let period = 14.0 * self.k;
        let sz = self.size;
        rect_px(sz, c, w, h, ang, |x, y, u, _| {
            let stripe = if ((u + w) / period) as i32 % 2 == 0 {
                1.04
            } else {
                0.95
            };
            let n = self.tex(x, y, 5.0, salt);
            self.put(
                x,
                y,
                Element::Grass,
                scale(base, stripe * (1.0 + 0.06 * n)),
                0.0,
            );
        });
    }

    /// Farmland fields over every pixel for which `inside(x, y)` holds.
    pub fn farmland(
        &mut self,
        rng: &mut ChaCha8Rng,
        ang: f32,
        inside: impl Fn(usize, usize) -> bool,
    ) {
        let (sn, cs) = ang.sin_cos();
        let fw = self.s * rng.gen_range(0.22..0.34);
        let fh = self.s * rng.gen_range(0.15..0.26);
        let salt: u32 = rng.gen();
        let palette: [Rgb; 6] = [
            [96.0, 130.0, 60.0],
            [150.0, 150.0, 80.0],
            [176.0, 160.0, 110.0],
            [122.0, 100.0, 70.0],
            [110.0, 145.0, 70.0],
            [190.0, 175.0, 120.0],
        ];
        let row = 5.0 * self.k.max(0.25);
        for y in 0..self.size {
            for x in 0..self.size {
                if !inside(x, y) {
                    continue;
                }
                let (px, py) = (x as f32, y as f32);
                let u = px * cs + py * sn + 1000.0;
                let v = -px * sn + py * cs + 1000.0;
                let (fi, fj) = ((u / fw) as i32, (v / fh) as i32);
                let hsh = noise::hashf(fi, fj, salt);
                let idx = (((hsh + 1.0) * 3.0) as usize).min(5);
                let mut c = palette[idx];
                let along_u = noise::hashf(fj, fi, salt + 5) > 0.0;
                let coord = if along_u { v } else { u };
                let s = (coord / row * std::f32::consts::PI).sin();
                c = scale(c, 1.0 + 0.07 * s + 0.05 * self.tex(x, y, 4.0, salt));
                // field boundary: a thin darker track
                let du = (u % fw).min(fw - u % fw);
                let dv = (v % fh).min(fh - v % fh);
                if du.min(dv) < 1.0 * self.k.max(0.5) {
                    c = scale(c, 0.82);
                }
                self.put(x, y, Element::Farmland, c, 0.0);
            }
        }
    }

    pub fn sea(&mut self, rng: &mut ChaCha8Rng, inside: impl Fn(usize, usize) -> Option<f32>) {
        let deep = jitter(rng, [28.0, 72.0, 108.0], 0.08);
        let shallow = jitter(rng, [70.0, 150.0, 160.0], 0.06);
        let salt = rng.gen();
        for y in 0..self.size {
            for x in 0..self.size {
                if let Some(d) = inside(x, y) {
                    let t = (d / (0.12 * self.s)).clamp(0.0, 1.0);
                    let w = self.tex(x, y, 10.0, salt);
                    let c = scale(mix(shallow, deep, t), 1.0 + 0.05 * w);
                    self.put(x, y, Element::Water, c, 0.0);
                }
            }
        }
    }

    pub fn beach(&mut self, rng: &mut ChaCha8Rng, inside: impl Fn(usize, usize) -> bool) {
        let sand = jitter(rng, [222.0, 205.0, 165.0], 0.04);
        let salt = rng.gen();
        for y in 0..self.size {
            for x in 0..self.size {
                if inside(x, y) {
                    let n = self.tex(x, y, 6.0, salt);
                    self.put(x, y, Element::Beach, scale(sand, 1.0 + 0.05 * n), 0.0);
                }
            }
        }
    }

    // ---------------------------------------------------------------- linear features

    pub fn road(
        &mut self,
        rng: &mut ChaCha8Rng,
        pts: &[Pt],
        width: f32,
        markings: bool,
        el: Element,
    ) {
        let asphalt = jitter(rng, [92.0, 92.0, 96.0], 0.1);
        let line: Rgb = if rng.gen_bool(0.3) {
            [220.0, 190.0, 90.0]
        } else {
            [225.0, 225.0, 220.0]
        };
        let salt = rng.gen();
        let dash = 22.0 * self.k;
        let lw = (1.4 * self.k).max(0.45);
        let sz = self.size;
        let mut img = std::mem::take(&mut self.rgb);
        let mut mask = std::mem::take(&mut self.mask);
        let mut hgt = std::mem::take(&mut self.height);
        stroke_px(sz, pts, width, |x, y, along, across| {
            let n = self.tex(x, y, 6.0, salt);
            let mut c = scale(asphalt, 1.0 + 0.06 * n);
            if markings && width > 5.0 {
                if across.abs() < lw && (along / dash).rem_euclid(1.0) < 0.5 {
                    c = line;
                }
                if width > 10.0 && (across.abs() - (width * 0.5 - 2.0 * lw)).abs() < lw * 0.6 {
                    c = [200.0, 200.0, 195.0];
                }
            }
            let i = y * sz + x;
            img[i] = c;
            mask[i] = el as u8;
            hgt[i] = 0.0;
        });
        self.rgb = img;
        self.mask = mask;
        self.height = hgt;
    }

    /// A footpath (road class) with a lighter gravel colour.
    pub fn path(&mut self, rng: &mut ChaCha8Rng, pts: &[Pt], width: f32) {
        let gravel = jitter(rng, [196.0, 182.0, 150.0], 0.05);
        let salt = rng.gen();
        let sz = self.size;
        let mut out = Vec::new();
        stroke_px(sz, pts, width, |x, y, _, _| out.push((x, y)));
        for (x, y) in out {
            let n = self.tex(x, y, 8.0, salt);
            self.put(x, y, Element::Road, scale(gravel, 1.0 + 0.05 * n), 0.0);
        }
    }

    pub fn railway(&mut self, rng: &mut ChaCha8Rng, pts: &[Pt], width: f32) {
        let ballast = jitter(rng, [128.0, 118.0, 106.0], 0.06);
        let salt = rng.gen();
        let period = 5.0 * self.k.max(0.4);
        let sz = self.size;
        let mut out = Vec::new();
        stroke_px(sz, pts, width, |x, y, a, c| out.push((x, y, a, c)));
        for (x, y, along, across) in out {
            let n = self.tex(x, y, 10.0, salt);
            let mut c = scale(ballast, 1.0 + 0.08 * n);
            let a = across.abs() / (width * 0.5);
            if a < 0.78 && (along / period).rem_euclid(1.0) < 0.45 {
                c = [88.0, 70.0, 56.0];
            }
            if (0.36..0.5).contains(&a) {
                c = [182.0, 182.0, 186.0];
            }
            self.put(x, y, Element::Railway, c, 0.0);
        }
    }

    pub fn river(&mut self, rng: &mut ChaCha8Rng, pts: &[Pt], width: f32) {
        let deep = jitter(rng, [42.0, 80.0, 96.0], 0.08);
        let bank = jitter(rng, [92.0, 120.0, 110.0], 0.06);
        let salt = rng.gen();
        let sz = self.size;
        let mut out = Vec::new();
        stroke_px(sz, pts, width, |x, y, _, c| out.push((x, y, c)));
        for (x, y, across) in out {
            let t = (across.abs() / (width * 0.5)).clamp(0.0, 1.0);
            let n = self.tex(x, y, 8.0, salt);
            let c = scale(mix(deep, bank, t * t), 1.0 + 0.05 * n);
            self.put(x, y, Element::River, c, 0.0);
        }
    }

    // ---------------------------------------------------------------- areas

    pub fn plaza(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32, radial: bool) {
        let stone = jitter(rng, [206.0, 198.0, 184.0], 0.05);
        let accent = jitter(rng, [176.0, 160.0, 150.0], 0.06);
        let tile = 12.0 * self.k.max(0.3);
        let salt = rng.gen();
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let n = self.tex(x, y, 8.0, salt);
            let mut col = scale(stone, 1.0 + 0.04 * n);
            if radial {
                let r = (u * u + v * v).sqrt() / (0.5 * w.min(h));
                if ((r * 6.0).fract() - 0.5).abs() < 0.08 {
                    col = accent;
                }
                if (u.abs() < tile * 0.3 || v.abs() < tile * 0.3) && r > 0.15 {
                    col = accent;
                }
            } else if (u / tile).rem_euclid(1.0) < 0.08 || (v / tile).rem_euclid(1.0) < 0.08 {
                col = scale(col, 0.92);
            }
            if (u.abs() - w * 0.5).abs() < 1.5 * self.k.max(0.5)
                || (v.abs() - h * 0.5).abs() < 1.5 * self.k.max(0.5)
            {
                col = scale(col, 0.85);
            }
            self.put(x, y, Element::Plaza, col, 0.0);
        }
    }

    pub fn fountain(&mut self, rng: &mut ChaCha8Rng, c: Pt, r: f32) {
        let water = jitter(rng, [80.0, 150.0, 190.0], 0.06);
        let sz = self.size;
        let mut out = Vec::new();
        blob_px(sz, c, r, r, 0.0, &[], |x, y, _, _, rr| out.push((x, y, rr)));
        for (x, y, rr) in out {
            let col = if rr > 0.78 {
                [228.0, 224.0, 214.0]
            } else if rr < 0.18 {
                [240.0, 245.0, 250.0]
            } else {
                scale(water, 0.9 + 0.2 * rr)
            };
            self.put(x, y, Element::Fountain, col, 1.5 * self.k);
        }
    }

    pub fn pond(&mut self, rng: &mut ChaCha8Rng, c: Pt, rx: f32, ry: f32, ang: f32) {
        let deep = jitter(rng, [40.0, 78.0, 80.0], 0.08);
        let edge = jitter(rng, [86.0, 112.0, 84.0], 0.06);
        let salt = rng.gen();
        let wob = [
            (0.08, 2.0, rng.gen_range(0.0..std::f32::consts::TAU)),
            (0.05, 3.0, rng.gen_range(0.0..std::f32::consts::TAU)),
            (0.03, 5.0, rng.gen_range(0.0..std::f32::consts::TAU)),
        ];
        let sz = self.size;
        let mut out = Vec::new();
        blob_px(sz, c, rx, ry, ang, &wob, |x, y, _, _, r| {
            out.push((x, y, r))
        });
        for (x, y, r) in out {
            let n = self.tex(x, y, 6.0, salt);
            let col = scale(mix(deep, edge, (r * r * r).clamp(0.0, 1.0)), 1.0 + 0.05 * n);
            self.put(x, y, Element::Pond, col, 0.0);
        }
    }

    pub fn swimming_pool(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let water = jitter(rng, [60.0, 190.0, 210.0], 0.05);
        let rim = 1.5 * self.k.max(0.5);
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let edge = (w * 0.5 - u.abs()).min(h * 0.5 - v.abs());
            let col = if edge < rim {
                [235.0, 232.0, 225.0]
            } else {
                scale(water, 0.9 + 0.15 * (u / w + 0.5))
            };
            self.put(x, y, Element::SwimmingPool, col, 0.0);
        }
    }

    pub fn parking_lot(
        &mut self,
        rng: &mut ChaCha8Rng,
        c: Pt,
        w: f32,
        h: f32,
        ang: f32,
        fill: f64,
    ) {
        let asphalt = jitter(rng, [128.0, 128.0, 130.0], 0.06);
        let stall = 9.0 * self.k;
        let depth = (h * 0.3).min(20.0 * self.k);
        let salt = rng.gen();
        let lw = (0.8 * self.k).max(0.4);
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let n = self.tex(x, y, 8.0, salt);
            let mut col = scale(asphalt, 1.0 + 0.04 * n);
            let in_row = v.abs() > h * 0.5 - depth;
            if in_row && ((u + w * 0.5) % stall) < lw {
                col = [220.0, 220.0, 215.0];
            }
            self.put(x, y, Element::ParkingLot, col, 0.0);
        }
        // cars in the stalls
        let (sn, cs) = ang.sin_cos();
        let n_stalls = (w / stall) as i32;
        for side in [-1.0f32, 1.0] {
            for i in 0..n_stalls {
                if !rng.gen_bool(fill) {
                    continue;
                }
                let u = -w * 0.5 + (i as f32 + 0.5) * stall;
                let v = side * (h * 0.5 - depth * 0.5);
                let p = (c.0 + u * cs - v * sn, c.1 + u * sn + v * cs);
                self.car(
                    rng,
                    p,
                    depth * 0.8,
                    stall * 0.62,
                    ang + std::f32::consts::FRAC_PI_2,
                );
            }
        }
    }

    pub fn car(&mut self, rng: &mut ChaCha8Rng, c: Pt, len: f32, wid: f32, ang: f32) {
        const PALETTE: [Rgb; 7] = [
            [235.0, 235.0, 235.0],
            [30.0, 30.0, 34.0],
            [170.0, 172.0, 176.0],
            [170.0, 40.0, 40.0],
            [40.0, 70.0, 150.0],
            [110.0, 110.0, 115.0],
            [210.0, 190.0, 60.0],
        ];
        let body = PALETTE[rng.gen_range(0..PALETTE.len())];
        let sz = self.size;
        let h = 2.0 * self.k;
        let mut out = Vec::new();
        rect_px(sz, c, len, wid, ang, |x, y, u, _| out.push((x, y, u)));
        for (x, y, u) in out {
            let t = u / len;
            let col = if (0.1..0.28).contains(&t) {
                scale(body, 0.45)
            } else {
                body
            };
            self.put(x, y, Element::Car, col, h);
        }
    }

    pub fn platform(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let concrete = jitter(rng, [188.0, 184.0, 176.0], 0.04);
        let canopy = jitter(rng, [120.0, 126.0, 134.0], 0.05);
        let sz = self.size;
        let canopy_len = w * rng.gen_range(0.3..0.6);
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let mut col = concrete;
            let mut ht = 0.5 * self.k;
            if h * 0.5 - v.abs() < 1.2 * self.k.max(0.5) {
                col = [215.0, 195.0, 70.0];
            } else if u.abs() < canopy_len * 0.5 && v.abs() < h * 0.3 {
                col = scale(canopy, if v < 0.0 { 1.08 } else { 0.92 });
                ht = 4.0 * self.k;
            }
            self.put(x, y, Element::Platform, col, ht);
        }
    }

    pub fn sports_field(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let turf = jitter(rng, [70.0, 140.0, 70.0], 0.05);
        let white: Rgb = [235.0, 240.0, 235.0];
        let lw = (1.0 * self.k).max(0.5);
        let stripe = w / 12.0;
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let band = (((u + w * 0.5) / stripe) as i32) % 2 == 0;
            let mut col = scale(turf, if band { 1.06 } else { 0.94 });
            let (iw, ih) = (w * 0.45, h * 0.42);
            let r = (u * u + v * v).sqrt();
            let line = (u.abs() - iw).abs() < lw && v.abs() <= ih
                || (v.abs() - ih).abs() < lw && u.abs() <= iw
                || u.abs() < lw * 0.7 && v.abs() <= ih
                || (r - h * 0.14).abs() < lw * 0.7
                || ((u.abs() - (iw - w * 0.14)).abs() < lw * 0.7 && v.abs() < h * 0.2)
                || ((v.abs() - h * 0.2).abs() < lw * 0.7
                    && u.abs() > iw - w * 0.14
                    && u.abs() < iw);
            if line {
                col = white;
            }
            self.put(x, y, Element::SportsField, col, 0.0);
        }
    }

    /// A running track around a sports field: the stadium ring between `r_in` and `r_out`.
    pub fn running_track(
        &mut self,
        rng: &mut ChaCha8Rng,
        c: Pt,
        len: f32,
        r_in: f32,
        r_out: f32,
        ang: f32,
    ) {
        let red = jitter(rng, [168.0, 78.0, 60.0], 0.06);
        // six lanes where they are at least 3 px wide, fewer (down to one) on small images
        let lanes = ((r_out - r_in) / 3.0).floor().clamp(1.0, 6.0);
        let lw = (0.6 * self.k).max(0.3);
        let sz = self.size;
        let mut out = Vec::new();
        stadium_px(sz, c, len, r_out, ang, |x, y, d, _| {
            if d >= r_in {
                out.push((x, y, d));
            }
        });
        for (x, y, d) in out {
            let t = (d - r_in) / (r_out - r_in) * lanes;
            let col = if (t - t.round()).abs() * (r_out - r_in) / lanes < lw {
                [230.0, 225.0, 220.0]
            } else {
                red
            };
            self.put(x, y, Element::RunningTrack, col, 0.0);
        }
        // the field inside (stadium of radius r_in)
        let turf = jitter(rng, [74.0, 142.0, 72.0], 0.05);
        let mut inner = Vec::new();
        stadium_px(sz, c, len, r_in, ang, |x, y, _, u| inner.push((x, y, u)));
        let stripe = (len + 2.0 * r_in) / 10.0;
        for (x, y, u) in inner {
            let band = (((u + len) / stripe) as i32) % 2 == 0;
            self.put(
                x,
                y,
                Element::SportsField,
                scale(turf, if band { 1.06 } else { 0.94 }),
                0.0,
            );
        }
        let (fw, fh) = (len * 0.9, r_in * 1.3);
        let sz2 = self.size;
        let lwl = (1.0 * self.k).max(0.5);
        let mut lines = Vec::new();
        rect_px(sz2, c, fw, fh, ang, |x, y, u, v| {
            if (u.abs() - fw * 0.5).abs() < lwl
                || (v.abs() - fh * 0.5).abs() < lwl
                || u.abs() < lwl * 0.6
            {
                lines.push((x, y));
            }
        });
        for (x, y) in lines {
            self.put(x, y, Element::SportsField, [235.0, 240.0, 235.0], 0.0);
        }
    }

    pub fn tennis_court(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let schemes: [(Rgb, Rgb); 3] = [
            ([70.0, 120.0, 80.0], [60.0, 100.0, 150.0]),
            ([150.0, 80.0, 60.0], [180.0, 95.0, 70.0]),
            ([70.0, 120.0, 80.0], [90.0, 150.0, 90.0]),
        ];
        let (apron, court) = schemes[rng.gen_range(0..3)];
        let lw = (0.8 * self.k).max(0.4);
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let (cw, ch) = (w * 0.36, h * 0.34);
            let mut col = if u.abs() < cw && v.abs() < ch {
                court
            } else {
                apron
            };
            let line = ((u.abs() - cw).abs() < lw && v.abs() <= ch)
                || ((v.abs() - ch).abs() < lw && u.abs() <= cw)
                || ((v.abs() - ch * 0.78).abs() < lw * 0.7 && u.abs() <= cw)
                || (u.abs() < lw * 0.7 && v.abs() <= ch)
                || ((u.abs() - cw * 0.55).abs() < lw * 0.7 && v.abs() <= ch * 0.78);
            if line {
                col = [238.0, 238.0, 235.0];
            }
            self.put(x, y, Element::TennisCourt, col, 0.0);
        }
    }

    pub fn basketball_court(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let surface = if rng.gen_bool(0.5) {
            [196.0, 130.0, 80.0]
        } else {
            [70.0, 100.0, 150.0]
        };
        let key = scale(surface, 0.8);
        let lw = (0.8 * self.k).max(0.4);
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let (iw, ih) = (w * 0.44, h * 0.42);
            let mut col = surface;
            if u.abs() > iw * 0.7 && v.abs() < ih * 0.3 {
                col = key;
            }
            let r = (u * u + v * v).sqrt();
            if ((u.abs() - iw).abs() < lw && v.abs() <= ih)
                || ((v.abs() - ih).abs() < lw && u.abs() <= iw)
                || (u.abs() < lw * 0.7 && v.abs() <= ih)
                || (r - h * 0.14).abs() < lw * 0.7
            {
                col = [238.0, 238.0, 235.0];
            }
            self.put(x, y, Element::BasketballCourt, col, 0.0);
        }
    }

    pub fn playground(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        let surface = if rng.gen_bool(0.5) {
            [196.0, 120.0, 90.0]
        } else {
            [200.0, 180.0, 130.0]
        };
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        let items: Vec<(f32, f32, f32, Rgb)> = (0..5)
            .map(|_| {
                (
                    rng.gen_range(-0.35..0.35) * w,
                    rng.gen_range(-0.35..0.35) * h,
                    rng.gen_range(0.06..0.12) * w,
                    [
                        [220.0, 60.0, 50.0],
                        [50.0, 120.0, 200.0],
                        [240.0, 200.0, 40.0],
                        [60.0, 170.0, 90.0],
                    ][rng.gen_range(0..4)],
                )
            })
            .collect();
        for (x, y, u, v) in out {
            let mut col = surface;
            let mut ht = 0.0;
            for &(iu, iv, r, ic) in &items {
                if (u - iu).abs() < r && (v - iv).abs() < r * 0.6 {
                    col = ic;
                    ht = 2.0 * self.k;
                }
            }
            self.put(x, y, Element::Playground, col, ht);
        }
    }

    // ---------------------------------------------------------------- vegetation

    pub fn tree(&mut self, rng: &mut ChaCha8Rng, c: Pt, r: f32) {
        let base = jitter(rng, [46.0, 86.0, 42.0], 0.15);
        let salt: u32 = rng.gen();
        let wob = [
            (0.12, 5.0, rng.gen_range(0.0..std::f32::consts::TAU)),
            (0.07, 8.0, rng.gen_range(0.0..std::f32::consts::TAU)),
        ];
        let top = r * 1.3 + 2.0 * self.k;
        let sz = self.size;
        let mut out = Vec::new();
        blob_px(sz, c, r, r, 0.0, &wob, |x, y, nu, nv, rr| {
            out.push((x, y, nu, nv, rr))
        });
        for (x, y, nu, nv, rr) in out {
            let light = 1.0 + 0.32 * (nu * SUN.0 + nv * SUN.1) * 0.8;
            let n = self.tex(x, y, 26.0, salt);
            let col = scale(base, (light + 0.16 * n) * (0.82 + 0.18 * (1.0 - rr * rr)));
            let h = top * (0.55 + 0.45 * (1.0 - rr * rr).max(0.0).sqrt());
            self.put(x, y, Element::Tree, col, h);
        }
    }

    // ---------------------------------------------------------------- buildings

    /// A pitched roof: two halves split along the long side, lit and shaded.
    #[allow(clippy::too_many_arguments)]
    pub fn gable(
        &mut self,
        rng: &mut ChaCha8Rng,
        el: Element,
        c: Pt,
        w: f32,
        h: f32,
        ang: f32,
        roof: Rgb,
        ht: f32,
    ) {
        let (sn, cs) = ang.sin_cos();
        let (long_w, rot) = if w >= h { (true, 0.0) } else { (false, 1.0) };
        let salt = rng.gen();
        let tile = 2.2 * self.k.max(0.4);
        let sz = self.size;
        let hip = rng.gen_bool(0.4);
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            // across-ridge coordinate and its direction in image space
            let (a, half, dir) = if long_w {
                (v, h * 0.5, (-sn, cs))
            } else {
                (u, w * 0.5, (cs, sn))
            };
            let along = if long_w { u } else { v };
            let along_half = if long_w { w * 0.5 } else { h * 0.5 };
            let sgn = if a >= 0.0 { 1.0 } else { -1.0 };
            let mut normal = (dir.0 * sgn, dir.1 * sgn);
            let mut dist_edge = half - a.abs();
            if hip && along_half - along.abs() < dist_edge {
                // hip end: the plane faces along the ridge
                let s2 = if along >= 0.0 { 1.0 } else { -1.0 };
                normal = if long_w {
                    (cs * s2, sn * s2)
                } else {
                    (-sn * s2, cs * s2)
                };
                dist_edge = along_half - along.abs();
            }
            let _ = rot;
            let lit = 1.0 + 0.22 * (normal.0 * SUN.0 + normal.1 * SUN.1);
            let n = self.tex(x, y, 14.0, salt);
            let rows = if (dist_edge / tile).fract() < 0.2 {
                0.94
            } else {
                1.0
            };
            let mut col = scale(roof, lit * rows * (1.0 + 0.04 * n));
            if dist_edge < 0.7 * self.k.max(0.4) {
                col = scale(col, 0.8);
            }
            let ridge_h = ht + (dist_edge / half.max(1e-3)) * ht * 0.3;
            self.put(x, y, el, col, ridge_h);
        }
    }

    /// A flat roof with a parapet and rooftop units.
    #[allow(clippy::too_many_arguments)]
    pub fn flat_roof(
        &mut self,
        rng: &mut ChaCha8Rng,
        el: Element,
        c: Pt,
        w: f32,
        h: f32,
        ang: f32,
        roof: Rgb,
        ht: f32,
        ribs: Option<f32>,
    ) {
        let salt = rng.gen();
        let par = (1.5 * self.k).max(0.5);
        let units: Vec<(f32, f32, f32, f32)> = (0..rng.gen_range(0..5))
            .map(|_| {
                (
                    rng.gen_range(-0.35..0.35) * w,
                    rng.gen_range(-0.35..0.35) * h,
                    rng.gen_range(3.0..7.0) * self.k,
                    rng.gen_range(3.0..6.0) * self.k,
                )
            })
            .collect();
        let sz = self.size;
        let mut out = Vec::new();
        rect_px(sz, c, w, h, ang, |x, y, u, v| out.push((x, y, u, v)));
        for (x, y, u, v) in out {
            let n = self.tex(x, y, 4.0, salt);
            let mut col = scale(roof, 1.0 + 0.05 * n);
            let mut hh = ht;
            let edge = (w * 0.5 - u.abs()).min(h * 0.5 - v.abs());
            if let Some(period) = ribs {
                let t = ((u + w) / period).fract();
                col = scale(col, if t < 0.5 { 1.07 } else { 0.9 });
            }
            if edge < par {
                col = scale(roof, 1.15);
            }
            for &(iu, iv, uw, uh) in &units {
                if (u - iu).abs() < uw * 0.5 && (v - iv).abs() < uh * 0.5 {
                    col = scale(roof, if u - iu < 0.0 { 1.2 } else { 1.05 });
                    hh = ht + 2.0 * self.k;
                }
            }
            self.put(x, y, el, col, hh);
        }
    }

    pub fn house(&mut self, rng: &mut ChaCha8Rng, c: Pt, w: f32, h: f32, ang: f32) {
        const ROOFS: [Rgb; 6] = [
            [160.0, 80.0, 60.0],
            [120.0, 70.0, 55.0],
            [100.0, 100.0, 105.0],
            [70.0, 72.0, 80.0],
            [175.0, 110.0, 80.0],
            [140.0, 130.0, 120.0],
        ];
        let pick = ROOFS[rng.gen_range(0..ROOFS.len())];
        let roof = jitter(rng, pick, 0.08);
        let ht = rng.gen_range(5.0..8.0) * self.k;
        self.gable(rng, Element::House, c, w, h, ang, roof, ht);
    }

    /// A commercial / apartment block, flat roof in greys and tans.
    pub fn block(&mut self, rng: &mut ChaCha8Rng, el: Element, c: Pt, w: f32, h: f32, ang: f32) {
        const ROOFS: [Rgb; 6] = [
            [170.0, 170.0, 168.0],
            [120.0, 122.0, 126.0],
            [200.0, 196.0, 186.0],
            [90.0, 92.0, 98.0],
            [150.0, 140.0, 125.0],
            [186.0, 176.0, 160.0],
        ];
        let pick = ROOFS[rng.gen_range(0..ROOFS.len())];
        let roof = jitter(rng, pick, 0.06);
        let ht = rng.gen_range(10.0..22.0) * self.k;
        self.flat_roof(rng, el, c, w, h, ang, roof, ht, None);
    }

    pub fn church(&mut self, rng: &mut ChaCha8Rng, c: Pt, len: f32, ang: f32) {
        let roof = jitter(rng, [118.0, 70.0, 58.0], 0.08);
        let roof = if rng.gen_bool(0.35) {
            jitter(rng, [96.0, 110.0, 112.0], 0.05)
        } else {
            roof
        };
        let (sn, cs) = ang.sin_cos();
        let nave_w = len * 0.3;
        let ht = 14.0 * self.k;
        self.gable(rng, Element::Church, c, len, nave_w, ang, roof, ht);
        // transept, a third of the way from the east end
        let t = len * 0.2;
        let tc = (c.0 + t * cs, c.1 + t * sn);
        self.gable(
            rng,
            Element::Church,
            tc,
            nave_w * 0.95,
            len * 0.62,
            ang,
            roof,
            ht,
        );
        // apse
        let ac = (c.0 + len * 0.5 * cs, c.1 + len * 0.5 * sn);
        let sz = self.size;
        let mut out = Vec::new();
        blob_px(
            sz,
            ac,
            nave_w * 0.45,
            nave_w * 0.45,
            0.0,
            &[],
            |x, y, nu, nv, _| out.push((x, y, nu, nv)),
        );
        for (x, y, nu, nv) in out {
            if self.mask[y * sz + x] != Element::Church as u8 {
                let lit = 1.0 + 0.2 * (nu * SUN.0 + nv * SUN.1);
                self.put(x, y, Element::Church, scale(roof, lit), ht);
            }
        }
        // tower at the west end: square, darker, taller
        let tw = nave_w * 1.1;
        let tcen = (
            c.0 - (len * 0.5 - tw * 0.4) * cs,
            c.1 - (len * 0.5 - tw * 0.4) * sn,
        );
        let tower = jitter(rng, [90.0, 86.0, 84.0], 0.05);
        let mut out2 = Vec::new();
        rect_px(sz, tcen, tw, tw, ang, |x, y, u, v| out2.push((x, y, u, v)));
        for (x, y, u, v) in out2 {
            // pyramid roof
            let (nu, nv) = if u.abs() > v.abs() {
                (u.signum(), 0.0)
            } else {
                (0.0, v.signum())
            };
            let (gx, gy) = (nu * cs - nv * sn, nu * sn + nv * cs);
            let lit = 1.0 + 0.3 * (gx * SUN.0 + gy * SUN.1);
            self.put(x, y, Element::Church, scale(tower, lit), ht * 2.0);
        }
    }

    pub fn storage_tank(&mut self, rng: &mut ChaCha8Rng, c: Pt, r: f32) {
        let shell = jitter(rng, [222.0, 222.0, 218.0], 0.04);
        let ht = r * 1.2;
        let sz = self.size;
        let mut out = Vec::new();
        blob_px(sz, c, r, r, 0.0, &[], |x, y, nu, nv, rr| {
            out.push((x, y, nu, nv, rr))
        });
        for (x, y, nu, nv, rr) in out {
            let lit = 1.0 + 0.12 * (nu * SUN.0 + nv * SUN.1);
            let ring = ((rr * 4.0).fract() - 0.5).abs() < 0.06 || rr > 0.93;
            let col = scale(shell, if ring { lit * 0.85 } else { lit });
            self.put(x, y, Element::StorageTank, col, ht);
        }
    }

    /// Shadows (sun from the upper left, soft penumbra), per-pixel grain, global grade;
    /// returns interleaved RGB bytes.
    pub fn finish(&self, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let n = self.size;
        let step = 0.9;
        let soft = (1.2 * self.k).max(0.35);
        let mut cast = vec![0f32; n * n];
        let gain = rng.gen_range(0.92..1.06);
        let tint: Rgb = [
            rng.gen_range(-6.0..6.0),
            rng.gen_range(-5.0..5.0),
            rng.gen_range(-6.0..8.0),
        ];
        let salt: u32 = rng.gen();
        let mut out = vec![0u8; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let h = self.height[i];
                // the sun is up-left: height cast from the pixels above and above-left
                let from = if x > 0 && y > 0 {
                    0.5 * (cast[i - n - 1] + cast[i - n])
                } else {
                    0.0
                };
                let incoming = (from - step).max(0.0);
                cast[i] = incoming.max(h);
                let shade = ((incoming - h) / soft).clamp(0.0, 1.0);
                let f = (1.0 - 0.45 * shade) * gain;
                let grain = noise::hashf(x as i32, y as i32, salt) * 4.0;
                let c = self.rgb[i];
                for ch in 0..3 {
                    out[i * 3 + ch] =
                        (c[ch] * f + tint[ch] + grain).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}
