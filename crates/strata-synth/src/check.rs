//! The relation checker: decides from a mask alone whether a relation triple holds.
//!
//! Every test is plain geometry on the class pixels, with distances relative to the image
//! side `N` so the same scene at 64 and at 512 pixels gets the same verdict:
//!
//! | relation | holds when |
//! |---|---|
//! | `surrounds` S O | around the largest O component, in ≥ 14 of its 16 angular sectors (of those the image shows, at least 12), S fills ≥ 20 % of the ring within 0.06·N of O |
//! | `crosses` S O | cutting the image along S (closed over gaps up to 0.09·N, e.g. a bridge) leaves ≥ 2 pieces that each hold ≥ 5 % of O |
//! | `along` S O | rays cast outward from O's boundary meet S within 0.06·N for ≥ 25 % of the boundary |
//! | `on_both_sides_of` S O | as `along` with ≥ 45 % of the boundary and the hit boundary normals balanced (mean normal length ≤ 0.45) |
//! | `in_the_middle_of` S O | ≥ 60 % of the ring just around S is O, and S's centroid is within 0.15·√area of the centroid of the O region holding it |
//! | `next_to` S O | some S pixel is within max(2 px, 0.03·N) of some O pixel |
//! | `parallel_to` S O | the largest components of S and O are elongated (axis ratio ≥ 3), their axes differ by ≤ 12° and they do not touch |
//! | `between` S O O2 | for some O component and O2 component (distinct if O = O2), the segment joining their centroids meets S strictly inside (5–95 % of its length) |

// pixel loops index several same-sized buffers by the same index
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;

use crate::error::SynthError;
use crate::types::{Element, Relation, Triple};

/// A borrowed single-channel class-id mask.
#[derive(Debug, Clone, Copy)]
pub struct MaskView<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

impl<'a> MaskView<'a> {
    pub fn new(width: usize, height: usize, data: &'a [u8]) -> Result<MaskView<'a>, SynthError> {
        if data.len() != width * height {
            return Err(SynthError::MaskSize {
                width,
                height,
                want: width * height,
                got: data.len(),
            });
        }
        Ok(MaskView {
            width,
            height,
            data,
        })
    }
}

/// The checker's decision and the measured quantity behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub holds: bool,
    /// What was measured, e.g. "15/16 sectors covered".
    pub detail: String,
}

fn verdict(holds: bool, detail: String) -> Verdict {
    Verdict { holds, detail }
}

/// Decide whether `triple` holds in `mask`.
pub fn check(mask: &MaskView, triple: &Triple) -> Result<Verdict, SynthError> {
    let (rel, s, o, o2) = triple.parse()?;
    let g = Geo::new(mask);
    Ok(match rel {
        Relation::Surrounds => g.surrounds(s, o),
        Relation::Crosses => g.crosses(s, o),
        Relation::Along => g.along(s, o, false),
        Relation::OnBothSidesOf => g.along(s, o, true),
        Relation::InTheMiddleOf => g.in_the_middle_of(s, o),
        Relation::NextTo => g.next_to(s, o),
        Relation::ParallelTo => g.parallel_to(s, o),
        Relation::Between => g.between(s, o, o2.expect("parse checks object2")),
    })
}

pub(crate) struct Geo<'a> {
    pub w: usize,
    pub h: usize,
    pub m: &'a [u8],
    pub n: f32,
}

/// One 4-connected component.
#[derive(Debug, Clone)]
pub(crate) struct Comp {
    pub pixels: Vec<usize>,
    pub cx: f32,
    pub cy: f32,
}

/// Principal axes of a pixel set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axes {
    pub angle: f32,
    pub ratio: f32,
}

