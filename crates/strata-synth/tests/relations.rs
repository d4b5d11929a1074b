//! The relation checker against the generator's positives and constructed negatives.
//! `cargo test -p strata-synth --test relations -- --nocapture` prints the table.

use std::collections::BTreeMap;

use strata_synth::{check, generate, negative, MaskView, Relation, SceneClass};

#[test]
fn checker_table_all_correct() {
    // relation -> (positives, positives judged true, negatives, negatives judged false)
    let mut table: BTreeMap<Relation, [usize; 4]> =
        Relation::ALL.iter().map(|&r| (r, [0; 4])).collect();
    let mut failures = Vec::new();
    for size in [64u32, 128, 256] {
        for seed in 0..10u64 {
            for class in SceneClass::ALL {
                let scene = generate(class, size, seed * 1000 + size as u64);
                let view = scene.mask_view();
                for t in &scene.triples {
                    let rel = Relation::parse(&t.relation).unwrap();
                    let row = table.get_mut(&rel).unwrap();
                    let v = check(&view, t).unwrap();
                    row[0] += 1;
                    if v.holds {
                        row[1] += 1;
                    } else {
                        failures.push(format!(
                            "positive {class:?} size {size} seed {seed} {t:?}: {}",
                            v.detail
                        ));
                    }
                    let neg = negative(&view, t).unwrap();
                    let nv = check(
                        &MaskView::new(size as usize, size as usize, &neg).unwrap(),
                        t,
                    )
                    .unwrap();
                    row[2] += 1;
                    if !nv.holds {
                        row[3] += 1;
                    } else {
                        failures.push(format!(
                            "negative {class:?} size {size} seed {seed} {t:?}: {}",
                            nv.detail
                        ));
                    }
                }
            }
        }
    }
    println!("\nrelation checker on generated positives and constructed negatives (sizes 64/128/256, 10 seeds, 11 classes)");
    println!("| relation | positives | judged holds | negatives | judged fails | accuracy |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (rel, r) in &table {
        let acc = (r[1] + r[3]) as f64 / (r[0] + r[2]).max(1) as f64 * 100.0;
        println!(
            "| {} | {} | {} | {} | {} | {:.1} % |",
            rel.id(),
            r[0],
            r[1],
            r[2],
            r[3],
            acc
        );
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    for (rel, r) in &table {
        assert!(
            r[0] >= 6,
            "relation {} generated only {} times",
            rel.id(),
            r[0]
        );
    }
    assert!(
        failures.is_empty(),
        "{} checker disagreements",
        failures.len()
    );
}
