//! One layout program per scene concept. Each paints image and mask together and records
//! the relations it built on purpose.

use std::f32::consts::{FRAC_PI_2, PI, TAU};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_caption::HierarchicalCaption;

use crate::canvas::{jitter, Canvas, Pt};
use crate::check::MaskView;
use crate::types::{Element, SceneClass, Triple};
use crate::words;

/// One generated scene with its exact ground truth.
#[derive(Debug, Clone)]
pub struct Scene {
    pub class: SceneClass,
    pub size: u32,
    pub seed: u64,
    /// Interleaved RGB, `size * size * 3` bytes.
    pub rgb: Vec<u8>,
    /// One class id ([`Element`]) per pixel.
    pub mask: Vec<u8>,
    /// The relations the layout built, each stated by one sentence of `caption.relation`.
    pub triples: Vec<Triple>,
    /// The relation sentences, in triple order.
    pub sentences: Vec<String>,
    pub caption: HierarchicalCaption,
}

impl Scene {
    pub fn mask_view(&self) -> MaskView<'_> {
        MaskView {
            width: self.size as usize,
            height: self.size as usize,
            data: &self.mask,
        }
    }

    /// Pixel count per element.
    pub fn areas(&self) -> [usize; 256] {
        let mut a = [0usize; 256];
        for &v in &self.mask {
            a[v as usize] += 1;
        }
        a
    }
}

/// Generate one scene. The same `(class, size, seed)` always gives the same bytes.
///
/// `size` is clamped to [`crate::MIN_SIZE`]..=[`crate::MAX_SIZE`].
pub fn generate(class: SceneClass, size: u32, seed: u64) -> Scene {
    let size = size.clamp(crate::MIN_SIZE, crate::MAX_SIZE);
    let class_ix = SceneClass::ALL
        .iter()
        .position(|&c| c == class)
        .unwrap_or(0) as u64;
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (class_ix + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut g = Gen {
        c: Canvas::new(size as usize, rng.gen()),
        rng,
        triples: Vec::new(),
    };
    match class {
        SceneClass::Church => g.church(),
        SceneClass::Commercial => g.commercial(),
        SceneClass::DenseResidential => g.dense_residential(),
        SceneClass::Industrial => g.industrial(),
        SceneClass::MediumResidential => g.medium_residential(),
        SceneClass::Park => g.park(),
        SceneClass::RailwayStation => g.railway_station(),
        SceneClass::Resort => g.resort(),
        SceneClass::School => g.school(),
        SceneClass::SparseResidential => g.sparse_residential(),
        SceneClass::Square => g.square(),
    }
    let Gen {
        c,
        mut rng,
        triples,
    } = g;
    let rgb = c.finish(&mut rng);
    let (rgb, mask) = dihedral(size as usize, &rgb, &c.mask, rng.gen_range(0..8));
    let sentences: Vec<String> = triples
        .iter()
        .map(|t| words::sentence(t, &mut rng))
        .collect();
    let mut scene = Scene {
        class,
        size,
        seed,
        rgb,
        mask,
        triples,
        sentences,
        caption: HierarchicalCaption::default(),
    };
    let areas = scene.areas();
    let total = (size * size) as f32;
    let mut present: Vec<(usize, Element)> = Element::ALL
        .iter()
        .filter(|&&e| {
            let a = areas[e as usize] as f32 / total;
            if e == Element::BareLand {
                a >= 0.1
            } else {
                a >= 0.002 || (e == Element::Car && a > 0.0)
            }
        })
        .map(|&e| (areas[e as usize], e))
        .collect();
    present.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // the relation's elements are always listed
    let mut elements: Vec<String> = present.iter().map(|p| p.1.name().to_string()).collect();
    for t in &scene.triples {
        for n in [Some(&t.subject), Some(&t.object), t.object2.as_ref()]
            .into_iter()
            .flatten()
        {
            if !elements.contains(n) {
                elements.push(n.clone());
            }
        }
    }
    scene.caption = HierarchicalCaption {
        scene: class.name().to_string(),
        relation: scene.sentences.join(" "),
        elements,
    };
    scene
}

/// Rotate / mirror the finished image and mask (8 symmetries of the square). Relations are
/// invariant; the sun direction turns with the image.
fn dihedral(n: usize, rgb: &[u8], mask: &[u8], t: u32) -> (Vec<u8>, Vec<u8>) {
    if t == 0 {
        return (rgb.to_vec(), mask.to_vec());
    }
    let mut o_rgb = vec![0u8; rgb.len()];
    let mut o_mask = vec![0u8; mask.len()];
    for y in 0..n {
        for x in 0..n {
            let (mut sx, mut sy) = if t & 4 != 0 { (y, x) } else { (x, y) };
            if t & 1 != 0 {
                sx = n - 1 - sx;
            }
            if t & 2 != 0 {
                sy = n - 1 - sy;
            }
            let (i, j) = (y * n + x, sy * n + sx);
            o_mask[i] = mask[j];
            o_rgb[i * 3..i * 3 + 3].copy_from_slice(&rgb[j * 3..j * 3 + 3]);
        }
    }
    (o_rgb, o_mask)
}

struct Gen {
    c: Canvas,
    rng: ChaCha8Rng,
    triples: Vec<Triple>,
}

/// A straight line across the image through `(0.5, pos)` (unit coordinates) at angle `ang`,
/// in pixels, extending past both borders.
fn across(s: f32, pos: f32, ang: f32, along_x: bool) -> Vec<Pt> {
    let (sn, cs) = ang.sin_cos();
    let c = if along_x { (0.5, pos) } else { (pos, 0.5) };
    let d = if along_x { (cs, sn) } else { (-sn, cs) };
    (0..=8)
        .map(|k| {
            let t = -0.8 + 1.6 * k as f32 / 8.0;
            ((c.0 + d.0 * t) * s, (c.1 + d.1 * t) * s)
        })
        .collect()
}

/// A gently curving line across the image (left to right), in pixels.
fn curve(s: f32, pos: f32, amp: f32, freq: f32, phase: f32) -> Vec<Pt> {
    (0..=32)
        .map(|k| {
            let t = k as f32 / 32.0;
            let x = -0.1 + 1.2 * t;
            let y = pos + amp * (TAU * freq * t + phase).sin();
            (x * s, y * s)
        })
        .collect()
}

/// Points every `step` pixels along a polyline with the unit tangent there.
fn walk(pts: &[Pt], step: f32, offset: f32) -> Vec<(Pt, Pt)> {
    let mut out = Vec::new();
    let mut next = offset;
    let mut acc = 0.0;
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt().max(1e-6);
        let t = ((b.0 - a.0) / len, (b.1 - a.1) / len);
        while next <= acc + len {
            let f = (next - acc) / len;
            out.push(((a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f), t));
            next += step;
        }
        acc += len;
    }
    out
}

