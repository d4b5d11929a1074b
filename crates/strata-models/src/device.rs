//! Where a model runs: `cpu`, `cuda` (the first GPU) or `cuda:N`, as every command's
//! `--device` option and the `device` key of a training config spell it.
//!
//! One parser for the whole workspace, so `generate`, `train`, `eval`, `demo` and `serve`
//! accept the same spellings and give the same error when a GPU is asked for and there is
//! none (a build without the `cuda` feature, or a machine without a driver).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ModelError;

/// A device named on the command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (threads: `CANDLE_NUM_THREADS`, else every core).
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device. A CUDA device in a build without the `cuda` feature, or on a
    /// machine where CUDA cannot start, is an error that says which and what to do.
    pub fn open(self) -> Result<Device, ModelError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::Config {
                        field: "device".into(),
                        what: format!(
                            "{self}: this strata was built without CUDA; build it with `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu"
                        ),
                    });
                }
                Device::new_cuda(n).map_err(|e| ModelError::Config {
                    field: "device".into(),
                    what: format!(
                        "{self}: CUDA could not start GPU {n} ({e}); check `nvidia-smi` lists it, or use --device cpu"
                    ),
                })
            }
        }
    }

    /// True for a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let err = || {
            format!("unknown device {s:?}: use cpu, cuda or cuda:N (N = the GPU's number, from 0)")
        };
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map(DeviceSpec::Cuda).map_err(|_| err()),
                None => Err(err()),
            },
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        for bad in ["cuda:", "cuda:-1", "metal", "cuda:x", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("cpu, cuda or cuda:N"), "{bad}: {e}");
        }
        for d in [DeviceSpec::Cpu, DeviceSpec::Cuda(0), DeviceSpec::Cuda(2)] {
            assert_eq!(d.to_string().parse::<DeviceSpec>(), Ok(d));
        }
    }

    #[test]
    fn cuda_without_cuda_says_what_to_do() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        let e = DeviceSpec::Cuda(1).open().unwrap_err().to_string();
        assert!(e.contains("cuda:1") && e.contains("--features cuda"), "{e}");
    }

    #[test]
    fn serde_as_string() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct C {
            device: DeviceSpec,
        }
        let c: C = toml_like(r#"{"device":"cuda:1"}"#);
        assert_eq!(c.device, DeviceSpec::Cuda(1));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"device":"cuda:1"}"#);
        assert!(serde_json::from_str::<C>(r#"{"device":"tpu"}"#).is_err());
    }

    fn toml_like<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_str(s).unwrap()
    }
}
