//! Leader election with a `coordination.k8s.io/v1` Lease: one replica acts, all replicas watch,
//! read metrics and serve the API.
//!
//! The holder renews every `lease_duration / 3`; it stops acting as soon as a renewal has not
//! succeeded for `renew_deadline` (shorter than the lease), so that by the time another replica
//! may take the expired lease, the old holder has already stopped: no action is taken twice.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Where the lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
}

/// Whether this process holds the lease now.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// True while this process holds the lease.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Leadership that never changes (a single replica without election, tests).
    pub fn fixed(leader: bool) -> Self {
        let (tx, rx) = watch::channel(leader);
        // Keep the sender alive for the process's life: the value never changes.
        std::mem::forget(tx);
        Self(rx)
    }
}

/// Starts the election loop on the current runtime and returns the leadership flag.
pub fn elect(client: kube::Client, config: LeaseConfig) -> Leadership {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(client, config, tx));
    Leadership(rx)
}

async fn run(client: kube::Client, config: LeaseConfig, tx: watch::Sender<bool>) {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let retry = config.lease_duration / 3;
    let renew_deadline = config.lease_duration * 2 / 3;
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => {
                if !*tx.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.name, "became leader");
                }
                last_renewed = Some(tokio::time::Instant::now());
                let _ = tx.send(true);
            }
            Ok(false) => {
                if *tx.borrow() {
                    tracing::warn!(identity = %config.identity, "lost the lease to another replica");
                }
                last_renewed = None;
                let _ = tx.send(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if last_renewed.is_none_or(|t| t.elapsed() >= renew_deadline) && *tx.borrow() {
                    tracing::warn!(identity = %config.identity, "renew deadline passed: stop acting");
                    let _ = tx.send(false);
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// One round: create the lease, renew ours, or take over an expired one. `Ok(true)`: we hold it.
async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_secs = config.lease_duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(t)), Some(d)) => *t + SignedDuration::from_secs(d as i64) < now,
        _ => true,
    };
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs);
    // `replace` carries the resourceVersion we read: if another replica wrote in between, the
    // API server answers 409 and this round is lost, never both.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
