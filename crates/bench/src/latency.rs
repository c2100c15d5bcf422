//! Latency histograms (HdrHistogram, microseconds) that can cross process boundaries.
//!
//! Workers send their histograms to the coordinator as the list of non-empty buckets,
//! which is exact at the histogram's precision and needs no serialisation feature.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest recordable latency: one minute. Longer ones are clamped to it.
const MAX_MICROS: u64 = 60_000_000;
/// Three significant digits: 0.1% resolution at every magnitude.
const SIGFIG: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low 1, high >= 2, sigfig <= 5).
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, SIGFIG)
            .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
        Self { hist }
    }

    /// Records one latency; values outside 1 µs .. 60 s are clamped.
    pub fn record_micros(&mut self, micros: u64) {
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The non-empty buckets, for sending to another process.
    pub fn to_buckets(&self) -> Buckets {
        Buckets(
            self.hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Rebuilds a histogram from [`Latency::to_buckets`].
    pub fn from_buckets(buckets: &Buckets) -> Self {
        let mut latency = Self::new();
        for &(value, count) in &buckets.0 {
            let _ = latency.hist.record_n(value.clamp(1, MAX_MICROS), count);
        }
        latency
    }

    /// The usual percentiles, in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.hist.len(),
            mean: self.hist.mean() / 1000.0,
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
        }
    }
}

/// A histogram's non-empty buckets: `(value in µs, count)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Buckets(pub Vec<(u64, u64)>);

/// Summary of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_merge() {
        let mut a = Latency::new();
        for v in 1..=1000 {
            a.record_micros(v * 10);
        }
        let b = Latency::from_buckets(&a.to_buckets());
        assert_eq!(b.count(), 1000);
        let (pa, pb) = (a.percentiles(), b.percentiles());
        assert!((pa.p99 - pb.p99).abs() < 0.05, "{pa:?} vs {pb:?}");
        let mut c = Latency::new();
        c.merge(&a);
        c.merge(&b);
        assert_eq!(c.count(), 2000);
        assert!((c.percentiles().p50 - 5.0).abs() < 0.05);
    }
}
