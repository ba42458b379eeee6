//! KEDA ScaledObjects to ScaledTargets (`ebb import keda`).
//!
//! Every ScaledObject becomes one ScaledTarget in mode Hpa (KEDA drives an HPA too) of the same
//! name and namespace. What cannot be carried over as it was is reported, one [`Finding`] per
//! field; a ScaledObject that KEDA itself would refuse, or of which nothing could be carried, is
//! refused ([`Refusal`]) and written nowhere. The facts (field names, defaults, how KEDA reads
//! a value) are KEDA's, from kedacore/keda; the mapping table is docs/keda.md.

mod model;
mod modifiers;
mod prometheus;
mod rabbitmq;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize as _;
use serde_yaml::Value;

use crate::crd::{
    ADOPT_HPA_ANNOTATION, Fallback, MetricTarget, Mode, PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION, ScaledTarget, ScaledTargetSpec, TargetRef, TargetType,
};
pub use model::{ScaledObject, TriggerAuthentication};

/// KEDA's defaults (scaledobject_types.go and the ScaledObject controller).
pub const KEDA_DEFAULT_MIN_REPLICAS: i64 = 0;
pub const KEDA_DEFAULT_MAX_REPLICAS: i64 = 100;
pub const KEDA_DEFAULT_POLLING_SECONDS: i64 = 30;
/// ebb's bounds that KEDA does not have (the CRD's).
const MAX_POLLING_SECONDS: i64 = 3600;
const MAX_COOLDOWN_SECONDS: i64 = 604_800;
const MAX_METRICS: usize = 16;
const MAX_FALLBACK_THRESHOLD: i64 = 100;

const KEDA_PAUSED: &str = "autoscaling.keda.sh/paused";
const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
const KEDA_TRANSFER_HPA: &str = "scaledobject.keda.sh/transfer-hpa-ownership";

/// How far a field is from what it was in KEDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Carried over; worth knowing (a default written out, a difference that changes nothing).
    Note,
    /// Carried over, but the cluster needs a change for it to work (a Secret key to add).
    Action,
    /// Carried over with a different meaning.
    Changed,
    /// Not carried over.
    Dropped,
}

impl Loss {
    fn word(self) -> &'static str {
        match self {
            Loss::Note => "note",
            Loss::Action => "action needed",
            Loss::Changed => "changed in meaning",
            Loss::Dropped => "dropped",
        }
    }

    /// Whether `--check` fails on it: anything but a note.
    pub fn fails_check(self) -> bool {
        self != Loss::Note
    }
}

/// One field not carried over as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The ScaledObject, `namespace/name`.
    pub object: String,
    /// The field, e.g. `triggers[1] (type kafka)` or `spec.fallback.behavior`.
    pub field: String,
    pub loss: Loss,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}; {}",
            self.object,
            self.field,
            self.message,
            self.loss.word()
        )
    }
}

/// Why a ScaledObject was not converted at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub object: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error: {}: {}: {}; not imported",
            self.object, self.field, self.message
        )
    }
}

/// What an import produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub targets: Vec<ScaledTarget>,
    pub findings: Vec<Finding>,
    pub refusals: Vec<Refusal>,
}

