//! Test support: starts the real services a test binary needs (through the same
//! `ebb::localstack` the demo uses), shares one stack per test binary, and hands out clients
//! and URLs. Every process stops when the test binary exits, also after a panic: see
//! `ebb::localstack::process`.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ebb::localstack::certs::CertPair;
use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::{Stack, StackOptions};

/// Starts a stack on a thread of its own, with its own runtime, so that it can be called from
/// sync code, from inside a `#[tokio::test]`, or from a `OnceLock` initializer alike.
pub fn start_stack(options: StackOptions) -> Stack {
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .expect("a tokio runtime")
            .block_on(Stack::start(options))
    })
    .join()
    .expect("the stack's start thread panicked")
    .unwrap_or_else(|e| panic!("the local stack did not start: {e}"))
}

/// Control-plane options for tests: the HPA controller syncs every second and stabilizes
/// scale-down for 5 s, so that HPA-driven scaling shows within seconds.
pub fn fast_hpa() -> ControlPlaneOptions {
    ControlPlaneOptions {
        hpa_controller: true,
        hpa_sync_period: Duration::from_secs(1),
        hpa_downscale_stabilization: Duration::from_secs(5),
        ..Default::default()
    }
}

/// One stack per test binary with everything in it (control plane with a fast HPA
/// controller, Prometheus, RabbitMQ). Tests that stop a service start their own instead.
pub fn shared_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        start_stack(StackOptions {
            kube: Some(fast_hpa()),
            ..StackOptions::all()
        })
    })
}

/// A stack of its own (control plane with a fast HPA controller, and Prometheus) for a test
/// that stops Prometheus and must not take the shared one down with it.
pub fn stack_with_own_prometheus() -> Stack {
    start_stack(StackOptions {
        kube: Some(fast_hpa()),
        prometheus: true,
        ..Default::default()
    })
}

/// `ebb serve` on `kube` as the cluster runs it (deploy/'s RBAC, its APIService registered, so
/// the HPA controller reads its external metrics API), logging under `dir`.
pub async fn ebb_serve(
    kube: &ebb::localstack::kube::ControlPlane,
    dir: &std::path::Path,
    identity: &str,
) -> ebb::localstack::process::ManagedProcess {
    ebb_serve_on(kube, dir, identity, ebb::localstack::process::free_port()).await
}

/// [`ebb_serve`] with its API on `api_port`.
pub async fn ebb_serve_on(
    kube: &ebb::localstack::kube::ControlPlane,
    dir: &std::path::Path,
    identity: &str,
    api_port: u16,
) -> ebb::localstack::process::ManagedProcess {
    ebb::localstack::ebb::serve(
        kube,
        dir,
        std::path::Path::new(env!("CARGO_BIN_EXE_ebb")),
        identity,
        api_port,
        ebb::localstack::process::free_port(),
    )
    .await
    .unwrap_or_else(|e| panic!("ebb serve ({identity}) did not start: {e}"))
}

/// A kube client (admin) for the shared stack, bound to the calling runtime.
pub async fn kube_client() -> kube::Client {
    shared_stack()
        .kube
        .as_ref()
        .expect("the shared stack has a control plane")
        .client()
        .await
        .expect("a kube client")
}

/// A namespace name no other test uses.
pub fn unique_namespace(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain-HTTP reverse proxy on loopback in front of the real `upstream`, for what sits
/// before a server in production (an ingress, a gateway): `route` sees each request (and may
/// record it) and gives the path and query to ask upstream, or `None` to answer 404. The
/// Authorization header goes along. Its address, `http://127.0.0.1:PORT`.
pub async fn forwarding_proxy<F>(upstream: String, route: F) -> String
where
    F: Fn(&axum::extract::Request) -> Option<String> + Clone + Send + Sync + 'static,
{
    use axum::response::IntoResponse;
    use std::future::IntoFuture as _;
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (http, upstream, route) = (http.clone(), upstream.clone(), route.clone());
        async move {
            let Some(path) = route(&request) else {
                return http::StatusCode::NOT_FOUND.into_response();
            };
            let mut forward = http.get(format!("{upstream}{path}"));
            if let Some(auth) = request.headers().get(http::header::AUTHORIZATION) {
                forward = forward.header(http::header::AUTHORIZATION, auth);
            }
            let answer = forward.send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap();
            (status, [("content-type", "application/json")], body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());
    address
}

/// Serves `router` over HTTPS on a free loopback port with `cert`, on the current runtime.
/// A plain server for harness tests; ebb's own API server has its own TLS stack.
pub async fn serve_https(router: axum::Router, cert: &CertPair) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ebb::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a TLS server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    addr
}

/// A rustls client for talking to the server directly, optionally with a client certificate.
pub fn https_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ebb::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

/// The client certificate and key of a kubeconfig the harness wrote.
pub fn kubeconfig_identity(path: &std::path::Path) -> (String, String) {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let user = &config["users"][0]["user"];
    let decode = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(user[k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    (decode("client-certificate-data"), decode("client-key-data"))
}
