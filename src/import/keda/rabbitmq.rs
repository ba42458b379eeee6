//! KEDA's `rabbitmq` trigger (pkg/scalers/rabbitmq_scaler.go of kedacore/keda) as a RabbitMQ
//! metric.
//!
//! What KEDA counts: mode QueueLength over HTTP is the queue's `messages` (ready +
//! unacknowledged, ebb's Backlog) unless excludeUnacknowledged (ready only); over AMQP a
//! passive declare, ready only (ebb's Ready). MessageRate is the publish rate, DeliverGetRate
//! the deliver/get rate. With useRegex the management API matches names unanchored, and no
//! matching queue reads 0.

use super::{AuthParams, Cx, Loss, TriggerCx};
use crate::crd::{Measure, Metric, RabbitMqConfig, SecretRef};
use crate::source::rabbitmq::{Aggregate, KEY_AMQP_URL, KEY_HOST, KEY_MANAGEMENT_URL};
use crate::source::secret::{KEY_CA, KEY_TLS_CERT, KEY_TLS_KEY};

/// KEDA's QueueLength when the trigger sets neither mode, value nor queueLength.
const KEDA_DEFAULT_QUEUE_LENGTH: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Amqp,
    Http,
}

/// Where KEDA reads the broker's URL from.
enum Host {
    Literal(String),
    Env(String),
    Secret,
}