impl Outcome {
    /// The ScaledTargets as multi-document YAML.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::new();
        for target in &self.targets {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(target)?);
        }
        Ok(out)
    }

    /// How many ScaledObjects were refused.
    pub fn refused_objects(&self) -> usize {
        self.refusals
            .iter()
            .map(|r| &r.object)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// The TriggerAuthentications of the input, by (namespace, name), and the cluster-wide ones by
/// name.
#[derive(Debug, Default)]
pub struct Auths {
    namespaced: Vec<TriggerAuthentication>,
    cluster: Vec<TriggerAuthentication>,
}

impl Auths {
    fn find(
        &self,
        so: &model::Meta,
        r: &model::AuthenticationRef,
    ) -> Option<(&TriggerAuthentication, bool)> {
        let cluster = r.kind.as_deref() == Some("ClusterTriggerAuthentication");
        if cluster {
            return self
                .cluster
                .iter()
                .find(|ta| ta.metadata.name == r.name)
                .map(|ta| (ta, true));
        }
        // A file without namespaces (a chart's templates) matches by name alone.
        self.namespaced
            .iter()
            .find(|ta| {
                ta.metadata.name == r.name
                    && (ta.metadata.namespace.is_none()
                        || so.namespace.is_none()
                        || ta.metadata.namespace == so.namespace)
            })
            .map(|ta| (ta, false))
    }
}

/// Reads every YAML document of `text` and converts its ScaledObjects. `Err` only for input
/// that is not YAML; everything else is a finding or a refusal.
pub fn import(text: &str) -> Result<Outcome, serde_yaml::Error> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        flatten_lists(Value::deserialize(document)?, &mut documents);
    }
    let mut auths = Auths::default();
    let mut objects = Vec::new();
    let mut outcome = Outcome::default();
    for (index, document) in documents.into_iter().enumerate() {
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = document
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string();
        let unreadable = |e: serde_yaml::Error| Refusal {
            object: name.clone(),
            field: format!("document {} ({kind})", index + 1),
            message: format!("not a KEDA {kind}: {e}"),
        };
        match kind.as_str() {
            "ScaledObject" => match serde_yaml::from_value::<ScaledObject>(document.clone()) {
                Ok(so) => objects.push(so),
                Err(e) => outcome.refusals.push(unreadable(e)),
            },
            "TriggerAuthentication" | "ClusterTriggerAuthentication" => {
                match serde_yaml::from_value::<TriggerAuthentication>(document.clone()) {
                    Ok(ta) if kind == "TriggerAuthentication" => auths.namespaced.push(ta),
                    Ok(ta) => auths.cluster.push(ta),
                    Err(e) => outcome.refusals.push(unreadable(e)),
                }
            }
            "ScaledJob" => outcome.refusals.push(Refusal {
                object: name,
                field: "kind ScaledJob".into(),
                message: "ebb scales workloads with a /scale subresource; it does not start Jobs"
                    .into(),
            }),
            _ => outcome.findings.push(Finding {
                object: name,
                field: format!("document {} (kind {kind:?})", index + 1),
                loss: Loss::Note,
                message: "not a ScaledObject or TriggerAuthentication; ignored".into(),
            }),
        }
    }
    for so in &objects {
        let mut cx = Cx::new(so.metadata.display(), &auths, &so.metadata);
        let target = convert(&mut cx, so);
        outcome.findings.append(&mut cx.findings);
        if cx.refusals.is_empty() {
            outcome.targets.extend(target);
        } else {
            outcome.refusals.append(&mut cx.refusals);
        }
    }
    Ok(outcome)
}

/// `kind: List` (what `kubectl get -o yaml` prints) into its items; empty documents dropped.
fn flatten_lists(document: Value, out: &mut Vec<Value>) {
    if document.is_null() {
        return;
    }
    if document.get("kind").and_then(Value::as_str) == Some("List") {
        if let Some(items) = document.get("items").and_then(Value::as_sequence) {
            for item in items {
                flatten_lists(item.clone(), out);
            }
        }
        return;
    }
    out.push(document);
}

/// The conversion of one ScaledObject: where its findings and refusals go.
pub(crate) struct Cx<'a> {
    object: String,
    auths: &'a Auths,
    so: &'a model::Meta,
    findings: Vec<Finding>,
    refusals: Vec<Refusal>,
}

impl<'a> Cx<'a> {
    fn new(object: String, auths: &'a Auths, so: &'a model::Meta) -> Self {
        Self {
            object,
            auths,
            so,
            findings: Vec::new(),
            refusals: Vec::new(),
        }
    }

    fn report(&mut self, field: impl Into<String>, loss: Loss, message: impl Into<String>) {
        self.findings.push(Finding {
            object: self.object.clone(),
            field: field.into(),
            loss,
            message: message.into(),
        });
    }

