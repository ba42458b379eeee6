//! The I/O half of learning from history: a metric that starts learning asks for a backfill
//! (`engine::learning::Backfill`); this fetches the metric's history from its source and hands
//! the rebuilt state to the target's machine, off the poll.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::crd::{Metric, ScaledTarget};
use crate::engine::adaptive::AdaptiveState;
use crate::engine::learning::Backfill;

/// Backfills running at once in one controller (each one range query and one replay).
pub const MAX_CONCURRENT_BACKFILLS: usize = 4;
/// A backfill not done by then is given up; learning goes on from the live readings.
pub const BACKFILL_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the backfill a step asked for, on its own task.
pub(super) fn spawn(ctx: &Arc<Context>, st: &ScaledTarget, job: Backfill) {
    // `job.index` counts the decided metrics (a formula alone, which has no history of its own).
    if let Some(metric) = st.spec.decided_metrics().get(job.index) {
        let namespace = kube::ResourceExt::namespace(st).unwrap_or_default();
        let run = run_backfill(ctx.clone(), super::key(st), namespace, metric.clone(), job);
        tokio::spawn(run);
    }
}

/// Fetches a metric's history and rebuilds its learning state from it, off the poll: bounded
/// by [`MAX_CONCURRENT_BACKFILLS`] and [`BACKFILL_TIMEOUT`]; the replay runs on a blocking
/// thread. A failure is logged and learning goes on from the live readings alone.
pub(super) async fn run_backfill(
    ctx: Arc<Context>,
    key: String,
    namespace: String,
    metric: Metric,
    job: Backfill,
) {
    let started = std::time::Instant::now();
    let abandon = |ctx: &Context| {
        if let Some(t) = ctx.targets.lock().expect("targets").get_mut(&key) {
            t.machine.learning_mut().abandon(job.index, job.epoch);
        }
    };
    let Ok(_permit) = ctx.backfills.clone().acquire_owned().await else {
        return abandon(&ctx);
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let interval = Duration::from_millis(job.interval.max(1) as u64);
    let fetch = ctx
        .reader
        .history(&namespace, &metric, interval, job.window, now);
    let points = match tokio::time::timeout(BACKFILL_TIMEOUT, fetch).await {
        Ok(Ok(Some(points))) => points,
        Ok(Ok(None)) => return abandon(&ctx),
        Ok(Err(e)) => {
            tracing::warn!(scaledtarget = %key, metric = %metric.name, error = %e,
                "adaptive backfill failed; learning from live readings");
            return abandon(&ctx);
        }
        Err(_) => {
            tracing::warn!(scaledtarget = %key, metric = %metric.name,
                "adaptive backfill timed out; learning from live readings");
            return abandon(&ctx);
        }
    };
    let count = points.len();
    let (config, target, interval) = (job.config.clone(), job.static_target, job.interval);
    let replay = tokio::task::spawn_blocking(move || {
        AdaptiveState::backfill(
            config,
            interval,
            target,
            points.into_iter().map(|(s, v)| (s * 1000, v)),
        )
    })
    .await;
    let state = match replay {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            tracing::warn!(scaledtarget = %key, error = %e, "adaptive backfill failed");
            return abandon(&ctx);
        }
        Err(e) => {
            tracing::warn!(scaledtarget = %key, error = %e, "adaptive backfill failed");
            return abandon(&ctx);
        }
    };
    let installed = ctx
        .targets
        .lock()
        .expect("targets")
        .get_mut(&key)
        .is_some_and(|t| {
            t.machine
                .learning_mut()
                .install(job.index, job.epoch, state)
        });
    tracing::info!(
        scaledtarget = %key, metric = %metric.name, points = count, installed,
        elapsed_ms = started.elapsed().as_millis() as u64, "adaptive state backfilled"
    );
}
