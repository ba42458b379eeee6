//! HTTPS serving: a tokio-rustls accept loop feeding hyper (HTTP/1.1 and HTTP/2, as the
//! aggregator speaks h2), the serving certificate re-read from its files when they change, the
//! client's certificate chain handed to the router as [`PeerCertificates`], and ebb's own
//! `/metrics` on a separate plain-HTTP listener (Prometheus scrapes without client certs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::auth::PeerCertificates;
use super::{ApiState, router};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The HTTPS API (the APIService's Service points here).
    pub listen: SocketAddr,
    /// Plain-HTTP `/metrics`.
    pub metrics_listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the two files are checked for changes (by modification time).
    pub cert_reload_interval: Duration,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("serving certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
}

/// Writes the OpenMetrics text of ebb's metrics for `/metrics` into a sink (a String, or a
/// compressor: [`super::exposition`]).
pub type MetricsText = super::exposition::Encode;

/// `/metrics` text from a prometheus-client registry.
pub fn metrics_text(registry: prometheus_client::registry::Registry) -> MetricsText {
    Arc::new(move |out: &mut dyn std::fmt::Write| {
        prometheus_client::encoding::text::encode(&mut &mut *out, &registry)
    })
}

/// The serving certificate, swapped when its files change; rustls asks for it per handshake.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, [Option<SystemTime>; 2])>,
}

impl ReloadingCert {
    fn load(cert_file: &Path, key_file: &Path) -> Result<Self, ServeError> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new((Arc::new(key), mtimes(cert_file, key_file))),
        })
    }

    /// Reloads if a file changed. A broken pair (say, the certificate written and the key not
    /// yet) keeps the old one and is tried again on the next check.
    fn reload_if_changed(&self) {
        let now = mtimes(&self.cert_file, &self.key_file);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == now {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(key), now);
                tracing::info!(cert = %self.cert_file.display(), "serving certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "keeping the previous serving certificate"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

fn mtimes(cert_file: &Path, key_file: &Path) -> [Option<SystemTime>; 2] {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [mtime(cert_file), mtime(key_file)]
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, ServeError> {
    let bad = |path: &Path, reason: String| ServeError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert_file, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, e.to_string()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| bad(key_file, e.to_string()))
}

/// A bound server: addresses known, not yet serving.
pub struct Server {
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: ApiState,
    cert: Arc<ReloadingCert>,
    reload_interval: Duration,
    metrics_text: MetricsText,
}

impl Server {
    /// Binds both listeners and loads the certificate (errors here are configuration errors).
    pub async fn bind(
        config: ServeConfig,
        state: ApiState,
        metrics_text: MetricsText,
    ) -> Result<Self, ServeError> {
        crate::install_crypto_provider();
        let cert = Arc::new(ReloadingCert::load(&config.cert_file, &config.key_file)?);
        Ok(Self {
            listener: TcpListener::bind(config.listen).await?,
            metrics_listener: TcpListener::bind(config.metrics_listen).await?,
            state,
            cert,
            reload_interval: config.cert_reload_interval,
            metrics_text,
        })
    }

    /// The HTTPS address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The plain-HTTP `/metrics` address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener")
    }

    /// Serves until the future is dropped or a listener fails.
    pub async fn run(self) -> Result<(), ServeError> {
        let Self {
            listener,
            metrics_listener,
            state,
            cert,
            reload_interval,
            metrics_text,
        } = self;
        let reload = async {
            let mut tick = tokio::time::interval(reload_interval);
            loop {
                tick.tick().await;
                cert.reload_if_changed();
            }
        };
        let metrics = serve_metrics(metrics_listener, metrics_text);
        tokio::select! {
            r = accept_loop(listener, state, cert.clone()) => r,
            r = metrics => r,
            () = reload => unreachable!("the reload loop never ends"),
        }
    }
}

/// ebb's own `/metrics` (OpenMetrics text) and a liveness check (`/livez`, `/healthz`) over
/// plain HTTP: what Prometheus scrapes and the kubelet probes, with or without the HTTPS API.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics_text: MetricsText,
) -> Result<(), ServeError> {
    use axum::response::IntoResponse;
    let exposition = Arc::new(super::exposition::Exposition::new(metrics_text));
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: http::HeaderMap| {
                // Encoding takes tens of milliseconds at thousands of targets: off the
                // runtime's workers, which serve the metrics API meanwhile.
                let exposition = exposition.clone();
                async move {
                    let accept = headers
                        .get(http::header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = tokio::task::spawn_blocking(move || {
                        exposition.body(accept.as_deref())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|body| body.map_err(|e| e.to_string()));
                    match body {
                        Ok(body) => {
                            let mut response = (
                                [
                                    (
                                        http::header::CONTENT_TYPE,
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    ),
                                    (http::header::VARY, "Accept-Encoding"),
                                ],
                                body.bytes,
                            )
                                .into_response();
                            if body.gzip {
                                response.headers_mut().insert(
                                    http::header::CONTENT_ENCODING,
                                    http::HeaderValue::from_static("gzip"),
                                );
                            }
                            response
                        }
                        // A failed scrape, not an empty one (which would read as no series).
                        Err(e) => (http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                    }
                }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await.map_err(ServeError::from)
}

/// Binds and serves: what `ebb serve` calls.
pub async fn serve(
    config: ServeConfig,
    state: ApiState,
    metrics_text: MetricsText,
) -> Result<(), ServeError> {
    Server::bind(config, state, metrics_text).await?.run().await
}

async fn accept_loop(
    listener: TcpListener,
    state: ApiState,
    cert: Arc<ReloadingCert>,
) -> Result<(), ServeError> {
    let app = router(state.clone());
    let auth = state.auth.clone();
    // The acceptor carries the client-CA verifier: rebuilt when the trust settings change.
    let build = |generation: u64| {
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(auth.handshake_verifier())
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        (generation, TlsAcceptor::from(Arc::new(config)))
    };
    let mut acceptor = build(auth.generation());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if acceptor.0 != auth.generation() {
            acceptor = build(auth.generation());
        }
        tokio::spawn(serve_connection(tcp, acceptor.1.clone(), app.clone()));
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, app: axum::Router) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let peer =
        tls.get_ref().1.peer_certificates().map(|chain| {
            PeerCertificates::new(chain.iter().map(|c| c.clone().into_owned()).collect())
        });
    let service =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_certificate_pair_is_picked_up_and_a_broken_one_ignored() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::localstack::certs::Ca::new("test-ca").unwrap();
        let issue = |cn: &str| {
            ca.issue(
                cn,
                None,
                &["localhost"],
                crate::localstack::certs::Usage::Server,
            )
            .unwrap()
        };
        let (crt, key) = issue("first").write(dir.path(), "tls").unwrap();
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        let leaf = |c: &ReloadingCert| c.current.read().unwrap().0.cert[0].clone();
        let first = leaf(&cert);

        // Only the certificate changes: its key does not match, the old pair stays.
        std::thread::sleep(Duration::from_millis(20)); // a distinct mtime
        let second = issue("second");
        std::fs::write(&crt, &second.cert_pem).unwrap();
        cert.reload_if_changed();
        assert_eq!(leaf(&cert), first);

        std::fs::write(&key, &second.key_pem).unwrap();
        cert.reload_if_changed();
        let now = leaf(&cert);
        assert_ne!(now, first);
        let (_, parsed) = x509_parser::parse_x509_certificate(now.as_ref()).unwrap();
        assert_eq!(
            parsed
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "second"
        );
    }
}
