//! deploy/ and the Helm chart rendered as users render them (`kubectl kustomize`, `helm
//! template`), and the tools that render and check them: shared by tests/deploy_manifests.rs
//! and tests/chart.rs.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;

pub const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/ebb");

/// Runs `future` to completion on a runtime of its own, on a thread of its own (callable from
/// sync tests and from inside a `#[tokio::test]` alike).
fn block_on<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(|| tokio::runtime::Runtime::new().unwrap().block_on(future))
        .join()
        .unwrap()
}

/// The directory with kubectl (scripts/build-control-plane.sh).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        block_on(ebb::localstack::control_plane_bin()).expect("the control-plane binaries")
    })
}

/// The directory with helm, kubeconform, kube-score and their schemas
/// (scripts/build-chart-tools.sh).
pub fn tools_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| block_on(ebb::localstack::chart_tools_dir()).expect("the chart's tools"))
}

/// Runs `program`: its stdout, or its stdout and stderr as the error.
pub fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn helm(args: &[&str]) -> Result<String, String> {
    run(&tools_dir().join("helm"), args)
}

pub fn kustomize(dir: &Path) -> String {
    run(
        &bin_dir().join("kubectl"),
        &["kustomize", dir.to_str().unwrap()],
    )
    .expect("kubectl kustomize")
}

/// `--set` arguments for helm.
pub fn set_args<'a>(set: &[&'a str]) -> Vec<&'a str> {
    set.iter().flat_map(|s| ["--set", *s]).collect()
}

/// `helm template` of the chart as release `ebb` in `namespace`, CRDs included.
pub fn helm_template(namespace: &str, set: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "template",
        "ebb",
        CHART,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend(set_args(set));
    helm(&args)
}

/// `tls.existingSecret` and its CA: the chart's Secret-of-your-own path.
pub fn helm_with_secret(namespace: &str, secret: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    helm_template(
        namespace,
        &[
            &format!("tls.existingSecret={secret}"),
            &format!("tls.caBundle={ca}"),
        ],
    )
    .expect("helm template")
}

/// An overlay of deploy/ with `components` (names in deploy/components), as docs/deploy.md has
/// users write one: outside the base's directory (kustomize refuses one inside it), by
/// relative paths.
pub fn overlay(components: &[&str]) -> tempfile::TempDir {
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let to_deploy = relative(overlay.path(), Path::new(DEPLOY));
    let components: Vec<String> = components
        .iter()
        .map(|c| format!("{}/components/{c}", to_deploy.display()))
        .collect();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{}]\ncomponents: [{}]\n",
            to_deploy.display(),
            components.join(", ")
        ),
    )
    .unwrap();
    overlay
}

pub fn documents(manifest: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The only object of `kind`.
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all = of_kind(docs, kind);
    assert_eq!(all.len(), 1, "expected one {kind}");
    all[0]
}

pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// `to` relative to `from` (both absolute).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in from.components().skip(common) {
        path.push("..");
    }
    path.extend(to.components().skip(common));
    path
}