impl<'a> Geo<'a> {
    pub fn new(mask: &MaskView<'a>) -> Geo<'a> {
        Geo {
            w: mask.width,
            h: mask.height,
            m: mask.data,
            n: mask.width.max(mask.height) as f32,
        }
    }

    pub fn is(&self, i: usize, e: Element) -> bool {
        self.m[i] == e as u8
    }

    fn count(&self, e: Element) -> usize {
        self.m.iter().filter(|&&v| v == e as u8).count()
    }

    /// 4-connected components of the pixels for which `inside` holds, largest first.
    pub fn components(&self, inside: impl Fn(usize) -> bool) -> (Vec<Comp>, Vec<u32>) {
        let mut label = vec![u32::MAX; self.w * self.h];
        let mut comps = Vec::new();
        let mut q = VecDeque::new();
        for start in 0..self.w * self.h {
            if label[start] != u32::MAX || !inside(start) {
                continue;
            }
            let id = comps.len() as u32;
            label[start] = id;
            q.push_back(start);
            let mut px = Vec::new();
            while let Some(i) = q.pop_front() {
                px.push(i);
                let (x, y) = (i % self.w, i / self.w);
                let mut visit = |j: usize| {
                    if label[j] == u32::MAX && inside(j) {
                        label[j] = id;
                        q.push_back(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < self.w {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - self.w);
                }
                if y + 1 < self.h {
                    visit(i + self.w);
                }
            }
            let (sx, sy) = px.iter().fold((0f64, 0f64), |(a, b), &i| {
                (a + (i % self.w) as f64, b + (i / self.w) as f64)
            });
            let n = px.len() as f64;
            comps.push(Comp {
                cx: (sx / n) as f32,
                cy: (sy / n) as f32,
                pixels: px,
            });
        }
        // relabel largest first
        let mut order: Vec<usize> = (0..comps.len()).collect();
        order.sort_by(|&a, &b| {
            comps[b]
                .pixels
                .len()
                .cmp(&comps[a].pixels.len())
                .then(a.cmp(&b))
        });
        let mut remap = vec![0u32; comps.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u32;
        }
        for l in label.iter_mut() {
            if *l != u32::MAX {
                *l = remap[*l as usize];
            }
        }
        let mut sorted: Vec<Option<Comp>> = comps.into_iter().map(Some).collect();
        let comps = order
            .iter()
            .map(|&o| sorted[o].take().expect("each once"))
            .collect();
        (comps, label)
    }

    pub fn class_components(&self, e: Element) -> Vec<Comp> {
        self.components(|i| self.is(i, e)).0
    }

    /// Chamfer (1, √2) distance in pixels to the nearest pixel of the set.
    pub fn distance(&self, inside: impl Fn(usize) -> bool) -> Vec<f32> {
        let (w, h) = (self.w, self.h);
        let big = 1e9f32;
        let mut d: Vec<f32> = (0..w * h)
            .map(|i| if inside(i) { 0.0 } else { big })
            .collect();
        let r2 = std::f32::consts::SQRT_2;
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let mut v = d[i];
                if x > 0 {
                    v = v.min(d[i - 1] + 1.0);
                }
                if y > 0 {
                    v = v.min(d[i - w] + 1.0);
                    if x > 0 {
                        v = v.min(d[i - w - 1] + r2);
                    }
                    if x + 1 < w {
                        v = v.min(d[i - w + 1] + r2);
                    }
                }
                d[i] = v;
            }
        }
        for y in (0..h).rev() {
            for x in (0..w).rev() {
                let i = y * w + x;
                let mut v = d[i];
                if x + 1 < w {
                    v = v.min(d[i + 1] + 1.0);
                }
                if y + 1 < h {
                    v = v.min(d[i + w] + 1.0);
                    if x + 1 < w {
                        v = v.min(d[i + w + 1] + r2);
                    }
                    if x > 0 {
                        v = v.min(d[i + w - 1] + r2);
                    }
                }
                d[i] = v;
            }
        }
        d
    }

    pub fn axes(&self, px: &[usize]) -> Axes {
        let n = px.len().max(1) as f64;
        let (mut sx, mut sy) = (0f64, 0f64);
        for &i in px {
            sx += (i % self.w) as f64;
            sy += (i / self.w) as f64;
        }
        let (mx, my) = (sx / n, sy / n);
        let (mut cxx, mut cyy, mut cxy) = (0f64, 0f64, 0f64);
        for &i in px {
            let dx = (i % self.w) as f64 - mx;
            let dy = (i / self.w) as f64 - my;
            cxx += dx * dx;
            cyy += dy * dy;
            cxy += dx * dy;
        }
        cxx /= n;
        cyy /= n;
        cxy /= n;
        let tr = cxx + cyy;
        let det = cxx * cyy - cxy * cxy;
        let disc = (tr * tr / 4.0 - det).max(0.0).sqrt();
        let l1 = tr / 2.0 + disc;
        let l2 = (tr / 2.0 - disc).max(1e-9);
        let angle = 0.5 * (2.0 * cxy).atan2(cxx - cyy);
        Axes {
            angle: angle as f32,
            ratio: (l1 / (l2 + 1.0 / 12.0)).sqrt() as f32,
        }
    }

    // ------------------------------------------------------------------ relations

    pub fn surrounds(&self, s: Element, o: Element) -> Verdict {
        let comps = self.class_components(o);
        let Some(oc) = comps.first() else {
            return verdict(false, format!("no {} in the mask", o.name()));
        };
        if self.count(s) == 0 {
            return verdict(false, format!("no {} in the mask", s.name()));
        }
        let mut in_o = vec![false; self.w * self.h];
        for &i in &oc.pixels {
            in_o[i] = true;
        }
        let d = self.distance(|i| in_o[i]);
        let r = (0.06 * self.n).max(2.0);
        let mut ring = [0usize; 16];
        let mut hit = [0usize; 16];
        for i in 0..self.w * self.h {
            if d[i] > 0.0 && d[i] <= r {
                let dx = (i % self.w) as f32 - oc.cx;
                let dy = (i / self.w) as f32 - oc.cy;
                let a = dy.atan2(dx) + std::f32::consts::PI;
                let k = ((a / std::f32::consts::TAU * 16.0) as usize).min(15);
                ring[k] += 1;
                if self.is(i, s) {
                    hit[k] += 1;
                }
            }
        }
        let seen = (0..16).filter(|&k| ring[k] >= 3).count();
        let covered = (0..16)
            .filter(|&k| ring[k] >= 3 && hit[k] as f32 >= 0.2 * ring[k] as f32)
            .count();
        verdict(
            seen >= 12 && covered + 2 >= seen,
            format!("{covered}/{seen} sectors covered"),
        )
    }

    pub fn crosses(&self, s: Element, o: Element) -> Verdict {
        let o_total = self.count(o);
        if o_total == 0 || self.count(s) == 0 {
            return verdict(false, "subject or object missing".into());
        }
        // cut the image along S, closed over gaps narrower than 0.09·N (a bridge or a
        // level crossing does not stop a river or a railway from crossing): how many of
        // the pieces hold a large share of O?
        let r = (0.045 * self.n).max(2.0);
        let ds = self.distance(|i| self.is(i, s));
        let dout = self.distance(|i| ds[i] > r);
        let cut: Vec<bool> = (0..self.w * self.h)
            .map(|i| self.is(i, s) || dout[i] > r)
            .collect();
        let (pieces, _) = self.components(|i| !cut[i]);
        let big = pieces
            .iter()
            .filter(|p| {
                let n = p.pixels.iter().filter(|&&i| self.is(i, o)).count();
                n as f32 >= 0.05 * o_total as f32 && n >= 4
            })
            .count();
        verdict(
            big >= 2,
            format!("the subject cuts the object into {big} large parts"),
        )
    }

    /// Outward rays from every boundary pixel of O: for each, the outward unit normal and
    /// whether S is met within `reach` pixels.
    pub fn boundary_rays(&self, s: Element, o: Element) -> Vec<(usize, (f32, f32), Option<usize>)> {
        let reach = (0.06 * self.n).max(3.0);
        let mut out = Vec::new();
        for y in 0..self.h {
            for x in 0..self.w {
                let i = y * self.w + x;
                if !self.is(i, o) {
                    continue;
                }
                let (mut nx, mut ny) = (0f32, 0f32);
                let mut boundary = false;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        if dx == 0 && dy == 0 {
                            continue;
                        }
                        let (px, py) = (x as i64 + dx, y as i64 + dy);
                        if px < 0 || py < 0 || px >= self.w as i64 || py >= self.h as i64 {
                            continue;
                        }
                        if !self.is(py as usize * self.w + px as usize, o) {
                            nx += dx as f32;
                            ny += dy as f32;
                            if dx == 0 || dy == 0 {
                                boundary = true;
                            }
                        }
                    }
                }
                let len = (nx * nx + ny * ny).sqrt();
                if !boundary || len < 1e-3 {
                    continue;
                }
                let (nx, ny) = (nx / len, ny / len);
                let mut hit = None;
                let mut k = 1.0f32;
                while k <= reach {
                    let px = (x as f32 + 0.5 + nx * k).floor();
                    let py = (y as f32 + 0.5 + ny * k).floor();
                    if px < 0.0 || py < 0.0 || px >= self.w as f32 || py >= self.h as f32 {
                        break;
                    }
                    let j = py as usize * self.w + px as usize;
                    if self.is(j, s) {
                        hit = Some(j);
                        break;
                    }
                    if self.is(j, o) && k > 1.5 {
                        break;
                    }
                    k += 0.7;
                }
                out.push((i, (nx, ny), hit));
            }
        }
        out
    }

    pub fn along(&self, s: Element, o: Element, both: bool) -> Verdict {
        let rays = self.boundary_rays(s, o);
        if rays.is_empty() {
            return verdict(false, format!("no {} boundary in the mask", o.name()));
        }
        let hits: Vec<(f32, f32)> = rays.iter().filter(|r| r.2.is_some()).map(|r| r.1).collect();
        let coverage = hits.len() as f32 / rays.len() as f32;
        if !both {
            return verdict(
                coverage >= 0.25,
                format!("{:.0}% of the boundary lined", coverage * 100.0),
            );
        }
        let (mx, my) = hits
            .iter()
            .fold((0f32, 0f32), |(a, b), n| (a + n.0, b + n.1));
        let k = hits.len().max(1) as f32;
        let bias = ((mx / k).powi(2) + (my / k).powi(2)).sqrt();
        verdict(
            coverage >= 0.45 && bias <= 0.45,
            format!(
                "{:.0}% of the boundary lined, side bias {:.2}",
                coverage * 100.0,
                bias
            ),
        )
    }

    pub fn in_the_middle_of(&self, s: Element, o: Element) -> Verdict {
        let scomps = self.class_components(s);
        let Some(sc) = scomps.first() else {
            return verdict(false, format!("no {} in the mask", s.name()));
        };
        let mut in_s = vec![false; self.w * self.h];
        for &i in &sc.pixels {
            in_s[i] = true;
        }
        let d = self.distance(|i| in_s[i]);
        let ring_r = (0.01 * self.n).max(2.0);
        let (mut ring, mut ring_o) = (0usize, 0usize);
        for i in 0..self.w * self.h {
            if d[i] > 0.0 && d[i] <= ring_r {
                ring += 1;
                if self.is(i, o) {
                    ring_o += 1;
                }
            }
        }
        let frac = ring_o as f32 / ring.max(1) as f32;
        let (rcomps, rlabel) = self.components(|i| in_s[i] || self.is(i, o));
        let region = &rcomps[rlabel[sc.pixels[0]] as usize];
        let dist = ((sc.cx - region.cx).powi(2) + (sc.cy - region.cy).powi(2)).sqrt();
        let lim = 0.15 * (region.pixels.len() as f32).sqrt();
        verdict(
            frac >= 0.6 && dist <= lim,
            format!(
                "{:.0}% of its rim is {}, {:.1} px from the centre (limit {:.1})",
                frac * 100.0,
                o.name(),
                dist,
                lim
            ),
        )
    }

    pub fn next_to(&self, s: Element, o: Element) -> Verdict {
        if self.count(s) == 0 || self.count(o) == 0 {
            return verdict(false, "subject or object missing".into());
        }
        let d = self.distance(|i| self.is(i, o));
        let min = (0..self.w * self.h)
            .filter(|&i| self.is(i, s))
            .map(|i| d[i])
            .fold(f32::MAX, f32::min);
        let lim = (0.03 * self.n).max(2.0);
        verdict(min <= lim, format!("gap {min:.1} px (limit {lim:.1})"))
    }

    pub fn parallel_to(&self, s: Element, o: Element) -> Verdict {
        let sc = self.class_components(s);
        let oc = self.class_components(o);
        let (Some(a), Some(b)) = (sc.first(), oc.first()) else {
            return verdict(false, "subject or object missing".into());
        };
        let (xa, xb) = (self.axes(&a.pixels), self.axes(&b.pixels));
        let mut diff = (xa.angle - xb.angle).abs() % std::f32::consts::PI;
        if diff > std::f32::consts::FRAC_PI_2 {
            diff = std::f32::consts::PI - diff;
        }
        let deg = diff.to_degrees();
        let mut in_b = vec![false; self.w * self.h];
        for &i in &b.pixels {
            in_b[i] = true;
        }
        let d = self.distance(|i| in_b[i]);
        let gap = a.pixels.iter().map(|&i| d[i]).fold(f32::MAX, f32::min);
        verdict(
            xa.ratio >= 3.0 && xb.ratio >= 3.0 && deg <= 12.0 && gap > 1.0,
            format!(
                "axis ratios {:.1} / {:.1}, angle {:.1}°, gap {:.1} px",
                xa.ratio, xb.ratio, deg, gap
            ),
        )
    }

    pub fn between(&self, s: Element, o: Element, o2: Element) -> Verdict {
        if self.count(s) == 0 {
            return verdict(false, format!("no {} in the mask", s.name()));
        }
        let min_area = ((0.0005 * self.n * self.n) as usize).max(2);
        let take = |e: Element| -> Vec<Comp> {
            self.class_components(e)
                .into_iter()
                .filter(|c| c.pixels.len() >= min_area)
                .take(40)
                .collect()
        };
        let a = take(o);
        let b = if o2 == o { a.clone() } else { take(o2) };
        for (ia, ca) in a.iter().enumerate() {
            for (ib, cb) in b.iter().enumerate() {
                if o == o2 && ia >= ib {
                    continue;
                }
                let len = ((cb.cx - ca.cx).powi(2) + (cb.cy - ca.cy).powi(2)).sqrt();
                if len < 2.0 {
                    continue;
                }
                let steps = (len * 2.0) as usize;
                for k in 0..=steps {
                    let t = k as f32 / steps as f32;
                    if !(0.05..=0.95).contains(&t) {
                        continue;
                    }
                    let x = (ca.cx + (cb.cx - ca.cx) * t + 0.5) as usize;
                    let y = (ca.cy + (cb.cy - ca.cy) * t + 0.5) as usize;
                    if x < self.w && y < self.h && self.is(y * self.w + x, s) {
                        return verdict(
                            true,
                            format!("met at {:.0}% of the segment joining them", t * 100.0),
                        );
                    }
                }
            }
        }
        verdict(false, "no segment between them meets the subject".into())
    }
}

