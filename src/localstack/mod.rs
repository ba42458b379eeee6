//! The local stack: the real services ebb talks to in production, started on free loopback
//! ports for the demo and the tests, and stopped when dropped (or when the process exits, even
//! on a panic or a kill: see [`process`]).
//!
//! - [`kube::ControlPlane`]: etcd, kube-apiserver (aggregation layer on), kube-controller-manager,
//!   kube-scheduler and kwok, built from Go modules by `scripts/build-control-plane.sh`;
//! - [`prometheus::Prometheus`] and [`rabbitmq::RabbitMq`] from Debian packages
//!   (`scripts/install-packages.sh`).
//!
//! There is one way to start it, [`Stack::start`]; `ebb demo` and `tests/support` both use it.

pub mod certs;
pub mod ebb;
pub mod kube;
pub mod process;
pub mod prometheus;
pub mod rabbitmq;
mod workload;

use std::path::PathBuf;

pub use workload::workload;

use self::kube::{ControlPlane, ControlPlaneOptions};
use self::process::ManagedProcess;
use self::prometheus::{Prometheus, ScrapeTarget};
use self::rabbitmq::RabbitMq;

/// Why the stack (or a part of it) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{name} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")]
    Start {
        name: String,
        reason: String,
        log_tail: String,
    },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("missing prerequisite: {0}")]
    Missing(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] ::kube::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("upstream: {0}")]
    Upstream(String),
}

pub(crate) fn start_error(process: &ManagedProcess, reason: &str) -> StackError {
    StackError::Start {
        name: process.name().to_string(),
        reason: reason.to_string(),
        log_tail: process.log_tail(30),
    }
}

/// Which services to start.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The Kubernetes control plane, if wanted.
    pub kube: Option<ControlPlaneOptions>,
    pub prometheus: bool,
    /// Jobs Prometheus scrapes (it starts with none).
    pub scrape: Vec<ScrapeTarget>,
    pub rabbitmq: bool,
}

impl StackOptions {
    /// Everything: control plane with default options, Prometheus, RabbitMQ.
    pub fn all() -> Self {
        Self {
            kube: Some(ControlPlaneOptions::default()),
            prometheus: true,
            scrape: Vec::new(),
            rabbitmq: true,
        }
    }
}

/// A started local stack. Dropping it stops every process and removes its directory.
#[derive(Debug)]
pub struct Stack {
    pub kube: Option<ControlPlane>,
    pub prometheus: Option<Prometheus>,
    pub rabbitmq: Option<RabbitMq>,
    dir: PathBuf,
    keep_dir: bool,
}

impl Stack {
    /// Starts the services `options` asks for, concurrently, and waits until each is ready.
    /// State goes to a fresh directory under `$TMPDIR` (kept when `EBB_KEEP_STACK` is set).
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("ebb-stack-")
            .tempdir()?
            .keep();
        let keep_dir = std::env::var_os("EBB_KEEP_STACK").is_some();
        if !keep_dir {
            // Statics are never dropped: the exit hook removes the directory then.
            process::cleanup_dirs()
                .lock()
                .expect("cleanup lock")
                .push(dir.clone());
        }
        let kube = async {
            match &options.kube {
                Some(opts) => {
                    let bin = control_plane_bin().await?;
                    let kdir = dir.join("kube");
                    std::fs::create_dir_all(&kdir)?;
                    ControlPlane::start(&bin, &kdir, opts).await.map(Some)
                }
                None => Ok(None),
            }
        };
        let prometheus = async {
            if options.prometheus {
                require_command("prometheus")?;
                Prometheus::start(&dir.join("prometheus"), &options.scrape)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let rabbitmq = async {
            if options.rabbitmq {
                require_command("epmd")?;
                RabbitMq::start(&dir.join("rabbitmq")).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (kube, prometheus, rabbitmq) = tokio::join!(kube, prometheus, rabbitmq);
        Ok(Self {
            kube: kube?,
            prometheus: prometheus?,
            rabbitmq: rabbitmq?,
            dir,
            keep_dir,
        })
    }

    /// Where every service keeps its state and log.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Processes first (fields drop after this body), but they must be gone before the
        // directory goes: drop them explicitly.
        self.kube.take();
        self.prometheus.take();
        self.rabbitmq.take();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn require_command(name: &str) -> Result<(), StackError> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()));
    if found {
        Ok(())
    } else {
        Err(StackError::Missing(format!(
            "`{name}` is not installed; run scripts/install-packages.sh"
        )))
    }
}

/// The directory with the control-plane binaries: `$EBB_K8S_BIN`, or what
/// `scripts/build-control-plane.sh` prints (it builds them once per version and caches them).
pub async fn control_plane_bin() -> Result<PathBuf, StackError> {
    script_dir("EBB_K8S_BIN", "scripts/build-control-plane.sh").await
}

/// The directory with the tools that check deploy/ and the chart (helm, kubeconform,
/// kube-score, the Kubernetes JSON schemas, cert-manager's and the Prometheus Operator's CRDs):
/// `$EBB_CHART_TOOLS`, or what `scripts/build-chart-tools.sh` prints (built once per version).
pub async fn chart_tools_dir() -> Result<PathBuf, StackError> {
    script_dir("EBB_CHART_TOOLS", "scripts/build-chart-tools.sh").await
}

/// The directories with the peers `cargo bench --bench peers` compares ebb with, built once
/// per version by `scripts/build-peers.sh`: (KEDA's bin, with `../crds`; prometheus-adapter's bin).
pub async fn peers_dirs() -> Result<(PathBuf, PathBuf), StackError> {
    let lines = script_lines("scripts/build-peers.sh").await?;
    match lines.as_slice() {
        [.., keda, adapter] => Ok((PathBuf::from(keda), PathBuf::from(adapter))),
        _ => Err(StackError::Missing(
            "scripts/build-peers.sh printed no directories".into(),
        )),
    }
}

/// `$env` if set, else the last line that `script` (in this checkout) prints.
async fn script_dir(env: &str, script: &str) -> Result<PathBuf, StackError> {
    if let Some(dir) = std::env::var_os(env) {
        return Ok(PathBuf::from(dir));
    }
    let lines = script_lines(script).await?;
    Ok(PathBuf::from(lines.last().cloned().unwrap_or_default()))
}

/// What `script` (in this checkout) prints, line by line, trimmed.
async fn script_lines(script: &str) -> Result<Vec<String>, StackError> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = tokio::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    if !output.status.success() {
        return Err(StackError::Missing(format!(
            "{} failed ({})",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.lines().map(|l| l.trim().to_string()).collect())
}

/// An HTTP client for readiness checks and admin calls. No idle pool: a stack shared by tests
/// outlives the tokio runtime that started it, and a pooled connection would die with it.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}