fn offset(p: Pt, t: Pt, d: f32) -> Pt {
    // left normal of the tangent
    (p.0 + t.1 * d, p.1 - t.0 * d)
}

const OPEN: &[Element] = &[Element::Grass, Element::BareLand];

impl Gen {
    fn s(&self) -> f32 {
        self.c.s
    }

    fn u(&mut self, lo: f32, hi: f32) -> f32 {
        self.rng.gen_range(lo..hi)
    }

    fn rel(&mut self, t: Triple) {
        self.triples.push(t);
    }

    /// Buildings (or trees) along a polyline on one side (`side` ±1); returns the centres,
    /// tangents and sizes placed.
    #[allow(clippy::too_many_arguments)]
    fn row_along(
        &mut self,
        pts: &[Pt],
        road_w: f32,
        side: f32,
        setback: (f32, f32),
        depth: (f32, f32),
        width: (f32, f32),
        gap: (f32, f32),
        allowed: &[Element],
        kind: Element,
    ) -> Vec<(Pt, f32, f32, f32)> {
        let s = self.s();
        let mut placed = Vec::new();
        let mut along = self.u(0.0, 0.05) * s;
        let total: f32 = pts
            .windows(2)
            .map(|w| ((w[1].0 - w[0].0).powi(2) + (w[1].1 - w[0].1).powi(2)).sqrt())
            .sum();
        while along < total {
            let wdt = self.u(width.0, width.1) * s;
            let dep = self.u(depth.0, depth.1) * s;
            let sb = self.u(setback.0, setback.1) * s;
            let at = walk(pts, 1e9, along + wdt * 0.5);
            let Some(&(p, t)) = at.first() else { break };
            let c = offset(p, t, side * (road_w * 0.5 + sb + dep * 0.5));
            let ang = t.1.atan2(t.0);
            if self.c.rect_free(c, wdt, dep, ang, allowed) {
                match kind {
                    Element::House => self.c.house(&mut self.rng, c, wdt, dep, ang),
                    e => self.c.block(&mut self.rng, e, c, wdt, dep, ang),
                }
                placed.push((c, ang, wdt, dep));
            }
            along += wdt + self.u(gap.0, gap.1) * s;
        }
        placed
    }

    /// Trees both sides of a road polyline, on open ground only.
    fn trees_along(
        &mut self,
        pts: &[Pt],
        road_w: f32,
        r: f32,
        spacing: f32,
        sides: &[f32],
    ) -> usize {
        let mut n = 0;
        for &side in sides {
            let start = self.u(0.0, spacing);
            for (p, t) in walk(pts, spacing, start) {
                let rr = r * self.u(0.85, 1.15);
                let c = offset(p, t, side * (road_w * 0.5 + rr * 1.3));
                if c.0 < -rr || c.1 < -rr || c.0 > self.s() + rr || c.1 > self.s() + rr {
                    continue;
                }
                if self.c.circle_free(c, rr * 1.2, OPEN) {
                    self.c.tree(&mut self.rng, c, rr);
                    n += 1;
                }
            }
        }
        n
    }

    fn scatter_trees(&mut self, n: usize, r: (f32, f32), allowed: &[Element]) {
        let s = self.s();
        for _ in 0..n {
            let c = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            let rr = self.u(r.0, r.1) * s;
            if self.c.circle_free(c, rr * 1.15, allowed) {
                self.c.tree(&mut self.rng, c, rr);
            }
        }
    }

    fn clumps(&mut self, n: usize, r: (f32, f32), allowed: &[Element]) {
        let s = self.s();
        for _ in 0..n {
            let c = (self.u(0.05, 0.95) * s, self.u(0.05, 0.95) * s);
            let k = self.rng.gen_range(3..9);
            for _ in 0..k {
                let p = (c.0 + self.u(-0.06, 0.06) * s, c.1 + self.u(-0.06, 0.06) * s);
                let rr = self.u(r.0, r.1) * s;
                if self.c.circle_free(p, rr * 1.15, allowed) {
                    self.c.tree(&mut self.rng, p, rr);
                }
            }
        }
    }

    // ------------------------------------------------------------------ scenes

