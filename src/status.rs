//! `ebb status`: a terminal view of every ScaledTarget (metrics against their static and learned
//! targets, replicas, state, the last scaling action), read from the cluster. The demo's live
//! table is the same view.

use crate::engine::conditions as cond;
use std::collections::HashMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::crd::{ScaledTarget, milli_value};

/// Flags of `ebb status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Redraw every this many seconds until Ctrl-C (like `top`).
    #[arg(long, short, value_name = "SECONDS")]
    pub watch: Option<u64>,
}

/// One ScaledTarget as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub mode: String,
    pub target: String,
    pub metrics: Vec<MetricCell>,
    pub current: Option<i32>,
    pub desired: Option<i32>,
    pub min: i32,
    pub max: i32,
    /// Paused, Fallback, Idle (at zero), or the Ready condition's reason.
    pub state: String,
    /// The newest scaling Event (ebb's `Scaled` on the ScaledTarget, the HPA's
    /// `SuccessfulRescale` on the owned HPA) and when it happened.
    pub last_action: Option<(Timestamp, String)>,
}

/// One metric's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCell {
    pub name: String,
    pub value: Option<String>,
    pub target: Option<String>,
    pub learned: Option<String>,
    pub error: Option<String>,
    /// On a target that scales to zero: whether this metric reads above its activation
    /// (what keeps the target awake).
    pub keeps_active: bool,
    /// An input of the formula: it decides nothing on its own.
    pub input: bool,
}

