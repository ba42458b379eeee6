//! What the benches that run workloads on the local stack share: a bench kind with a `/scale`
//! subresource and no pods (what the cluster does for it is the autoscaler's work alone), and
//! running a step for many targets at once.
#![allow(dead_code)] // each bench uses a different part

pub mod peers;

use std::time::Duration;

use futures::StreamExt;
use kube::api::ApiResource;

/// `workloads.bench.ebb.dev`: `spec.replicas` behind `/scale`, `status.replicas` and
/// `status.selector` as the test sets them.
const WORKLOAD_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: workloads.bench.ebb.dev }
spec:
  group: bench.ebb.dev
  names: { kind: Workload, plural: workloads, singular: workload }
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: { openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true } }
      subresources:
        status: {}
        scale: { specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector }
"#;

/// Installs the bench kind and returns its resource.
pub async fn install_workloads(client: &kube::Client) -> ApiResource {
    ebb::localstack::kube::apply_yaml(client, WORKLOAD_CRD, "bench")
        .await
        .expect("the bench CRD");
    tokio::time::sleep(Duration::from_secs(2)).await; // established
    ApiResource {
        group: "bench.ebb.dev".into(),
        version: "v1".into(),
        api_version: "bench.ebb.dev/v1".into(),
        kind: "Workload".into(),
        plural: "workloads".into(),
    }
}

/// Runs `f` for 0..n, 64 at a time.
pub async fn for_all<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// A bench's command line: `--flag value` pairs after cargo's own arguments.
pub struct Flags(Vec<String>);

impl Flags {
    /// `None` when the binary runs without `--bench`: `cargo test --benches` runs bench
    /// binaries that way, to check that they build, not to run them.
    pub fn parse() -> Option<Flags> {
        let args: Vec<String> = std::env::args().collect();
        args.iter().any(|a| a == "--bench").then_some(Flags(args))
    }

    /// The value after `flag`, if given.
    pub fn value(&self, flag: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1).cloned())
    }

    /// The comma-separated list after `flag`, or `default`'s.
    pub fn list(&self, flag: &str, default: &str) -> Vec<String> {
        self.value(flag)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}