    fn church(&mut self) {
        let s = self.s();
        if self.rng.gen_bool(0.5) {
            self.c.grass_ground(&mut self.rng, false);
        } else {
            self.c.bare_ground(&mut self.rng);
        }
        let ry = if self.rng.gen_bool(0.5) {
            self.u(0.1, 0.16)
        } else {
            self.u(0.84, 0.9)
        };
        let rx = if self.rng.gen_bool(0.5) {
            self.u(0.1, 0.16)
        } else {
            self.u(0.84, 0.9)
        };
        let rw = self.u(0.055, 0.075) * s;
        let r1 = across(s, ry, self.u(-0.05, 0.05), true);
        let r2 = across(s, rx, self.u(-0.05, 0.05), false);
        self.c.road(&mut self.rng, &r1, rw, true, Element::Road);
        self.c
            .road(&mut self.rng, &r2, rw * 0.9, true, Element::Road);
        let (jx, jy) = (self.u(-0.03, 0.03), self.u(-0.03, 0.03));
        let pc = self.c.p(0.5 + jx, 0.5 + jy);
        let (pw, ph) = (self.u(0.46, 0.54) * s, self.u(0.38, 0.46) * s);
        let pa = self.u(-0.15, 0.15);
        self.c.plaza(&mut self.rng, pc, pw, ph, pa, false);
        let flip = if self.rng.gen_bool(0.5) { PI } else { 0.0 };
        let cl = self.u(0.3, 0.34) * s;
        self.c.church(&mut self.rng, pc, cl, pa + flip);
        let tr = self.u(0.022, 0.03) * s;
        self.trees_along(&r1, rw, tr, tr * 2.4, &[-1.0, 1.0]);
        self.trees_along(&r2, rw * 0.9, tr, tr * 2.4, &[-1.0, 1.0]);
        for _ in 0..60 {
            let c = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            let (w, h) = (self.u(0.07, 0.11) * s, self.u(0.06, 0.08) * s);
            let a = pa
                + if self.rng.gen_bool(0.5) {
                    0.0
                } else {
                    FRAC_PI_2
                };
            if self.c.rect_free(c, w * 1.3, h * 1.3, a, OPEN) {
                self.c.house(&mut self.rng, c, w, h, a);
            }
        }
        self.scatter_trees(12, (0.018, 0.03), OPEN);
        self.rel(Triple::new(
            crate::Relation::InTheMiddleOf,
            Element::Church,
            Element::Plaza,
        ));
        if self.rng.gen_bool(0.7) {
            self.rel(Triple::new(
                crate::Relation::Along,
                Element::Tree,
                Element::Road,
            ));
        }
    }

    fn commercial(&mut self) {
        let s = self.s();
        self.c.bare_ground(&mut self.rng);
        let (y0, x0) = (self.u(0.4, 0.6), self.u(0.4, 0.6));
        let rw = self.u(0.07, 0.085) * s;
        let ang = self.u(-0.06, 0.06);
        let h = across(s, y0, ang, true);
        let v = across(s, x0, ang, false);
        self.c.road(&mut self.rng, &h, rw, true, Element::Road);
        self.c.road(&mut self.rng, &v, rw, true, Element::Road);
        let roundabout = self.rng.gen_bool(0.5);
        if roundabout {
            let c = self.c.p(x0, y0);
            let (ro, ri) = (rw * 1.25, rw * 0.6);
            let asphalt = jitter(&mut self.rng, [96.0, 96.0, 100.0], 0.05);
            let mut px = Vec::new();
            crate::canvas::blob_px(self.c.size, c, ro, ro, 0.0, &[], |x, y, _, _, r| {
                px.push((x, y, r))
            });
            for (x, y, r) in px {
                if r * ro <= ri {
                    let g = [84.0 + 10.0 * r, 130.0, 70.0];
                    self.c.put(x, y, Element::Grass, g, 0.0);
                } else {
                    let t = self.c.tex(x, y, 6.0, 3);
                    let col = if (r * ro - ri).abs() < 1.2 * self.c.k.max(0.4) {
                        [210.0, 210.0, 205.0]
                    } else {
                        asphalt
                    };
                    self.c.put(
                        x,
                        y,
                        Element::Roundabout,
                        [col[0] + 5.0 * t, col[1] + 5.0 * t, col[2] + 5.0 * t],
                        0.0,
                    );
                }
            }
        }
        let tr = 0.02 * s;
        self.trees_along(&h, rw, tr, tr * 2.6, &[-1.0, 1.0]);
        self.trees_along(&v, rw, tr, tr * 2.6, &[-1.0, 1.0]);
        // blocks: a building and a parking lot right next to it in each quadrant
        let mut lots = 0;
        for (qx, qy) in [(0.0f32, 0.0f32), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
            let cx = if qx == 0.0 {
                x0 * 0.5
            } else {
                (x0 + 1.0) * 0.5
            };
            let cy = if qy == 0.0 {
                y0 * 0.5
            } else {
                (y0 + 1.0) * 0.5
            };
            let qw = if qx == 0.0 { x0 } else { 1.0 - x0 } - 0.16;
            let qh = if qy == 0.0 { y0 } else { 1.0 - y0 } - 0.16;
            let bw = qw * self.u(0.45, 0.6);
            let bh = qh * self.u(0.7, 0.9);
            let lw = qw - bw - 0.02;
            let left = self.rng.gen_bool(0.5);
            let bcx = if left {
                cx - qw * 0.5 + bw * 0.5
            } else {
                cx + qw * 0.5 - bw * 0.5
            };
            let lcx = if left {
                bcx + bw * 0.5 + 0.015 + lw * 0.5
            } else {
                bcx - bw * 0.5 - 0.015 - lw * 0.5
            };
            let bc = self.c.p(bcx, cy);
            self.c
                .block(&mut self.rng, Element::Building, bc, bw * s, bh * s, ang);
            if lw > 0.06 {
                let lc = self.c.p(lcx, cy);
                let fill = self.u(0.4, 0.85) as f64;
                self.c.parking_lot(
                    &mut self.rng,
                    lc,
                    lw * s,
                    bh * s * 0.9,
                    ang + FRAC_PI_2,
                    fill,
                );
                lots += 1;
            }
        }
        if lots == 0 {
            let c = self.c.p(0.5, 0.5);
            let _ = c;
        }
        self.scatter_trees(8, (0.015, 0.025), OPEN);
        self.rel(Triple::new(
            crate::Relation::NextTo,
            Element::ParkingLot,
            Element::Building,
        ));
        if self.rng.gen_bool(0.6) {
            self.rel(Triple::new(
                crate::Relation::Along,
                Element::Tree,
                Element::Road,
            ));
        }
    }

