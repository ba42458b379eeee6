//! What the soak checks, from the cluster's own record: the API server's audit log of `/scale`
//! writes and ebb's `Scaled` Events. Pure: the soak reads both and hands them in.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

/// One successful write to a workload's `/scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleWrite {
    /// The workload's name.
    pub target: String,
    /// Who wrote (ebb's ServiceAccount, the HPA controller's).
    pub user: String,
    /// From the soak's start.
    pub at: Duration,
    /// The count the write set.
    pub replicas: i32,
}

/// Reads the successful `/scale` writes in `namespace` from the API server's audit log (JSON
/// lines), timed from `start` (Unix milliseconds).
pub fn scale_writes(log: &str, namespace: &str, start_ms: i64) -> Vec<ScaleWrite> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        stage: String,
        object_ref: Option<ObjectRef>,
        user: User,
        response_status: Option<Status>,
        response_object: Option<serde_json::Value>,
        stage_timestamp: chrono::DateTime<chrono::Utc>,
    }
    #[derive(Deserialize)]
    struct ObjectRef {
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    }
    #[derive(Deserialize)]
    struct User {
        username: String,
    }
    #[derive(Deserialize)]
    struct Status {
        code: u16,
    }
    let mut writes: Vec<ScaleWrite> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Entry>(line).ok())
        .filter(|e| e.stage == "ResponseComplete")
        .filter(|e| {
            e.response_status
                .as_ref()
                .is_some_and(|s| (200..300).contains(&s.code))
        })
        .filter_map(|e| {
            let object = e.object_ref?;
            if object.subresource.as_deref() != Some("scale")
                || object.namespace.as_deref() != Some(namespace)
            {
                return None;
            }
            let replicas = e.response_object?["spec"]["replicas"].as_i64()? as i32;
            let at_ms = e.stage_timestamp.timestamp_millis() - start_ms;
            Some(ScaleWrite {
                target: object.name?,
                user: e.user.username,
                at: Duration::from_millis(at_ms.max(0) as u64),
                replicas,
            })
        })
        .collect();
    writes.sort_by_key(|w| w.at);
    writes
}

/// One `Scaled` Event as ebb recorded it: on `target`, from `from` to `to`, `count` times (an
/// Event series counts repeats of the same note).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledEvent {
    pub target: String,
    pub from: i32,
    pub to: i32,
    pub count: u32,
}

/// `from X to Y` in a Scaled Event's note.
pub fn from_to(note: &str) -> Option<(i32, i32)> {
    let rest = &note[note.find("from ")? + 5..];
    let mut words = rest.split_whitespace();
    let from = words.next()?.parse().ok()?;
    (words.next()? == "to").then_some(())?;
    let to = words
        .next()?
        .trim_end_matches([',', ';', '.'])
        .parse()
        .ok()?;
    Some((from, to))
}

/// When the sources of a set of targets were failing: `[start, end]` from the soak's start.
#[derive(Debug, Clone, PartialEq)]
pub struct FailingWindow {
    pub targets: Vec<String>,
    pub start: Duration,
    pub end: Duration,
}

/// The three counts that must be zero, with what they found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Writes that lowered a target's count inside one of its source's failing windows.
    pub scale_downs_while_failing: Vec<String>,
    /// Writes (or Event occurrences) that repeated an action: the same count written twice in
    /// a row by ebb, a write by two replicas for one decision, a Scaled Event repeated beyond
    /// the writes it records, or any write to a target in mode Shadow.
    pub repeated_actions: Vec<String>,
    /// Changes of a mode-Direct target's count without the Scaled Event that records them
    /// (and writes to it by anyone but ebb).
    pub changes_without_event: Vec<String>,
}

