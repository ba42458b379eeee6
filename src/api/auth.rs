//! Authentication and authorization as an aggregated API server must do them (what
//! `k8s.io/apiserver`'s delegating authenticator and authorizer do):
//!
//! 1. A client certificate from the front proxy (signed by the requestheader CA, CN among the
//!    allowed names when that list is not empty): only then are the `X-Remote-User`,
//!    `X-Remote-Group` and `X-Remote-Extra-*` headers trusted.
//! 2. Else a client certificate signed by the client CA: CN is the user, O the groups.
//! 3. Else a bearer token, checked with a TokenReview.
//! 4. Else 401.
//!
//! Authorization asks the kube-apiserver with a SubjectAccessReview (group `system:masters`
//! is allowed without asking). Token and access decisions are cached for [`CACHE_TTL`] in
//! bounded caches, so a busy HPA costs one review per target per TTL.
//!
//! The CAs and header names come from the ConfigMap `kube-system/extension-apiserver-authentication`
//! the kube-apiserver publishes, re-read every [`CONFIG_REFRESH`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::{ApiError, GROUP, VERSION};

/// How long token and access decisions are reused (the Go library's default webhook cache TTL).
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// At most this many cached decisions of each kind; beyond it expired ones go, then all.
pub const CACHE_CAPACITY: usize = 10_000;
/// How often the authentication ConfigMap is re-read.
pub const CONFIG_REFRESH: Duration = Duration::from_secs(30);
/// Where the kube-apiserver publishes its client CAs and request-header settings.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";
/// Users in this group are allowed everything without a SubjectAccessReview.
const SYSTEM_MASTERS: &str = "system:masters";
const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

/// Why authentication could not be set up or a review could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} ConfigMap: {0}")]
    ConfigMap(String),
    #[error("CA bundle {name}: {reason}")]
    CaBundle { name: &'static str, reason: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Who made a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The certificate chain a TLS client presented (leaf first), inserted into each request's
/// extensions by the accept loop. What the chain proves is worked out on the connection's
/// first request and reused by the next ones (an aggregator keeps one HTTP/2 connection for
/// all its requests) until the trust settings change or the leaf expires.
#[derive(Debug, Clone)]
pub struct PeerCertificates {
    chain: Arc<[CertificateDer<'static>]>,
    verdict: Arc<Mutex<Option<CertVerdict>>>,
}

impl PeerCertificates {
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            chain: chain.into(),
            verdict: Arc::default(),
        }
    }

    fn verdict(&self, generation: u64, trust: &Trust) -> CertVerdict {
        let mut cached = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        let now = UnixTime::now();
        if let Some(v) = cached.as_ref()
            && v.generation == generation
            && now.as_secs() < v.not_after
        {
            return v.clone();
        }
        let v = CertVerdict::of(&self.chain, generation, trust, now);
        *cached = Some(v.clone());
        v
    }
}

/// What a client chain proves under one version of the trust settings.
#[derive(Debug, Clone, Default)]
struct CertVerdict {
    generation: u64,
    /// Seconds since the epoch after which the leaf is no longer valid.
    not_after: u64,
    /// Signed by the requestheader CA, with an allowed CN.
    front_proxy: bool,
    /// Signed by the client CA: the user (CN) and groups (O).
    client: Option<(String, Vec<String>)>,
}

impl CertVerdict {
    fn of(chain: &[CertificateDer<'_>], generation: u64, trust: &Trust, now: UnixTime) -> Self {
        let mut verdict = Self {
            generation,
            ..Self::default()
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return verdict;
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            return verdict;
        };
        verdict.not_after = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
        let subject = parsed.subject();
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string);
        let verified = |v: &Option<Arc<dyn ClientCertVerifier>>| {
            v.as_ref()
                .is_some_and(|v| v.verify_client_cert(leaf, intermediates, now).is_ok())
        };
        if let Some(rh) = &trust.settings.request_header
            && verified(&trust.request_header_ca)
        {
            verdict.front_proxy = rh.allowed_names.is_empty()
                || cn.as_ref().is_some_and(|cn| rh.allowed_names.contains(cn));
        }
        if verified(&trust.client_ca)
            && let Some(cn) = cn
        {
            let groups = subject
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .map(str::to_string)
                .collect();
            verdict.client = Some((cn, groups));
        }
        verdict
    }
}

/// What a request wants to do, as a SubjectAccessReview states it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A request for metric values: resource = the metric name in group external.metrics.k8s.io.
    Resource {
        verb: &'static str,
        namespace: String,
        resource: String,
    },
    /// Discovery and other paths.
    NonResource { verb: &'static str, path: String },
}

