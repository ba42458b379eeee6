//! Escalation: a webhook, from a Secret (`url`, optional `headers` as `Name: value` lines),
//! called when a target sits at maxReplicas while demand exceeds it, or when scaling keeps
//! failing. Rate-limited per ScaledTarget and reason, so a persisting problem pages once per
//! `minInterval`, not once per poll.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;

use super::{ControllerError, Result};

/// Why ebb asks a human for help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EscalationReason {
    /// At maxReplicas and the metrics ask for more.
    AtMaxReplicas,
    /// Scaling the workload failed on several polls in a row.
    ScalingFailing,
}

/// The webhook's JSON body: what is wrong and what ebb tried.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPayload {
    /// `namespace/name` of the ScaledTarget.
    pub scaled_target: String,
    /// Why ebb escalates.
    pub reason: EscalationReason,
    /// A sentence for humans.
    pub message: String,
    /// Replicas now.
    pub current_replicas: i32,
    /// Replicas ebb wanted.
    pub desired_replicas: i32,
    /// The metrics' unbounded demand, when known.
    pub demanded_replicas: Option<i32>,
    /// The ScaledTarget's maxReplicas.
    pub max_replicas: i32,
    /// What ebb did before escalating.
    pub tried: Vec<String>,
}

/// Remembers when each (target, reason) was last escalated.
#[derive(Default)]
pub struct Escalator {
    last: Mutex<HashMap<(String, EscalationReason), Instant>>,
    http: reqwest::Client,
}

impl Escalator {
    /// Calls the webhook unless the same target and reason were escalated within
    /// `min_interval`. Returns whether it called.
    pub async fn escalate(
        &self,
        client: &kube::Client,
        namespace: &str,
        secret_name: &str,
        min_interval: Duration,
        payload: &EscalationPayload,
    ) -> Result<bool> {
        let key = (payload.scaled_target.clone(), payload.reason);
        {
            let last = self.last.lock().expect("escalation map");
            if last.get(&key).is_some_and(|t| t.elapsed() < min_interval) {
                return Ok(false);
            }
        }
        let secret = Api::<Secret>::namespaced(client.clone(), namespace)
            .get(secret_name)
            .await
            .map_err(ControllerError::Kube)?;
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let url = text("url").ok_or_else(|| {
            ControllerError::Escalation(format!("secret {secret_name} has no key \"url\""))
        })?;
        let mut request = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .json(payload);
        for line in text("headers").unwrap_or_default().lines() {
            if let Some((name, value)) = line.split_once(':') {
                request = request.header(name.trim(), value.trim());
            }
        }
        request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| ControllerError::Escalation(format!("webhook {url}: {e}")))?;
        // Recorded only after a delivered call: a failed call is retried on the next poll.
        self.last
            .lock()
            .expect("escalation map")
            .insert(key, Instant::now());
        Ok(true)
    }
}