    fn refuse(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.refusals.push(Refusal {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn convert(cx: &mut Cx, so: &ScaledObject) -> Option<ScaledTarget> {
    let spec = &so.spec;
    if so.metadata.name.is_empty() {
        cx.refuse("metadata.name", "a ScaledObject needs a name");
    }
    let target_ref = match &spec.scale_target_ref {
        Some(t) if !t.name.is_empty() => {
            if t.env_source_container_name.is_some() {
                cx.report(
                    "spec.scaleTargetRef.envSourceContainerName",
                    Loss::Note,
                    "only KEDA's *FromEnv parameters read it, and ebb reads no container environment",
                );
            }
            TargetRef {
                api_version: t.api_version.clone().unwrap_or_else(|| "apps/v1".into()),
                kind: t.kind.clone().unwrap_or_else(|| "Deployment".into()),
                name: t.name.clone(),
            }
        }
        _ => {
            cx.refuse("spec.scaleTargetRef.name", "missing: the workload to scale");
            return None;
        }
    };

    let min = spec.min_replica_count.unwrap_or(KEDA_DEFAULT_MIN_REPLICAS);
    let max = spec.max_replica_count.unwrap_or(KEDA_DEFAULT_MAX_REPLICAS);
    if min < 0 || max < 1 || min > max {
        cx.refuse(
            "spec.minReplicaCount",
            format!("minReplicaCount {min} and maxReplicaCount {max}: need 0 <= min <= max and max >= 1 (KEDA refuses them too)"),
        );
    }
    // KEDA's CheckReplicaCountBoundsAreValid (apis/keda/v1alpha1/scaledobject_types.go): the
    // idle count must be below the minimum, read as 0 when minReplicaCount is unset and as its
    // GetHPAMinReplicas (at least 1) when it is set; both the webhook and the controller refuse
    // the ScaledObject otherwise, and KEDA makes no HPA for it.
    if let Some(idle) = spec.idle_replica_count {
        let keda_min = spec.min_replica_count.map_or(0, |m| m.max(1));
        if idle >= keda_min {
            cx.refuse(
                "spec.idleReplicaCount",
                format!(
                    "{idle} must be below minReplicaCount ({}; KEDA refuses it too)",
                    match spec.min_replica_count {
                        None => "unset, read as 0".to_string(),
                        Some(m) if m < 1 => format!("{m}, read as 1"),
                        Some(m) => m.to_string(),
                    }
                ),
            );
        }
    }
    let idle_replicas = match spec.idle_replica_count {
        None => None,
        Some(0) => Some(0),
        Some(n) => {
            cx.report(
                "spec.idleReplicaCount",
                Loss::Dropped,
                format!("ebb's idleReplicas is 0 or unset (the HPA would scale any other idle count back up to minReplicas); {n} is not carried, the workload stays at minReplicas {min} while idle"),
            );
            None
        }
    };

    let polling = spec
        .polling_interval
        .unwrap_or(KEDA_DEFAULT_POLLING_SECONDS);
    let polling = if polling < 1 {
        cx.refuse(
            "spec.pollingInterval",
            format!("{polling}: must be at least 1 (KEDA refuses it too)"),
        );
        1
    } else if polling > MAX_POLLING_SECONDS {
        cx.report(
            "spec.pollingInterval",
            Loss::Changed,
            format!("{polling}s is above ebb's bound of 1h; 1h is written"),
        );
        MAX_POLLING_SECONDS
    } else {
        polling
    };
    let cooldown = |cx: &mut Cx, field: &str, value: Option<i64>| -> Option<i32> {
        let v = value?;
        if v < 0 {
            cx.refuse(
                field,
                format!("{v}: must not be negative (KEDA refuses it too)"),
            );
            return None;
        }
        if v > MAX_COOLDOWN_SECONDS {
            cx.report(
                field,
                Loss::Changed,
                format!("{v} seconds is above ebb's bound of 604800 (7 days); 604800 is written"),
            );
        }
        Some(v.min(MAX_COOLDOWN_SECONDS) as i32)
    };
    let cooldown_seconds = cooldown(cx, "spec.cooldownPeriod", spec.cooldown_period);
    let initial_cooldown_seconds = cooldown(
        cx,
        "spec.initialCooldownPeriod",
        spec.initial_cooldown_period,
    );

    let modifiers = spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .filter(|m| m.in_use());
    let fallback = spec.fallback.as_ref().and_then(|f| {
        fallback(
            cx,
            f,
            max.clamp(1, i32::MAX as i64) as i32,
            modifiers.is_some_and(|m| m.formula.is_some()),
        )
    });

    let mut behavior = None;
    let mut adopt_hpa = format!("keda-hpa-{}", so.metadata.name);
    if let Some(advanced) = &spec.advanced {
        if let Some(hpa) = &advanced.horizontal_pod_autoscaler_config {
            behavior = hpa.behavior.clone();
            if let Some(name) = hpa.name.as_ref().filter(|n| !n.is_empty()) {
                adopt_hpa = name.clone();
            }
        }
        if advanced.restore_to_original_replica_count == Some(true) {
            cx.report(
                "spec.advanced.restoreToOriginalReplicaCount",
                Loss::Dropped,
                "ebb leaves the replica count where it is when a ScaledTarget is deleted; scale the workload back yourself after deleting it",
            );
        }
        for key in advanced
            .scaling_modifiers
            .iter()
            .flat_map(|m| m.other.keys())
        {
            cx.report(
                format!("spec.advanced.scalingModifiers.{key}"),
                Loss::Dropped,
                "not a field the import knows",
            );
        }
        for key in advanced.other.keys() {
            cx.report(
                format!("spec.advanced.{key}"),
                Loss::Dropped,
                "not a field the import knows",
            );
        }
    }
    for key in spec.other.keys() {
        cx.report(
            format!("spec.{key}"),
            Loss::Dropped,
            "not a field the import knows",
        );
    }

    let annotations = annotations(cx, &so.metadata, &adopt_hpa);
    let (metrics, carried) = triggers(cx, so);
    if metrics.is_empty() && cx.refusals.is_empty() {
        cx.refuse(
            "spec.triggers",
            "no trigger could be carried over (see the lines above): a ScaledTarget needs at least one metric",
        );
    }
    if metrics.len() > MAX_METRICS {
        cx.refuse(
            "spec.triggers",
            format!(
                "{} metrics; a ScaledTarget holds at most {MAX_METRICS}",
                metrics.len()
            ),
        );
    }

    // With scalingModifiers, the formula over the triggers alone scales: spec.formula.
    let formula =
        modifiers.and_then(|m| modifiers::convert(cx, m, &so.spec.triggers, &carried, &metrics));
    if fallback.is_some() && formula.is_some() {
        cx.report(
            "spec.fallback",
            Loss::Note,
            "with a formula KEDA puts the fallback in place of the formula's value when a trigger fails, and ebb when the formula has no value (an input it reads failed)",
        );
    } else if fallback.is_some() && metrics.len() > 1 {
        cx.report(
            "spec.fallback",
            Loss::Changed,
            "KEDA puts the fallback in place of each trigger that fails; ebb enters fallback when every metric fails",
        );
    }
    let spec = ScaledTargetSpec {
        target_ref,
        mode: Mode::Hpa,
        min_replicas: min.clamp(0, i32::MAX as i64) as i32,
        idle_replicas,
        cooldown_seconds,
        initial_cooldown_seconds,
        max_replicas: max.clamp(1, i32::MAX as i64) as i32,
        polling_interval: std::time::Duration::from_secs(polling as u64).into(),
        metrics,
        formula: formula.map(Box::new),
        adaptive: None,
        behavior: behavior.map(Box::new),
        fallback,
        escalation: None,
    };
    let mut target = ScaledTarget::new(&so.metadata.name, spec);
    target.metadata.namespace = so.metadata.namespace.clone();
    target.metadata.labels = (!so.metadata.labels.is_empty()).then(|| so.metadata.labels.clone());
    target.metadata.annotations = Some(annotations);
    Some(target)
}

/// KEDA's fallback behaviours against ebb's (fallback runs max(current, replicas): never fewer).
/// `formula`: whether the ScaledObject has a scalingModifiers formula.
fn fallback(cx: &mut Cx, f: &model::KedaFallback, max: i32, formula: bool) -> Option<Fallback> {
    let field = "spec.fallback";
    let mut threshold = f.failure_threshold.unwrap_or(0);
    let mut replicas = f.replicas.unwrap_or(0);
    if threshold < 0 || replicas < 0 {
        cx.refuse(
            field,
            "failureThreshold and replicas must not be negative (KEDA refuses them too)",
        );
        return None;
    }
    // KEDA falls back once the failures exceed the threshold (pkg/fallback: failures >
    // failureThreshold), ebb once they reach it.
    threshold += 1;
    if threshold > MAX_FALLBACK_THRESHOLD {
        cx.report(
            "spec.fallback.failureThreshold",
            Loss::Changed,
            format!("ebb counts at most {MAX_FALLBACK_THRESHOLD} failed polls: {MAX_FALLBACK_THRESHOLD} is written"),
        );
        threshold = MAX_FALLBACK_THRESHOLD;
    }
    match f.behavior.as_deref().unwrap_or("static") {
        "static" => cx.report(
            "spec.fallback.behavior",
            Loss::Changed,
            format!("KEDA's static fallback sets exactly {replicas} replicas; ebb's fallback never scales down, it runs max(current, {replicas})"),
        ),
        "currentReplicasIfHigher" => {}
        "currentReplicas" => {
            cx.report(
                "spec.fallback.behavior",
                Loss::Note,
                "currentReplicas (keep the count) is written as replicas: 0, since ebb's fallback runs max(current, replicas)",
            );
            replicas = 0;
        }
        "scalingModifiers" if !formula => {
            cx.refuse(
                "spec.fallback.behavior",
                "scalingModifiers needs spec.advanced.scalingModifiers.formula (KEDA refuses it too)",
            );
            return None;
        }
        "scalingModifiers" => {
            cx.report(
                "spec.fallback",
                Loss::Dropped,
                "behavior scalingModifiers: KEDA gives a failing trigger no value in the formula, for its ?? to replace; ebb's formula has no ?? and no value when an input has none, and the count is held; no fallback is written",
            );
            return None;
        }
        other => {
            cx.report(
                "spec.fallback",
                Loss::Dropped,
                format!("behavior {other}: ebb's fallback never scales down (it runs max(current, replicas)); no fallback is written"),
            );
            return None;
        }
    }
    if replicas > i64::from(max) {
        cx.report(
            "spec.fallback.replicas",
            Loss::Note,
            format!("{replicas} is above maxReplicas: {max} is written (the HPA KEDA drives caps it at maxReplicas too)"),
        );
        replicas = i64::from(max);
    }
    Some(Fallback {
        failure_threshold: threshold as i32,
        replicas: replicas as i32,
    })
}

/// The ScaledTarget's annotations: KEDA's pause ones as ebb's, the HPA to take over, and the
/// user's own (not KEDA's, not kubectl's bookkeeping).
fn annotations(cx: &mut Cx, meta: &model::Meta, adopt_hpa: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(ADOPT_HPA_ANNOTATION.to_string(), adopt_hpa.to_string());
    cx.report(
        format!("metadata.annotations[{ADOPT_HPA_ANNOTATION}]"),
        Loss::Note,
        format!("set to KEDA's HPA {adopt_hpa}, so that ebb takes it over and the replica count does not jump: delete the ScaledObject with --cascade=orphan first (KEDA's HPA is garbage-collected with it otherwise)"),
    );
    for (key, value) in &meta.annotations {
        let field = format!("metadata.annotations[{key}]");
        match key.as_str() {
            KEDA_PAUSED_REPLICAS => match value.trim().parse::<i32>() {
                Ok(n) if n >= 0 => {
                    out.insert(PAUSED_REPLICAS_ANNOTATION.into(), n.to_string());
                }
                _ => cx.refuse(field, format!("{value:?} is not a replica count (KEDA refuses it too)")),
            },
            KEDA_PAUSED => match parse_go_bool(value) {
                Some(true) => {
                    out.insert(PAUSED_ANNOTATION.into(), "true".into());
                }
                Some(false) => {}
                None => {
                    // KEDA reads a value that is not a boolean as true.
                    cx.report(field, Loss::Note, format!("{value:?} is not a boolean; KEDA reads it as true, so ebb.dev/paused: \"true\" is written"));
                    out.insert(PAUSED_ANNOTATION.into(), "true".into());
                }
            },
            KEDA_TRANSFER_HPA => {}
            k if k.contains("keda.sh/") => cx.report(
                field,
                Loss::Dropped,
                match k {
                    "autoscaling.keda.sh/paused-scale-in" => "no equivalent annotation; set behavior.scaleDown.selectPolicy: Disabled instead",
                    "autoscaling.keda.sh/paused-scale-out" => "no equivalent annotation; set behavior.scaleUp.selectPolicy: Disabled instead",
                    _ => "a KEDA annotation ebb has no equivalent for",
                },
            ),
            k if k.starts_with("kubectl.kubernetes.io/") => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// Go's `strconv.ParseBool`, how KEDA reads booleans.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The metrics, and for each trigger the name of the metric it became (`None`: not carried).
fn triggers(cx: &mut Cx, so: &ScaledObject) -> (Vec<crate::crd::Metric>, Vec<Option<String>>) {
    let mut metrics: Vec<crate::crd::Metric> = Vec::new();
    let mut carried = vec![None; so.spec.triggers.len()];
    let mut names = BTreeSet::new();
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let field = format!("triggers[{index}] (type {})", trigger.type_);
        let name = metric_name(cx, &field, trigger, index, &names);
        let mut t = TriggerCx {
            field: field.clone(),
            metadata: trigger.metadata.clone(),
            name: name.clone(),
            trigger,
        };
        let metric = match trigger.type_.as_str() {
            "prometheus" => prometheus::convert(cx, &mut t),
            "rabbitmq" => rabbitmq::convert(cx, &mut t),
            "cpu" | "memory" => {
                cx.report(
                    &field,
                    Loss::Dropped,
                    format!("ebb has no resource metrics, and a {} HPA beside ebb's on the same workload is not possible: two HPAs on one workload fight, and ebb refuses a workload that another HPA scales. Scale on a load signal (a Prometheus query of the work) instead, or keep this workload on KEDA", trigger.type_),
                );
                continue;
            }
            other => {
                cx.report(&field, Loss::Dropped, format!("no {other} source in ebb"));
                continue;
            }
        };
        let Some(metric) = metric else { continue };
        t.leftovers(cx);
        trigger_fields(cx, &field, trigger);
        carried[index] = Some(name.clone());
        names.insert(name);
        metrics.push(metric);
    }
    (metrics, carried)
}

/// The trigger fields outside `metadata` that are not source-specific.
fn trigger_fields(cx: &mut Cx, field: &str, trigger: &model::Trigger) {
    if trigger.use_cached_metrics == Some(true) {
        cx.report(
            format!("{field} useCachedMetrics"),
            Loss::Note,
            "ebb always serves the HPA from memory, read every pollingInterval: nothing to carry",
        );
    }
    for key in trigger.other.keys() {
        cx.report(
            format!("{field} {key}"),
            Loss::Dropped,
            "not a trigger field the import knows",
        );
    }
}

/// The metric's name: the trigger's `name` made a DNS-1123 label, else `<type>-<index>`;
/// unique within the ScaledTarget.
fn metric_name(
    cx: &mut Cx,
    field: &str,
    trigger: &model::Trigger,
    index: usize,
    taken: &BTreeSet<String>,
) -> String {
    let fallback = dns_label(&format!("{}-{index}", trigger.type_));
    let mut name = match trigger.name.as_deref().filter(|n| !n.is_empty()) {
        Some(given) => {
            let label = dns_label(given);
            if label.is_empty() {
                fallback.clone()
            } else {
                if label != given {
                    cx.report(
                        format!("{field} name"),
                        Loss::Note,
                        format!("{given:?} is not a DNS-1123 label: the metric is named {label:?}"),
                    );
                }
                label
            }
        }
        None => fallback.clone(),
    };
    if taken.contains(&name) {
        name = dns_label(&format!("{name}-{index}"));
    }
    name
}

/// Lower case, `[a-z0-9-]` only, no leading or trailing `-`, at most 63 characters.
fn dns_label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut label = mapped.trim_matches('-').to_string();
    label.truncate(63);
    label.trim_end_matches('-').to_string()
}

/// One trigger's conversion: its metadata, taken key by key so that what is left at the end
/// is reported as not carried.
pub(crate) struct TriggerCx<'a> {
    field: String,
    metadata: BTreeMap<String, String>,
    name: String,
    trigger: &'a model::Trigger,
}

impl TriggerCx<'_> {
    /// The metadata value of `key` (empty counts as unset, as KEDA reads it).
    fn take(&mut self, key: &str) -> Option<String> {
        self.metadata.remove(key).filter(|v| !v.is_empty())
    }

    fn at(&self, key: &str) -> String {
        format!("{} metadata.{key}", self.field)
    }

    /// Reports the metadata keys nothing took.
    fn leftovers(&mut self, cx: &mut Cx) {
        for key in std::mem::take(&mut self.metadata).into_keys() {
            let message = if key.ends_with("FromEnv") {
                "reads the workload's container environment, which ebb cannot: put the value in the Secret ebb reads"
            } else {
                "not a field of this trigger that the import knows"
            };
            cx.report(self.at(&key), Loss::Dropped, message);
        }
    }

    /// A KEDA float (Go's ParseFloat) or a refusal naming the field.
    fn float(&mut self, cx: &mut Cx, key: &str) -> Option<f64> {
        let text = self.take(key)?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                cx.refuse(
                    self.at(key),
                    format!("{text:?} is not a number (KEDA refuses it too)"),
                );
                None
            }
        }
    }

    /// A KEDA boolean (Go's ParseBool) or a refusal.
    fn bool(&mut self, cx: &mut Cx, key: &str) -> Option<bool> {
        let text = self.take(key)?;
        let parsed = parse_go_bool(text.trim());
        if parsed.is_none() {
            cx.refuse(
                self.at(key),
                format!("{text:?} is not a boolean (KEDA refuses it too)"),
            );
        }
        parsed
    }

    /// KEDA's per-trigger `timeout`: a Go duration or a number of milliseconds; ebb's takes
    /// a unit (ms, s, m, h).
    fn timeout(&mut self, cx: &mut Cx) -> Option<String> {
        let text = self.take("timeout")?;
        let text = text.trim().to_string();
        if let Ok(ms) = text.parse::<i64>() {
            if ms < 0 {
                cx.refuse(
                    self.at("timeout"),
                    format!("{ms}: must not be negative (KEDA refuses it too)"),
                );
                return None;
            }
            if ms == 0 {
                // KEDA: 0 is unset (its operator-wide default applies).
                return None;
            }
            cx.report(self.at("timeout"), Loss::Note, format!("KEDA reads a bare {ms} as milliseconds: written as {ms}ms (ebb's timeouts take a unit)"));
            return Some(format!("{ms}ms"));
        }
        match go_duration_ms(&text) {
            Some(ms) if ms > 0.0 => Some(format_ms(ms)),
            _ => {
                cx.refuse(self.at("timeout"), format!("{text:?} is neither a duration nor a number of milliseconds (KEDA refuses it too)"));
                None
            }
        }
    }

    /// The HPA target: KEDA's metricType (AverageValue by default) of `value`.
    fn target(&self, cx: &mut Cx, value: f64, key: &str) -> Option<MetricTarget> {
        let Some(quantity) = quantity(value) else {
            cx.refuse(
                self.at(key),
                format!(
                    "{value} is not a quantity ebb can hold (at most three decimals, not negative)"
                ),
            );
            return None;
        };
        let type_ = match self
            .trigger
            .metric_type
            .as_deref()
            .unwrap_or("AverageValue")
        {
            "" | "AverageValue" => TargetType::AverageValue,
            "Value" => TargetType::Value,
            other => {
                cx.refuse(
                    format!("{} metricType", self.field),
                    format!("{other}: only AverageValue and Value are external metric targets (KEDA refuses it too)"),
                );
                return None;
            }
        };
        Some(external_target(type_, quantity))
    }
}

/// An HPA external metric's target: `quantity` as the total (Value) or per replica
/// (AverageValue).
fn external_target(type_: TargetType, quantity: Quantity) -> MetricTarget {
    MetricTarget {
        type_,
        value: (type_ == TargetType::Value).then(|| quantity.clone()),
        average_value: (type_ == TargetType::AverageValue).then_some(quantity),
        drain_seconds: None,
        throughput_per_pod: None,
        learn_throughput: None,
        min_throughput_per_pod: None,
        max_throughput_per_pod: None,
    }
}

/// A float as a Kubernetes quantity ebb reads exactly (milli precision).
fn quantity(value: f64) -> Option<Quantity> {
    if value < 0.0 || !value.is_finite() {
        return None;
    }
    let text = if value.fract() == 0.0 && value < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    };
    let milli = crate::crd::milli_value(&text).ok()?;
    // Finer than a thousandth would be rounded: refuse rather than change the target.
    ((milli as f64 - value * 1000.0).abs() < 1e-6 * value.max(1.0)).then_some(Quantity(text))
}