/// Checks the writes against the Events and the failing windows. `modes` maps each target to
/// its mode ("Direct", "Hpa", "Shadow"), `initial` to the count it was created with; `ebb_user`
/// is ebb's username.
pub fn check(
    writes: &[ScaleWrite],
    events: &[ScaledEvent],
    windows: &[FailingWindow],
    modes: &HashMap<String, String>,
    initial: &HashMap<String, i32>,
    ebb_user: &str,
) -> Findings {
    let mut findings = Findings::default();
    let mut current: HashMap<&str, i32> = HashMap::new();
    // (target, from, to) -> ebb's writes and Event occurrences.
    let mut written: BTreeMap<(&str, i32, i32), u32> = BTreeMap::new();
    for w in writes {
        let from = *current
            .entry(&w.target)
            .or_insert_with(|| initial.get(&w.target).copied().unwrap_or(0));
        current.insert(&w.target, w.replicas);
        let mode = modes.get(&w.target).map_or("?", String::as_str);
        let what = format!(
            "{} {} -> {} at {:.1}s by {}",
            w.target,
            from,
            w.replicas,
            w.at.as_secs_f64(),
            w.user
        );
        if w.replicas < from
            && windows
                .iter()
                .any(|f| f.start <= w.at && w.at <= f.end && f.targets.contains(&w.target))
        {
            findings.scale_downs_while_failing.push(what.clone());
        }
        match mode {
            "Shadow" => findings
                .repeated_actions
                .push(format!("mode Shadow wrote: {what}")),
            "Direct" if w.user != ebb_user => findings
                .changes_without_event
                .push(format!("not ebb: {what}")),
            "Direct" if w.replicas == from => findings
                .repeated_actions
                .push(format!("the same count again: {what}")),
            "Direct" => *written.entry((&w.target, from, w.replicas)).or_default() += 1,
            _ => {}
        }
    }
    let mut recorded: BTreeMap<(&str, i32, i32), u32> = BTreeMap::new();
    for e in events {
        *recorded.entry((&e.target, e.from, e.to)).or_default() += e.count;
    }
    for (&(target, from, to), &n) in &written {
        let seen = recorded.get(&(target, from, to)).copied().unwrap_or(0);
        if seen < n {
            findings.changes_without_event.push(format!(
                "{target} {from} -> {to}: {n} write(s), {seen} Event(s)"
            ));
        }
    }
    for (&(target, from, to), &seen) in &recorded {
        let n = written.get(&(target, from, to)).copied().unwrap_or(0);
        if seen > n {
            findings.repeated_actions.push(format!(
                "{target} {from} -> {to}: {seen} Event(s) for {n} write(s)"
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    const EBB: &str = "system:serviceaccount:ebb-system:ebb";

    fn write(target: &str, at: u64, replicas: i32) -> ScaleWrite {
        ScaleWrite {
            target: target.into(),
            user: EBB.into(),
            at: Duration::from_secs(at),
            replicas,
        }
    }

    fn event(target: &str, from: i32, to: i32, count: u32) -> ScaledEvent {
        ScaledEvent {
            target: target.into(),
            from,
            to,
            count,
        }
    }

    fn maps() -> (HashMap<String, String>, HashMap<String, i32>) {
        let modes = [("d", "Direct"), ("h", "Hpa"), ("s", "Shadow")]
            .map(|(t, m)| (t.to_string(), m.to_string()))
            .into();
        let initial = [("d", 2), ("h", 2), ("s", 2)]
            .map(|(t, n)| (t.to_string(), n))
            .into();
        (modes, initial)
    }

    #[test]
    fn a_clean_run_finds_nothing() {
        let (modes, initial) = maps();
        let writes = [
            write("d", 10, 5),
            write("d", 60, 3),
            write("h", 20, 4),
            write("d", 90, 5),
        ];
        let events = [
            event("d", 2, 5, 1),
            event("d", 5, 3, 1),
            event("d", 3, 5, 1),
        ];
        let windows = [FailingWindow {
            targets: vec!["d".into(), "h".into()],
            start: Duration::from_secs(30),
            end: Duration::from_secs(50),
        }];
        let f = check(&writes, &events, &windows, &modes, &initial, EBB);
        assert_eq!(f, Findings::default());
        // The same change twice, recorded as one Event with a series of two.
        let writes = [write("d", 10, 5), write("d", 20, 2), write("d", 30, 5)];
        let events = [event("d", 2, 5, 2), event("d", 5, 2, 1)];
        assert_eq!(
            check(&writes, &events, &[], &modes, &initial, EBB),
            Findings::default()
        );
    }

    #[test]
    fn each_violation_is_found_and_named() {
        let (modes, initial) = maps();
        let windows = [FailingWindow {
            targets: vec!["d".into(), "h".into()],
            start: Duration::from_secs(30),
            end: Duration::from_secs(50),
        }];
        let mut hpa = write("h", 40, 1);
        hpa.user = "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into();
        let writes = [
            write("d", 10, 5),
            write("d", 35, 3), // down while failing
            write("d", 60, 3), // the same count again
            write("d", 70, 4), // no Event
            write("s", 80, 3), // Shadow wrote
            hpa,               // the HPA scaled down while failing
        ];
        let events = [event("d", 2, 5, 1), event("d", 5, 3, 2)];
        let f = check(&writes, &events, &windows, &modes, &initial, EBB);
        assert_eq!(f.scale_downs_while_failing.len(), 2, "{f:#?}");
        assert!(f.scale_downs_while_failing[0].starts_with("d 5 -> 3 at 35.0s"));
        assert!(f.scale_downs_while_failing[1].starts_with("h 2 -> 1 at 40.0s"));
        assert_eq!(f.repeated_actions.len(), 3, "{f:#?}");
        assert_eq!(
            f.changes_without_event,
            ["d 3 -> 4: 1 write(s), 0 Event(s)"]
        );
    }

    #[test]
    fn the_audit_log_gives_successful_scale_writes_in_the_namespace() {
        let line = |ns: &str, sub: &str, code: u16, replicas: i32, ts: &str| {
            serde_json::json!({
                "kind": "Event", "stage": "ResponseComplete", "verb": "patch",
                "user": { "username": EBB },
                "objectRef": { "resource": "deployments", "namespace": ns, "name": "web",
                               "apiGroup": "apps", "subresource": sub },
                "responseStatus": { "code": code },
                "responseObject": { "kind": "Scale", "spec": { "replicas": replicas } },
                "stageTimestamp": ts
            })
            .to_string()
        };
        let log = [
            line("soak", "scale", 200, 4, "2026-12-03T07:00:05.250000Z"),
            line("soak", "scale", 409, 5, "2026-12-03T07:00:06.000000Z"),
            line("other", "scale", 200, 6, "2026-12-03T07:00:07.000000Z"),
            line("soak", "status", 200, 7, "2026-12-03T07:00:08.000000Z"),
            "not json".into(),
        ]
        .join("\n");
        let start = chrono::DateTime::parse_from_rfc3339("2026-12-03T07:00:00Z")
            .unwrap()
            .timestamp_millis();
        let writes = scale_writes(&log, "soak", start);
        assert_eq!(
            writes,
            [ScaleWrite {
                target: "web".into(),
                user: EBB.into(),
                at: Duration::from_millis(5250),
                replicas: 4
            }]
        );
    }

    #[test]
    fn notes_give_their_counts() {
        assert_eq!(
            from_to("scaled from 3 to 7 (metric backlog 70)"),
            Some((3, 7))
        );
        assert_eq!(from_to("from 10 to 1, fallback"), Some((10, 1)));
        assert_eq!(from_to("nothing here"), None);
    }
}