/// Build a negative case from a mask where `triple` holds: the subject is edited (moved,
/// cut, turned) so that the relation no longer holds geometrically while both elements
/// stay in the scene. Returns the edited mask.
///
/// | relation | edit |
/// |---|---|
/// | `surrounds` | remove the subject from one half-plane through the object's centre |
/// | `crosses` | the far half of the subject (along its axis) becomes object: it now ends inside |
/// | `along` | keep the subject near the object only within 0.12·N of one point |
/// | `on_both_sides_of` | remove the subject parts lining one side |
/// | `in_the_middle_of` | move the subject 75 % of the way towards the object region's rim |
/// | `next_to` | move the subject to the spot farthest from the object |
/// | `parallel_to` | turn every subject pixel by 90° about the subject's centre |
/// | `between` | move the subject to the spot farthest from both objects |
pub fn negative(mask: &MaskView, triple: &Triple) -> Result<Vec<u8>, SynthError> {
    let (rel, s, o, o2) = triple.parse()?;
    let g = Geo::new(mask);
    let mut out = mask.data.to_vec();
    let (w, h) = (g.w, g.h);
    let bare = Element::BareLand as u8;
    let erase_all = |out: &mut Vec<u8>| {
        for v in out.iter_mut() {
            if *v == s as u8 {
                *v = bare;
            }
        }
    };
    // stamp pixels (given relative to (cx, cy)) at a new centre
    let stamp = |out: &mut Vec<u8>, comp: &Comp, to: (f32, f32), class: u8| {
        for &i in &comp.pixels {
            let x = (i % w) as f32 - comp.cx + to.0;
            let y = (i / w) as f32 - comp.cy + to.1;
            if x >= 0.0 && y >= 0.0 && (x as usize) < w && (y as usize) < h {
                out[y as usize * w + x as usize] = class;
            }
        }
    };
    match rel {
        Relation::Surrounds => {
            if let Some(oc) = g.class_components(o).first() {
                let a = g.axes(&oc.pixels).angle;
                let (sn, cs) = a.sin_cos();
                for i in 0..w * h {
                    if out[i] == s as u8 {
                        let dx = (i % w) as f32 - oc.cx;
                        let dy = (i / w) as f32 - oc.cy;
                        if -dx * sn + dy * cs > 0.0 {
                            out[i] = bare;
                        }
                    }
                }
            }
        }
        Relation::Crosses => {
            let comps = g.class_components(s);
            if let Some(sc) = comps.first() {
                let a = g.axes(&sc.pixels).angle;
                let (sn, cs) = a.sin_cos();
                let mut proj: Vec<f32> = sc
                    .pixels
                    .iter()
                    .map(|&i| ((i % w) as f32 - sc.cx) * cs + ((i / w) as f32 - sc.cy) * sn)
                    .collect();
                let mut sorted = proj.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let median = sorted[sorted.len() / 2];
                for (k, &i) in sc.pixels.iter().enumerate() {
                    if proj[k] > median {
                        out[i] = o as u8;
                    }
                }
                proj.clear();
            }
        }
        Relation::Along => {
            let rays = g.boundary_rays(s, o);
            let d = g.distance(|i| g.is(i, o));
            let reach = (0.06 * g.n).max(3.0) + 2.0;
            let keep = rays.iter().find(|r| r.2.is_some()).map(|r| r.0);
            let lim = 0.12 * g.n;
            for i in 0..w * h {
                if out[i] == s as u8 && d[i] <= reach {
                    let near_keep = keep.is_some_and(|k| {
                        let dx = (i % w) as f32 - (k % w) as f32;
                        let dy = (i / w) as f32 - (k / w) as f32;
                        (dx * dx + dy * dy).sqrt() <= lim
                    });
                    if !near_keep {
                        out[i] = bare;
                    }
                }
            }
        }
        Relation::OnBothSidesOf => {
            let rays = g.boundary_rays(s, o);
            let (mut sxx, mut syy, mut sxy) = (0f32, 0f32, 0f32);
            for r in rays.iter().filter(|r| r.2.is_some()) {
                sxx += r.1 .0 * r.1 .0;
                syy += r.1 .1 * r.1 .1;
                sxy += r.1 .0 * r.1 .1;
            }
            let a = 0.5 * (2.0 * sxy).atan2(sxx - syy);
            let v = (a.cos(), a.sin());
            let (comps, label) = g.components(|i| g.is(i, s));
            let mut kill = vec![false; comps.len()];
            for r in &rays {
                if let Some(j) = r.2 {
                    if r.1 .0 * v.0 + r.1 .1 * v.1 > 0.2 {
                        kill[label[j] as usize] = true;
                    }
                }
            }
            for i in 0..w * h {
                if label[i] != u32::MAX && kill[label[i] as usize] {
                    out[i] = bare;
                }
            }
        }
        Relation::InTheMiddleOf => {
            let comps = g.class_components(s);
            if let Some(sc) = comps.first() {
                let mut in_s = vec![false; w * h];
                for &i in &sc.pixels {
                    in_s[i] = true;
                }
                let (rcomps, rlabel) = g.components(|i| in_s[i] || g.is(i, o));
                let region = &rcomps[rlabel[sc.pixels[0]] as usize];
                let far = region
                    .pixels
                    .iter()
                    .map(|&i| ((i % w) as f32, (i / w) as f32))
                    .max_by(|a, b| {
                        let da = (a.0 - region.cx).powi(2) + (a.1 - region.cy).powi(2);
                        let db = (b.0 - region.cx).powi(2) + (b.1 - region.cy).powi(2);
                        da.total_cmp(&db)
                    })
                    .unwrap_or((region.cx, region.cy));
                for &i in &sc.pixels {
                    out[i] = o as u8;
                }
                let to = (
                    region.cx + (far.0 - region.cx) * 0.75,
                    region.cy + (far.1 - region.cy) * 0.75,
                );
                stamp(&mut out, sc, to, s as u8);
            }
        }
        Relation::NextTo | Relation::Between => {
            let comps = g.class_components(s);
            if let Some(sc) = comps.first() {
                let d1 = g.distance(|i| g.is(i, o));
                let d2 = g.distance(|i| g.is(i, o2.unwrap_or(o)));
                let best = (0..w * h)
                    .max_by(|&a, &b| d1[a].min(d2[a]).total_cmp(&d1[b].min(d2[b])))
                    .unwrap_or(0);
                erase_all(&mut out);
                let at = ((best % w) as f32, (best / w) as f32);
                if rel == Relation::Between {
                    stamp(&mut out, sc, at, s as u8);
                } else {
                    // a blob of the subject as large as fits away from the object
                    let lim = (0.03 * g.n).max(2.0);
                    let r = ((sc.pixels.len() as f32 / std::f32::consts::PI).sqrt())
                        .min(d1[best] - lim - 1.5)
                        .max(0.5);
                    for y in 0..h {
                        for x in 0..w {
                            if (x as f32 - at.0).powi(2) + (y as f32 - at.1).powi(2) <= r * r {
                                out[y * w + x] = s as u8;
                            }
                        }
                    }
                }
            }
        }
        Relation::ParallelTo => {
            let comps = g.class_components(s);
            if let Some(sc) = comps.first() {
                let src: Vec<bool> = (0..w * h).map(|i| g.is(i, s)).collect();
                erase_all(&mut out);
                // inverse mapping: a pixel is subject if turning it back lands on subject
                for y in 0..h {
                    for x in 0..w {
                        let (dx, dy) = (x as f32 - sc.cx, y as f32 - sc.cy);
                        let (sx, sy) = (sc.cx + dy, sc.cy - dx);
                        if sx >= 0.0
                            && sy >= 0.0
                            && (sx as usize) < w
                            && (sy as usize) < h
                            && src[sy as usize * w + sx as usize]
                        {
                            out[y * w + x] = s as u8;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