/// Reads every ScaledTarget (of `namespace`, or all) and its newest scaling Event.
pub async fn rows(client: &kube::Client, namespace: Option<&str>) -> kube::Result<Vec<Row>> {
    let (sts, events) = match namespace {
        Some(ns) => (
            Api::<ScaledTarget>::namespaced(client.clone(), ns),
            Api::<Event>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let mut last_actions: HashMap<(String, String, String), (Timestamp, String)> = HashMap::new();
    for (reason, kind) in [
        (cond::EVENT_SCALED, "ScaledTarget"),
        ("SuccessfulRescale", "HorizontalPodAutoscaler"),
    ] {
        let listed = events
            .list(&ListParams::default().fields(&format!("reason={reason}")))
            .await?;
        for e in listed.items {
            let object = &e.involved_object;
            if object.kind.as_deref() != Some(kind) {
                continue;
            }
            let Some(at) = event_time(&e) else { continue };
            let key = (
                e.namespace().unwrap_or_default(),
                kind.to_string(),
                object.name.clone().unwrap_or_default(),
            );
            let message = e.message.clone().unwrap_or_default();
            match last_actions.get(&key) {
                Some((seen, _)) if *seen >= at => {}
                _ => {
                    last_actions.insert(key, (at, message));
                }
            }
        }
    }
    let mut rows: Vec<Row> = sts
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|st| row(&st, &last_actions))
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn row(
    st: &ScaledTarget,
    last_actions: &HashMap<(String, String, String), (Timestamp, String)>,
) -> Row {
    let namespace = st.namespace().unwrap_or_default();
    let status = st.status.clone().unwrap_or_default();
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let state = if condition(cond::PAUSED).is_some_and(|c| c.status == "True") {
        cond::PAUSED.to_string()
    } else if condition(cond::FALLBACK).is_some_and(|c| c.status == "True") {
        cond::FALLBACK.to_string()
    } else if let Some(c) = condition(cond::SCALING_STALLED).filter(|c| c.status == "True") {
        format!("{}: {}", cond::SCALING_STALLED, c.reason)
    } else if st.spec.scales_to_zero() && status.current_replicas == Some(0) {
        cond::IDLE.to_string()
    } else {
        match condition(cond::READY) {
            Some(c) if c.status == "True" => cond::READY.to_string(),
            Some(c) => format!("NotReady: {}", c.reason),
            None => "Pending".to_string(),
        }
    };
    let ebb_action = last_actions.get(&(namespace.clone(), "ScaledTarget".into(), st.name_any()));
    let hpa_action = status.hpa_name.as_ref().and_then(|hpa| {
        last_actions.get(&(
            namespace.clone(),
            "HorizontalPodAutoscaler".into(),
            hpa.clone(),
        ))
    });
    let last_action = match (ebb_action, hpa_action) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
    .cloned();
    let metrics = st
        .spec
        .shown_metrics()
        .map(|(m, decided)| {
            let reading = status.metrics.iter().find(|s| s.name == m.name);
            MetricCell {
                name: m.name.clone(),
                value: reading
                    .and_then(|r| r.value.as_ref())
                    .map(|q| decimal(&q.0)),
                target: m.target.quantity().map(|q| decimal(&q.0)),
                learned: reading.and_then(|r| {
                    let target = decimal(&r.learned_target.as_ref()?.0);
                    // A risk asked for but not yet met with the history to back it.
                    let short = r.learned.as_ref().is_some_and(|l| !l.risk_calibrated);
                    Some(if short {
                        format!("{target} (not calibrated)")
                    } else {
                        target
                    })
                }),
                error: reading.and_then(|r| r.error.clone()),
                input: decided.is_none(),
                keeps_active: st.spec.scales_to_zero()
                    && decided.is_some()
                    && reading
                        .and_then(|r| r.value.as_ref())
                        .and_then(|q| crate::crd::milli_value(&q.0).ok())
                        .is_some_and(|v| v as f64 / 1000.0 > m.activation.unwrap_or(0.0)),
            }
        })
        .collect();
    Row {
        namespace,
        name: st.name_any(),
        mode: st.spec.mode.as_str().to_string(),
        target: format!("{}/{}", st.spec.target_ref.kind, st.spec.target_ref.name),
        metrics,
        current: status.current_replicas,
        desired: status.desired_replicas,
        min: st.spec.min_replicas,
        max: st.spec.max_replicas,
        state,
        last_action,
    }
}

/// A quantity as a plain decimal with at most 2 decimals (`2500m` -> `2.5`).
fn decimal(quantity: &str) -> String {
    match milli_value(quantity) {
        Ok(milli) if milli % 1000 == 0 => (milli / 1000).to_string(),
        Ok(milli) => {
            let text = format!("{:.2}", milli as f64 / 1000.0);
            text.trim_end_matches('0').to_string()
        }
        Err(_) => quantity.to_string(),
    }
}

/// The table: one line per metric, the ScaledTarget's columns on its first line.
pub fn render(rows: &[Row], now: Timestamp) -> String {
    const HEADER: [&str; 10] = [
        "NAMESPACE",
        "NAME",
        "MODE",
        "TARGET",
        "METRIC",
        "VALUE/TARGET",
        "LEARNED",
        "REPLICAS",
        "STATE",
        "LAST ACTION",
    ];
    let dash = || "-".to_string();
    let mut lines: Vec<[String; 10]> = vec![HEADER.map(String::from)];
    for r in rows {
        for (i, m) in r.metrics.iter().enumerate() {
            let first = i == 0;
            let value = match (&m.value, &m.error) {
                (Some(v), _) => v.clone(),
                (None, Some(_)) => "error".to_string(),
                (None, None) => "?".to_string(),
            };
            let replicas = format!(
                "{}/{} ({}-{})",
                r.current.map_or_else(dash, |n| n.to_string()),
                r.desired.map_or_else(dash, |n| n.to_string()),
                r.min,
                r.max
            );
            let action = r.last_action.as_ref().map_or_else(dash, |(at, note)| {
                let age = now.duration_since(*at).as_secs().max(0);
                format!("{} ago: {}", age_text(age), shorten(note, 64))
            });
            let keep = |s: String| if first { s } else { String::new() };
            lines.push([
                keep(r.namespace.clone()),
                keep(r.name.clone()),
                keep(r.mode.clone()),
                keep(r.target.clone()),
                if m.keeps_active {
                    format!("{} (active)", m.name)
                } else {
                    m.name.clone()
                },
                if m.input {
                    format!("{value} (input)")
                } else {
                    format!("{value}/{}", m.target.clone().unwrap_or_else(dash))
                },
                m.learned.clone().unwrap_or_else(dash),
                keep(replicas),
                keep(r.state.clone()),
                keep(action),
            ]);
        }
    }
    let mut widths = [0usize; 10];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no ScaledTargets)\n");
    }
    out
}

