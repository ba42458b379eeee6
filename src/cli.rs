//! Command line: one clap struct per subcommand, each flag with an env fallback where it makes
//! sense in a container. `run` dispatches; it is the only place that wires the layers together.

use clap::{Parser, Subcommand};

/// ebb: a custom-metrics autoscaler for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "ebb", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay a recorded load series through policies and print elasticity metrics.
    Backtest(Box<crate::backtest::BacktestArgs>),
    /// Start the local stack (Kubernetes control plane with kwok nodes, Prometheus, RabbitMQ)
    /// on loopback with a sample workload, and keep it up until Ctrl-C.
    Demo(crate::localstack::DemoArgs),
    /// Run in the cluster: the ScaledTarget controller (one replica acts, elected by a Lease).
    Serve(ServeArgs),
    /// Print the ScaledTarget CustomResourceDefinition (YAML), as `deploy/crd.yaml` holds it.
    Crd,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    match cli.command {
        Command::Backtest(args) => crate::backtest::run(&args),
        Command::Demo(args) => crate::localstack::run_demo(args),
        Command::Serve(args) => serve(args),
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml());
            Ok(())
        }
    }
}

/// Flags of `ebb serve`. The Kubernetes client comes from the usual places (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster service account).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "EBB_LEADER_ELECTION_NAMESPACE",
        default_value = "ebb-system"
    )]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "EBB_LEASE_NAME", default_value = "ebb-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name in a cluster).
    #[arg(long, env = "EBB_IDENTITY", default_value_t = default_identity())]
    pub identity: String,
    /// How long the Lease is valid without renewal, in seconds.
    #[arg(long, env = "EBB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Create or update the ScaledTarget CRD at start-up (development clusters).
    #[arg(long, env = "EBB_INSTALL_CRD")]
    pub install_crd: bool,
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("ebb-{}", std::process::id()))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        leader_election_namespace,
        lease_name,
        identity,
        lease_duration_seconds,
        install_crd,
    } = args;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .json()
        .init();
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = kube::Client::try_default().await?;
        if install_crd {
            crate::crd::install(&client).await?;
        }
        let leadership = crate::controller::leader::elect(
            client.clone(),
            crate::controller::leader::LeaseConfig {
                namespace: leader_election_namespace,
                name: lease_name,
                identity: identity.clone(),
                lease_duration: std::time::Duration::from_secs(lease_duration_seconds.max(1)),
            },
        );
        let reader = std::sync::Arc::new(crate::controller::DirectReader::new(client.clone()));
        let ctx = crate::controller::Context::new(client, reader, leadership, &identity);
        tokio::select! {
            _ = crate::controller::run(ctx) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
