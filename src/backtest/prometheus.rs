//! A load series straight from Prometheus for `ebb backtest --prometheus`: the source's range
//! query ([`PrometheusSource::range`], the one the adaptive backfill uses: split into requests
//! under Prometheus' 11,000-points limit), placed on the query's step grid (steps the server
//! returns no sample for are missing, never zero).

use std::time::Duration;

use super::trace::Trace;
use super::{BacktestError, Result};
use crate::engine::adaptive::{AdaptiveConfig, AdaptiveState};
use crate::source::PrometheusConfig;
use crate::source::prometheus::PrometheusSource;

/// One range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    /// Base URL of the Prometheus server.
    pub url: String,
    /// PromQL; it must return one series (aggregate with `sum(...)` otherwise).
    pub query: String,
    /// Unix seconds of the first step.
    pub start: i64,
    /// Unix seconds of the last step (inclusive).
    pub end: i64,
    /// Step in seconds.
    pub step_seconds: i64,
}

/// Run the query and return its one series as `(unix milliseconds, value)`, in time order;
/// samples that are not finite are left out. No sample at all is an error, never zero load.
pub async fn fetch(q: &RangeQuery) -> Result<Vec<(i64, f64)>> {
    let fail = |message: String| BacktestError::Prometheus {
        url: q.url.clone(),
        message,
    };
    if q.step_seconds <= 0 || q.end < q.start {
        return Err(BacktestError::InvalidArg {
            flag: "--start/--end/--step",
            message: format!(
                "need start <= end and a positive step, got {}..{} step {}",
                q.start, q.end, q.step_seconds
            ),
        });
    }
    let config = PrometheusConfig {
        address: q.url.clone(),
        query: q.query.clone(),
        auth_secret_ref: None,
        timeout: None,
        empty_as: None,
        ..Default::default()
    };
    let source = config
        .resolve(None)
        .and_then(|query| PrometheusSource::connect(&query))
        .map_err(|e| fail(e.to_string()))?;
    let points = source
        .range(q.start, q.end, Duration::from_secs(q.step_seconds as u64))
        .await
        .map_err(|e| fail(e.to_string()))?;
    if points.is_empty() {
        return Err(fail(format!(
            "the query {:?} returned no samples from {} to {}",
            q.query, q.start, q.end
        )));
    }
    Ok(points.into_iter().map(|(s, v)| (s * 1000, v)).collect())
}

/// Rebuild the adaptive learning state from the query's history, as after a restart: the
/// readings are replayed in order on the query's step, so the same history gives the same
/// learned values.
pub async fn backfill_state(
    q: &RangeQuery,
    config: AdaptiveConfig,
    target_per_pod: f64,
) -> Result<AdaptiveState> {
    let samples = fetch(q).await?;
    Ok(AdaptiveState::backfill(
        config,
        q.step_seconds * 1000,
        target_per_pod,
        samples,
    )?)
}

/// Place samples on the grid `start, start + step, ..., end`; grid points without a sample
/// (or with a non-finite one) are missing.
pub fn to_trace(samples: &[(i64, f64)], start: i64, end: i64, step_seconds: i64) -> Trace {
    let steps = ((end - start) / step_seconds + 1).max(0) as usize;
    let mut values = vec![None; steps];
    for &(ms, v) in samples {
        let offset = ms - start * 1000;
        let step_ms = step_seconds * 1000;
        if offset < 0 || offset % step_ms != 0 || !v.is_finite() {
            continue;
        }
        if let Some(slot) = values.get_mut((offset / step_ms) as usize) {
            *slot = Some(v);
        }
    }
    Trace {
        start,
        step_seconds,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_on_the_grid_and_gaps_stay_missing() {
        let t = to_trace(&[(0, 1.0), (120_000, 3.0), (90_000, 9.0)], 0, 180, 60);
        assert_eq!(t.values, vec![Some(1.0), None, Some(3.0), None]);
    }
}
