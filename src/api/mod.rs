//! The `external.metrics.k8s.io/v1beta1` API server the HPA reads ebb's metrics from,
//! registered as an aggregated API (APIService `v1beta1.external.metrics.k8s.io`).
//!
//! - [`router`]: discovery, values, health; every answer from memory ([`store::MetricStore`]),
//!   JSON always (client-go may ask for protobuf first and accepts JSON), errors as Kubernetes
//!   `Status` objects ([`ApiError`]);
//! - [`auth`]: front-proxy / client-certificate / bearer-token authentication and
//!   SubjectAccessReview authorization, as an aggregated API server must do them;
//! - [`server`]: HTTPS with certificate reload, client certificates passed to the router, and
//!   ebb's `/metrics` on a separate plain-HTTP port ([`exposition`]: gzip as it is encoded);
//! - [`request`] and [`selector`]: parsing of value requests and label selectors.
//!
//! Wire format and rules: `shared/reference/external-metrics-api.md`.

pub mod auth;
pub mod exposition;
pub mod metrics;
pub mod readiness;
pub mod request;
pub mod selector;
pub mod server;
pub mod store;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

pub use self::auth::{Auth, UserInfo};
pub use self::metrics::ApiMetrics;
pub use self::readiness::Readiness;
pub use self::server::{ServeConfig, Server, serve};
pub use self::store::{MetricStore, MetricValue, Sample};

use self::auth::{Attributes, PeerCertificates};
use self::metrics::RequestLabels;
use self::request::{ValuesPath, selector_from_query};
use self::store::Lookup;

/// The API group ebb serves.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";
const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// An error answered as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A metric whose last fetch failed, or a review the kube-apiserver did not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The `Status` reason and HTTP code.
    pub fn reason_and_code(&self) -> (&'static str, StatusCode) {
        match self {
            Self::NotFound(_) => ("NotFound", StatusCode::NOT_FOUND),
            Self::BadRequest(_) => ("BadRequest", StatusCode::BAD_REQUEST),
            Self::Unauthorized(_) => ("Unauthorized", StatusCode::UNAUTHORIZED),
            Self::Forbidden(_) => ("Forbidden", StatusCode::FORBIDDEN),
            Self::Unavailable(_) => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (reason, code) = self.reason_and_code();
        if code.is_server_error() {
            tracing::warn!(%reason, message = %self, "external metrics request failed");
        }
        let status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        (code, json(status.to_string())).into_response()
    }
}

/// Everything a request needs.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<MetricStore>,
    pub auth: Arc<Auth>,
    pub readiness: Arc<Readiness>,
    pub metrics: ApiMetrics,
}

/// The API: health without authentication, everything else behind it.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(api_resource_list),
        )
        .route("/apis/external.metrics.k8s.io/v1beta1/{*rest}", get(values))
        // /openapi/v2 and /openapi/v3 included: the aggregator accepts a 404 there.
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn json(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// Authenticates every request that reaches it and hands the user to the handler.
async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let user = state
        .auth
        .authenticate(
            request.extensions().get::<PeerCertificates>(),
            request.headers(),
        )
        .await?;
    request.extensions_mut().insert(user);
    Ok(next.run(request).await)
}

/// Request duration and in-flight gauge.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let verb = if request
        .uri()
        .path()
        .starts_with("/apis/external.metrics.k8s.io/v1beta1/")
    {
        "list"
    } else {
        "get"
    };
    let started = std::time::Instant::now();
    // Decremented on drop: a client that hangs up mid-request must not leave the gauge high.
    struct InFlight(prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    state.metrics.requests_in_flight.inc();
    let in_flight = InFlight(state.metrics.requests_in_flight.clone());
    let response = next.run(request).await;
    drop(in_flight);
    state
        .metrics
        .request_duration_seconds
        .get_or_create(&RequestLabels {
            verb,
            code: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn authorize_path(state: &ApiState, user: &UserInfo, uri: &Uri) -> Result<(), ApiError> {
    state
        .auth
        .authorize(
            user,
            Attributes::NonResource {
                verb: "get",
                path: uri.path().to_string(),
            },
        )
        .await
}

fn group_version_for_discovery() -> serde_json::Value {
    serde_json::json!({ "groupVersion": GROUP_VERSION, "version": VERSION })
}

fn api_group_json() -> serde_json::Value {
    serde_json::json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [group_version_for_discovery()],
        "preferredVersion": group_version_for_discovery(),
    })
}

async fn api_group_list(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    authorize_path(&state, &user, &uri).await?;
    let mut group = api_group_json();
    if let Some(g) = group.as_object_mut() {
        g.remove("kind");
        g.remove("apiVersion");
    }
    let list = serde_json::json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group] });
    Ok(json(list.to_string()))
}

async fn api_group(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    authorize_path(&state, &user, &uri).await?;
    Ok(json(api_group_json().to_string()))
}

/// The metrics served in any namespace, as resources (the list may be empty).
async fn api_resource_list(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    authorize_path(&state, &user, &uri).await?;
    let resources: Vec<_> = state
        .store
        .metric_names()
        .into_iter()
        .map(|name| {
            serde_json::json!({
                "name": name, "singularName": "", "namespaced": true,
                "kind": "ExternalMetricValueList", "verbs": ["get"],
            })
        })
        .collect();
    let list = serde_json::json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": GROUP_VERSION, "resources": resources,
    });
    Ok(json(list.to_string()))
}

/// Values: authorized as the HPA is (verb `list` on resource `<metric>`), then the selector,
/// then the store.
async fn values(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    let path = ValuesPath::parse(uri.path())?;
    state
        .auth
        .authorize(
            &user,
            Attributes::Resource {
                verb: "list",
                namespace: path.namespace.clone(),
                resource: path.metric.clone(),
            },
        )
        .await?;
    let selector = selector_from_query(uri.query())?;
    match state.store.lookup(&path.namespace, &path.metric, &selector) {
        Lookup::List(body) => Ok(json(body)),
        Lookup::UnknownMetric => Err(ApiError::NotFound(format!(
            "no external metric {:?} in namespace {:?}",
            path.metric, path.namespace
        ))),
        Lookup::Failed {
            scaled_target,
            reason,
        } => Err(ApiError::Unavailable(format!(
            "the last fetch of {:?} for ScaledTarget {scaled_target:?} failed: {reason}",
            path.metric
        ))),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("the server could not find {:?}", uri.path()))
}

async fn live() -> &'static str {
    "ok"
}

/// Ready once the ScaledTarget watch listed in full and every ScaledTarget it knows has had its
/// first reading ([`Readiness`]): the HPA must not read a half-filled store as "metric not
/// found".
async fn ready(State(state): State<ApiState>) -> Response {
    if state.readiness.is_ready() {
        return "ok".into_response();
    }
    let r = state.readiness.report();
    let line = |ok: bool, what: &str| format!("[{}]{what}\n", if ok { "+" } else { "-" });
    let body = line(r.listed, "ScaledTarget watch listed")
        + &line(
            false,
            &format!(
                "first reading of every ScaledTarget ({} read, {} waiting)",
                r.read, r.waiting
            ),
        );
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

#[cfg(test)]
mod tests;
