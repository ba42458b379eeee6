//! KEDA's objects as the import reads them: only the fields it maps, each optional where KEDA
//! has a default, and every field it does not know kept in `other` so that the report can name
//! it. Field names and defaults are KEDA's (`apis/keda/v1alpha1/scaledobject_types.go`,
//! `scaletriggers_types.go`, `triggerauthentication_types.go` of kedacore/keda).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use serde::Deserialize;
use serde_yaml::Value;

/// The metadata of any object: what names it and what is copied over.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Meta {
    /// `namespace/name`, or `name` when the input names no namespace: how the report names
    /// an object.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `keda.sh/v1alpha1` ScaledObject.
#[derive(Debug, Clone, Deserialize)]
pub struct ScaledObject {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: ScaledObjectSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaledObjectSpec {
    pub scale_target_ref: Option<ScaleTarget>,
    pub polling_interval: Option<i64>,
    pub initial_cooldown_period: Option<i64>,
    pub cooldown_period: Option<i64>,
    pub idle_replica_count: Option<i64>,
    pub min_replica_count: Option<i64>,
    pub max_replica_count: Option<i64>,
    pub advanced: Option<Advanced>,
    pub triggers: Vec<Trigger>,
    pub fallback: Option<KedaFallback>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleTarget {
    pub name: String,
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub env_source_container_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Advanced {
    pub horizontal_pod_autoscaler_config: Option<HpaConfig>,
    pub restore_to_original_replica_count: Option<bool>,
    pub scaling_modifiers: Option<ScalingModifiers>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `spec.advanced.scalingModifiers`: a formula over the triggers, by `name`, that alone scales.
/// KEDA's fields are strings; a hand-written file may hold `target: 2`, so any scalar is read as
/// its text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScalingModifiers {
    /// expr-lang/expr syntax over the trigger names.
    #[serde(deserialize_with = "scalar")]
    pub formula: Option<String>,
    /// The composite metric's target (a number).
    #[serde(deserialize_with = "scalar")]
    pub target: Option<String>,
    /// The composite metric's activation (a number; default 0).
    #[serde(deserialize_with = "scalar")]
    pub activation_target: Option<String>,
    /// AverageValue (the default) or Value.
    #[serde(deserialize_with = "scalar")]
    pub metric_type: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl ScalingModifiers {
    /// KEDA's `IsUsingModifiers`: any of its own fields set (its CRD prunes unknown ones).
    pub fn in_use(&self) -> bool {
        [
            &self.formula,
            &self.target,
            &self.activation_target,
            &self.metric_type,
        ]
        .iter()
        .any(|f| f.is_some())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HpaConfig {
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KedaFallback {
    pub failure_threshold: Option<i64>,
    pub replicas: Option<i64>,
    /// static (KEDA's default), currentReplicas, currentReplicasIfHigher,
    /// currentReplicasIfLower, scalingModifiers.
    pub behavior: Option<String>,
}

/// One entry of `spec.triggers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub type_: String,
    pub name: Option<String>,
    pub use_cached_metrics: Option<bool>,
    /// KEDA's schema says strings; a hand-written file may hold `threshold: 20`, so any
    /// scalar is read as its text.
    #[serde(deserialize_with = "scalar_map")]
    pub metadata: BTreeMap<String, String>,
    pub authentication_ref: Option<AuthenticationRef>,
    pub metric_type: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthenticationRef {
    pub name: String,
    /// TriggerAuthentication (the default) or ClusterTriggerAuthentication.
    pub kind: Option<String>,
}

/// `TriggerAuthentication` or `ClusterTriggerAuthentication`.
#[derive(Debug, Clone, Deserialize)]
pub struct TriggerAuthentication {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: TriggerAuthenticationSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TriggerAuthenticationSpec {
    pub secret_target_ref: Vec<SecretTargetRef>,
    pub env: Vec<AuthEnvironment>,
    /// podIdentity, configMapTargetRef, hashiCorpVault, azureKeyVault, ...: nothing ebb reads.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A trigger parameter read from a key of a Secret.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SecretTargetRef {
    pub parameter: String,
    pub name: String,
    pub key: String,
}

/// A trigger parameter read from the workload's container environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthEnvironment {
    pub parameter: String,
    pub name: String,
}

/// A scalar as its text; null or empty as unset.
fn scalar<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let text = match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => return Err(D::Error::custom("expected a string, found a list or a map")),
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

fn scalar_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let raw = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(D::Error::custom(format!(
                        "metadata.{k}: expected a string, found a list or a map"
                    )));
                }
            };
            Ok((k, text))
        })
        .collect()
}