    fn dense_residential(&mut self) {
        let s = self.s();
        self.c.bare_ground(&mut self.rng);
        let ang = self.u(-0.3, 0.3);
        let spacing = self.u(0.28, 0.34);
        let rw = self.u(0.04, 0.05) * s;
        let first = self.u(0.08, 0.08 + spacing);
        let mut streets = Vec::new();
        let mut y = first;
        while y < 1.0 {
            streets.push(across(s, y, ang, true));
            y += spacing;
        }
        let cross = across(s, self.u(0.3, 0.7), ang, false);
        for st in &streets {
            self.c.road(&mut self.rng, st, rw, false, Element::Road);
        }
        self.c.road(&mut self.rng, &cross, rw, false, Element::Road);
        // back gardens: small lawns between the rows
        for st in streets.iter().chain(std::iter::once(&cross)) {
            for side in [-1.0, 1.0] {
                self.row_along(
                    st,
                    rw,
                    side,
                    (0.004, 0.01),
                    (0.075, 0.095),
                    (0.045, 0.07),
                    (0.003, 0.01),
                    OPEN,
                    Element::House,
                );
            }
        }
        self.scatter_trees(25, (0.012, 0.022), OPEN);
        for _ in 0..20 {
            let c = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            if self
                .c
                .rect_free(c, 0.03 * s, 0.012 * s, ang, &[Element::Road])
                && self.rng.gen_bool(0.5)
            {
                self.c.car(&mut self.rng, c, 0.028 * s, 0.012 * s, ang);
            }
        }
        self.rel(Triple::new(
            crate::Relation::OnBothSidesOf,
            Element::House,
            Element::Road,
        ));
    }

    fn industrial(&mut self) {
        let s = self.s();
        self.c.bare_ground(&mut self.rng);
        let ang = self.u(-0.12, 0.12);
        let y0 = self.u(0.42, 0.58);
        let rw = self.u(0.06, 0.075) * s;
        let road = across(s, y0, ang, true);
        let up = self.rng.gen_bool(0.5);
        let sign = if up { -1.0 } else { 1.0 };
        let ry = y0 + sign * self.u(0.12, 0.15);
        let rail = across(s, ry, ang, true);
        self.c.road(&mut self.rng, &road, rw, true, Element::Road);
        self.c.railway(&mut self.rng, &rail, 0.035 * s);
        let (sn, cs) = ang.sin_cos();
        let at = |x: f32, y: f32| -> Pt {
            // unit coordinates in the road frame → pixels
            let (dx, dy) = (x - 0.5, y - 0.5);
            ((0.5 + dx * cs - dy * sn) * s, (0.5 + dx * sn + dy * cs) * s)
        };
        // factory on the far side of the road from the railway, warehouse beyond the railway
        let fx = self.u(0.3, 0.55);
        let fw = self.u(0.3, 0.4);
        let fh = self.u(0.2, 0.25);
        let fy = y0 - sign * (0.04 + fh * 0.5 + self.u(0.0, 0.03));
        let roof = jitter(&mut self.rng, [140.0, 146.0, 156.0], 0.1);
        let fc = at(fx, fy);
        self.c.flat_roof(
            &mut self.rng,
            Element::Factory,
            fc,
            fw * s,
            fh * s,
            ang,
            roof,
            16.0 * self.c.k,
            Some(7.0 * self.c.k),
        );
        let wx = fx + self.u(-0.1, 0.1);
        let ww = self.u(0.3, 0.45);
        let wh = self.u(0.14, 0.2);
        let wy = ry + sign * (0.03 + wh * 0.5);
        let wroof = jitter(&mut self.rng, [188.0, 196.0, 206.0], 0.06);
        let wc = at(wx, wy);
        self.c.flat_roof(
            &mut self.rng,
            Element::Warehouse,
            wc,
            ww * s,
            wh * s,
            ang,
            wroof,
            12.0 * self.c.k,
            Some(3.0 * self.c.k),
        );
        // storage tanks beside the factory
        let tr = self.u(0.035, 0.05);
        let tx0 = fx + fw * 0.5 + 0.012 + tr;
        let ty = fy;
        let rows = if fh > 4.0 * tr { 2 } else { 1 };
        for i in 0..3 {
            for j in 0..rows {
                let cx = tx0 + i as f32 * (2.0 * tr + 0.01);
                let cy = ty + (j as f32 - (rows as f32 - 1.0) * 0.5) * (2.0 * tr + 0.01);
                if i == 0 || self.rng.gen_bool(0.8) {
                    let c = at(cx, cy);
                    self.c.storage_tank(&mut self.rng, c, tr * s);
                }
            }
        }
        let lot = at(fx - fw * 0.5 - 0.1, fy);
        if self.c.rect_free(lot, 0.14 * s, 0.16 * s, ang, OPEN) {
            self.c
                .parking_lot(&mut self.rng, lot, 0.14 * s, 0.16 * s, ang + FRAC_PI_2, 0.4);
        }
        for _ in 0..10 {
            let c = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            let (w, h) = (self.u(0.12, 0.25) * s, self.u(0.08, 0.14) * s);
            if self.c.rect_free(c, w * 1.15, h * 1.2, ang, OPEN) {
                self.c.block(&mut self.rng, Element::Building, c, w, h, ang);
            }
        }
        self.scatter_trees(6, (0.012, 0.02), OPEN);
        let mut pool = vec![
            Triple::new(crate::Relation::ParallelTo, Element::Railway, Element::Road),
            Triple::new(
                crate::Relation::NextTo,
                Element::StorageTank,
                Element::Factory,
            ),
            Triple::between(Element::Road, Element::Factory, Element::Warehouse),
        ];
        let drop = self.rng.gen_range(0..4);
        if drop < 3 {
            pool.remove(drop);
        }
        for t in pool {
            self.rel(t);
        }
    }