/// The request-header (front proxy) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    pub ca_pem: String,
    /// Accepted CNs of the front proxy's certificate; empty accepts any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_headers_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// The Kubernetes defaults for the header names.
    pub fn with_default_headers(ca_pem: String, allowed_names: Vec<String>) -> Self {
        Self {
            ca_pem,
            allowed_names,
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_headers_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }
}

/// The trust settings, as read from the ConfigMap (or given directly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    pub client_ca_pem: Option<String>,
    pub request_header: Option<RequestHeaderConfig>,
}

impl AuthSettings {
    /// Reads the settings from the `extension-apiserver-authentication` ConfigMap.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Self, AuthError> {
        let data = cm.data.clone().unwrap_or_default();
        let get = |k: &str| data.get(k).filter(|v| !v.trim().is_empty()).cloned();
        let list = |k: &str, default: &str| -> Result<Vec<String>, AuthError> {
            match get(k) {
                None => Ok(if default.is_empty() {
                    vec![]
                } else {
                    vec![default.to_string()]
                }),
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| AuthError::ConfigMap(format!("{k} is not a JSON list: {e}"))),
            }
        };
        let request_header = match get("requestheader-client-ca-file") {
            None => None,
            Some(ca_pem) => Some(RequestHeaderConfig {
                ca_pem,
                allowed_names: list("requestheader-allowed-names", "")?,
                username_headers: list("requestheader-username-headers", "X-Remote-User")?,
                group_headers: list("requestheader-group-headers", "X-Remote-Group")?,
                extra_headers_prefixes: list(
                    "requestheader-extra-headers-prefix",
                    "X-Remote-Extra-",
                )?,
            }),
        };
        Ok(Self {
            client_ca_pem: get("client-ca-file"),
            request_header,
        })
    }
}

/// Settings compiled into verifiers.
struct Trust {
    settings: AuthSettings,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
    request_header_ca: Option<Arc<dyn ClientCertVerifier>>,
    /// For the TLS handshake: accepts no certificate, or one from either CA.
    handshake: Arc<dyn ClientCertVerifier>,
}

impl Trust {
    fn new(settings: AuthSettings) -> Result<Self, AuthError> {
        let mut union = RootCertStore::empty();
        let client_ca = match &settings.client_ca_pem {
            Some(pem) => Some(verifier(roots("client-ca-file", pem, &mut union)?)?),
            None => None,
        };
        let request_header_ca = match &settings.request_header {
            Some(rh) => Some(verifier(roots(
                "requestheader-client-ca-file",
                &rh.ca_pem,
                &mut union,
            )?)?),
            None => None,
        };
        let handshake = if union.is_empty() {
            WebPkiClientVerifier::no_client_auth()
        } else {
            verifier(union)?
        };
        Ok(Self {
            settings,
            client_ca,
            request_header_ca,
            handshake,
        })
    }
}

fn roots(
    name: &'static str,
    pem: &str,
    union: &mut RootCertStore,
) -> Result<RootCertStore, AuthError> {
    let bad = |reason: String| AuthError::CaBundle { name, reason };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        store.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
        union.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(store)
}

fn verifier(roots: RootCertStore) -> Result<Arc<dyn ClientCertVerifier>, AuthError> {
    WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| AuthError::CaBundle {
            name: "client verifier",
            reason: e.to_string(),
        })
}

/// Asks the kube-apiserver about tokens and access. A trait so that the router can be tested
/// without a cluster; production uses [`KubeReviewer`].
pub trait Reviewer: Send + Sync {
    /// The user a bearer token belongs to, or `None` if it is not valid.
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, AuthError>>;
    /// Whether `user` may do `attributes`.
    fn review_access<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// TokenReview and SubjectAccessReview against the cluster (needs the `system:auth-delegator`
/// ClusterRole).
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
}

impl KubeReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl Reviewer for KubeReviewer {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, AuthError>> {
        Box::pin(async move {
            let review: TokenReview = serde_json::from_value(serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": { "token": token }
            }))
            .expect("a TokenReview");
            let done = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            let Some(status) = done.status else {
                return Ok(None);
            };
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            Ok(status.user.map(|u| UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }))
        })
    }

    fn review_access<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let mut spec = serde_json::json!({
                "user": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra,
            });
            match attributes {
                Attributes::Resource {
                    verb,
                    namespace,
                    resource,
                } => {
                    spec["resourceAttributes"] = serde_json::json!({
                        "verb": verb, "namespace": namespace, "group": GROUP,
                        "version": VERSION, "resource": resource,
                    });
                }
                Attributes::NonResource { verb, path } => {
                    spec["nonResourceAttributes"] =
                        serde_json::json!({ "verb": verb, "path": path });
                }
            }
            let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec,
            }))
            .expect("a SubjectAccessReview");
            let done = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(done.status.is_some_and(|s| s.allowed))
        })
    }
}

