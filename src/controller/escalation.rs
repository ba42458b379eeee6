//! Escalation: a webhook, from a Secret (`url`, optional `headers` as `Name: value` lines),
//! called when a target sits at maxReplicas while demand exceeds it, or when scaling keeps
//! failing. The decision machine rate-limits it per ScaledTarget and reason, so a persisting
//! problem pages once per `minInterval`, not once per poll.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;

use super::{ControllerError, Result};

pub use crate::engine::target::EscalationReason;

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

/// Calls escalation webhooks. The rate limit per target and reason is the decision machine's
/// (`engine::target`): it asks for an escalation at most once per `minInterval`.
#[derive(Default)]
pub struct Escalator {
    http: reqwest::Client,
}

impl Escalator {
    /// Calls the webhook in Secret `secret_name` with `payload`.
    pub async fn escalate(
        &self,
        client: &kube::Client,
        namespace: &str,
        secret_name: &str,
        payload: &EscalationPayload,
    ) -> Result<()> {
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
        Ok(())
    }
}