pub(super) fn convert<'a>(cx: &mut Cx<'a>, t: &mut TriggerCx) -> Option<Metric> {
    let queue = t.take("queueName");
    if queue.is_none() {
        cx.refuse(t.at("queueName"), "missing (KEDA refuses it too)");
    }
    let auth = AuthParams::of(cx, t);
    let has_param = |p: &str| auth.as_ref().is_some_and(|a| a.has(p));
    let host = if let Some(h) = t.take("host") {
        Host::Literal(h)
    } else if let Some(env) = t.take("hostFromEnv") {
        Host::Env(env)
    } else if has_param("host") {
        Host::Secret
    } else {
        cx.refuse(t.at("host"), "missing: set host, hostFromEnv or a TriggerAuthentication parameter host (KEDA refuses it too)");
        return None;
    };

    // Mode and value, as KEDA's validateTrigger reads them.
    let queue_length = t.float(cx, "queueLength").filter(|v| *v != 0.0);
    let mode = t.take("mode");
    let value = t.float(cx, "value").filter(|v| *v != 0.0);
    let activation = t.float(cx, "activationValue");
    let (mode, value) = match (queue_length, mode, value) {
        (None, None, None) => {
            cx.report(
                t.at("value"),
                Loss::Note,
                "unset: KEDA's default, mode QueueLength with value 20, is written out",
            );
            ("QueueLength".to_string(), KEDA_DEFAULT_QUEUE_LENGTH)
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            cx.refuse(t.at("queueLength"), "queueLength is deprecated and cannot be set beside mode or value (KEDA refuses it too)");
            return None;
        }
        (Some(length), None, None) => ("QueueLength".to_string(), length),
        (None, None, Some(_)) => {
            cx.refuse(t.at("mode"), "missing beside value (KEDA refuses it too)");
            return None;
        }
        (None, Some(_), None) => {
            cx.refuse(t.at("value"), "missing beside mode (KEDA refuses it too)");
            return None;
        }
        (None, Some(mode), Some(value)) => (mode, value),
    };
    let rate_mode = mode != "QueueLength";

    let use_regex = t.bool(cx, "useRegex").unwrap_or(false);
    let exclude_unacked = t.bool(cx, "excludeUnacknowledged").unwrap_or(false);
    let timeout = t.timeout(cx);

    // The protocol: set, or from the URL's scheme (KEDA's auto), or inferred.
    let protocol = match t.take("protocol").as_deref() {
        Some("amqp") => Some(Protocol::Amqp),
        Some("http") => Some(Protocol::Http),
        Some("auto") | None => None,
        Some(other) => {
            cx.refuse(
                t.at("protocol"),
                format!("{other:?}: must be amqp, http or auto (KEDA refuses it too)"),
            );
            return None;
        }
    };
    let protocol = match (protocol, &host) {
        (Some(p), _) => p,
        (None, Host::Literal(url)) => match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("amqp" | "amqps") => Protocol::Amqp,
            Some("http" | "https") => Protocol::Http,
            _ => {
                cx.refuse(t.at("host"), "protocol auto and a URL that is not amqp(s):// or http(s):// (KEDA refuses it too)");
                return None;
            }
        },
        // Features only the management API has tell that the URL is http(s)://.
        (None, _) if use_regex || exclude_unacked || rate_mode || timeout.is_some() => {
            Protocol::Http
        }
        (None, _) => {
            cx.report(
                t.at("protocol"),
                Loss::Action,
                "auto, with the URL out of sight (in a Secret or the environment): the import assumes amqp(s):// and counts ready messages (measure: Ready); if the URL is http(s)://, KEDA counts ready + unacknowledged: set measure: Backlog and store the URL under key managementUrl",
            );
            Protocol::Amqp
        }
    };
    if protocol == Protocol::Amqp {
        for (on, what) in [
            (use_regex, "useRegex"),
            (exclude_unacked, "excludeUnacknowledged"),
            (rate_mode, "a mode other than QueueLength"),
            (timeout.is_some(), "timeout"),
        ] {
            if on {
                cx.refuse(
                    t.at("protocol"),
                    format!("{what} needs the HTTP protocol (KEDA refuses it too)"),
                );
                return None;
            }
        }
    }

    let measure = match mode.as_str() {
        "QueueLength" if protocol == Protocol::Http && !exclude_unacked => Measure::Backlog,
        "QueueLength" => Measure::Ready,
        "MessageRate" => {
            cx.report(
                t.at("activationValue"),
                Loss::Changed,
                "mode MessageRate: KEDA counts the queue active when the publish rate or the message count is above activationValue; ebb compares the publish rate only",
            );
            Measure::PublishRate
        }
        "DeliverGetRate" => Measure::DeliverRate,
        "PublishedToDeliveredRatio" | "ExpectedQueueConsumptionTime" => {
            let advice = if mode == "ExpectedQueueConsumptionTime" {
                "; target type DrainTime (docs/queues.md) scales on the time to drain the backlog"
            } else {
                ""
            };
            cx.report(
                t.at("mode"),
                Loss::Dropped,
                format!("{mode}: no such measure in ebb{advice}; the trigger is not carried"),
            );
            return None;
        }
        other => {
            cx.refuse(t.at("mode"), format!("{other:?} is not QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio or ExpectedQueueConsumptionTime (KEDA refuses it too)"));
            return None;
        }
    };

    let aggregate = match t.take("operation").as_deref() {
        None | Some("sum") => Aggregate::Sum,
        Some("max") => Aggregate::Max,
        Some("avg") => Aggregate::Avg,
        Some(other) => {
            cx.refuse(
                t.at("operation"),
                format!("{other:?}: must be sum, max or avg (KEDA refuses it too)"),
            );
            return None;
        }
    };
    if let Some(size) = t.take("pageSize") {
        match size.trim().parse::<i64>() {
            Ok(n) if n >= 1 => cx.report(
                t.at("pageSize"),
                Loss::Note,
                "ebb lists every queue of the vhost in one request (KEDA fails when the regex matches more than one page): nothing to carry",
            ),
            _ => {
                cx.refuse(t.at("pageSize"), format!("{size:?}: must be a whole number of at least 1 (KEDA refuses it too)"));
                return None;
            }
        }
    }
    let queue = queue?;
    let (queue, queue_regex, empty_as) = if use_regex {
        // KEDA's regex is unanchored (the management API's name filter); ebb's matches the
        // whole name, so the expression is wrapped to keep KEDA's matches.
        let wrapped = format!(".*({queue}).*");
        if let Err(e) = regex::Regex::new(&format!("^(?:{wrapped})$")) {
            cx.refuse(
                t.at("queueName"),
                format!("{queue:?} is not a regular expression ebb can read: {e}"),
            );
            return None;
        }
        cx.report(
            t.at("queueName"),
            Loss::Note,
            format!("queueRegex {wrapped:?}: ebb's queueRegex must match the whole name, KEDA's matches anywhere in it, so it is wrapped in .*( ).*; narrow it to what you mean, e.g. ^orders-.*$ becomes orders-.*"),
        );
        cx.report(
            t.at("useRegex"),
            Loss::Note,
            "KEDA reads no matching queue as 0: the import writes emptyAs: 0 to keep that (unset, ebb holds the count as no data)",
        );
        (None, Some(wrapped), Some(0.0))
    } else {
        (Some(queue), None, None)
    };

    let vhost = t.take("vhostName");
    if vhost.is_some() {
        cx.report(
            t.at("vhostName"),
            Loss::Note,
            "KEDA's vhostName overrides the vhost the URL's path names; ebb refuses a vhost that differs from the URL's: drop the path from the URL if they differ",
        );
    }
    if t.bool(cx, "unsafeSsl") == Some(true) {
        cx.report(
            t.at("unsafeSsl"),
            Loss::Dropped,
            format!("ebb always verifies the broker's certificate: put the CA that signed it in the connection Secret as {KEY_CA}"),
        );
    }

    let secret = connection_secret(cx, t, auth.as_ref(), &host, protocol);
    let target = t.target(
        cx,
        value,
        if queue_length.is_some() {
            "queueLength"
        } else {
            "value"
        },
    )?;
    Some(Metric {
        name: t.name.clone(),
        prometheus: None,
        rabbitmq: Some(Box::new(RabbitMqConfig {
            connection_secret_ref: SecretRef { name: secret },
            queue,
            queue_regex,
            aggregate,
            vhost,
            measure,
            timeout,
            empty_as,
        })),
        target,
        activation,
        slo: None,
        arrival_rate: None,
        served_rate: None,
    })
}

