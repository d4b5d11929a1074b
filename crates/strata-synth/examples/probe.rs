//! Debug aid: element areas of one scene. `cargo run -p strata-synth --example probe -- CLASS SIZE SEED [OUT.png]`
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
    if let Some(out) = a.get(3) {
        let p = std::path::Path::new(out);
        let side = scene.size as usize;
        let bytes = strata_image::encode_png_rgb8(p, side, side, &scene.rgb).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}
