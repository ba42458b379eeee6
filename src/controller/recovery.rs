//! Targets resume as soon as the API server answers again after an outage.
//!
//! While the API server is down (a restart, an upgrade, a lost etcd quorum) every poll that
//! needs it fails, and each target backs off on its own, up to
//! [`super::errors::TRANSIENT_CAP`]. Left alone, a target whose retries all fell inside the
//! outage would wait out the rest of its backoff, up to a minute, after the server is back:
//! a minute of not scaling at the moment load that queued during the outage arrives. Retrying
//! every target more often instead would hit a recovering server with every target at once.
//!
//! So one probe stands in for every target's retries: while any target backs off, the
//! controller asks the API server's `/readyz` every [`PROBE_PERIOD`]. When it has found the
//! server not ready and then ready again, every target whose failures were met before that
//! answer is polled at once and its streak forgotten ([`super::errors::Failures::probed`]).
//! Targets that fail while the server answers (a conflict, a throttle, an aggregated API of
//! their own that is down) keep their backoff. The wake-ups still go through the controller's
//! bound on polls at once.
//!
//! Cost: one `GET /readyz` per replica per [`PROBE_PERIOD`], only while some target backs off
//! (`/readyz` is open to every client under the default RBAC, `system:public-info-viewer`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::crd::ScaledTarget;

/// How often the API server is probed while some target backs off.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// The targets to poll at once because the API server answers again; runs the probe for as
/// long as the stream is held.
pub(super) fn resumed(ctx: Arc<Context>) -> impl Stream<Item = ObjectRef<ScaledTarget>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = tokio::spawn(async move {
        loop {
            ctx.failures.any_backing_off().await;
            tokio::time::sleep(PROBE_PERIOD).await;
            let answered = api_server_ready(&ctx.client, PROBE_PERIOD).await;
            let resumed = ctx.failures.probed(answered, Instant::now());
            if resumed.is_empty() {
                continue;
            }
            tracing::info!(
                targets = resumed.len(),
                "the API server answers again: polling the targets that backed off through its outage"
            );
            ctx.metrics.resumed_after_outage(resumed.len());
            for (key, target) in resumed {
                ctx.resume(&key);
                if tx.send(target).is_err() {
                    return;
                }
            }
        }
    });
    // The probe stops with the controller (when the stream is dropped).
    let guard = AbortOnDrop(probe);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|target| (target, (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// True when the API server's `/readyz` answers `ok` within `within`.
pub(crate) async fn api_server_ready(client: &kube::Client, within: Duration) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    tokio::time::timeout(within, client.request_text(request))
        .await
        .is_ok_and(|answer| answer.is_ok_and(|body| body.trim() == "ok"))
}
