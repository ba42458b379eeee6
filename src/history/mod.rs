//! A query's past values from its source's own history (for Prometheus, the chunked range query
//! of [`crate::source::prometheus::PrometheusSource::range`]), on the grid of a step: what the
//! adaptive rules learn from after a restart (the controller's `MetricReader::history`).
//! ebb keeps no history of its own: Prometheus is the store.

use std::time::Duration;

use crate::source::{Points, Result, Source};

/// The points of `window` ending at `now` (Unix seconds) at `step` (whole seconds, at least 1),
/// from `source`'s own history, on the grid of multiples of the step, so that two calls at
/// different times see the same points where they overlap. `Ok(None)` when the source keeps
/// no history (RabbitMQ).
pub async fn backfill(
    source: &dyn Source,
    window: Duration,
    now: i64,
    step: Duration,
) -> Result<Option<Points>> {
    let step = step.as_secs().max(1) as i64;
    let end = now.div_euclid(step) * step;
    let start = end - (window.as_secs() as i64).max(step) + step;
    match source.history(start, end, Duration::from_secs(step as u64)) {
        Some(fetch) => fetch.await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use futures::future::BoxFuture;

    /// Answers a history request with its own bounds, as two points.
    struct Bounds;

    impl Source for Bounds {
        fn fetch(&self) -> BoxFuture<'_, Result<f64>> {
            async { Ok(0.0) }.boxed()
        }

        fn history(
            &self,
            start: i64,
            end: i64,
            step: Duration,
        ) -> Option<BoxFuture<'_, Result<Points>>> {
            assert_eq!(step, Duration::from_secs(60));
            Some(async move { Ok(vec![(start, 0.0), (end, 0.0)]) }.boxed())
        }
    }

    #[test]
    fn the_window_ends_on_the_last_whole_step_and_holds_window_over_step_points() {
        let hour = Duration::from_secs(3600);
        let at = |now| {
            futures::executor::block_on(backfill(&Bounds, hour, now, Duration::from_secs(60)))
                .unwrap()
                .unwrap()
        };
        // 60 steps: 3000..=6540 for any `now` within the minute that ends at 6540.
        assert_eq!(at(6545), vec![(3000, 0.0), (6540, 0.0)]);
        assert_eq!(at(6599), at(6540));
    }
}
