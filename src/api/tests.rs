//! The router through `oneshot`: wire shapes, the authentication chain, Status errors.
//! Certificates are real (issued by the localstack CAs and verified by rustls); the
//! kube-apiserver's TokenReview/SubjectAccessReview answers come from [`FakeReviewer`], since
//! no cluster runs in unit tests (tests/api_server.rs uses the real one).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tower::ServiceExt as _;

use super::auth::{
    Attributes, AuthError, AuthSettings, PeerCertificates, RequestHeaderConfig, Reviewer,
};
use super::*;
use crate::localstack::certs::{Ca, Usage};

/// Token `good-token` is user `token-user`; `reader` and `token-user` may list `backlog`;
/// everyone may get discovery paths.
struct FakeReviewer;

impl Reviewer for FakeReviewer {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, AuthError>> {
        Box::pin(async move {
            Ok((token == "good-token").then(|| UserInfo {
                name: "token-user".into(),
                ..UserInfo::default()
            }))
        })
    }

    fn review_access<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            Ok(match attributes {
                Attributes::NonResource { .. } => true,
                Attributes::Resource { verb, resource, .. } => {
                    *verb == "list"
                        && resource == "backlog"
                        && ["reader", "token-user"].contains(&user.name.as_str())
                }
            })
        })
    }
}

struct Fixture {
    state: ApiState,
    cluster_ca: Ca,
    front_proxy_ca: Ca,
}

fn fixture() -> Fixture {
    crate::install_crypto_provider();
    let cluster_ca = Ca::new("cluster").unwrap();
    let front_proxy_ca = Ca::new("front-proxy").unwrap();
    let settings = AuthSettings {
        client_ca_pem: Some(cluster_ca.cert_pem().to_string()),
        request_header: Some(RequestHeaderConfig::with_default_headers(
            front_proxy_ca.cert_pem().to_string(),
            vec!["front-proxy-client".into()],
        )),
    };
    let store = Arc::new(MetricStore::new());
    store.publish(
        "shop",
        "backlog",
        "orders",
        Sample {
            labels: BTreeMap::new(),
            value: MetricValue::Milli(12_500),
            timestamp: "2026-08-20T12:00:00Z".parse().unwrap(),
            window_seconds: None,
        },
    );
    let state = ApiState {
        store,
        auth: Arc::new(Auth::new(settings, Arc::new(FakeReviewer)).unwrap()),
        readiness: Arc::new(Readiness::default()),
        metrics: ApiMetrics::default(),
    };
    Fixture {
        state,
        cluster_ca,
        front_proxy_ca,
    }
}

fn peer(ca: &Ca, cn: &str, group: Option<&str>) -> PeerCertificates {
    let pair = ca.issue(cn, group, &[], Usage::Client).unwrap();
    let leaf = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
    PeerCertificates::new(vec![leaf])
}

struct Call {
    path: String,
    peer: Option<PeerCertificates>,
    headers: Vec<(&'static str, String)>,
}

fn call(path: &str) -> Call {
    Call {
        path: path.to_string(),
        peer: None,
        headers: Vec::new(),
    }
}

impl Call {
    fn cert(mut self, peer: PeerCertificates) -> Self {
        self.peer = Some(peer);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    async fn send(self, state: &ApiState) -> (StatusCode, String, serde_json::Value) {
        let mut request = Request::get(&self.path);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let mut request = request.body(Body::empty()).unwrap();
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, content_type, json)
    }
}

const VALUES: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/backlog";

fn assert_status(json: &serde_json::Value, code: u16, reason: &str) {
    assert_eq!(json["kind"], "Status", "{json}");
    assert_eq!(json["apiVersion"], "v1");
    assert_eq!(json["metadata"], serde_json::json!({}));
    assert_eq!(json["status"], "Failure");
    assert_eq!(json["code"], code);
    assert_eq!(json["reason"], reason);
    assert!(!json["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn discovery_lists_the_group_and_the_served_metrics() {
    let f = fixture();
    let admin = || peer(&f.cluster_ca, "admin", Some("system:masters"));
    let (code, _, groups) = call("/apis").cert(admin()).send(&f.state).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["groups"][0]["name"], GROUP);
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        GROUP_VERSION
    );
    let (_, _, group) = call("/apis/external.metrics.k8s.io")
        .cert(admin())
        .send(&f.state)
        .await;
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(group["versions"][0]["version"], VERSION);
    let (_, content_type, resources) = call("/apis/external.metrics.k8s.io/v1beta1")
        .cert(admin())
        .send(&f.state)
        .await;
    assert_eq!(content_type, "application/json");
    assert_eq!(resources["kind"], "APIResourceList");
    assert_eq!(resources["groupVersion"], GROUP_VERSION);
    assert_eq!(
        resources["resources"],
        serde_json::json!([{ "name": "backlog", "singularName": "", "namespaced": true,
                             "kind": "ExternalMetricValueList", "verbs": ["get"] }])
    );
}

#[tokio::test]
async fn values_are_json_even_when_protobuf_is_asked_for_first() {
    let f = fixture();
    let (code, content_type, list) = call(&format!(
        "{VALUES}?labelSelector=ebb.dev%2Fscaledtarget%3Dorders"
    ))
    .header("authorization", "Bearer good-token")
    .header("accept", "application/vnd.kubernetes.protobuf, */*")
    .send(&f.state)
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][0]["value"], "12500m");
    assert_eq!(
        list["items"][0]["metricLabels"]["ebb.dev/scaledtarget"],
        "orders"
    );
}

