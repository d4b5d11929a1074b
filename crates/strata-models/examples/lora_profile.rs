//! Where the time of a LoRA training step goes, on the CPU (tiny UNet, random frozen weights,
//! LoRA rank 4 on the attention projections, f32):
//!
//!     cargo run --release -p strata-models --example lora_profile -- [latent] [batch]
//!
//! (defaults 32 and 4: what `train_speed` trains at 64² images with the ×2 tiny VAE). Measures
//! forward and backward of the whole step (minimum of 5 interleaved rounds after a warm-up:
//! the machine may be shared, and interference only adds time), then attributes the
//! backward: the frozen-weight linear and convolution backward are timed inside their ops
//! (`ops::profile`); attention cores and group norms are replayed in isolation at the shapes
//! the step met (forward + backward, backward timed, minimum of 5). Also the step with candle's own
//! matmul/conv backward (frozen-weight gradients computed) and the attention core with the
//! unfused softmax, for the before/after ratios.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use strata_models::conditioning::Conditioning;
use strata_models::lora::{self, LoraConfig};
use strata_models::ops;
use strata_models::unet::{UNet2DConditionModel, UNetConfig};

/// The minimum: the machine is shared, and interference only ever adds time.
fn median(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let lat = args.first().copied().unwrap_or(32);
    let bs = args.get(1).copied().unwrap_or(4);
    let dev = Device::Cpu;
    let cfg = UNetConfig::tiny();
    let vm = VarMap::new();
    UNet2DConditionModel::new(cfg.clone(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let frozen = vm
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let mut unet = UNet2DConditionModel::new(
        cfg.clone(),
        VarBuilder::from_tensors(frozen, DType::F32, &dev),
    )?;
    lora::attach(&mut unet, &LoraConfig::new(4, 4.0))?;
    for (i, (_, a)) in lora::adapters(&unet).iter().enumerate() {
        // non-zero B so that every adapter carries gradient to A
        a.b.set(&Tensor::randn(0f32, 0.01, a.b.dims(), &dev)?)?;
        let _ = i;
    }
    let x = Tensor::randn(0f32, 1.0, (bs, 4, lat, lat), &dev)?;
    let noise = Tensor::randn(0f32, 1.0, (bs, 4, lat, lat), &dev)?;
    let t = Tensor::new(vec![500f32; bs], &dev)?;
    let c = Conditioning::Context(Tensor::randn(
        0f32,
        1.0,
        (bs, 77, cfg.cross_attention_dim),
        &dev,
    )?);
    let step = || -> Result<(f64, f64)> {
        let t0 = Instant::now();
        let pred = unet.forward(&x, &t, &c)?;
        let loss = (pred - &noise)?.sqr()?.mean_all()?;
        loss.to_scalar::<f32>()?;
        let f = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let g = loss.backward()?;
        drop(g);
        Ok((f, t1.elapsed().as_secs_f64()))
    };
    // interleaved rounds, candle's ops then ours, minimum of each
    let (mut fc, mut bc, mut fo, mut bo) = (vec![], vec![], vec![], vec![]);
    step()?;
    for _ in 0..5 {
        ops::set_frozen_ops(false);
        let (x, y) = step()?;
        fc.push(x);
        bc.push(y);
        ops::set_frozen_ops(true);
        let (x, y) = step()?;
        fo.push(x);
        bo.push(y);
    }
    let (f_candle, b_candle, f, b) = (median(fc), median(bc), median(fo), median(bo));
    // one profiled step
    ops::profile::take();
    ops::profile::enable(true);
    // the profiled step with the smallest backward of 3
    let mut best = (f64::INFINITY, vec![], 0.0, 0.0);
    for _ in 0..3 {
        let (_, bp) = step()?;
        let (sh, l, c) = ops::profile::take();
        if bp < best.0 {
            best = (bp, sh, l, c);
        }
    }
    ops::profile::enable(false);
    let (b_prof, shapes, lin_bwd, conv_bwd) = best;

    // replay attention cores and group norms at the shapes met
    let replay_attention = |q: &[usize], k: &[usize], fused: bool| -> Result<f64> {
        let qv = Var::from_tensor(&Tensor::randn(0f32, 1.0, q, &dev)?)?;
        let kv = Var::from_tensor(&Tensor::randn(0f32, 1.0, k, &dev)?)?;
        let vv = Var::from_tensor(&Tensor::randn(0f32, 1.0, k, &dev)?)?;
        let scale = 1.0 / (q[3] as f64).sqrt();
        let mut ts = vec![];
        for _ in 0..5 {
            let y = if fused {
                strata_models::unet::blocks::attention(
                    qv.as_tensor(),
                    kv.as_tensor(),
                    vv.as_tensor(),
                    scale,
                )?
            } else {
                let s = (qv.as_tensor().matmul(&kv.as_tensor().t()?)? * scale)?;
                ops::softmax_last_dim_unfused(&s)?.matmul(vv.as_tensor())?
            };
            let l = y.sum_all()?;
            let t0 = Instant::now();
            l.backward()?;
            ts.push(t0.elapsed().as_secs_f64());
        }
        Ok(median(ts))
    };
    let mut att = 0.0;
    let mut att_unfused = 0.0;
    let mut gn = 0.0;
    let (mut n_att, mut n_gn) = (0, 0);
    for (kind, d) in &shapes {
        match *kind {
            "attention" => {
                att += replay_attention(&d[0], &d[1], true)?;
                att_unfused += replay_attention(&d[0], &d[1], false)?;
                n_att += 1;
            }
            "group_norm" => {
                let xv = Var::from_tensor(&Tensor::randn(0f32, 1.0, d[0].as_slice(), &dev)?)?;
                let ch = d[0][1];
                let w = Tensor::ones(ch, DType::F32, &dev)?;
                let bb = Tensor::zeros(ch, DType::F32, &dev)?;
                let mut ts = vec![];
                for _ in 0..3 {
                    let l = ops::group_norm(xv.as_tensor(), cfg.norm_num_groups, &w, &bb, 1e-5)?
                        .sum_all()?;
                    let t0 = Instant::now();
                    l.backward()?;
                    ts.push(t0.elapsed().as_secs_f64());
                }
                gn += median(ts);
                n_gn += 1;
            }
            _ => {}
        }
    }
    let ms = |s: f64| s * 1e3;
    println!(
        "LoRA step, tiny UNet, batch {bs}, latent {lat}x{lat}, context 77, f32, {} threads",
        candle_core::utils::get_num_threads()
    );
    println!();
    println!("| part | ms | share of backward |");
    println!("|---|---|---|");
    println!("| forward | {:.1} | |", ms(f));
    println!("| backward (profiled step) | {:.1} | 100% |", ms(b_prof));
    let pct = |x: f64| 100.0 * x / b_prof;
    println!(
        "| conv input-gradient (frozen kernels) | {:.1} | {:.0}% |",
        ms(conv_bwd),
        pct(conv_bwd)
    );
    println!(
        "| linear input-gradient (frozen weights) | {:.1} | {:.0}% |",
        ms(lin_bwd),
        pct(lin_bwd)
    );
    println!(
        "| attention cores ×{n_att} (QKᵀ, softmax, ·V; replayed) | {:.1} | {:.0}% |",
        ms(att),
        pct(att)
    );
    println!(
        "| group norms ×{n_gn} (replayed) | {:.1} | {:.0}% |",
        ms(gn),
        pct(gn)
    );
    let rest = b_prof - conv_bwd - lin_bwd - att - gn;
    println!(
        "| rest (LoRA A/B, layer norms, GEGLU, SiLU, adds, time embedding) | {:.1} | {:.0}% |",
        ms(rest.max(0.0)),
        pct(rest.max(0.0))
    );
    println!();
    println!("backward (min of 5, unprofiled): {:.1} ms", ms(b));
    println!(
        "candle's own matmul/conv backward (frozen-weight gradients computed): forward {:.1} ms, backward {:.1} ms; frozen ops backward speed-up {:.2}x, step {:.2}x",
        ms(f_candle), ms(b_candle), b_candle / b, (f_candle + b_candle) / (f + b)
    );
    println!(
        "attention cores backward with the unfused softmax: {:.1} ms; fused softmax op {:.2}x faster",
        ms(att_unfused), att_unfused / att
    );
    Ok(())
}
