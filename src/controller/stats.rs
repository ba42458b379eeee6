//! Counters of the controller's own work: polls, Kubernetes API requests, scaling actions and
//! the decision loop's lag (how late a poll starts past its interval). Lock-free and of fixed
//! size, so that recording costs nothing on the hot path; Prometheus reads them through
//! [`ControllerStats::snapshot`] when it scrapes (`super::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lag resolution and range: 10 ms buckets up to 60 s (later lags land in the last bucket).
const BUCKET_MS: u64 = 10;
const BUCKETS: usize = 6001;

/// The controller's counters.
pub struct ControllerStats {
    /// Polls (reconciles) run.
    pub polls: AtomicU64,
    /// Requests made to the Kubernetes API from the decision loop (watches not included).
    pub api_requests: AtomicU64,
    /// Replica changes applied (Direct) or reported (Shadow).
    pub actions: AtomicU64,
    /// Replica counts read from the watch instead of a GET of `/scale`.
    pub cached_scale_reads: AtomicU64,
    lag: Box<[AtomicU64]>,
    lag_sum_micros: AtomicU64,
}

/// Upper bounds (seconds) of the lag histogram Prometheus sees, coarser than the counters.
const LAG_BOUNDS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The counters at one instant, the lag as Prometheus histogram buckets (per bucket, not
/// cumulative; the last is +Inf).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub polls: u64,
    pub kube_requests: u64,
    pub lag_count: u64,
    pub lag_sum_seconds: f64,
    pub lag_buckets: Vec<(f64, u64)>,
}

impl std::fmt::Debug for ControllerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerStats")
            .field("polls", &self.polls)
            .field("api_requests", &self.api_requests)
            .field("actions", &self.actions)
            .finish_non_exhaustive()
    }
}

impl Default for ControllerStats {
    fn default() -> Self {
        Self {
            polls: AtomicU64::new(0),
            api_requests: AtomicU64::new(0),
            actions: AtomicU64::new(0),
            cached_scale_reads: AtomicU64::new(0),
            lag: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            lag_sum_micros: AtomicU64::new(0),
        }
    }
}

impl ControllerStats {
    /// Counts `n` API requests.
    pub fn requests(&self, n: u64) {
        self.api_requests.fetch_add(n, Ordering::Relaxed);
    }

    /// Records how late a poll started past its interval.
    pub fn record_lag(&self, lag: Duration) {
        let i = ((lag.as_millis() as u64) / BUCKET_MS).min(BUCKETS as u64 - 1) as usize;
        self.lag[i].fetch_add(1, Ordering::Relaxed);
        self.lag_sum_micros
            .fetch_add(lag.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counters now, with the lag re-bucketed onto [`LAG_BOUNDS`]: counter `i` holds lags
    /// below `(i + 1) * 10 ms`, so it belongs to the first bound at or above that.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut buckets: Vec<(f64, u64)> = LAG_BOUNDS
            .iter()
            .chain([&f64::INFINITY])
            .map(|&b| (b, 0))
            .collect();
        let mut count = 0;
        for (i, c) in self.lag.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            count += n;
            let upper = if i + 1 == BUCKETS {
                f64::INFINITY // the last counter is open-ended
            } else {
                ((i as u64 + 1) * BUCKET_MS) as f64 / 1000.0
            };
            // Bounds are sorted and end at +Inf: there is always one.
            let b = buckets.iter().position(|(le, _)| *le >= upper - 1e-9);
            buckets[b.unwrap_or(LAG_BOUNDS.len())].1 += n;
        }
        StatsSnapshot {
            polls: self.polls.load(Ordering::Relaxed),
            kube_requests: self.api_requests.load(Ordering::Relaxed),
            lag_count: count,
            lag_sum_seconds: self.lag_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            lag_buckets: buckets,
        }
    }

    /// The lag at quantile `q` (0..=1), to bucket resolution (upper bound); `None` before any
    /// poll was late or on time twice.
    pub fn lag_quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.lag.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_millis((i as u64 + 1) * BUCKET_MS));
            }
        }
        None
    }

    /// Zeroes every counter (benchmarks measure a window).
    pub fn reset(&self) {
        self.polls.store(0, Ordering::Relaxed);
        self.api_requests.store(0, Ordering::Relaxed);
        self.actions.store(0, Ordering::Relaxed);
        self.cached_scale_reads.store(0, Ordering::Relaxed);
        for c in self.lag.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.lag_sum_micros.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_lags() {
        let s = ControllerStats::default();
        assert_eq!(s.lag_quantile(0.99), None);
        for ms in 0..99 {
            s.record_lag(Duration::from_millis(ms));
        }
        s.record_lag(Duration::from_secs(2));
        assert_eq!(s.lag_quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(s.lag_quantile(0.99), Some(Duration::from_millis(100)));
        assert_eq!(s.lag_quantile(1.0), Some(Duration::from_millis(2010)));
        s.reset();
        assert_eq!(s.lag_quantile(0.99), None);
    }

    #[test]
    fn the_snapshot_rebuckets_the_lag_for_prometheus() {
        let s = ControllerStats::default();
        s.polls.fetch_add(3, Ordering::Relaxed);
        for ms in [0, 9, 10, 700, 61_000] {
            s.record_lag(Duration::from_millis(ms));
        }
        let snap = s.snapshot();
        assert_eq!(snap.polls, 3);
        assert_eq!(snap.lag_count, 5);
        assert!((snap.lag_sum_seconds - 61.719).abs() < 1e-6);
        let count = |le: f64| snap.lag_buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(count(0.01), 2, "0 and 9 ms are below 10 ms");
        assert_eq!(count(0.025), 1, "10 ms");
        assert_eq!(count(1.0), 1, "700 ms");
        assert_eq!(count(f64::INFINITY), 1, "past the last bound");
        assert_eq!(snap.lag_buckets.iter().map(|b| b.1).sum::<u64>(), 5);
    }
}
