//! Aspect-ratio bucketing as kohya-ss (sd-scripts) does it: a list of `(width, height)`
//! buckets whose area is at most `resolution²`, both sides multiples of `reso_steps` between
//! `min_reso` and `max_reso`; each image goes to the bucket whose aspect ratio is nearest its
//! own, is resized to fill it and centre-cropped. Batches are drawn from one bucket at a time
//! ([`crate::data::sampler`]).

/// Bucket limits (kohya's `min_bucket_reso`, `max_bucket_reso`, `bucket_reso_steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketOptions {
    pub min_reso: usize,
    pub max_reso: usize,
    pub reso_steps: usize,
}

impl BucketOptions {
    /// kohya's defaults (256, 1024, 64 at 512 px) scaled to `resolution`; the step is
    /// rounded up to a multiple of `multiple` (the model's total down-sampling, so every
    /// bucket's latent passes through the UNet), the limits to multiples of the step.
    pub fn defaults(resolution: usize, multiple: usize) -> Self {
        let m = multiple.max(1);
        let steps = (64 * resolution).div_ceil(512).div_ceil(m).max(1) * m;
        Self {
            min_reso: (resolution / 2).div_ceil(steps).max(1) * steps,
            max_reso: (resolution * 2) / steps * steps,
            reso_steps: steps,
        }
    }

    /// Checks the limits against the resolution and the model's down-sampling `multiple`.
    pub fn validate(&self, resolution: usize, multiple: usize) -> Result<(), String> {
        if self.reso_steps == 0 || !self.reso_steps.is_multiple_of(multiple.max(1)) {
            return Err(format!(
                "bucket-reso-steps {} must be a positive multiple of {multiple} (the VAE's and UNet's down-sampling together)",
                self.reso_steps
            ));
        }
        if self.min_reso == 0 || self.min_reso > self.max_reso {
            return Err(format!(
                "min-bucket-reso {} must be positive and at most max-bucket-reso {}",
                self.min_reso, self.max_reso
            ));
        }
        if self.min_reso > resolution {
            return Err(format!(
                "min-bucket-reso {} is above the resolution {resolution}",
                self.min_reso
            ));
        }
        Ok(())
    }
}

/// The buckets `(width, height)`, sorted, for `resolution` (kohya's construction: the square
/// bucket, then for each width from `min_reso` in steps of `reso_steps` the tallest height
/// that keeps the area within `resolution²`, and its transpose).
pub fn bucket_resolutions(resolution: usize, o: &BucketOptions) -> Vec<(usize, usize)> {
    let area = resolution * resolution;
    let s = o.reso_steps.max(1);
    let mut v = vec![];
    let side = (resolution / s) * s;
    if side > 0 {
        v.push((side, side));
    }
    let mut w = o.min_reso;
    while w <= o.max_reso {
        let h = o.max_reso.min((area / w) / s * s);
        if h >= o.min_reso {
            v.push((w, h));
            v.push((h, w));
        }
        w += s;
    }
    v.sort();
    v.dedup();
    v
}

/// Index of the bucket whose aspect ratio (width / height) is nearest that of a
/// `width × height` image; the first such bucket on a tie.
pub fn nearest_bucket(buckets: &[(usize, usize)], width: usize, height: usize) -> usize {
    let ar = width as f64 / height as f64;
    let mut best = 0;
    let mut err = f64::INFINITY;
    for (i, &(w, h)) in buckets.iter().enumerate() {
        let e = (w as f64 / h as f64 - ar).abs();
        if e < err {
            err = e;
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_defaults_at_512_and_scaled() {
        let d = BucketOptions::defaults(512, 64);
        assert_eq!((d.min_reso, d.max_reso, d.reso_steps), (256, 1024, 64));
        let d = BucketOptions::defaults(1024, 64);
        assert_eq!((d.min_reso, d.max_reso, d.reso_steps), (512, 2048, 128));
        let d = BucketOptions::defaults(96, 4);
        assert_eq!((d.min_reso, d.max_reso, d.reso_steps), (48, 192, 12));
    }

    #[test]
    fn sd_buckets_at_512_are_kohyas() {
        // kohya's list at 512 / 256..1024 / 64 holds these (hand-derived from its rule)
        let b = bucket_resolutions(512, &BucketOptions::defaults(512, 64));
        for want in [
            (512, 512),
            (576, 448),
            (640, 384),
            (704, 320),
            (768, 320),
            (1024, 256),
        ] {
            assert!(
                b.contains(&want) && b.contains(&(want.1, want.0)),
                "{want:?}"
            );
        }
        assert!(b
            .iter()
            .all(|&(w, h)| w * h <= 512 * 512 && w % 64 == 0 && h % 64 == 0));
        // a 2:1 image: 704×320 (2.2) is nearer than 640×384 (1.67)
        assert_eq!(b[nearest_bucket(&b, 1000, 500)], (704, 320));
        assert_eq!(b[nearest_bucket(&b, 300, 300)], (512, 512));
    }
}