    fn medium_residential(&mut self) {
        let s = self.s();
        self.c.grass_ground(&mut self.rng, false);
        let pos = self.u(0.4, 0.6);
        let road = curve(
            s,
            pos,
            self.u(0.04, 0.1),
            self.u(0.4, 0.9),
            self.u(0.0, TAU),
        );
        let rw = self.u(0.045, 0.055) * s;
        self.c.road(&mut self.rng, &road, rw, true, Element::Road);
        let mut houses = Vec::new();
        for side in [-1.0, 1.0] {
            houses.extend(self.row_along(
                &road,
                rw,
                side,
                (0.025, 0.04),
                (0.07, 0.09),
                (0.08, 0.11),
                (0.02, 0.04),
                OPEN,
                Element::House,
            ));
        }
        // a second, parallel street of houses away from the road
        let back = if pos < 0.5 { pos + 0.33 } else { pos - 0.33 };
        let road2 = curve(s, back, 0.02, 0.5, self.u(0.0, TAU));
        let _ = road2;
        // pools behind houses, trees in gardens
        let mut pools = 0;
        for &(c, a, w, d) in &houses {
            let (sn, cs) = a.sin_cos();
            let side = if (c.1 - pos * s) > 0.0 { 1.0 } else { -1.0 };
            if self.rng.gen_bool(0.45) || (pools == 0 && houses.len() > 2) {
                let (pw, ph) = (w * 0.55, d * 0.45);
                let dist = d * 0.5 + 0.012 * s + ph * 0.5;
                let pc = (c.0 - sn * dist * side, c.1 + cs * dist * side);
                if self.c.rect_free(pc, pw, ph, a, OPEN) {
                    self.c.swimming_pool(&mut self.rng, pc, pw, ph, a);
                    pools += 1;
                }
            }
        }
        self.scatter_trees(45, (0.015, 0.03), &[Element::Grass]);
        self.rel(Triple::new(
            crate::Relation::Along,
            Element::House,
            Element::Road,
        ));
        if pools > 0 {
            self.rel(Triple::new(
                crate::Relation::NextTo,
                Element::SwimmingPool,
                Element::House,
            ));
        }
    }

    fn park(&mut self) {
        let s = self.s();
        self.c.grass_ground(&mut self.rng, true);
        let top = self.rng.gen_bool(0.5);
        let pc = (
            self.u(0.35, 0.65),
            if top {
                self.u(0.35, 0.45)
            } else {
                self.u(0.55, 0.65)
            },
        );
        let (rx, ry) = (self.u(0.11, 0.15) * s, self.u(0.08, 0.11) * s);
        let pa = self.u(0.0, PI);
        let pcp = self.c.p(pc.0, pc.1);
        self.c.pond(&mut self.rng, pcp, rx, ry, pa);
        let path_y = if top {
            self.u(0.8, 0.88)
        } else {
            self.u(0.12, 0.2)
        };
        let path = curve(s, path_y, 0.03, self.u(0.5, 1.0), self.u(0.0, TAU));
        self.c.path(&mut self.rng, &path, (0.022 * s).max(2.5));
        // trees ring the pond
        let tr = self.u(0.022, 0.028) * s;
        let (sn, cs) = pa.sin_cos();
        let n = ((TAU * (rx + ry) * 0.5 * 1.2) / (tr * 1.5)).ceil() as usize;
        for k in 0..n {
            let th = TAU * k as f32 / n as f32 + self.u(-0.05, 0.05);
            let ext = 1.2;
            let (lx, ly) = (
                th.cos() * (rx * ext + tr * 0.6),
                th.sin() * (ry * ext + tr * 0.6),
            );
            let c = (pcp.0 + lx * cs - ly * sn, pcp.1 + lx * sn + ly * cs);
            let rr = tr * self.u(0.9, 1.15);
            self.c.tree(&mut self.rng, c, rr);
        }
        self.clumps(5, (0.018, 0.03), &[Element::Grass]);
        let mut extra = Vec::new();
        // a small plaza with a fountain, or a playground by the path
        if self.rng.gen_bool(0.5) {
            for _ in 0..20 {
                let c = (self.u(0.15, 0.85) * s, self.u(0.15, 0.85) * s);
                let w = self.u(0.13, 0.17) * s;
                if self
                    .c
                    .rect_free(c, w * 1.1, w * 1.1, 0.0, &[Element::Grass])
                {
                    self.c.plaza(&mut self.rng, c, w, w, 0.0, true);
                    self.c.fountain(&mut self.rng, c, w * 0.22);
                    extra.push(Triple::new(
                        crate::Relation::InTheMiddleOf,
                        Element::Fountain,
                        Element::Plaza,
                    ));
                    break;
                }
            }
        } else {
            for _ in 0..30 {
                let x = self.u(0.15, 0.85);
                let w = self.u(0.1, 0.14);
                let h = self.u(0.07, 0.09);
                let y = path_y
                    + if top { -1.0 } else { 1.0 }
                        * (0.05 + 0.011 + h * 0.5 + 0.03 * (TAU * x).sin().abs() * 0.0);
                let c = self.c.p(x, y);
                if self.c.rect_free(c, w * s, h * s, 0.0, &[Element::Grass]) {
                    self.c.playground(&mut self.rng, c, w * s, h * s, 0.0);
                    break;
                }
            }
        }
        if self.rng.gen_bool(0.4) {
            for _ in 0..20 {
                let c = (self.u(0.15, 0.85) * s, self.u(0.15, 0.85) * s);
                let (w, h) = (self.u(0.26, 0.32) * s, self.u(0.17, 0.2) * s);
                if self
                    .c
                    .rect_free(c, w * 1.1, h * 1.15, 0.0, &[Element::Grass])
                {
                    self.c.sports_field(&mut self.rng, c, w, h, 0.0);
                    break;
                }
            }
        }
        self.scatter_trees(20, (0.015, 0.028), &[Element::Grass]);
        self.rel(Triple::new(
            crate::Relation::Surrounds,
            Element::Tree,
            Element::Pond,
        ));
        self.rel(Triple::new(
            crate::Relation::Crosses,
            Element::Road,
            Element::Grass,
        ));
        for t in extra {
            self.rel(t);
        }
    }