/// A Go duration (`1m30s`, `1.5s`, `250ms`, `100us`) in milliseconds.
fn go_duration_ms(s: &str) -> Option<f64> {
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = rest.split_at(split);
        let n: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let factor = match unit {
            "ns" => 1e-6,
            "us" | "µs" | "μs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += n * factor;
        rest = tail;
    }
    Some(total)
}

/// Milliseconds as ebb writes a timeout: whole seconds as `Ns`, else `Nms` (at least 1ms).
fn format_ms(ms: f64) -> String {
    let ms = ms.round().max(1.0) as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Where a trigger's authentication parameters come from.
pub(crate) struct AuthParams<'a> {
    /// TriggerAuthentication name, for the report.
    name: String,
    cluster: bool,
    /// A pod identity (Azure, AWS, GCP) other than `none`.
    pod_identity: bool,
    secret_refs: BTreeMap<String, &'a model::SecretTargetRef>,
    env: BTreeMap<String, String>,
}

impl<'a> AuthParams<'a> {
    /// The trigger's TriggerAuthentication, resolved; `None` without one. Refuses a reference
    /// the input does not hold (the Secret names are in it). Reports the ways of
    /// authenticating ebb does not read (pod identity, vaults, ConfigMaps).
    fn of(cx: &mut Cx<'a>, t: &TriggerCx) -> Option<Self> {
        let r = t.trigger.authentication_ref.as_ref()?;
        let field = format!("{} authenticationRef", t.field);
        let Some((ta, cluster)) = cx.auths.find(cx.so, r) else {
            let kind = r.kind.as_deref().unwrap_or("TriggerAuthentication");
            cx.refuse(
                field,
                format!("{kind} {:?} is not in the input: add it (kubectl get {} {} -o yaml), its Secret names are needed", r.name, kind.to_ascii_lowercase(), r.name),
            );
            return None;
        };
        for (key, value) in &ta.spec.other {
            let ignorable = value.is_null()
                || (key == "podIdentity"
                    && value.get("provider").and_then(Value::as_str) == Some("none"));
            if !ignorable {
                cx.report(
                    format!("{field} ({} spec.{key})", ta.metadata.name),
                    Loss::Dropped,
                    "ebb reads credentials only from a Secret in the ScaledTarget's namespace",
                );
            }
        }
        let pod_identity = ta.spec.other.get("podIdentity").is_some_and(|p| {
            !p.is_null() && p.get("provider").and_then(Value::as_str) != Some("none")
        });
        Some(Self {
            name: ta.metadata.name.clone(),
            cluster,
            pod_identity,
            secret_refs: ta
                .spec
                .secret_target_ref
                .iter()
                .map(|s| (s.parameter.clone(), s))
                .collect(),
            env: ta
                .spec
                .env
                .iter()
                .map(|e| (e.parameter.clone(), e.name.clone()))
                .collect(),
        })
    }

