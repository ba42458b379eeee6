//! KEDA's `prometheus` trigger (pkg/scalers/prometheus_scaler.go of kedacore/keda) as a
//! Prometheus metric.

use std::collections::BTreeMap;

use super::{AuthParams, Cx, Loss, TriggerCx};
use crate::crd::{Metric, PrometheusConfig, SecretRef};
use crate::source::prometheus::{
    KEY_BEARER_TOKEN, KEY_PASSWORD, KEY_USERNAME, PrometheusHeader, RESERVED_HEADERS,
    RESERVED_PARAMETERS, TENANT_HEADER,
};
use crate::source::secret::{KEY_CA, KEY_TLS_CERT, KEY_TLS_KEY};

pub(super) fn convert<'a>(cx: &mut Cx<'a>, t: &mut TriggerCx) -> Option<Metric> {
    let address = t.take("serverAddress");
    let query = t.take("query");
    let threshold_set = t.metadata.get("threshold").is_some_and(|v| !v.is_empty());
    let threshold = t.float(cx, "threshold");
    let activation = t.float(cx, "activationThreshold");
    for (key, missing) in [
        ("serverAddress", address.is_none()),
        ("query", query.is_none()),
        ("threshold", !threshold_set),
    ] {
        if missing {
            cx.refuse(t.at(key), "missing (KEDA refuses it too)");
        }
    }
    let mut config = PrometheusConfig {
        address: address.unwrap_or_default(),
        query: query.unwrap_or_default(),
        ..Default::default()
    };

    let mut parameters = BTreeMap::new();
    if let Some(text) = t.take("queryParameters") {
        for (key, value) in key_values(cx, t, "queryParameters", &text)? {
            if RESERVED_PARAMETERS.contains(&key.as_str()) {
                cx.report(
                    t.at("queryParameters"),
                    Loss::Dropped,
                    format!(
                        "{key} is set by ebb on every query ({}); not carried",
                        RESERVED_PARAMETERS.join(", ")
                    ),
                );
            } else {
                parameters.insert(key, value);
            }
        }
    }
    if let Some(namespace) = t.take("namespace") {
        // KEDA sends it as a query parameter (the Thanos querier's tenancy port reads it).
        if let Some(previous) = parameters.insert("namespace".into(), namespace.clone())
            && previous != namespace
        {
            cx.report(
                t.at("namespace"),
                Loss::Changed,
                format!("KEDA sends both namespace={namespace} and queryParameters' namespace={previous}; ebb sends one parameter per name: namespace={namespace}"),
            );
        }
    }
    config.query_parameters = (!parameters.is_empty()).then_some(parameters);

    let mut headers = Vec::new();
    if let Some(text) = t.take("customHeaders") {
        for (name, value) in key_values(cx, t, "customHeaders", &text)? {
            if name.eq_ignore_ascii_case(TENANT_HEADER) {
                config.tenant = Some(value);
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                cx.report(
                    t.at("customHeaders"),
                    Loss::Dropped,
                    format!("{name} is set by ebb's HTTP client; not carried"),
                );
            } else {
                headers.push(PrometheusHeader {
                    name,
                    value: Some(value),
                    value_from: None,
                });
            }
        }
    }

    match t.bool(cx, "ignoreNullValues") {
        Some(false) => {}
        // KEDA's default is true: an empty result (no series, NaN, ±Inf) reads 0.
        _ => {
            config.empty_as = Some(0.0);
            cx.report(
                t.at("ignoreNullValues"),
                Loss::Note,
                "KEDA reads an empty result (no series, NaN, Inf) as 0 unless ignoreNullValues is false; ebb's default is no data (the count is held), so the import writes emptyAs: 0 to keep KEDA's behaviour. Remove it to hold the count when the query returns nothing",
            );
        }
    }
    if t.bool(cx, "unsafeSsl") == Some(true) {
        cx.report(
            t.at("unsafeSsl"),
            Loss::Dropped,
            format!("ebb always verifies the server's certificate: put the CA that signed it in the authSecretRef Secret as {KEY_CA}"),
        );
    }
    config.timeout = t.timeout(cx);
    if t.take("metricName").is_some() {
        cx.report(
            t.at("metricName"),
            Loss::Note,
            "KEDA's prometheus scaler no longer reads it; the metric is named after the trigger",
        );
    }
    for key in ["awsRegion", "identityOwner"] {
        if t.take(key).is_some() {
            cx.report(
                t.at(key),
                Loss::Dropped,
                "cloud identities (AWS SigV4, Azure, GCP) are not read by ebb: use a bearer token or basic auth in a Secret",
            );
        }
    }

    let auth_modes = t.take("authModes").or_else(|| t.take("authMode"));
    if let Some(auth) = AuthParams::of(cx, t) {
        let secret = auth_secret(cx, t, &auth, auth_modes.as_deref());
        config.auth_secret_ref = secret.map(|name| SecretRef { name });
    } else if auth_modes.is_some() {
        cx.refuse(
            t.at("authModes"),
            "set, but the trigger has no authenticationRef to read the credentials from (KEDA refuses it too)",
        );
    }
    if !headers.is_empty() {
        config.headers = Some(headers);
    }

    let target = t.target(cx, threshold?, "threshold")?;
    Some(Metric {
        name: t.name.clone(),
        prometheus: Some(Box::new(config)),
        rabbitmq: None,
        target,
        activation,
        slo: None,
        arrival_rate: None,
        served_rate: None,
    })
}

