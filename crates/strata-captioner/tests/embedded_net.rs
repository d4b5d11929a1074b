//! The embedded captioner's convolution (shifted views + matrix product) against candle's own
//! `conv2d` as the independent reference: outputs and gradients, 3×3 and 1×1, to 1e-4.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use strata_captioner::embedded::net::{upsample2x, Conv};

fn det(shape: &[usize], salt: usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0 - 1.0) * 0.7)
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn compare(k: usize) {
    let dev = Device::Cpu;
    let (b, cin, cout, h, w) = (2, 3, 5, 8, 6);
    let x = Var::from_vec(det(&[b, cin, h, w], 1), (b, cin, h, w), &dev).unwrap();
    let wt = Var::from_vec(det(&[cout, cin, k, k], 2), (cout, cin, k, k), &dev).unwrap();
    let bias = Var::from_vec(det(&[cout], 3), cout, &dev).unwrap();
    let mut ts = HashMap::new();
    ts.insert("weight".to_string(), wt.as_tensor().clone());
    ts.insert("bias".to_string(), bias.as_tensor().clone());
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    let conv = Conv::new(vb, cin, cout, k).unwrap();
    let ours = conv.forward(x.as_tensor()).unwrap();
    let reference = x
        .as_tensor()
        .conv2d(wt.as_tensor(), k / 2, 1, 1, 1)
        .unwrap()
        .broadcast_add(&bias.as_tensor().reshape((1, cout, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(ours.dims(), reference.dims());
    assert!(max_diff(&ours, &reference) < 1e-4, "forward k={k}");
    // gradients of a weighted sum
    let r = Tensor::from_vec(det(&[b, cout, h, w], 4), (b, cout, h, w), &dev).unwrap();
    let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = (&reference * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("input", &x), ("weight", &wt), ("bias", &bias)] {
        let a = g_ours.get(v.as_tensor()).unwrap();
        let c = g_ref.get(v.as_tensor()).unwrap();
        assert!(max_diff(a, c) < 1e-4, "gradient of {name}, k={k}");
    }
}

#[test]
fn conv3x3_matches_candle_conv2d() {
    compare(3);
}

#[test]
fn conv1x1_matches_candle_conv2d() {
    compare(1);
}

#[test]
fn upsample2x_repeats_each_pixel_and_sums_gradients() {
    let dev = Device::Cpu;
    let x = Var::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &dev).unwrap();
    let u = upsample2x(x.as_tensor()).unwrap();
    assert_eq!(
        u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
    );
    // used twice: gradients of both uses add up (4 copies each → 4 + 4·2)
    let l = (u.sum_all().unwrap() + (u * 2.0).unwrap().sum_all().unwrap()).unwrap();
    let g = l.backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(gx, vec![12.0; 4]);
}
