//! Debug aid: element areas of one scene. `cargo run -p strata-synth --example probe -- CLASS SIZE SEED`
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let class = strata_synth::SceneClass::parse(&a[0]).unwrap();
    let scene = strata_synth::generate(class, a[1].parse().unwrap(), a[2].parse().unwrap());
    for e in strata_synth::Element::ALL {
        let n = scene.areas()[*e as usize];
        if n > 0 {
            println!("{:>16} {n}", e.name());
        }
    }
    println!("{:?}\n{}", scene.caption, scene.caption.flat());
}
