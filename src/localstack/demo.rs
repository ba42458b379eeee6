//! `ebb demo`: the local stack with a sample workload, for people to look at.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

use super::process::wait_until;
use super::{Stack, StackError, StackOptions};

/// Flags of `ebb demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds instead of waiting for Ctrl-C (for scripted runs).
    #[arg(long, value_name = "SECONDS")]
    pub exit_after: Option<u64>,
    /// Replicas of the sample Deployment.
    #[arg(long, default_value_t = 2)]
    pub replicas: i32,
}

const NAMESPACE: &str = "demo";
const SAMPLE_APP: &str = "sample-app";

/// Runs the demo on its own tokio runtime.
pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!("starting the local stack (control plane, Prometheus, RabbitMQ)...");
    let started = std::time::Instant::now();
    let stack = Stack::start(StackOptions::all()).await?;
    let kube = stack
        .kube
        .as_ref()
        .expect("the demo starts the control plane");
    kube.create_namespace(NAMESPACE).await?;
    let client = kube.client().await?;
    let deployments = Api::<Deployment>::namespaced(client, NAMESPACE);
    deployments
        .create(&PostParams::default(), &workload(SAMPLE_APP, args.replicas))
        .await?;
    let ready = wait_until(Duration::from_secs(60), || async {
        deployments
            .get(SAMPLE_APP)
            .await
            .is_ok_and(|d| d.status.and_then(|s| s.ready_replicas).unwrap_or(0) == args.replicas)
    })
    .await;
    if !ready {
        return Err(StackError::Timeout(format!("{NAMESPACE}/{SAMPLE_APP} to be Ready")).into());
    }
    let bin = super::control_plane_bin().await?;
    let prometheus = stack.prometheus.as_ref().expect("started");
    let rabbitmq = stack.rabbitmq.as_ref().expect("started");
    println!(
        "\nebb local stack is up ({:.1} s); Deployment {NAMESPACE}/{SAMPLE_APP} has {} Ready pods.\n\
         \n  export KUBECONFIG={}\n  export PATH={}:$PATH\n  kubectl -n {NAMESPACE} get deploy,pods -o wide\n\
         \n  Prometheus:  {}\n  RabbitMQ:    {} (guest/guest), AMQP {}\n  Logs:        {}\n",
        started.elapsed().as_secs_f64(),
        args.replicas,
        kube.admin_kubeconfig.display(),
        bin.display(),
        prometheus.url(),
        rabbitmq.management_url(),
        rabbitmq.amqp_url(),
        stack.dir().display(),
    );
    match args.exit_after {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => {
            println!("Press Ctrl-C to stop everything.");
            tokio::signal::ctrl_c().await?;
        }
    }
    eprintln!("stopping the local stack...");
    drop(stack);
    Ok(())
}

/// A Deployment of `replicas` pods labelled `app: <name>`: the workload the demo and the
/// tests scale (kwok runs its pods; the image is never pulled).
pub fn workload(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": name, "image": format!("registry.example/{name}:1") }] }
            }
        }
    }))
    .expect("a valid Deployment")
}
