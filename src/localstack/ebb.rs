//! `ebb serve` on the local stack, as a cluster runs it: the demo's, the end-to-end tests' and
//! the soak's.

use std::path::Path;

use super::kube::{ControlPlane, apply_yaml};
use super::process::ManagedProcess;

/// Installs ebb's CRD and RBAC from deploy/ and starts `ebb serve` (this binary) as its
/// ServiceAccount would run in a cluster, its external metrics API registered as the
/// cluster's APIService. `binary` is an ebb executable (the demo's own, a test's
/// `CARGO_BIN_EXE_ebb`).
pub async fn serve(
    kube: &ControlPlane,
    dir: &Path,
    binary: &Path,
    identity: &str,
    api_port: u16,
    metrics_port: u16,
) -> anyhow::Result<ManagedProcess> {
    install(kube, identity).await?;
    let process = start(kube, dir, binary, identity, api_port, metrics_port, &[])?;
    register(kube, api_port).await?;
    Ok(process)
}

/// ebb's CRD and deploy/'s namespace and RBAC.
pub async fn install(kube: &ControlPlane, field_manager: &str) -> anyhow::Result<()> {
    let admin = kube.client().await?;
    crate::crd::install(&admin).await?;
    for manifest in [
        include_str!("../../deploy/namespace.yaml"),
        include_str!("../../deploy/rbac.yaml"),
        include_str!("../../deploy/rbac-controller.yaml"),
    ] {
        apply_yaml(&admin, manifest, field_manager).await?;
    }
    Ok(())
}

/// Registers deploy/'s APIService, served on `port` of this host.
pub async fn register(kube: &ControlPlane, port: u16) -> anyhow::Result<()> {
    kube.register_api_service(include_str!("../../deploy/apiservice.yaml"), port)
        .await?;
    Ok(())
}

/// Starts one `ebb serve` replica as ebb's ServiceAccount (after [`install`]), serving the
/// external metrics API on `api_port`, with `extra` arguments; its log is `<identity>.log` in
/// `dir`.
pub fn start(
    kube: &ControlPlane,
    dir: &Path,
    binary: &Path,
    identity: &str,
    api_port: u16,
    metrics_port: u16,
    extra: &[&str],
) -> anyhow::Result<ManagedProcess> {
    let (cert_file, key_file) = kube
        .serving_cert(&["ebb.ebb-system.svc", "localhost", "127.0.0.1"])?
        .write(dir, &format!("{identity}-serving"))?;
    let kubeconfig = kube.kubeconfig_for(
        "system:serviceaccount:ebb-system:ebb",
        Some("system:serviceaccounts"),
    )?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("serve")
        .args(["--identity", identity])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-private-key-file")
        .arg(&key_file)
        .args(extra)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info");
    Ok(ManagedProcess::spawn(
        "ebb-serve",
        cmd,
        &dir.join(format!("{identity}.log")),
    )?)
}
