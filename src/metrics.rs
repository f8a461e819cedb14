//! Monitoring primitives the library keeps, independent of any exporter: a lock-free latency
//! histogram and rejection counts by reason. `wattflow-pipelines` serves them (and the other
//! counters) as Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::RejectReason;

/// Upper bounds (seconds) of the default latency buckets: 1 ms to 60 s.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A histogram of durations with fixed buckets ([`LATENCY_BUCKETS_S`]), safe to update from
/// any thread without a lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative), then above the last one.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations in the bucket)`, ascending, the last bound
    /// `f64::INFINITY` (not cumulative: an observation counts in one bucket only).
    pub buckets: Vec<(f64, u64)>,
    /// Σ of the observations, seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = LATENCY_BUCKETS_S
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&self.buckets)
            .map(|(&bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            buckets,
            sum_s: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Refusals counted by [`RejectReason::kind`].
#[derive(Debug, Default)]
pub struct RejectCounts {
    counts: [AtomicU64; RejectReason::KINDS.len()],
}

impl RejectCounts {
    /// Counts one refusal.
    pub fn count(&self, reason: &RejectReason) {
        let kind = reason.kind();
        if let Some(i) = RejectReason::KINDS.iter().position(|k| *k == kind) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(kind, count)` for every kind, in [`RejectReason::KINDS`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RejectReason::KINDS
            .iter()
            .zip(&self.counts)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The count of one kind.
    pub fn get(&self, kind: &str) -> u64 {
        RejectReason::KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_each_observation_in_one_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(120));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.001, 1));
        assert_eq!(s.buckets.iter().find(|(b, _)| *b == 0.05).unwrap().1, 1);
        assert_eq!(s.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(
            *s.buckets.last().unwrap(),
            (f64::INFINITY, 1),
            "120 s is above every bound"
        );
        assert!((s.sum_s - 120.0305).abs() < 1e-6);
    }

    #[test]
    fn rejections_are_counted_by_kind() {
        let c = RejectCounts::default();
        c.count(&RejectReason::PartiallyMissing);
        c.count(&RejectReason::TooLate {
            ts: String::new(),
            watermark: String::new(),
        });
        c.count(&RejectReason::TooLate {
            ts: String::new(),
            watermark: String::new(),
        });
        assert_eq!(c.get("too_late"), 2);
        assert_eq!(c.get("partially_missing"), 1);
        assert_eq!(c.snapshot().len(), RejectReason::KINDS.len());
    }
}