fn age_text(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// Runs `ebb status` (once, or every `--watch` seconds until Ctrl-C).
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = kube::Client::try_default().await?;
        loop {
            let table = render(
                &rows(&client, args.namespace.as_deref()).await?,
                Timestamp::now(),
            );
            let Some(every) = args.watch else {
                print!("{table}");
                return Ok(());
            };
            print!("{CLEAR_SCREEN}{table}");
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(every.max(1))) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

/// ANSI: cursor home, clear screen.
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

#[cfg(test)]
mod tests {
    use super::*;

    fn row_with(metrics: Vec<MetricCell>) -> Row {
        Row {
            namespace: "demo".into(),
            name: "worker".into(),
            mode: "Direct".into(),
            target: "Deployment/worker".into(),
            metrics,
            current: Some(3),
            desired: Some(4),
            min: 1,
            max: 10,
            state: "Ready".into(),
            last_action: Some((
                "2026-11-25T10:00:00Z".parse().unwrap(),
                "scaled Deployment worker from 3 to 4".into(),
            )),
        }
    }

    #[test]
    fn a_row_shows_value_against_target_replicas_and_the_age_of_the_last_action() {
        let metrics = vec![
            MetricCell {
                name: "backlog".into(),
                value: Some(decimal("2500m")),
                target: Some(decimal("40")),
                learned: Some(decimal("33333m")),
                error: None,
                keeps_active: true,
                input: false,
            },
            MetricCell {
                name: "rate".into(),
                value: None,
                target: Some("10".into()),
                learned: None,
                error: Some("no data".into()),
                keeps_active: false,
                input: false,
            },
        ];
        let table = render(
            &[row_with(metrics)],
            "2026-11-25T10:01:30Z".parse().unwrap(),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAMESPACE"));
        assert!(lines[1].contains("2.5/40"), "{table}");
        assert!(lines[1].contains("33.33"), "{table}");
        assert!(lines[1].contains("3/4 (1-10)"), "{table}");
        assert!(
            lines[1].contains("90s ago: scaled Deployment worker from 3 to 4"),
            "{table}"
        );
        assert!(lines[1].contains("backlog (active)"), "{table}");
        assert!(lines[2].contains("error/10"), "{table}");
        assert!(!lines[2].contains("(active)"), "{table}");
        assert!(
            !lines[2].contains("worker"),
            "the second metric repeats no target columns"
        );
    }

    #[test]
    fn a_formula_shows_its_inputs_as_inputs_and_itself_against_its_target() {
        let st: ScaledTarget = serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
            "metadata": { "name": "w", "namespace": "n" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "maxReplicas": 10,
                "metrics": [{
                    "name": "orders",
                    "prometheus": { "address": "http://p:9090", "query": "q" },
                    "target": { "type": "AverageValue", "averageValue": "10" }
                }],
                "formula": {
                    "name": "work", "expression": "orders * 2",
                    "target": { "type": "AverageValue", "averageValue": "5" }
                }
            },
            "status": { "metrics": [
                { "name": "orders", "value": "20" },
                { "name": "work", "value": "40" }
            ] }
        }))
        .unwrap();
        let r = row(&st, &HashMap::new());
        let cells: Vec<(&str, bool)> = r
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.input))
            .collect();
        assert_eq!(cells, [("orders", true), ("work", false)]);
        let table = render(&[r], Timestamp::now());
        assert!(table.contains("20 (input)"), "{table}");
        assert!(table.contains("40/5"), "{table}");
    }

    /// A ScaledTarget `n/w` on Deployment `w` with one Prometheus metric (target 10 per pod)
    /// and the given status.
    fn one_metric_target(metric: &str, status: serde_json::Value) -> ScaledTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
            "metadata": { "name": "w", "namespace": "n" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "maxReplicas": 10,
                "metrics": [{
                    "name": metric,
                    "prometheus": { "address": "http://p:9090", "query": "q" },
                    "target": { "type": "AverageValue", "averageValue": "10" }
                }]
            },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_stalled_scale_up_shows_in_the_state_with_its_pattern() {
        let st = one_metric_target(
            "orders",
            serde_json::json!({ "conditions": [
                { "type": "Ready", "status": "True", "reason": "Decided", "message": "",
                  "lastTransitionTime": "2026-12-03T10:00:00Z" },
                { "type": "ScalingStalled", "status": "True", "reason": "Unschedulable",
                  "message": "5 of 10 pods not Ready", "lastTransitionTime": "2026-12-03T10:00:00Z" }
            ] }),
        );
        assert_eq!(
            row(&st, &HashMap::new()).state,
            "ScalingStalled: Unschedulable"
        );
    }

    #[test]
    fn a_learned_target_without_the_history_for_its_risk_says_not_calibrated() {
        let learned = |calibrated: bool| {
            serde_json::json!({
                "headroom": 0.2, "headroomBasis": "History", "tolerance": 0.1,
                "toleranceBasis": "History", "scaleDownWindowSeconds": 300,
                "scaleDownWindowBasis": "History", "growthSamples": 500,
                "riskCalibrated": calibrated
            })
        };
        for (calibrated, cell) in [(false, "8 (not calibrated)"), (true, "8")] {
            let st = one_metric_target(
                "rps",
                serde_json::json!({ "metrics": [
                    { "name": "rps", "value": "40", "learnedTarget": "8",
                      "learned": learned(calibrated) }
                ] }),
            );
            let r = row(&st, &HashMap::new());
            assert_eq!(r.metrics[0].learned.as_deref(), Some(cell));
        }
    }

    #[test]
    fn an_empty_cluster_says_so() {
        assert!(render(&[], Timestamp::now()).contains("no ScaledTargets"));
    }
}