/// The connection Secret's name, with a line for every key it must hold under ebb's name.
fn connection_secret(
    cx: &mut Cx,
    t: &mut TriggerCx,
    auth: Option<&AuthParams>,
    host: &Host,
    protocol: Protocol,
) -> String {
    let field = format!("{} authenticationRef", t.field);
    let url_keys: &[&str] = match protocol {
        Protocol::Http => &[KEY_MANAGEMENT_URL],
        Protocol::Amqp => &[KEY_AMQP_URL, KEY_HOST],
    };
    let url_key = url_keys[0];
    let mut wanted: Vec<(&[&str], &str)> = vec![(url_keys, "host")];
    let tls = auth.is_some_and(|a| a.has("tls"));
    if tls {
        wanted.push((&[KEY_CA], "ca"));
        wanted.push((&[KEY_TLS_CERT], "cert"));
        wanted.push((&[KEY_TLS_KEY], "key"));
    }
    let own_secret = format!("{}-rabbitmq", cx.so.name);
    let secret = match auth {
        Some(a) => a.secret_for(cx, &field, &wanted, &own_secret),
        None => own_secret,
    };
    match host {
        Host::Literal(_) => cx.report(
            t.at("host"),
            Loss::Action,
            format!("ebb reads the broker's URL only from a Secret: create Secret {secret} with key {url_key} holding this URL"),
        ),
        Host::Env(env) => cx.report(
            t.at("hostFromEnv"),
            Loss::Action,
            format!("reads the workload's environment variable {env}, which ebb cannot: create Secret {secret} with key {url_key} holding that URL"),
        ),
        Host::Secret => {}
    }
    if let Some(a) = auth {
        if a.has("username") || a.has("password") {
            cx.report(
                format!("{field} ({} parameters username, password)", a.name),
                Loss::Action,
                format!("ebb reads no separate user and password: put them in the URL of key {url_key} in Secret {secret} (scheme://user:password@host:port/vhost)"),
            );
        }
        if a.has("keyPassword") {
            cx.report(
                format!("{field} ({} parameter keyPassword)", a.name),
                Loss::Dropped,
                format!("ebb reads an unencrypted client key: decrypt it into {KEY_TLS_KEY}"),
            );
        }
        for parameter in [
            "workloadIdentityResource",
            "oauthTokenURI",
            "clientID",
            "clientSecret",
        ] {
            if a.has(parameter) {
                cx.report(
                    format!("{field} ({} parameter {parameter})", a.name),
                    Loss::Dropped,
                    "ebb authenticates to RabbitMQ with the URL's user and password only",
                );
            }
        }
    }
    for key in ["usernameFromEnv", "passwordFromEnv"] {
        if t.take(key).is_some() {
            cx.report(
                t.at(key),
                Loss::Action,
                format!("put the user and password in the URL of key {url_key} in Secret {secret}"),
            );
        }
    }
    secret
}