#[tokio::test]
async fn unknown_metrics_bad_selectors_and_failed_fetches_are_statuses() {
    let f = fixture();
    let admin = || peer(&f.cluster_ca, "admin", Some("system:masters"));
    let (code, _, s) = call("/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/nope")
        .cert(admin())
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&s, 404, "NotFound");
    let (code, _, s) = call(&format!("{VALUES}?labelSelector=a%20in%20b"))
        .cert(admin())
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&s, 400, "BadRequest");
    assert!(
        s["message"].as_str().unwrap().contains("expected '('"),
        "{s}"
    );
    let (code, _, s) = call("/openapi/v2").cert(admin()).send(&f.state).await;
    assert_eq!(
        (code, s["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );

    f.state.store.publish(
        "shop",
        "backlog",
        "orders",
        Sample {
            labels: BTreeMap::new(),
            value: MetricValue::Failed("management API unreachable".into()),
            timestamp: chrono::Utc::now(),
            window_seconds: None,
        },
    );
    let (code, _, s) = call(VALUES).cert(admin()).send(&f.state).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_status(&s, 503, "ServiceUnavailable");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("management API unreachable")
    );
}

#[tokio::test]
async fn requests_without_credentials_are_401_and_without_rbac_403() {
    let f = fixture();
    let (code, _, s) = call(VALUES).send(&f.state).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_status(&s, 401, "Unauthorized");
    let (code, _, _) = call(VALUES)
        .header("authorization", "Bearer wrong")
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // A client certificate from an unknown CA is no identity.
    let stranger = Ca::new("stranger").unwrap();
    let (code, _, _) = call(VALUES)
        .cert(peer(&stranger, "admin", Some("system:masters")))
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    let (code, _, s) = call(VALUES)
        .cert(peer(&f.cluster_ca, "nobody", None))
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_status(&s, 403, "Forbidden");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("\"nobody\" cannot list"),
        "{s}"
    );
    let (code, _, _) = call(VALUES)
        .cert(peer(&f.cluster_ca, "reader", None))
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn remote_user_headers_are_trusted_only_from_the_allowed_front_proxy() {
    let f = fixture();
    let as_admin = |c: Call| {
        c.header("x-remote-user", "admin")
            .header("x-remote-group", "system:masters")
    };
    // Without a certificate: the headers are ignored.
    let (code, _, _) = as_admin(call(VALUES)).send(&f.state).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // With a cluster-CA certificate: the certificate's user, not the header's.
    let (code, _, s) = as_admin(call(VALUES).cert(peer(&f.cluster_ca, "nobody", None)))
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{s}");
    // A front-proxy-CA certificate whose CN is not allowed.
    let (code, _, _) = as_admin(call(VALUES).cert(peer(&f.front_proxy_ca, "intruder", None)))
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // The real front proxy: the headers count.
    let proxy = || peer(&f.front_proxy_ca, "front-proxy-client", None);
    let (code, _, _) = as_admin(call(VALUES).cert(proxy())).send(&f.state).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = call(VALUES)
        .cert(proxy())
        .header("x-remote-user", "nobody")
        .send(&f.state)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn health_needs_no_credentials_and_readiness_waits_for_every_target() {
    let f = fixture();
    for path in ["/healthz", "/livez"] {
        assert_eq!(call(path).send(&f.state).await.0, StatusCode::OK);
    }
    let readyz = || async { call("/readyz").send(&f.state).await };
    assert_eq!(readyz().await.0, StatusCode::SERVICE_UNAVAILABLE);
    let r = &f.state.readiness;
    r.list_started();
    r.listed("ns/a");
    r.listed("ns/b");
    r.list_done();
    r.read("ns/a");
    assert_eq!(readyz().await.0, StatusCode::SERVICE_UNAVAILABLE);
    r.read("ns/b");
    assert_eq!(readyz().await.0, StatusCode::OK);
}

#[tokio::test]
async fn requests_are_counted_by_verb_and_code() {
    let f = fixture();
    call(VALUES).send(&f.state).await;
    let mut registry = prometheus_client::registry::Registry::with_prefix("ebb");
    f.state.metrics.register(&mut registry);
    let text = super::exposition::Exposition::new(server::metrics_text(registry))
        .text()
        .unwrap();
    assert!(
        text.contains("ebb_api_request_duration_seconds_count{verb=\"list\",code=\"401\"} 1"),
        "{text}"
    );
    assert!(text.contains("ebb_api_requests_in_flight 0"), "{text}");
}

#[tokio::test]
async fn a_connection_loses_its_identity_when_its_ca_is_rotated_out() {
    let f = fixture();
    // Clones share the per-connection verdict, as requests on one connection do.
    let connection = peer(&f.cluster_ca, "admin", Some("system:masters"));
    let (code, _, _) = call(VALUES).cert(connection.clone()).send(&f.state).await;
    assert_eq!(code, StatusCode::OK);
    let rotated = Ca::new("rotated").unwrap();
    f.state
        .auth
        .update(AuthSettings {
            client_ca_pem: Some(rotated.cert_pem().to_string()),
            request_header: None,
        })
        .unwrap();
    let (code, _, _) = call(VALUES).cert(connection).send(&f.state).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}