    fn railway_station(&mut self) {
        let s = self.s();
        self.c.bare_ground(&mut self.rng);
        let ang = self.u(-0.1, 0.1);
        let tw = 0.034;
        let pw = self.u(0.04, 0.05);
        let gap = 0.006;
        // top to bottom: road, station, platform, track, track, platform, track, track
        let y_road = self.u(0.07, 0.1);
        let rw = 0.055;
        let y_station = y_road + rw * 0.5 + 0.02 + 0.06;
        let mut y = y_station + 0.06 + 0.015;
        let p_len = self.u(0.6, 0.8);
        let p_x = 0.5 + self.u(-0.05, 0.05);
        let (sn, cs) = ang.sin_cos();
        let at = |x: f32, y: f32| -> Pt {
            let (dx, dy) = (x - 0.5, y - 0.5);
            ((0.5 + dx * cs - dy * sn) * s, (0.5 + dx * sn + dy * cs) * s)
        };
        let road = across(s, y_road, ang, true);
        self.c
            .road(&mut self.rng, &road, rw * s, true, Element::Road);
        let st_w = self.u(0.3, 0.45);
        let st_c = at(p_x, y_station);
        let roof = jitter(&mut self.rng, [150.0, 120.0, 100.0], 0.15);
        self.c.gable(
            &mut self.rng,
            Element::TrainStation,
            st_c,
            st_w * s,
            0.12 * s,
            ang,
            roof,
            12.0 * self.c.k,
        );
        let lot_c = at(p_x + st_w * 0.5 + 0.02 + 0.1, y_station);
        self.c
            .parking_lot(&mut self.rng, lot_c, 0.2 * s, 0.11 * s, ang, 0.6);
        let pattern: &[u8] = if self.rng.gen_bool(0.5) {
            b"PTTPTT"
        } else {
            b"PTPTTPT"
        };
        let mut tracks = 0;
        for &k in pattern {
            if y > 0.97 {
                break;
            }
            if k == b'P' {
                let c = at(p_x, y + pw * 0.5);
                self.c.platform(&mut self.rng, c, p_len * s, pw * s, ang);
                y += pw + gap;
            } else {
                let line = across(s, y + tw * 0.5, ang, true);
                self.c.railway(&mut self.rng, &line, tw * s);
                y += tw + gap;
                tracks += 1;
            }
        }
        // beyond the tracks: depots
        for _ in 0..6 {
            let c = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            let (w, h) = (self.u(0.12, 0.22) * s, self.u(0.06, 0.1) * s);
            if self
                .c
                .rect_free(c, w * 1.2, h * 1.3, ang, &[Element::BareLand])
            {
                self.c.block(&mut self.rng, Element::Building, c, w, h, ang);
            }
        }
        let _ = tracks;
        self.rel(Triple::between(
            Element::Platform,
            Element::Railway,
            Element::Railway,
        ));
        self.rel(Triple::new(
            crate::Relation::ParallelTo,
            Element::Railway,
            Element::Road,
        ));
        if self.rng.gen_bool(0.5) {
            self.rel(Triple::new(
                crate::Relation::NextTo,
                Element::TrainStation,
                Element::Platform,
            ));
        }
    }

    fn resort(&mut self) {
        let s = self.s();
        self.c.grass_ground(&mut self.rng, true);
        let shore = self.u(0.68, 0.74);
        let bw = self.u(0.07, 0.1);
        let ph = self.u(0.0, TAU);
        let fr = self.u(0.5, 1.2);
        let line = move |x: f32| shore + 0.025 * (TAU * fr * x + ph).sin();
        let sf = s;
        self.c.sea(&mut self.rng, |x, y| {
            let (ux, uy) = (x as f32 / sf, y as f32 / sf);
            let d = uy - (line(ux) + bw);
            (d >= 0.0).then_some(d * sf)
        });
        self.c.beach(&mut self.rng, |x, y| {
            let (ux, uy) = (x as f32 / sf, y as f32 / sf);
            uy >= line(ux) && uy < line(ux) + bw
        });
        // umbrellas on the beach
        for _ in 0..12 {
            let x = self.u(0.02, 0.98);
            let y = line(x) + bw * self.u(0.3, 0.7);
            let c = self.c.p(x, y);
            let col = [
                [230.0, 80.0, 60.0],
                [60.0, 120.0, 200.0],
                [240.0, 230.0, 220.0],
            ][self.rng.gen_range(0..3)];
            let r = 0.009 * s;
            let mut px = Vec::new();
            crate::canvas::blob_px(self.c.size, c, r, r, 0.0, &[], |x, y, _, _, _| {
                px.push((x, y))
            });
            for (x, y) in px {
                self.c.put(x, y, Element::Beach, col, 1.5 * self.c.k);
            }
        }
        // hotel: one long block facing the sea
        let hx = self.u(0.35, 0.65);
        let hy = self.u(0.2, 0.28);
        let (hw, hh) = (self.u(0.4, 0.55), self.u(0.1, 0.13));
        let roof = jitter(&mut self.rng, [226.0, 218.0, 200.0], 0.05);
        let roof = if self.rng.gen_bool(0.4) {
            jitter(&mut self.rng, [186.0, 100.0, 72.0], 0.08)
        } else {
            roof
        };
        let hc = self.c.p(hx, hy);
        self.c.flat_roof(
            &mut self.rng,
            Element::Hotel,
            hc,
            hw * s,
            hh * s,
            0.0,
            roof,
            18.0 * self.c.k,
            None,
        );
        let wing = self.c.p(hx - hw * 0.5 + 0.05, hy + hh * 0.5 + 0.05);
        self.c.flat_roof(
            &mut self.rng,
            Element::Hotel,
            wing,
            0.1 * s,
            0.1 * s,
            0.0,
            roof,
            14.0 * self.c.k,
            None,
        );
        // a small pool right by the hotel, a lagoon pool ringed by palms
        let lx = if hx < 0.5 {
            self.u(0.68, 0.78)
        } else {
            self.u(0.22, 0.32)
        };
        let sx = if lx > hx {
            hx - hw * 0.15
        } else {
            hx + hw * 0.15
        };
        let small = self.c.p(sx, hy + hh * 0.5 + 0.008 + 0.025);
        self.c
            .swimming_pool(&mut self.rng, small, 0.08 * s, 0.05 * s, 0.0);
        let ly = (hy + hh * 0.5 + shore) * 0.5 + 0.04;
        let (lw, lh) = (0.15 * s, 0.09 * s);
        let lc = self.c.p(lx, ly);
        self.c.swimming_pool(&mut self.rng, lc, lw, lh, 0.0);
        let tr = 0.018 * s;
        let per = 2.0 * (lw + lh) + 8.0 * tr;
        let n = (per / (tr * 1.6)).ceil() as usize;
        for k in 0..n {
            let t = k as f32 / n as f32;
            let th = TAU * t;
            // rounded-rectangle ring just outside the pool
            let (ex, ey) = (lw * 0.5 + tr * 0.9, lh * 0.5 + tr * 0.9);
            let (cx, cy) = (th.cos(), th.sin());
            let m = cx.abs().max(cy.abs()).max(1e-3);
            let c = (lc.0 + cx / m * ex, lc.1 + cy / m * ey);
            let rr = tr * self.u(0.9, 1.1);
            self.c.tree(&mut self.rng, c, rr);
        }
        self.scatter_trees(30, (0.014, 0.024), &[Element::Grass]);
        let mut pool = vec![
            Triple::between(Element::Beach, Element::Water, Element::Hotel),
            Triple::new(
                crate::Relation::Surrounds,
                Element::Tree,
                Element::SwimmingPool,
            ),
            Triple::new(
                crate::Relation::NextTo,
                Element::SwimmingPool,
                Element::Hotel,
            ),
        ];
        let drop = self.rng.gen_range(0..4);
        if drop < 3 {
            pool.remove(drop);
        }
        for t in pool {
            self.rel(t);
        }
    }