/// A small map whose entries expire after a TTL, bounded in size.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// The authenticator and authorizer, shared by every request.
pub struct Auth {
    trust: RwLock<Arc<Trust>>,
    /// Bumped when the trust settings change, so that the TLS acceptor rebuilds its verifier.
    generation: AtomicU64,
    reviewer: Arc<dyn Reviewer>,
    /// SHA-256 of the token (no token is kept in memory) -> user, or `None` if invalid.
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
    access: TtlCache<(UserInfo, Attributes), bool>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(settings: AuthSettings, reviewer: Arc<dyn Reviewer>) -> Result<Self, AuthError> {
        Ok(Self {
            trust: RwLock::new(Arc::new(Trust::new(settings)?)),
            generation: AtomicU64::new(0),
            reviewer,
            tokens: TtlCache::new(CACHE_TTL, CACHE_CAPACITY),
            access: TtlCache::new(CACHE_TTL, CACHE_CAPACITY),
        })
    }

    /// Reads the ConfigMap and builds an `Auth` that reviews with `client`.
    pub async fn from_cluster(client: kube::Client) -> Result<Self, AuthError> {
        let settings = read_settings(&client).await?;
        Self::new(settings, Arc::new(KubeReviewer::new(client)))
    }

    /// Re-reads the ConfigMap every [`CONFIG_REFRESH`] and applies changes; runs forever.
    /// A failed read keeps the settings in force (logged).
    pub async fn refresh_from_cluster(&self, client: kube::Client) {
        let mut tick = tokio::time::interval(CONFIG_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match read_settings(&client).await {
                Ok(settings) => {
                    if let Err(e) = self.update(settings) {
                        tracing::warn!(error = %e, "ignoring invalid authentication settings");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot re-read authentication settings"),
            }
        }
    }

    /// Replaces the trust settings if they changed.
    pub fn update(&self, settings: AuthSettings) -> Result<(), AuthError> {
        if self.trust().settings == settings {
            return Ok(());
        }
        let trust = Arc::new(Trust::new(settings)?);
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = trust;
        self.generation.fetch_add(1, Ordering::Release);
        tracing::info!("authentication settings changed");
        Ok(())
    }

    fn trust(&self) -> Arc<Trust> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes whenever the handshake verifier does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The client-certificate verifier for the TLS handshake: no certificate is fine (tokens,
    /// or a 401 later), a presented one must chain to the client CA or the requestheader CA.
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.trust().handshake.clone()
    }

    /// Who is asking, by the chain in [`module docs`](self). Like the Go library, every
    /// authenticated user is also in group `system:authenticated` (RBAC's discovery roles are
    /// bound to it).
    pub async fn authenticate(
        &self,
        peer: Option<&PeerCertificates>,
        headers: &HeaderMap,
    ) -> Result<UserInfo, ApiError> {
        let mut user = self.identify(peer, headers).await?;
        if !user.groups.iter().any(|g| g == SYSTEM_AUTHENTICATED) {
            user.groups.push(SYSTEM_AUTHENTICATED.to_string());
        }
        Ok(user)
    }

    async fn identify(
        &self,
        peer: Option<&PeerCertificates>,
        headers: &HeaderMap,
    ) -> Result<UserInfo, ApiError> {
        let generation = self.generation();
        let trust = self.trust();
        if let Some(peer) = peer {
            let verdict = peer.verdict(generation, &trust);
            if verdict.front_proxy
                && let Some(rh) = &trust.settings.request_header
                && let Some(user) = user_from_headers(rh, headers)
            {
                return Ok(user);
            }
            // A front-proxy certificate without a user header, or with a name not allowed,
            // counts only if the client CA signed it too.
            if let Some((name, groups)) = verdict.client {
                return Ok(UserInfo {
                    name,
                    groups,
                    ..UserInfo::default()
                });
            }
        }
        if let Some(token) = bearer_token(headers) {
            let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
            let user = match self.tokens.get(&key) {
                Some(user) => user,
                None => {
                    let user = self.reviewer.review_token(token).await.map_err(|e| {
                        ApiError::Unavailable(format!("cannot review the bearer token: {e}"))
                    })?;
                    self.tokens.insert(key, user.clone());
                    user
                }
            };
            return user.ok_or_else(|| ApiError::Unauthorized("invalid bearer token".into()));
        }
        Err(ApiError::Unauthorized(
            "no client certificate, front-proxy identity or bearer token".into(),
        ))
    }

    /// Whether `user` may do `attributes`: 403 if not.
    pub async fn authorize(&self, user: &UserInfo, attributes: Attributes) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Ok(());
        }
        let key = (user.clone(), attributes);
        let allowed = match self.access.get(&key) {
            Some(allowed) => allowed,
            None => {
                let allowed = self
                    .reviewer
                    .review_access(&key.0, &key.1)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("cannot authorize: {e}")))?;
                self.access.insert(key.clone(), allowed);
                allowed
            }
        };
        if allowed {
            return Ok(());
        }
        let (user, attributes) = key;
        Err(ApiError::Forbidden(match attributes {
            Attributes::Resource {
                verb,
                namespace,
                resource,
            } => format!(
                "user {:?} cannot {verb} resource {resource:?} in API group {GROUP:?} in the namespace {namespace:?}",
                user.name
            ),
            Attributes::NonResource { verb, path } => {
                format!("user {:?} cannot {verb} path {path:?}", user.name)
            }
        }))
    }
}

