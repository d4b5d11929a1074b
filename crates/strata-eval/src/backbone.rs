//! The ImageNet convolution stacks LPIPS and GSHPS read features from, in torchvision's
//! layout (`features.N.weight` / `features.N.bias`): AlexNet (`alexnet-owt-7be5be79.pth`)
//! and VGG16 (`vgg16-397923af.pth`), or a safetensors file with the same keys.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::EvalError;
use crate::weights::{read_tensors, take_checked};

/// Which torchvision network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    AlexNet,
    Vgg16,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::AlexNet => "AlexNet",
            Arch::Vgg16 => "VGG16",
        }
    }

    /// The `features` Sequential as torchvision builds it.
    fn layers(self) -> Vec<Layer> {
        use Layer::*;
        match self {
            Arch::AlexNet => vec![
                Conv {
                    idx: 0,
                    cin: 3,
                    cout: 64,
                    k: 11,
                    stride: 4,
                    pad: 2,
                },
                Relu,
                Pool { k: 3, s: 2 },
                Conv {
                    idx: 3,
                    cin: 64,
                    cout: 192,
                    k: 5,
                    stride: 1,
                    pad: 2,
                },
                Relu,
                Pool { k: 3, s: 2 },
                Conv {
                    idx: 6,
                    cin: 192,
                    cout: 384,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                Relu,
                Conv {
                    idx: 8,
                    cin: 384,
                    cout: 256,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                Relu,
                Conv {
                    idx: 10,
                    cin: 256,
                    cout: 256,
                    k: 3,
                    stride: 1,
                    pad: 1,
                },
                Relu,
                Pool { k: 3, s: 2 },
            ],
            Arch::Vgg16 => {
                let cfg: [i32; 18] = [
                    64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512,
                    -1,
                ];
                let mut out = Vec::new();
                let mut cin = 3;
                for c in cfg {
                    if c < 0 {
                        out.push(Pool { k: 2, s: 2 });
                    } else {
                        out.push(Conv {
                            idx: out.len(),
                            cin,
                            cout: c as usize,
                            k: 3,
                            stride: 1,
                            pad: 1,
                        });
                        out.push(Relu);
                        cin = c as usize;
                    }
                }
                out
            }
        }
    }

    /// Indices (in `features`) after which LPIPS reads its five taps: the ReLUs closing
    /// each of the lpips package's slices.
    pub fn lpips_taps(self) -> [usize; 5] {
        match self {
            Arch::AlexNet => [1, 4, 7, 9, 11],
            Arch::Vgg16 => [3, 8, 15, 22, 29],
        }
    }

    /// Channels of the five LPIPS taps.
    pub fn lpips_channels(self) -> [usize; 5] {
        match self {
            Arch::AlexNet => [64, 192, 384, 256, 256],
            Arch::Vgg16 => [64, 128, 256, 512, 512],
        }
    }

    /// `(name, shape)` of every parameter of `features`.
    pub fn param_spec(self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for l in self.layers() {
            if let Layer::Conv {
                idx, cin, cout, k, ..
            } = l
            {
                out.push((format!("features.{idx}.weight"), vec![cout, cin, k, k]));
                out.push((format!("features.{idx}.bias"), vec![cout]));
            }
        }
        out
    }

    /// Guess the network from a file's tensors (VGG16 has `features.28.weight`).
    pub fn detect(tensors: &HashMap<String, Tensor>) -> Option<Arch> {
        if tensors.contains_key("features.28.weight") {
            Some(Arch::Vgg16)
        } else if tensors.contains_key("features.10.weight") {
            Some(Arch::AlexNet)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Layer {
    Conv {
        idx: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    },
    Relu,
    Pool {
        k: usize,
        s: usize,
    },
}

/// The `features` stack with its weights.
#[derive(Debug, Clone)]
pub struct Backbone {
    pub arch: Arch,
    layers: Vec<Layer>,
    params: HashMap<String, Tensor>,
    /// File the weights came from (for the protocol line).
    pub source: String,
}

impl Backbone {
    /// From a torchvision `.pth` or a safetensors file; the network is detected from the keys
    /// unless `arch` is given. Classifier tensors are ignored.
    pub fn load(path: &Path, arch: Option<Arch>, device: &Device) -> Result<Self, EvalError> {
        let t = read_tensors(path, device)?;
        Self::from_tensors(&t, path, arch)
    }

    pub fn from_tensors(
        t: &HashMap<String, Tensor>,
        path: &Path,
        arch: Option<Arch>,
    ) -> Result<Self, EvalError> {
        let arch = match arch.or_else(|| Arch::detect(t)) {
            Some(a) => a,
            None => {
                return Err(EvalError::WeightsFile {
                    path: path.to_path_buf(),
                    what: "holds neither torchvision AlexNet nor VGG16 `features.N.weight` tensors; give alexnet-owt-7be5be79.pth or vgg16-397923af.pth (or a safetensors file with the same keys)".into(),
                })
            }
        };
        let params = take_checked(t, &arch.param_spec(), path, arch.name())?;
        Ok(Backbone {
            arch,
            layers: arch.layers(),
            params,
            source: path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        })
    }

    /// Run `features[0..=last]` on `x` (N×3×H×W, already normalised), returning the outputs
    /// after each index in `taps` (in order).
    pub fn forward_taps(&self, x: &Tensor, taps: &[usize]) -> Result<Vec<Tensor>, EvalError> {
        let last = taps.iter().copied().max().unwrap_or(0);
        let mut h = x.clone();
        let mut out = Vec::with_capacity(taps.len());
        for (i, l) in self.layers.iter().enumerate().take(last + 1) {
            h = match *l {
                Layer::Conv {
                    idx, stride, pad, ..
                } => {
                    let w = &self.params[&format!("features.{idx}.weight")];
                    let b = &self.params[&format!("features.{idx}.bias")];
                    h.conv2d(w, pad, stride, 1, 1)?
                        .broadcast_add(&b.reshape((1, (), 1, 1))?)?
                }
                Layer::Relu => h.relu()?,
                Layer::Pool { k, s } => {
                    let (_, _, hh, ww) = h.dims4()?;
                    if hh < k || ww < k {
                        return Err(EvalError::FeatureShape {
                            what: format!(
                                "{} input too small: {hh}x{ww} before a {k}x{k} pooling at features.{i}",
                                self.arch.name()
                            ),
                        });
                    }
                    h.max_pool2d_with_stride((k, k), (s, s))?
                }
            };
            if taps.contains(&i) {
                out.push(h.clone());
            }
        }
        Ok(out)
    }

    /// The whole `features` stack (VGG16: 512×7×7 at 224²).
    pub fn features(&self, x: &Tensor) -> Result<Tensor, EvalError> {
        let last = self.layers.len() - 1;
        Ok(self.forward_taps(x, &[last])?.remove(0))
    }
}
