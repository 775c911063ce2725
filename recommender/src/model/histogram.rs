//! A decaying histogram with exponentially growing buckets, as upstream VPA's.
//!
//! Bucket `i` covers `[start(i), start(i+1))` with `start(i) = first * (ratio^i - 1) / (ratio - 1)`,
//! so the relative width of a bucket is about `ratio - 1` (5%). A sample's weight doubles every
//! `half_life` seconds of *sample time*: recent usage counts more than old usage, and the
//! weights are rescaled now and then so they never overflow. A percentile is the end of the
//! first bucket whose cumulative weight reaches it, so it errs high by at most one bucket.

/// Decaying exponential-bucket histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct DecayingHistogram {
    first: f64,
    ratio: f64,
    half_life: f64,
    reference: f64,
    weights: Vec<f64>,
    total: f64,
}

/// Rescale when a weight factor would exceed 2^RESCALE_EXPONENT.
const RESCALE_EXPONENT: f64 = 64.0;

impl DecayingHistogram {
    /// An empty histogram. `first` is the first bucket's width (e.g. 0.001 cores, 1 MiB),
    /// `ratio` the growth of bucket widths, `half_life` in seconds.
    pub fn new(first: f64, ratio: f64, half_life: f64) -> Self {
        Self {
            first,
            ratio,
            half_life,
            reference: f64::NAN,
            weights: Vec::new(),
            total: 0.0,
        }
    }

    /// CPU in cores: 1 millicore first bucket, 5% buckets, 24 h half-life.
    pub fn cpu() -> Self {
        Self::new(0.001, 1.05, 86_400.0)
    }

    /// Memory in bytes: 1 MiB first bucket, 5% buckets, 24 h half-life.
    pub fn memory() -> Self {
        Self::new(1024.0 * 1024.0, 1.05, 86_400.0)
    }

    fn index(&self, value: f64) -> usize {
        if value < self.first {
            return 0;
        }
        let i = ((value / self.first) * (self.ratio - 1.0) + 1.0).ln() / self.ratio.ln();
        // Bounded by the values' range: 1e12 bytes or 1e6 cores give a few hundred buckets.
        i.floor().clamp(0.0, 10_000.0) as usize
    }

    /// The start of bucket `i`.
    pub fn bucket_start(&self, i: usize) -> f64 {
        self.first * (self.ratio.powi(i as i32) - 1.0) / (self.ratio - 1.0)
    }

    /// Adds `value` with `weight` at `time` (seconds). Non-finite or negative input is ignored;
    /// returns whether the sample was taken.
    pub fn add(&mut self, value: f64, weight: f64, time: f64) -> bool {
        if !value.is_finite()
            || value < 0.0
            || !weight.is_finite()
            || weight <= 0.0
            || !time.is_finite()
        {
            return false;
        }
        if self.reference.is_nan() {
            self.reference = time;
        }
        let mut exponent = (time - self.reference) / self.half_life;
        if exponent > RESCALE_EXPONENT {
            // Move the reference forward: scale every weight down to match.
            let shift = exponent.floor();
            let scale = (-shift).exp2();
            for w in &mut self.weights {
                *w *= scale;
            }
            self.total *= scale;
            self.reference += shift * self.half_life;
            exponent -= shift;
        }
        let w = weight * exponent.exp2();
        let i = self.index(value);
        if self.weights.len() <= i {
            self.weights.resize(i + 1, 0.0);
        }
        self.weights[i] += w;
        self.total += w;
        true
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// The `p`-th percentile (0 < p <= 1): the end of the first bucket whose cumulative
    /// weight reaches `p` of the total. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let threshold = p.clamp(0.0, 1.0) * self.total;
        let mut cumulative = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            cumulative += w;
            if cumulative >= threshold && *w > 0.0 {
                return Some(self.bucket_start(i + 1));
            }
        }
        Some(self.bucket_start(self.weights.len()))
    }
}
