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
    /// Run ebb on the local stack (control plane with kwok nodes, Prometheus, RabbitMQ, all on
    /// loopback): sample workloads under a load cycle, scaled live, until Ctrl-C.
    Demo(crate::demo::DemoArgs),
    /// Run in the cluster: the ScaledTarget controller (one replica acts, elected by a Lease).
    Serve(ServeArgs),
    /// Show every ScaledTarget: metrics against static and learned targets, replicas, state,
    /// the last scaling action (from the cluster in KUBECONFIG).
    Status(crate::status::StatusArgs),
    /// Print the ScaledTarget CustomResourceDefinition (YAML), as `deploy/crd.yaml` holds it.
    Crd,
    /// Convert another autoscaler's objects to ScaledTargets (`ebb import keda FILE|-`).
    Import(crate::import::ImportArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    match cli.command {
        Command::Backtest(args) => crate::backtest::run(&args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Status(args) => crate::status::run(args),
        Command::Serve(args) => serve(args),
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml());
            Ok(())
        }
        Command::Import(args) => {
            let code = crate::import::run(&args)?;
            if code != 0 {
                std::process::exit(code);
            }
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
    /// Namespaces whose Secrets ebb may read (comma-separated): a ScaledTarget elsewhere that
    /// names a Secret shows SourcesHealthy=False SecretRestricted. Empty (the default): every
    /// namespace, which needs the cluster-wide grant; see docs/deploy.md.
    #[arg(long, env = "EBB_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// Create or update the ScaledTarget CRD at start-up (development clusters).
    #[arg(long, env = "EBB_INSTALL_CRD")]
    pub install_crd: bool,
    /// Where the external metrics API listens (HTTPS; the APIService's Service points here).
    #[arg(long, env = "EBB_API_LISTEN", default_value = "0.0.0.0:6443")]
    pub api_listen: std::net::SocketAddr,
    /// Where ebb's own /metrics listens (plain HTTP, also `/livez`), with or without the API.
    #[arg(long, env = "EBB_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: std::net::SocketAddr,
    /// The API's serving certificate (PEM, leaf first); reloaded when it changes. Without it
    /// the external metrics API is not served (modes Direct and Shadow need none).
    #[arg(long, env = "EBB_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, env = "EBB_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<std::path::PathBuf>,
    /// Log as JSON lines (for log pipelines) instead of text.
    #[arg(long, env = "EBB_LOG_JSON")]
    pub log_json: bool,
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
        secret_namespaces,
        install_crd,
        api_listen,
        metrics_listen,
        tls_cert_file,
        tls_private_key_file,
        log_json,
    } = args;
    crate::telemetry::init_tracing(log_json);
    // The external metrics API answers the HPA controller's reads from memory. On the
    // controller's runtime its requests would queue behind a poll round's tasks (thousands of
    // decisions at once); on a thread of its own, the OS shares the CPU between them.
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ebb-api")
        .enable_all()
        .build()?;
    let api_handle = api_runtime.handle().clone();
    let served = tokio::runtime::Runtime::new()?.block_on(async move {
        use std::sync::Arc;
        let client = kube::Client::try_default().await?;
        if install_crd {
            crate::crd::install(&client).await?;
        }
        // Every metric is registered before the telemetry is shared.
        let mut telemetry = crate::telemetry::Telemetry::new();
        let api_metrics = crate::api::ApiMetrics::default();
        api_metrics.register(telemetry.registry_mut());
        let leadership = crate::controller::leader::elect(
            client.clone(),
            crate::controller::leader::LeaseConfig::new(
                &leader_election_namespace,
                &lease_name,
                &identity,
                std::time::Duration::from_secs(lease_duration_seconds.max(1)),
            ),
        );
        let controller_metrics = crate::controller::metrics::ControllerMetrics::default();
        controller_metrics.register(telemetry.registry_mut(), &identity, leadership.clone());
        let telemetry = Arc::new(telemetry);
        let collector = crate::collect::Collector::start(telemetry.clone(), Default::default());
        let secret_access = crate::source::SecretAccess::from_namespaces(&secret_namespaces);
        let reader = Arc::new(
            crate::controller::CollectReader::new(client.clone(), collector)
                .with_secret_access(secret_access.clone()),
        );
        let ctx = crate::controller::Context::with_metrics(
            client.clone(),
            reader,
            leadership,
            &identity,
            controller_metrics,
            secret_access,
        );

        let metrics_text: crate::api::server::MetricsText = {
            let telemetry = telemetry.clone();
            Arc::new(move |out: &mut dyn std::fmt::Write| telemetry.encode_into(out))
        };
        // Every replica serves the API from what its own controller publishes.
        let api = match (tls_cert_file, tls_private_key_file) {
            (Some(cert_file), Some(key_file)) => {
                let store = Arc::new(crate::api::store::MetricStore::new());
                // Ready once the ScaledTarget watch listed and every target was read once.
                let readiness = Arc::new(crate::api::Readiness::default());
                ctx.publish_to(store.clone(), readiness.clone());
                let auth = Arc::new(crate::api::auth::Auth::from_cluster(client.clone()).await?);
                tokio::spawn({
                    let (auth, client) = (auth.clone(), client.clone());
                    async move { auth.refresh_from_cluster(client).await }
                });
                let state = crate::api::ApiState {
                    store,
                    auth,
                    readiness,
                    metrics: api_metrics,
                };
                let config = crate::api::server::ServeConfig {
                    listen: api_listen,
                    metrics_listen,
                    cert_file,
                    key_file,
                    cert_reload_interval: std::time::Duration::from_secs(10),
                };
                Some(api_handle.spawn(crate::api::server::serve(config, state, metrics_text)))
            }
            _ => {
                tracing::warn!(
                    "no --tls-cert-file: the external metrics API is not served (modes Direct and Shadow need none)"
                );
                let listener = tokio::net::TcpListener::bind(metrics_listen).await?;
                Some(tokio::spawn(crate::api::server::serve_metrics(listener, metrics_text)))
            }
        };
        tokio::select! {
            _ = crate::controller::run(ctx.clone()) => {}
            Some(r) = async { match api { Some(h) => Some(h.await), None => None } } => {
                r??;
            }
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated() => {}
        }
        // The audit trail's last Events may still be queued: give them a moment to land
        // (well inside a pod's default 30 s grace period).
        let left = ctx.writer.flush(std::time::Duration::from_secs(5)).await;
        if left > 0 {
            tracing::warn!(left, "stopping with Events or status writes not yet written");
        }
        Ok::<_, anyhow::Error>(())
    });
    // Dropped outside any runtime's context (dropping one inside another panics).
    api_runtime.shutdown_background();
    served
}

/// SIGTERM, how Kubernetes stops a pod. In a container ebb is PID 1, which the kernel gives
/// no default action: without a handler the pod would wait out its grace period.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