    fn has(&self, parameter: &str) -> bool {
        self.secret_refs.contains_key(parameter) || self.env.contains_key(parameter)
    }

    /// The Secret ebb should read for `wanted` (ebb's key, KEDA's parameter) pairs, with a
    /// line per key the Secret does not hold under ebb's name. `default_secret` names the
    /// Secret when none of the parameters comes from one.
    fn secret_for(
        &self,
        cx: &mut Cx,
        field: &str,
        wanted: &[(&[&str], &str)],
        default_secret: &str,
    ) -> String {
        let secret = wanted
            .iter()
            .find_map(|(_, p)| self.secret_refs.get(*p).map(|s| s.name.clone()))
            .unwrap_or_else(|| default_secret.to_string());
        if self.cluster {
            cx.report(
                format!("{field} (ClusterTriggerAuthentication {})", self.name),
                Loss::Action,
                format!("its Secrets live in KEDA's namespace (KEDA_CLUSTER_OBJECT_NAMESPACE, keda by default); ebb reads Secrets only in the ScaledTarget's own namespace: copy Secret {secret} there"),
            );
        }
        for (ebb_keys, parameter) in wanted {
            let ebb_key = ebb_keys[0];
            if let Some(r) = self.secret_refs.get(*parameter) {
                if r.name != secret {
                    cx.report(
                        format!("{field} ({} parameter {parameter})", self.name),
                        Loss::Action,
                        format!("ebb reads one Secret per metric: copy key {} of Secret {} into Secret {secret} as key {ebb_key}", r.key, r.name),
                    );
                } else if !ebb_keys.contains(&r.key.as_str()) {
                    cx.report(
                        format!("{field} ({} parameter {parameter})", self.name),
                        Loss::Action,
                        format!("ebb reads fixed keys: Secret {secret} needs key {ebb_key} (KEDA reads key {}): add it with the same value", r.key),
                    );
                }
            } else if let Some(env) = self.env.get(*parameter) {
                cx.report(
                    format!("{field} ({} parameter {parameter})", self.name),
                    Loss::Action,
                    format!("read from the workload's environment variable {env}, which ebb cannot: put the value in Secret {secret} as key {ebb_key}"),
                );
            }
        }
        secret
    }
}
