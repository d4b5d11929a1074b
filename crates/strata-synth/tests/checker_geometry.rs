//! The checker on hand-drawn masks (independent of the generator): each relation on a
//! clear positive and a clear negative.

use strata_synth::{check, Element, MaskView, Relation, Triple};

const N: usize = 100;

struct M(Vec<u8>);

impl M {
    fn new() -> M {
        M(vec![Element::BareLand as u8; N * N])
    }
    fn fill(&mut self, e: Element, f: impl Fn(f32, f32) -> bool) -> &mut M {
        for y in 0..N {
            for x in 0..N {
                if f(x as f32 + 0.5, y as f32 + 0.5) {
                    self.0[y * N + x] = e as u8;
                }
            }
        }
        self
    }
    fn holds(&self, t: &Triple) -> bool {
        check(&MaskView::new(N, N, &self.0).unwrap(), t)
            .unwrap()
            .holds
    }
}

fn disk(cx: f32, cy: f32, r: f32) -> impl Fn(f32, f32) -> bool {
    move |x, y| (x - cx).powi(2) + (y - cy).powi(2) <= r * r
}

fn ring(cx: f32, cy: f32, r0: f32, r1: f32) -> impl Fn(f32, f32) -> bool {
    move |x, y| {
        let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        d > r0 && d <= r1
    }
}

#[test]
fn surrounds() {
    let t = Triple::new(Relation::Surrounds, Element::Tree, Element::Pond);
    let mut m = M::new();
    m.fill(Element::Pond, disk(50.0, 50.0, 20.0))
        .fill(Element::Tree, ring(50.0, 50.0, 21.0, 25.0));
    assert!(m.holds(&t));
    let mut half = M::new();
    half.fill(Element::Pond, disk(50.0, 50.0, 20.0))
        .fill(Element::Tree, |x, y| {
            ring(50.0, 50.0, 21.0, 25.0)(x, y) && x < 50.0
        });
    assert!(!half.holds(&t));
    // far away ring does not count
    let mut far = M::new();
    far.fill(Element::Pond, disk(50.0, 50.0, 12.0))
        .fill(Element::Tree, ring(50.0, 50.0, 30.0, 34.0));
    assert!(!far.holds(&t));
}

#[test]
fn crosses_and_parallel() {
    let cross = Triple::new(Relation::Crosses, Element::Road, Element::Farmland);
    let mut m = M::new();
    m.fill(Element::Farmland, |_, _| true)
        .fill(Element::Road, |_, y| (y - 50.0).abs() < 3.0);
    assert!(m.holds(&cross));
    let mut dead_end = M::new();
    dead_end
        .fill(Element::Farmland, |_, _| true)
        .fill(Element::Road, |x, y| (y - 50.0).abs() < 3.0 && x < 60.0);
    assert!(!dead_end.holds(&cross));

    let par = Triple::new(Relation::ParallelTo, Element::Railway, Element::Road);
    let mut p = M::new();
    p.fill(Element::Road, |_, y| (y - 30.0).abs() < 3.0)
        .fill(Element::Railway, |_, y| (y - 60.0).abs() < 2.0);
    assert!(p.holds(&par));
    let mut q = M::new();
    q.fill(Element::Road, |_, y| (y - 30.0).abs() < 3.0)
        .fill(Element::Railway, |x, y| (x - 60.0).abs() < 2.0 && y > 40.0);
    assert!(!q.holds(&par));
}

#[test]
fn along_and_both_sides() {
    let along = Triple::new(Relation::Along, Element::Tree, Element::Road);
    let both = Triple::new(Relation::OnBothSidesOf, Element::Tree, Element::Road);
    let road = |_: f32, y: f32| (y - 50.0).abs() < 4.0;
    let mut one = M::new();
    one.fill(Element::Road, road).fill(Element::Tree, |x, y| {
        y > 55.0 && y < 60.0 && (x % 10.0) < 7.0
    });
    assert!(one.holds(&along));
    assert!(!one.holds(&both));
    let mut two = M::new();
    two.fill(Element::Road, road).fill(Element::Tree, |x, y| {
        ((y > 55.0 && y < 60.0) || (y > 40.0 && y < 45.0)) && (x % 10.0) < 7.0
    });
    assert!(two.holds(&along));
    assert!(two.holds(&both));
    let mut spot = M::new();
    spot.fill(Element::Road, road)
        .fill(Element::Tree, disk(10.0, 58.0, 4.0));
    assert!(!spot.holds(&along));
}

#[test]
fn middle_next_between() {
    let mid = Triple::new(Relation::InTheMiddleOf, Element::Fountain, Element::Plaza);
    let mut m = M::new();
    m.fill(Element::Plaza, |x, y| {
        (20.0..80.0).contains(&x) && (20.0..80.0).contains(&y)
    })
    .fill(Element::Fountain, disk(50.0, 50.0, 5.0));
    assert!(m.holds(&mid));
    let mut corner = M::new();
    corner
        .fill(Element::Plaza, |x, y| {
            (20.0..80.0).contains(&x) && (20.0..80.0).contains(&y)
        })
        .fill(Element::Fountain, disk(30.0, 30.0, 5.0));
    assert!(!corner.holds(&mid));

    let next = Triple::new(Relation::NextTo, Element::ParkingLot, Element::Building);
    let mut n = M::new();
    n.fill(Element::Building, |x, y| {
        (10.0..30.0).contains(&x) && (10.0..30.0).contains(&y)
    })
    .fill(Element::ParkingLot, |x, y| {
        (31.0..50.0).contains(&x) && (10.0..30.0).contains(&y)
    });
    assert!(n.holds(&next));
    let mut f = M::new();
    f.fill(Element::Building, |x, y| {
        (10.0..30.0).contains(&x) && (10.0..30.0).contains(&y)
    })
    .fill(Element::ParkingLot, |x, y| {
        (70.0..90.0).contains(&x) && (70.0..90.0).contains(&y)
    });
    assert!(!f.holds(&next));

    let btw = Triple::between(Element::Road, Element::Factory, Element::Warehouse);
    let mut b = M::new();
    b.fill(Element::Factory, |x, y| {
        (30.0..70.0).contains(&x) && (5.0..30.0).contains(&y)
    })
    .fill(Element::Warehouse, |x, y| {
        (30.0..70.0).contains(&x) && (70.0..95.0).contains(&y)
    })
    .fill(Element::Road, |_, y| (y - 50.0).abs() < 4.0);
    assert!(b.holds(&btw));
    let mut c = M::new();
    c.fill(Element::Factory, |x, y| {
        (30.0..70.0).contains(&x) && (5.0..30.0).contains(&y)
    })
    .fill(Element::Warehouse, |x, y| {
        (30.0..70.0).contains(&x) && (40.0..65.0).contains(&y)
    })
    .fill(Element::Road, |_, y| (y - 85.0).abs() < 4.0);
    assert!(!c.holds(&btw));
}
