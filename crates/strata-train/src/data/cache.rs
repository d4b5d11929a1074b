//! The on-disk latent cache (`--cache-latents`): one file per image and target size, named
//! by the sha256 of its key. The key holds everything that changes the latent: the VAE
//! weights' sha256, how images are decoded and resized ([`crate::data::DECODE_VERSION`]),
//! the bucket size and crop, and the image file's canonical path, length and modification
//! time. A changed key gives another file name, so an entry is never read for another key;
//! the file repeats its key, checked on reading. Files are written atomically
//! (`strata_io::atomic`), so a killed run leaves whole entries or none.
//!
//! File layout (little-endian): `STRATA-LATENT1\n`, key length (u32) and key (UTF-8),
//! channels, height, width (u32 each), then `channels × height × width` f32 values.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest;

const MAGIC: &[u8] = b"STRATA-LATENT1\n";

/// A cache folder bound to one VAE.
#[derive(Debug, Clone)]
pub struct LatentCache {
    pub dir: PathBuf,
    /// sha256 (hex) of the VAE weights file.
    pub vae_hash: String,
}

/// A cached latent `(channels, height, width)` and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedLatent {
    pub shape: (usize, usize, usize),
    pub data: Vec<f32>,
}

/// What identifies one image file's state: canonical path, length, modification time (ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: u128,
}

impl FileStamp {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let canon = std::fs::canonicalize(path)?;
        let m = std::fs::metadata(&canon)?;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(Self {
            path: canon,
            len: m.len(),
            mtime_ns,
        })
    }
}

impl LatentCache {
    /// The key of `file` encoded at `width × height` (resized to fill, centre-cropped).
    pub fn key(&self, file: &FileStamp, width: usize, height: usize) -> String {
        format!(
            "vae-sha256={};latent=posterior-mean*scaling-factor;decode={};size={width}x{height};crop=fill-centre;file={};len={};mtime-ns={}",
            self.vae_hash,
            crate::data::DECODE_VERSION,
            file.path.display(),
            file.len,
            file.mtime_ns
        )
    }

    /// The entry file of `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        let h = sha2::Sha256::digest(key.as_bytes());
        self.dir.join(format!("{:x}.latent", h))
    }

    /// The cached latent of `key`, if present and whole; a file holding another key or cut
    /// short counts as absent.
    pub fn read(&self, key: &str) -> Option<CachedLatent> {
        let mut f = std::fs::File::open(self.path(key)).ok()?;
        let mut buf = vec![];
        f.read_to_end(&mut buf).ok()?;
        parse(&buf, key)
    }

    /// Stores a latent under `key` (atomic write).
    pub fn write(&self, key: &str, lat: &CachedLatent) -> std::io::Result<PathBuf> {
        let (c, h, w) = lat.shape;
        assert_eq!(c * h * w, lat.data.len(), "latent shape and data disagree");
        let mut b = Vec::with_capacity(MAGIC.len() + 16 + key.len() + 4 * lat.data.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        for d in [c, h, w] {
            b.extend_from_slice(&(d as u32).to_le_bytes());
        }
        for v in &lat.data {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let p = self.path(key);
        strata_io::atomic::write(&p, &b)?;
        Ok(p)
    }
}

fn parse(buf: &[u8], key: &str) -> Option<CachedLatent> {
    let rest = buf.strip_prefix(MAGIC)?;
    let u32_at = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let kl = u32_at(rest, 0)?;
    let stored = rest.get(4..4 + kl)?;
    if stored != key.as_bytes() {
        return None;
    }
    let rest = &rest[4 + kl..];
    let (c, h, w) = (u32_at(rest, 0)?, u32_at(rest, 4)?, u32_at(rest, 8)?);
    let body = rest.get(12..)?;
    if body.len() != 4 * c * h * w {
        return None;
    }
    let data = body
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes(x.try_into().expect("4 bytes")))
        .collect();
    Some(CachedLatent {
        shape: (c, h, w),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_keys_miss() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.png");
        std::fs::write(&img, b"x").unwrap();
        let c = LatentCache {
            dir: d.path().join("cache"),
            vae_hash: "ab".into(),
        };
        let st = FileStamp::of(&img).unwrap();
        let k = c.key(&st, 16, 8);
        let lat = CachedLatent {
            shape: (4, 2, 4),
            data: (0..32).map(|i| i as f32 * 0.5 - 3.0).collect(),
        };
        assert!(c.read(&k).is_none());
        c.write(&k, &lat).unwrap();
        assert_eq!(c.read(&k).unwrap(), lat);
        // another size, another VAE: other files, not read
        assert!(c.read(&c.key(&st, 8, 16)).is_none());
        let c2 = LatentCache {
            vae_hash: "cd".into(),
            ..c.clone()
        };
        assert!(c2.read(&c2.key(&st, 16, 8)).is_none());
        // a file holding another key (renamed into place by hand) is not used
        std::fs::copy(c.path(&k), c2.path(&c2.key(&st, 16, 8))).unwrap();
        assert!(c2.read(&c2.key(&st, 16, 8)).is_none());
        // a truncated entry is absent
        let bytes = std::fs::read(c.path(&k)).unwrap();
        std::fs::write(c.path(&k), &bytes[..bytes.len() - 4]).unwrap();
        assert!(c.read(&k).is_none());
    }
}
