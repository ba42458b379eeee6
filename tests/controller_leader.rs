//! Two `ebb serve` processes: one holds the Lease and acts; kill it and the other takes over
//! within the lease duration; no action is taken twice. Two electors, one with a skewed clock,
//! never lead at once.

mod controller_common;
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use controller_common::*;
use ebb::localstack::process::ManagedProcess;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use serde_json::json;
use support::{eventually, kube_client, shared_stack, unique_namespace};

const LEASE_SECONDS: u64 = 4;

/// The user the `ebb serve` processes run as: bound to deploy/rbac.yaml's ClusterRole only.
const USER: &str = "ebb-controller-test";

/// Applies deploy/rbac-controller.yaml's ClusterRole, bound to [`USER`] instead of the ServiceAccount.
async fn grant_deployed_rbac(client: &kube::Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Patch, PatchParams};
    use serde::Deserialize;
    let text = include_str!("../deploy/rbac-controller.yaml");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let role: ClusterRole = from_json(
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap()
            .clone(),
    );
    let mut binding: ClusterRoleBinding = from_json(
        docs.iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .unwrap()
            .clone(),
    );
    binding.subjects = Some(vec![from_json(json!({
        "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": USER
    }))]);
    let pp = PatchParams::apply("ebb-test").force();
    Api::<ClusterRole>::all(client.clone())
        .patch("ebb-controller", &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch("ebb-controller", &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
}

fn serve(identity: &str, ns: &str, dir: &std::path::Path) -> ManagedProcess {
    let kube = shared_stack().kube.as_ref().unwrap();
    let kubeconfig = kube
        .kubeconfig_for(USER, None)
        .expect("a kubeconfig for the test user");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args([
        "serve",
        "--identity",
        identity,
        "--leader-election-namespace",
        ns,
        "--lease-name",
        "ebb",
        "--lease-duration-seconds",
        &LEASE_SECONDS.to_string(),
        // Two processes on one host: each its own /metrics port.
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .env("KUBECONFIG", kubeconfig)
    .env("RUST_LOG", "info");
    ManagedProcess::spawn(identity, cmd, &dir.join(format!("{identity}.log")))
        .expect("spawn ebb serve")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("ebb").await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn the_standby_takes_over_within_the_lease_and_nothing_is_done_twice() {
    let stack = shared_stack();
    let client = kube_client().await;
    ebb::crd::install(&client).await.unwrap();
    grant_deployed_rbac(&client).await;
    let ns = unique_namespace("leader");
    stack
        .kube
        .as_ref()
        .unwrap()
        .create_namespace(&ns)
        .await
        .unwrap();
    let rabbit = stack.rabbitmq.as_ref().unwrap();
    rabbit_secret(&client, &ns, rabbit).await;
    deployment(&client, &ns, "worker", 1).await;
    let queue = format!("{ns}-orders");
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 0).await;
    let mut st = backlog_target("worker", &queue, "Direct", 10, "1s");
    st["spec"]["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": 0 } });
    scaled_target(&client, &ns, st).await;

    let dir = tempfile::tempdir().unwrap();
    let mut a = serve("ebb-a", &ns, dir.path());
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    eventually(20 * SECOND, "ebb-a holds the lease", || async {
        (holder(&leases).await? == "ebb-a").then_some(())
    })
    .await;
    let _b = serve("ebb-b", &ns, dir.path());
    tokio::time::sleep(2 * SECOND).await; // b is up and watching, as a standby

    publish(&channel, &queue, 50).await;
    eventually(20 * SECOND, "5 replicas", || async {
        (replicas(&client, &ns, "worker").await == 5).then_some(())
    })
    .await;
    tokio::time::sleep(3 * SECOND).await; // several more polls by both processes
    let scaled = events(&client, &ns, "Scaled").await;
    assert_eq!(scaled.len(), 1, "one action, by one replica: {scaled:#?}");
    assert_eq!(scaled[0].reporting_instance.as_deref(), Some("ebb-a"));
    assert!(
        scaled[0].series.is_none(),
        "the action was repeated: {:?}",
        scaled[0].series
    );

    a.stop(Duration::ZERO);
    let killed = Instant::now();
    // Takeover within the lease duration, plus one retry period and slack for a loaded machine.
    eventually(
        Duration::from_secs(LEASE_SECONDS * 2 + 4),
        "ebb-b holds the lease",
        || async { (holder(&leases).await? == "ebb-b").then_some(()) },
    )
    .await;
    eprintln!(
        "takeover {:?} after the kill (lease {LEASE_SECONDS} s)",
        killed.elapsed()
    );

    purge(rabbit, &queue).await;
    eventually(20 * SECOND, "back to 1 replica, by ebb-b", || async {
        (replicas(&client, &ns, "worker").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(2 * SECOND).await;
    let scaled = events(&client, &ns, "Scaled").await;
    assert_eq!(scaled.len(), 2, "{scaled:#?}");
    let down = scaled
        .iter()
        .find(|e| e.note.as_deref().unwrap_or("").contains("from 5 to 1"))
        .unwrap();
    assert_eq!(down.reporting_instance.as_deref(), Some("ebb-b"));
}

/// Two electors in this process, one with its clock skewed by `skew`: while the first renews,
/// the second never leads; once the first stops renewing, the second takes over one lease
/// duration after it last saw the Lease change, timed on its own clock. At no sample (every
/// 5 ms over the whole run) do both lead.
async fn skewed_election(client: &kube::Client, ns: &str, lease: &str, skew: SignedDuration) {
    use ebb::controller::leader::{LeaseConfig, SystemClock, start};
    let config = |identity: &str| LeaseConfig::new(ns, lease, identity, LEASE);
    let a = start(client.clone(), config("a"));
    let leases = Api::<Lease>::namespaced(client.clone(), ns);
    eventually(10 * SECOND, "a leads", || async {
        (a.leadership.is_leader() && holder_of(&leases, lease).await? == "a").then_some(())
    })
    .await;
    let mut b_config = config("b");
    b_config.clock = Arc::new(SystemClock::skewed(skew));
    let retry = b_config.retry_period;
    let b = start(client.clone(), b_config);

    let (a_flag, b_flag) = (a.leadership.clone(), b.leadership.clone());
    let overlaps = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (overlaps, samples) = (overlaps.clone(), samples.clone());
        async move {
            loop {
                if a_flag.is_leader() && b_flag.is_leader() {
                    overlaps.fetch_add(1, Relaxed);
                }
                samples.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    // Three lease durations of a renewing: b must never lead.
    let until = Instant::now() + LEASE * 3;
    while Instant::now() < until {
        assert!(
            !b.leadership.is_leader(),
            "b (skew {skew}) took a renewed lease"
        );
        assert!(a.leadership.is_leader(), "a lost a lease it renews");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // a stops renewing (as a process that dies); b takes over after a lease duration of its own.
    a.stop();
    let stopped = Instant::now();
    let b_leads = b.leadership.clone();
    eventually(LEASE * 3, "b takes over", || async {
        b_leads.is_leader().then_some(())
    })
    .await;
    let takeover = stopped.elapsed();
    eprintln!(
        "skew {skew}: takeover {takeover:?} after a stopped (lease {LEASE:?}, retry {retry:?})"
    );
    assert_eq!(holder_of(&leases, lease).await.as_deref(), Some("b"));
    // b last saw the record change at a's last renewal or later, at most one retry period
    // before the stop: it may not take over sooner than a lease duration after that.
    assert!(
        takeover >= LEASE - retry,
        "b took over {takeover:?} after a stopped: sooner than the lease allows"
    );
    // ... and comes in time: a lease duration plus its jittered tries.
    assert!(takeover <= LEASE * 2, "b took {takeover:?} to take over");
    tokio::time::sleep(Duration::from_millis(200)).await;
    sampler.abort();
    b.stop();
    assert!(samples.load(Relaxed) > 1000, "too few samples");
    assert_eq!(overlaps.load(Relaxed), 0, "both led at once (skew {skew})");
}

async fn holder_of(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

const LEASE: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_replica_whose_clock_is_an_hour_off_neither_steals_the_lease_nor_waits_for_ever() {
    let client = kube_client().await;
    let ns = unique_namespace("skew");
    shared_stack()
        .kube
        .as_ref()
        .unwrap()
        .create_namespace(&ns)
        .await
        .unwrap();
    // Ahead: comparing the holder's renewTime with this clock would see the lease expired at
    // once (two leaders). Behind: it would never see it expire (no takeover).
    skewed_election(&client, &ns, "ahead", SignedDuration::from_hours(1)).await;
    skewed_election(&client, &ns, "behind", SignedDuration::from_hours(-1)).await;
}
