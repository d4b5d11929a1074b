//! A fixed, tileable fractal value-noise table (computed once) and an integer hash for grain.

use std::sync::OnceLock;

pub const N: usize = 256;

fn hash2(x: u32, y: u32, salt: u32) -> u32 {
    let mut h = x
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
        .wrapping_add(salt.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h
}

/// Uniform in [-1, 1) from integer coordinates.
pub fn hashf(x: i32, y: i32, salt: u32) -> f32 {
    (hash2(x as u32, y as u32, salt) >> 8) as f32 / (1u32 << 23) as f32 - 1.0
}

fn table() -> &'static [f32] {
    static T: OnceLock<Vec<f32>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = vec![0f32; N * N];
        let mut amp = 1.0f32;
        let mut total = 0.0;
        for (oct, cell) in [64usize, 32, 16, 8, 4].into_iter().enumerate() {
            let cells = N / cell;
            for y in 0..N {
                for x in 0..N {
                    let gx = x / cell;
                    let gy = y / cell;
                    let fx = (x % cell) as f32 / cell as f32;
                    let fy = (y % cell) as f32 / cell as f32;
                    let sx = fx * fx * (3.0 - 2.0 * fx);
                    let sy = fy * fy * (3.0 - 2.0 * fy);
                    let v = |i: usize, j: usize| {
                        hashf((i % cells) as i32, (j % cells) as i32, 17 + oct as u32)
                    };
                    let a = v(gx, gy) + (v(gx + 1, gy) - v(gx, gy)) * sx;
                    let b = v(gx, gy + 1) + (v(gx + 1, gy + 1) - v(gx, gy + 1)) * sx;
                    t[y * N + x] += amp * (a + (b - a) * sy);
                }
            }
            total += amp;
            amp *= 0.55;
        }
        for v in &mut t {
            *v /= total;
        }
        // stretch to roughly [-1, 1]
        let m = t.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for v in &mut t {
            *v /= m;
        }
        t
    })
}

/// Smooth noise in [-1, 1] at table coordinates (wraps).
#[inline]
pub fn at(x: i32, y: i32) -> f32 {
    let t = table();
    t[((y as usize) & (N - 1)) * N + ((x as usize) & (N - 1))]
}