async fn read_settings(client: &kube::Client) -> Result<AuthSettings, AuthError> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), CONFIG_MAP_NAMESPACE)
        .get(CONFIG_MAP_NAME)
        .await?;
    AuthSettings::from_config_map(&cm)
}

/// The user the front proxy vouches for; `None` without a user header.
fn user_from_headers(rh: &RequestHeaderConfig, headers: &HeaderMap) -> Option<UserInfo> {
    let name = rh
        .username_headers
        .iter()
        .filter_map(|h| headers.get(h.as_str())?.to_str().ok())
        .find(|v| !v.is_empty())?
        .to_string();
    let groups = rh
        .group_headers
        .iter()
        .flat_map(|h| headers.get_all(h.as_str()))
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in headers {
        let header = header.as_str(); // lower case
        let Some(suffix) = rh.extra_headers_prefixes.iter().find_map(|p| {
            header
                .get(..p.len())
                .filter(|h| h.eq_ignore_ascii_case(p))
                .map(|_| &header[p.len()..])
        }) else {
            continue;
        };
        let Ok(value) = value.to_str() else { continue };
        // Extra keys are percent-encoded in the header name (the Go library unescapes them).
        let key = percent_encoding::percent_decode_str(suffix)
            .decode_utf8_lossy()
            .to_lowercase();
        extra.entry(key).or_default().push(value.to_string());
    }
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
        extra,
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_config_map_with_default_headers() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": CONFIG_MAP_NAME },
            "data": {
                "client-ca-file": "CLIENT",
                "requestheader-client-ca-file": "FRONT",
                "requestheader-allowed-names": "[\"front-proxy-client\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]",
            }
        }))
        .unwrap();
        let s = AuthSettings::from_config_map(&cm).unwrap();
        assert_eq!(s.client_ca_pem.as_deref(), Some("CLIENT"));
        let rh = s.request_header.unwrap();
        assert_eq!(rh.ca_pem, "FRONT");
        assert_eq!(rh.allowed_names, ["front-proxy-client"]);
        assert_eq!(rh.username_headers, ["X-Remote-User"]);
        assert_eq!(rh.extra_headers_prefixes, ["X-Remote-Extra-"]);

        let bad: ConfigMap = serde_json::from_value(serde_json::json!({
            "data": { "requestheader-client-ca-file": "X", "requestheader-allowed-names": "front" }
        }))
        .unwrap();
        let e = AuthSettings::from_config_map(&bad).unwrap_err();
        assert!(e.to_string().contains("requestheader-allowed-names"), "{e}");
    }

    #[test]
    fn front_proxy_headers_give_user_groups_and_extra() {
        let rh = RequestHeaderConfig::with_default_headers(String::new(), vec![]);
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "alice".parse().unwrap());
        headers.append("x-remote-group", "dev".parse().unwrap());
        headers.append("x-remote-group", "ops".parse().unwrap());
        headers.insert("x-remote-extra-scopes%2Fread", "yes".parse().unwrap());
        let user = user_from_headers(&rh, &headers).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "ops"]);
        assert_eq!(user.extra["scopes/read"], ["yes"]);
        assert!(user_from_headers(&rh, &HeaderMap::new()).is_none());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let cache = TtlCache::new(Duration::from_millis(50), 2);
        cache.insert(1, "a");
        cache.insert(2, "b");
        assert_eq!(cache.get(&1), Some("a"));
        cache.insert(3, "c");
        assert!(cache.entries.lock().unwrap().len() <= 2);
        assert_eq!(cache.get(&3), Some("c"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&3), None);
    }
}