    fn school(&mut self) {
        let s = self.s();
        if self.rng.gen_bool(0.5) {
            self.c.grass_ground(&mut self.rng, false);
        } else {
            self.c.bare_ground(&mut self.rng);
        }
        let ry = self.u(0.06, 0.09);
        let rw = 0.055 * s;
        let road = across(s, ry, 0.0, true);
        self.c.road(&mut self.rng, &road, rw, true, Element::Road);
        // parking lot, then the school, then the track
        let sx = self.u(0.4, 0.6);
        let lot_h = 0.09;
        let lot_y = ry + 0.0275 + 0.02 + lot_h * 0.5;
        let lc = self.c.p(sx, lot_y);
        self.c
            .parking_lot(&mut self.rng, lc, 0.32 * s, lot_h * s, 0.0, 0.6);
        let sh = 0.11;
        let sy = lot_y + lot_h * 0.5 + 0.02 + sh * 0.5;
        let sw = self.u(0.36, 0.46);
        let roof = jitter(&mut self.rng, [196.0, 170.0, 150.0], 0.1);
        let scp = self.c.p(sx, sy);
        self.c.flat_roof(
            &mut self.rng,
            Element::School,
            scp,
            sw * s,
            sh * s,
            0.0,
            roof,
            12.0 * self.c.k,
            None,
        );
        // wings (U or L)
        let wing_h = self.u(0.08, 0.14);
        let left_wing = self.c.p(sx - sw * 0.5 + 0.04, sy + sh * 0.5 + wing_h * 0.5);
        self.c.flat_roof(
            &mut self.rng,
            Element::School,
            left_wing,
            0.08 * s,
            wing_h * s,
            0.0,
            roof,
            12.0 * self.c.k,
            None,
        );
        if self.rng.gen_bool(0.5) {
            let rwng = self.c.p(sx + sw * 0.5 - 0.04, sy + sh * 0.5 + wing_h * 0.5);
            self.c.flat_roof(
                &mut self.rng,
                Element::School,
                rwng,
                0.08 * s,
                wing_h * s,
                0.0,
                roof,
                12.0 * self.c.k,
                None,
            );
        }
        // courts beside the school
        let court_left = sx > 0.5;
        let cx = if court_left {
            sx - sw * 0.5 - 0.012 - 0.06
        } else {
            sx + sw * 0.5 + 0.012 + 0.06
        };
        let bc = self.c.p(cx, sy);
        self.c
            .basketball_court(&mut self.rng, bc, 0.12 * s, 0.08 * s, FRAC_PI_2 * 0.0);
        let tc = self.c.p(cx, sy + 0.11);
        if self.c.rect_free(tc, 0.12 * s, 0.1 * s, 0.0, OPEN) {
            self.c
                .tennis_court(&mut self.rng, tc, 0.12 * s, 0.1 * s, FRAC_PI_2 * 0.0);
        }
        // running track with the sports field inside
        let (r_in, r_out) = (self.u(0.1, 0.115), 0.0);
        let r_out = r_in + 0.035 + r_out;
        let ty = 1.0 - r_out - self.u(0.04, 0.08);
        let len = self.u(0.22, 0.3);
        let jx = self.u(-0.06, 0.06);
        let tcp = self.c.p(0.5 + jx, ty);
        let ta = self.u(-0.08, 0.08);
        self.c
            .running_track(&mut self.rng, tcp, len * s, r_in * s, r_out * s, ta);
        self.scatter_trees(30, (0.014, 0.024), OPEN);
        self.rel(Triple::new(
            crate::Relation::Surrounds,
            Element::RunningTrack,
            Element::SportsField,
        ));
        self.rel(Triple::between(
            Element::ParkingLot,
            Element::School,
            Element::Road,
        ));
        if self.rng.gen_bool(0.5) {
            self.rel(Triple::new(
                crate::Relation::NextTo,
                Element::BasketballCourt,
                Element::School,
            ));
        }
    }

