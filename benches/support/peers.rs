//! Running the peers on the local stack: KEDA's operator and adapter, and registering a system
//! as the `external.metrics.k8s.io` APIService. The peers come from scripts/build-peers.sh.

use std::path::Path;
use std::time::Duration;

use ebb::localstack::certs::{Ca, Usage};
use ebb::localstack::kube::{ControlPlane, apply_yaml};
use ebb::localstack::process::{ManagedProcess, free_port};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

const APISERVICE: &str = include_str!("../../deploy/apiservice.yaml");
/// The serving certificate's names: the APIService's Service (deploy/apiservice.yaml).
pub const SERVING_SANS: &[&str] = &["ebb.ebb-system.svc", "localhost", "127.0.0.1"];

/// Registers the system serving on `port` as deploy/'s APIService, as ebb's harness registers
/// ebb; panics with the process's log if it cannot.
pub async fn register(kube: &ControlPlane, port: u16, process: &ManagedProcess) {
    if let Err(e) = kube.register_api_service(APISERVICE, port).await {
        panic!(
            "registering {}: {e}\n{}",
            process.name(),
            process.log_tail(30)
        );
    }
}

/// KEDA's operator and adapter; `for_scale`: with the settings KEDA's troubleshooting guide
/// (API server throttling) advises at 400 ScaledObjects and more.
/// `bin` holds keda-operator and keda-adapter, `../crds` KEDA's CRDs; logs and certificates go
/// to `dir`. Runs with the admin kubeconfig; registered as the APIService.
pub async fn start_keda(
    kube: &ControlPlane,
    bin: &Path,
    dir: &Path,
    for_scale: bool,
) -> Vec<ManagedProcess> {
    let client = kube.client().await.unwrap();
    // The CRDs and namespace once (the second KEDA row finds them in place).
    let crds = bin.parent().unwrap().join("crds");
    for entry in std::fs::read_dir(&crds).unwrap() {
        let path = entry.unwrap().path();
        apply_yaml(&client, &std::fs::read_to_string(&path).unwrap(), "peers")
            .await
            .unwrap();
    }
    if Api::<Namespace>::all(client.clone())
        .get_opt("keda")
        .await
        .unwrap()
        .is_none()
    {
        kube.create_namespace("keda").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // CRDs established

    // Operator <-> adapter gRPC with mutual TLS: one CA, a server and a client certificate.
    let ca = Ca::new("keda-grpc-ca").unwrap();
    let op_certs = dir.join("operator-certs");
    let ad_certs = dir.join("adapter-certs");
    for (d, pair) in [
        (
            &op_certs,
            ca.issue(
                "keda-operator",
                None,
                &["keda-operator.keda.svc", "localhost", "127.0.0.1"],
                Usage::Server,
            )
            .unwrap(),
        ),
        (
            &ad_certs,
            ca.issue("keda-metrics-apiserver", None, &[], Usage::Client)
                .unwrap(),
        ),
    ] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("ca.crt"), ca.cert_pem()).unwrap();
        pair.write(d, "tls").unwrap();
    }
    let (crt, key) = kube
        .serving_cert(SERVING_SANS)
        .unwrap()
        .write(dir, "serving")
        .unwrap();
    let kc = kube.admin_kubeconfig.display().to_string();
    let grpc = free_port();
    let keda_env = |cmd: &mut std::process::Command| {
        cmd.current_dir(dir)
            .env("KUBECONFIG", &kc)
            .env("WATCH_NAMESPACE", "")
            .env("POD_NAMESPACE", "keda")
            .env("KEDA_CLUSTER_OBJECT_NAMESPACE", "keda");
        if for_scale {
            cmd.env("KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES", "20")
                .args(["--kube-api-qps=100", "--kube-api-burst=150"]);
        }
    };
    let mut op = std::process::Command::new(bin.join("keda-operator"));
    keda_env(&mut op);
    op.arg(format!("--kubeconfig={kc}"))
        .arg("--leader-elect=false")
        .arg(format!("--cert-dir={}", op_certs.display()))
        .arg("--enable-cert-rotation=false")
        .arg(format!("--metrics-service-bind-address=127.0.0.1:{grpc}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port()))
        .arg(format!(
            "--health-probe-bind-address=127.0.0.1:{}",
            free_port()
        ));
    let operator = ManagedProcess::spawn("keda-operator", op, &dir.join("operator.log")).unwrap();

    let port = free_port();
    let mut ad = std::process::Command::new(bin.join("keda-adapter"));
    keda_env(&mut ad);
    ad.arg(format!("--kubeconfig={kc}"))
        .arg(format!("--lister-kubeconfig={kc}"))
        .arg(format!("--authentication-kubeconfig={kc}"))
        .arg(format!("--authorization-kubeconfig={kc}"))
        .arg(format!("--secure-port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--cert-dir={}", ad_certs.display()))
        .arg(format!("--tls-cert-file={}", crt.display()))
        .arg(format!("--tls-private-key-file={}", key.display()))
        .arg(format!("--metrics-service-address=127.0.0.1:{grpc}"))
        .arg(format!("--port={}", free_port()));
    let adapter = ManagedProcess::spawn("keda-adapter", ad, &dir.join("adapter.log")).unwrap();
    register(kube, port, &adapter).await;
    vec![operator, adapter]
}

/// Where the peer benches write their tables: `$CARGO_TARGET_DIR/peers` (or `target/peers`).
pub fn out_dir() -> std::path::PathBuf {
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("peers");
    std::fs::create_dir_all(&out).unwrap();
    out
}

/// An HTTP proxy on loopback that counts the requests it forwards to `upstream` (RabbitMQ's
/// management API keeps no count of the requests it serves): the upstream requests a system
/// makes, counted by the bench and not by the system. Stops with the runtime.
pub struct CountingProxy {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub async fn start(upstream: String) -> CountingProxy {
        use axum::extract::Request;
        use axum::response::IntoResponse;
        use std::sync::atomic::Ordering;
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let http = reqwest::Client::new();
        let counter = requests.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (http, counter, upstream) = (http.clone(), counter.clone(), upstream.clone());
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let mut forward = http.request(req.method().clone(), format!("{upstream}{path}"));
                for (name, value) in req.headers() {
                    if name != axum::http::header::HOST {
                        forward = forward.header(name, value);
                    }
                }
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                match forward.body(body).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let mut headers = r.headers().clone();
                        for hop in ["transfer-encoding", "connection", "content-length"] {
                            headers.remove(hop);
                        }
                        let bytes = r.bytes().await.unwrap_or_default();
                        (status, headers, bytes).into_response()
                    }
                    Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        CountingProxy { url, requests }
    }

    pub fn count(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}
