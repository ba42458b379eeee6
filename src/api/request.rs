//! Parsing of value requests: `/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}`
//! and its `labelSelector` query parameter. Raw bytes in, a typed request or a 400/404 out;
//! fuzzed by `fuzz/fuzz_targets/request.rs`.

use super::selector::Selector;
use super::{ApiError, GROUP, VERSION};

/// The namespace and metric of a value request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesPath {
    pub namespace: String,
    pub metric: String,
}

impl ValuesPath {
    /// Parses a request path. A path of another shape is a 404 (as the kube-apiserver answers
    /// unknown paths); a malformed namespace or metric name is a 400.
    pub fn parse(path: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::NotFound(format!("the server could not find {path:?}"));
        let rest = path
            .strip_prefix("/apis/")
            .and_then(|r| r.strip_prefix(GROUP))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(VERSION))
            .and_then(|r| r.strip_prefix("/namespaces/"))
            .ok_or_else(not_found)?;
        let mut segments = rest.split('/');
        let (Some(namespace), Some(metric), None) =
            (segments.next(), segments.next(), segments.next())
        else {
            return Err(not_found());
        };
        let namespace = decode(namespace)?;
        let metric = decode(metric)?;
        validate_namespace(&namespace)?;
        validate_metric(&metric)?;
        Ok(Self { namespace, metric })
    }
}

/// The `labelSelector` of a query string (absent or empty: everything).
pub fn selector_from_query(query: Option<&str>) -> Result<Selector, ApiError> {
    let Some(query) = query else {
        return Ok(Selector::default());
    };
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "labelSelector" {
            if found.is_some() {
                return Err(ApiError::BadRequest(
                    "labelSelector given more than once".into(),
                ));
            }
            found = Some(value);
        }
    }
    match found {
        None => Ok(Selector::default()),
        Some(s) => Selector::parse(&s).map_err(|e| ApiError::BadRequest(e.to_string())),
    }
}

fn decode(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest(format!("path segment {segment:?} is not UTF-8")))
}

/// Namespaces are DNS labels.
fn validate_namespace(ns: &str) -> Result<(), ApiError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "namespace {ns:?} is not a DNS label (lower-case alphanumerics and '-', at most 63)"
        )))
    }
}

/// Metric names are path segments (what apimachinery's `IsValidPathSegmentName` allows), no
/// longer than a Kubernetes name.
fn validate_metric(metric: &str) -> Result<(), ApiError> {
    let ok = !metric.is_empty()
        && metric.len() <= 253
        && metric != "."
        && metric != ".."
        && !metric.contains(['/', '%'])
        && !metric.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "metric name {metric:?} is not a valid path segment"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces";

    #[test]
    fn parses_namespace_and_metric() {
        let p = ValuesPath::parse(&format!("{PREFIX}/shop/rabbitmq-backlog")).unwrap();
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.metric, "rabbitmq-backlog");
        let p = ValuesPath::parse(&format!("{PREFIX}/shop/a%3Ab")).unwrap();
        assert_eq!(p.metric, "a:b");
    }

    #[test]
    fn other_shapes_are_404_and_bad_names_400() {
        for path in [
            "/apis/external.metrics.k8s.io/v1beta1/backlog",
            &format!("{PREFIX}/shop"),
            &format!("{PREFIX}/shop/backlog/extra"),
            "/apis/external.metrics.k8s.io/v1beta2/namespaces/shop/backlog",
        ] {
            assert!(
                matches!(ValuesPath::parse(path), Err(ApiError::NotFound(_))),
                "{path}"
            );
        }
        for path in [
            format!("{PREFIX}/Shop/backlog"),
            format!("{PREFIX}/shop/"),
            format!("{PREFIX}/shop/.."),
            format!("{PREFIX}/shop/a%2Fb"),
            format!("{PREFIX}/shop/%FF"),
        ] {
            assert!(
                matches!(ValuesPath::parse(&path), Err(ApiError::BadRequest(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn the_selector_comes_from_the_query() {
        let s = selector_from_query(Some("labelSelector=ebb.dev%2Fscaledtarget%3Dorders")).unwrap();
        assert_eq!(s.required_value("ebb.dev/scaledtarget"), Some("orders"));
        let s = selector_from_query(Some("labelSelector=a+in+%28x%2Cy%29&other=1")).unwrap();
        assert_eq!(s.to_string(), "a in (x,y)");
        assert!(selector_from_query(None).unwrap().is_empty());
        assert!(
            selector_from_query(Some("labelSelector="))
                .unwrap()
                .is_empty()
        );
        let e = selector_from_query(Some("labelSelector=a%3D%3D%3D")).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
        let e = selector_from_query(Some("labelSelector=a&labelSelector=b")).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
    }
}