    fn sparse_residential(&mut self) {
        let s = self.s();
        let fa = self.u(-0.5, 0.5);
        self.c.farmland(&mut self.rng, fa, |_, _| true);
        let pos = self.u(0.35, 0.65);
        let road = curve(
            s,
            pos,
            self.u(0.03, 0.08),
            self.u(0.3, 0.8),
            self.u(0.0, TAU),
        );
        let rw = (self.u(0.035, 0.045) * s).max(2.5);
        // half the time a river meanders across, under a bridge of the road
        let river = self.rng.gen_bool(0.5);
        if river {
            let rpos = self.u(0.3, 0.7);
            let (amp, fr, ph) = (self.u(0.04, 0.08), self.u(0.8, 1.5), self.u(0.0, TAU));
            let pts: Vec<Pt> = curve(s, rpos, amp, fr, ph)
                .into_iter()
                .map(|(x, y)| (y, x))
                .collect();
            let w = (self.u(0.05, 0.07) * s).max(3.0);
            self.c.river(&mut self.rng, &pts, w);
        }
        let mk = self.rng.gen_bool(0.5);
        self.c.road(&mut self.rng, &road, rw, mk, Element::Road);
        let n = self.rng.gen_range(3..7);
        let mut placed = 0;
        for _ in 0..60 {
            if placed >= n {
                break;
            }
            let pts = walk(&road, 1e9, self.u(0.05, 1.1) * s);
            let Some(&(p, t)) = pts.first() else { continue };
            let side = if self.rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            let (w, d) = (self.u(0.08, 0.11) * s, self.u(0.06, 0.08) * s);
            let yard = 0.05 * s;
            let c = offset(p, t, side * (rw * 0.5 + 0.015 * s + d * 0.5 + yard));
            let ang = t.1.atan2(t.0);
            if !self
                .c
                .rect_free(c, w + yard * 2.0, d + yard * 2.0, ang, &[Element::Farmland])
            {
                continue;
            }
            self.c
                .lawn_rect(&mut self.rng, c, w + yard * 2.0, d + yard * 2.0, ang);
            self.c.house(&mut self.rng, c, w, d, ang);
            // a tree right beside the house
            let (sn, cs) = ang.sin_cos();
            let tr = 0.02 * s;
            let k = self.u(-0.3, 0.3) * w;
            let dist = -side * (d * 0.5 + tr * 0.9);
            let tc = (c.0 + k * cs - dist * sn, c.1 + k * sn + dist * cs);
            let tc = (tc.0, tc.1);
            self.c.tree(&mut self.rng, tc, tr);
            placed += 1;
        }
        self.clumps(4, (0.015, 0.028), &[Element::Farmland]);
        self.rel(Triple::new(
            crate::Relation::Crosses,
            Element::Road,
            Element::Farmland,
        ));
        if river {
            self.rel(Triple::new(
                crate::Relation::Crosses,
                Element::River,
                Element::Farmland,
            ));
        }
        if placed > 0 {
            self.rel(Triple::new(
                crate::Relation::NextTo,
                Element::Tree,
                Element::House,
            ));
        }
    }

    fn square(&mut self) {
        let s = self.s();
        self.c.bare_ground(&mut self.rng);
        let rw = 0.05 * s;
        let e = self.u(0.07, 0.1);
        let lines = [
            across(s, e, 0.0, true),
            across(s, 1.0 - e, 0.0, true),
            across(s, e, 0.0, false),
            across(s, 1.0 - e, 0.0, false),
        ];
        for l in &lines {
            self.c.road(&mut self.rng, l, rw, true, Element::Road);
        }
        // buildings beyond the ring road
        let depth = e - 0.025 - 0.01;
        if depth > 0.02 {
            for side in 0..4 {
                let mut t = self.u(0.0, 0.1);
                while t < 1.0 {
                    let w = self.u(0.1, 0.2);
                    let c = match side {
                        0 => (t + w * 0.5, depth * 0.5),
                        1 => (t + w * 0.5, 1.0 - depth * 0.5),
                        2 => (depth * 0.5, t + w * 0.5),
                        _ => (1.0 - depth * 0.5, t + w * 0.5),
                    };
                    let (bw, bh) = if side < 2 {
                        (w, depth * 1.6)
                    } else {
                        (depth * 1.6, w)
                    };
                    let cp = self.c.p(c.0, c.1);
                    if self
                        .c
                        .rect_free(cp, bw * s, bh * s * 0.9, 0.0, &[Element::BareLand])
                    {
                        self.c
                            .block(&mut self.rng, Element::Building, cp, bw * s, bh * s, 0.0);
                    }
                    t += w + 0.01;
                }
            }
        }
        let inner = 1.0 - 2.0 * (e + 0.025);
        let pw = inner - 0.2;
        let (jx, jy) = (self.u(-0.02, 0.02), self.u(-0.02, 0.02));
        let c = self.c.p(0.5 + jx, 0.5 + jy);
        // lawn strip between road and plaza
        self.c.lawn_rect(
            &mut self.rng,
            self.c.p(0.5, 0.5),
            (inner - 0.01) * s,
            (inner - 0.01) * s,
            0.0,
        );
        self.c.plaza(&mut self.rng, c, pw * s, pw * s, 0.0, true);
        let fr = self.u(0.045, 0.06) * s;
        self.c.fountain(&mut self.rng, c, fr);
        // trees ring the plaza
        let tr = self.u(0.02, 0.026) * s;
        let half = pw * s * 0.5 + tr * 0.9;
        let step = tr * 1.7;
        let n = ((2.0 * half) / step).ceil() as usize;
        for k in 0..=n {
            let t = -half + 2.0 * half * k as f32 / n as f32;
            for p in [
                (c.0 + t, c.1 - half),
                (c.0 + t, c.1 + half),
                (c.0 - half, c.1 + t),
                (c.0 + half, c.1 + t),
            ] {
                let rr = tr * self.u(0.9, 1.1);
                self.c.tree(&mut self.rng, p, rr);
            }
        }
        for _ in 0..14 {
            let p = (self.u(0.0, 1.0) * s, self.u(0.0, 1.0) * s);
            if self
                .c
                .rect_free(p, 0.03 * s, 0.013 * s, 0.0, &[Element::Road])
            {
                self.c.car(&mut self.rng, p, 0.028 * s, 0.012 * s, 0.0);
            }
        }
        self.rel(Triple::new(
            crate::Relation::InTheMiddleOf,
            Element::Fountain,
            Element::Plaza,
        ));
        self.rel(Triple::new(
            crate::Relation::Surrounds,
            Element::Tree,
            Element::Plaza,
        ));
    }
}
