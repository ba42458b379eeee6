//! Counters of the controller's own work: polls, Kubernetes API requests, scaling actions and
//! the decision loop's lag (how late a poll starts past its interval). Lock-free and of fixed
//! size, so that recording costs nothing on the hot path. REPLACE AT MERGE: register these with
//! `telemetry`'s prometheus-client registry under the `ebb_controller_` prefix.

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
    lag: Box<[AtomicU64]>,
}

impl Default for ControllerStats {
    fn default() -> Self {
        Self {
            polls: AtomicU64::new(0),
            api_requests: AtomicU64::new(0),
            actions: AtomicU64::new(0),
            lag: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
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
        for c in self.lag.iter() {
            c.store(0, Ordering::Relaxed);
        }
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
}
