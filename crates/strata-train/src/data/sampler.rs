//! Which items make up micro-batch `k`: a pure function of `(seed, salt, k)`, so a resumed
//! run draws exactly the batches the uninterrupted one did, and the prefetch workers can
//! compute batches ahead of the step that needs them.
//!
//! Without buckets, epoch `e` is a permutation of the items seeded by `(seed, salt, e)` and
//! micro-batches run through the concatenated epochs (a batch may span two epochs). With
//! buckets, each epoch shuffles the items of every bucket, cuts each bucket into batches
//! (the last one of a bucket may be short) and shuffles the list of batches, so every batch
//! holds one bucket.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A 64-bit mix of a seed and two counters (splitmix64 finaliser).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The batch plan of one data set.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub seed: u64,
    /// Separates independent streams (DreamBooth's class images use their own).
    pub salt: u64,
    pub batch_size: usize,
    /// Number of items (repeats counted).
    pub n: usize,
    /// With bucketing: the items of each bucket, in item order (empty buckets left out).
    pub buckets: Option<Vec<Vec<usize>>>,
}

impl Sampler {
    /// Item indices of micro-batch `k`.
    pub fn batch(&self, k: u64) -> Vec<usize> {
        match &self.buckets {
            None => self.flat_batch(k),
            Some(b) => {
                let per = self.batches_per_epoch(b);
                let e = k / per;
                let mut batches = self.bucket_epoch(b, e);
                batches.swap_remove((k % per) as usize)
            }
        }
    }

    /// The item order of epoch `e` (for bucketed runs: its batches one after the other).
    pub fn epoch_order(&self, e: u64) -> Vec<usize> {
        match &self.buckets {
            None => self.permutation(e),
            Some(b) => self.bucket_epoch(b, e).concat(),
        }
    }

    /// Micro-batches in one epoch (fractional without buckets: a batch may span epochs).
    pub fn micro_batches_per_epoch(&self) -> f64 {
        match &self.buckets {
            None => self.n as f64 / self.batch_size.max(1) as f64,
            Some(b) => self.batches_per_epoch(b) as f64,
        }
    }

    /// The epoch micro-batch `k` belongs to.
    pub fn epoch_of(&self, k: u64) -> u64 {
        match &self.buckets {
            None => k * self.batch_size as u64 / self.n.max(1) as u64,
            Some(b) => k / self.batches_per_epoch(b),
        }
    }

    fn permutation(&self, e: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.n).collect();
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed,
            0x0DA7A ^ self.salt,
            e,
        )));
        v
    }

    fn flat_batch(&self, k: u64) -> Vec<usize> {
        let bs = self.batch_size as u64;
        let n = self.n as u64;
        let mut out = vec![];
        let mut cache: Option<(u64, Vec<usize>)> = None;
        for p in k * bs..(k + 1) * bs {
            let e = p / n;
            if cache.as_ref().map(|c| c.0) != Some(e) {
                cache = Some((e, self.permutation(e)));
            }
            out.push(cache.as_ref().expect("set above").1[(p % n) as usize]);
        }
        out
    }

    fn batches_per_epoch(&self, b: &[Vec<usize>]) -> u64 {
        let bs = self.batch_size.max(1);
        b.iter()
            .map(|v| v.len().div_ceil(bs) as u64)
            .sum::<u64>()
            .max(1)
    }

    fn bucket_epoch(&self, b: &[Vec<usize>], e: u64) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 0xB0C7E7 ^ self.salt, e));
        let mut batches = vec![];
        for items in b {
            let mut v = items.clone();
            v.shuffle(&mut rng);
            for c in v.chunks(self.batch_size.max(1)) {
                batches.push(c.to_vec());
            }
        }
        batches.shuffle(&mut rng);
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_batches_cover_each_epoch_once() {
        let s = Sampler {
            seed: 3,
            salt: 0,
            batch_size: 2,
            n: 6,
            buckets: None,
        };
        let mut seen: Vec<usize> = (0..3).flat_map(|k| s.batch(k)).collect();
        assert_eq!(seen, s.epoch_order(0));
        seen.sort();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        assert_eq!(s.epoch_of(3), 1);
    }

    #[test]
    fn bucket_batches_hold_one_bucket_and_cover_each_epoch_once() {
        let buckets = vec![vec![0, 2, 4, 6, 8], vec![1, 3], vec![5, 7, 9]];
        let s = Sampler {
            seed: 11,
            salt: 0,
            batch_size: 2,
            n: 10,
            buckets: Some(buckets.clone()),
        };
        // 3 + 1 + 2 batches per epoch
        assert_eq!(s.micro_batches_per_epoch(), 6.0);
        for e in 0..3u64 {
            let mut all = vec![];
            for k in e * 6..(e + 1) * 6 {
                let b = s.batch(k);
                assert!(
                    buckets.iter().any(|g| b.iter().all(|i| g.contains(i))),
                    "batch {k} mixes buckets: {b:?}"
                );
                all.extend(b);
            }
            all.sort();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
        // the same seed gives the same batches; another seed another order
        let again = s.clone();
        assert_eq!(s.batch(7), again.batch(7));
        let other = Sampler {
            seed: 12,
            ..s.clone()
        };
        assert_ne!(
            (0..6).map(|k| s.batch(k)).collect::<Vec<_>>(),
            (0..6).map(|k| other.batch(k)).collect::<Vec<_>>()
        );
    }
}