/// KEDA's `k=v,k2=v2` (scalersconfig's map parsing: split on `,`, each entry exactly one `=`,
/// both sides trimmed). A malformed entry refuses the ScaledObject, as KEDA does.
fn key_values(cx: &mut Cx, t: &TriggerCx, key: &str, text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in text.split(',') {
        let parts: Vec<&str> = entry.trim().split('=').collect();
        match parts.as_slice() {
            [k, v] => out.push((k.trim().to_string(), v.trim().to_string())),
            _ => {
                cx.refuse(
                    t.at(key),
                    format!("{:?} is not key=value (KEDA refuses it too)", entry.trim()),
                );
                return None;
            }
        }
    }
    Some(out)
}

/// The Secret ebb reads credentials from, per KEDA's authModes (authentication_types.go):
/// bearer (bearerToken or token), basic (username, password), tls (cert, key), and ca with any.
fn auth_secret(
    cx: &mut Cx,
    t: &TriggerCx,
    auth: &AuthParams,
    modes: Option<&str>,
) -> Option<String> {
    let field = format!("{} authenticationRef", t.field);
    let Some(modes) = modes else {
        if [
            "bearerToken",
            "token",
            "username",
            "password",
            "cert",
            "key",
            "ca",
        ]
        .iter()
        .any(|p| auth.has(p))
        {
            cx.report(
                t.at("authModes"),
                Loss::Note,
                format!("unset: KEDA sends no credentials from TriggerAuthentication {}, so the import sets no authSecretRef either", auth.name),
            );
        }
        return None;
    };
    if auth.pod_identity {
        cx.refuse(
            &field,
            format!("TriggerAuthentication {}: a pod identity cannot be combined with authModes (KEDA refuses it too)", auth.name),
        );
        return None;
    }
    let mut wanted: Vec<(&[&str], &str)> = Vec::new();
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match mode {
            "bearer" => {
                let parameter = if auth.has("bearerToken") { "bearerToken" } else { "token" };
                if !auth.has(parameter) {
                    cx.refuse(&field, "authModes bearer needs the parameter bearerToken (KEDA refuses it too)");
                }
                wanted.push((&[KEY_BEARER_TOKEN], parameter));
            }
            "basic" => {
                if !auth.has("username") {
                    cx.refuse(&field, "authModes basic needs the parameter username (KEDA refuses it too)");
                }
                wanted.push((&[KEY_USERNAME], "username"));
                wanted.push((&[KEY_PASSWORD], "password"));
            }
            "tls" => {
                if !auth.has("cert") || !auth.has("key") {
                    cx.refuse(&field, "authModes tls needs the parameters cert and key (KEDA refuses it too)");
                }
                wanted.push((&[KEY_TLS_CERT], "cert"));
                wanted.push((&[KEY_TLS_KEY], "key"));
            }
            "custom" if !auth.has("customAuthHeader") || !auth.has("customAuthValue") => cx.refuse(
                &field,
                "authModes custom needs the parameters customAuthHeader and customAuthValue (KEDA refuses it too)",
            ),
            "custom" => cx.report(
                t.at("authModes"),
                Loss::Dropped,
                format!("custom: the header's name is in a Secret (customAuthHeader), which the import cannot read: add headers: [{{name: <that header>, valueFrom: {{secretKeyRef: {{key: <the customAuthValue key>}}}}}}] to the metric, with authSecretRef naming that Secret (TriggerAuthentication {})", auth.name),
            ),
            "apiKey" | "oauth" => cx.report(
                t.at("authModes"),
                Loss::Dropped,
                format!("{mode}: ebb reads a bearer token, basic auth or a client certificate; not carried"),
            ),
            other => cx.refuse(
                t.at("authModes"),
                format!("{other:?} is not one of apiKey, basic, tls, bearer, custom, oauth (KEDA refuses it too)"),
            ),
        }
    }
    if auth.has("ca") {
        wanted.push((&[KEY_CA], "ca"));
    }
    if wanted.is_empty() {
        return None;
    }
    Some(auth.secret_for(cx, &field, &wanted, &auth.name))
}
