//! The queue replay (`ebb backtest --queue`): a trace's load becomes the arrivals into a FIFO
//! queue served at `c` messages per ready pod per step, and each policy is the one decision
//! machine with a different metric, as a user would configure it:
//!
//! - `ebb`: target type DrainTime (arrivals + backlog / drainSeconds against the per-pod
//!   throughput, learned from the queue's served rate while messages wait; set to `c`);
//! - `queue-length`: KEDA's QueueLength, an AverageValue target on the backlog of the messages
//!   one pod gets through in `drainSeconds`;
//! - `rate`: an AverageValue target on the arrival rate of `c` per pod (a Prometheus `rate()`).
//!
//! Each policy sees at step t what the broker showed at the end of step t-1 (backlog, publish
//! and deliver rates, messages waiting), its pods are ready `S` steps after it asks for them
//! (protocol section 2), and the score counts what a queue's users feel: the backlog in
//! message-seconds, the longest drain time (backlog over the ready pods' capacity), the share of
//! steps whose oldest message is older than `drainSeconds` (tracked exactly, FIFO), pod-steps
//! and scaling actions.

use std::collections::VecDeque;

use super::replay::ReplayConfig;
use crate::engine::Millis;
use crate::engine::drain::{DrainSpec, QueueSignals};
use crate::engine::hpa::{HpaSpec, Replicas};
use crate::engine::target::{Action, Inputs, MetricSpec, Mode, TargetMachine, TargetSpec};

/// The policies of the queue replay, in table order.
pub const QUEUE_POLICIES: [&str; 3] = ["ebb", "queue-length", "rate"];

/// One policy's score on one queue replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueScore {
    pub policy: String,
    /// Messages waiting, summed over steps, times the step length.
    pub backlog_message_seconds: f64,
    /// The longest the backlog at the end of a step would take to drain at the ready pods'
    /// capacity, in seconds.
    pub longest_drain_seconds: f64,
    /// Share of steps (percent) that end with a message older than `drainSeconds`.
    pub late_steps_percent: f64,
    /// Ready pods summed over steps.
    pub pod_steps: u64,
    /// Changes of the desired count.
    pub actions: u64,
}

/// What the broker showed at the end of a step.
#[derive(Debug, Clone, Copy, Default)]
struct Broker {
    backlog: f64,
    /// Per second.
    arrival_rate: f64,
    /// Per second.
    served_rate: f64,
}

/// Replays `arrivals` (messages per step; a missing step is a step the broker's statistics did
/// not answer, the arrivals themselves still come) through a queue and `policy`.
pub fn replay_queue(
    arrivals: &[Option<f64>],
    cfg: &ReplayConfig,
    drain_seconds: f64,
    policy: &str,
) -> Option<QueueScore> {
    let mut machine = TargetMachine::new();
    let spec = queue_spec(policy, cfg, drain_seconds)?;
    let step_ms = (cfg.step_seconds * 1000.0).round().max(1.0) as Millis;
    let fill = super::replay::median(arrivals).unwrap_or(0.0);
    let mut queue: VecDeque<(usize, f64)> = VecDeque::new();
    let mut backlog = 0.0_f64;
    let mut decisions: Vec<u32> = Vec::with_capacity(arrivals.len());
    let warm = cfg.warm_start(arrivals);
    let mut shown: Option<Broker> = None;
    let mut score = QueueScore {
        policy: policy.to_string(),
        backlog_message_seconds: 0.0,
        longest_drain_seconds: 0.0,
        late_steps_percent: 0.0,
        pod_steps: 0,
        actions: 0,
    };
    let mut late = 0usize;
    for (t, a) in arrivals.iter().enumerate() {
        let previous = decisions.last().copied().unwrap_or(warm);
        let ready = (1..=cfg.startup_delay.max(1))
            .map(|k| {
                t.checked_sub(k)
                    .and_then(|i| decisions.get(i).copied())
                    .unwrap_or(warm)
            })
            .min()
            .unwrap_or(previous);
        let ready = if cfg.startup_delay == 0 {
            previous
        } else {
            ready
        };
        // Decide on what the broker showed at the end of the step before.
        let now = t as Millis * step_ms;
        let (backlog_reading, signals) = match shown {
            Some(b) => (
                Ok(b.backlog),
                Some(QueueSignals {
                    arrival: Ok(b.arrival_rate),
                    served: Some(b.served_rate),
                    waiting: Some(b.backlog),
                    published: None,
                }),
            ),
            None => (Err(crate::engine::NoData::Empty), None),
        };
        let readings = [match policy {
            "rate" => signals.map_or(Err(crate::engine::NoData::Empty), |s| s.arrival),
            _ => backlog_reading,
        }];
        let queues = [signals];
        machine.observe(
            now,
            &spec,
            Inputs {
                readings: &readings,
                queues: &queues,
                pods: Some(ready as i32),
                ready: Some(ready as i32),
                ..Inputs::default()
            },
        );
        let replicas = Replicas {
            spec: previous as i32,
            status: ready as i32,
            ready: ready as i32,
        };
        let step = machine.step(now, &spec, replicas);
        if let Action::Scale { from, to } = step.action {
            machine.applied(now, &spec, from, to);
        }
        let desired = (step.desired.max(0) as u32).clamp(cfg.min_replicas, cfg.max_replicas);
        if desired != previous {
            score.actions += 1;
        }
        decisions.push(desired);

        // The step itself: arrivals join the queue, the ready pods serve it in order.
        let arrived = a.unwrap_or(fill).max(0.0);
        if arrived > 0.0 {
            queue.push_back((t, arrived));
        }
        backlog += arrived;
        let mut capacity = f64::from(ready) * cfg.capacity;
        let mut served = 0.0;
        while capacity > 0.0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            let take = front.1.min(capacity);
            front.1 -= take;
            capacity -= take;
            served += take;
            if front.1 <= 1e-9 {
                queue.pop_front();
            }
        }
        backlog = (backlog - served).max(0.0);
        score.backlog_message_seconds += backlog * cfg.step_seconds;
        score.pod_steps += u64::from(ready);
        let per_second = f64::from(ready) * cfg.capacity / cfg.step_seconds;
        if backlog > 1e-9 {
            let drain = if per_second > 0.0 {
                backlog / per_second
            } else {
                f64::INFINITY
            };
            score.longest_drain_seconds = score.longest_drain_seconds.max(drain);
        }
        // The oldest message at the end of the step arrived during step `front.0`.
        if let Some(&(arrived_at, _)) = queue.front()
            && (t + 1 - arrived_at) as f64 * cfg.step_seconds > drain_seconds
        {
            late += 1;
        }
        shown = a.map(|_| Broker {
            backlog,
            arrival_rate: arrived / cfg.step_seconds,
            served_rate: served / cfg.step_seconds,
        });
    }
    score.late_steps_percent = 100.0 * late as f64 / arrivals.len().max(1) as f64;
    Some(score)
}

/// The machine's spec of each policy (mode Direct, the replay's bounds, no behavior: the HPA
/// defaults).
fn queue_spec(policy: &str, cfg: &ReplayConfig, drain_seconds: f64) -> Option<TargetSpec> {
    let per_second = cfg.capacity / cfg.step_seconds;
    let milli = |v: f64| (v * 1000.0).round().max(1.0) as i64;
    let (target, drain) = match policy {
        "ebb" => (
            milli(per_second),
            Some(DrainSpec {
                drain_seconds,
                throughput: per_second,
                learn: Some((per_second / 4.0, per_second * 4.0)),
            }),
        ),
        "queue-length" => (milli(per_second * drain_seconds), None),
        "rate" => (milli(per_second), None),
        _ => return None,
    };
    let clamp = |v: u32| v.min(i32::MAX as u32) as i32;
    Some(TargetSpec {
        formula: None,
        mode: Mode::Direct,
        hpa: HpaSpec {
            min_replicas: clamp(cfg.min_replicas),
            max_replicas: clamp(cfg.max_replicas),
            ..Default::default()
        },
        interval: (cfg.step_seconds * 1000.0).round().max(1.0) as Millis,
        metrics: vec![MetricSpec {
            name: "queue".into(),
            target: Ok(crate::engine::Target::AverageValue(target)),
            learn: None,
            drain: drain.map(Box::new),
            activation: 0.0,
        }],
        adaptive: None,
        fallback: None,
        escalation: None,
        idle: None,
        pause: None,
        revision: Some(("replay".into(), 1)),
    })
}

/// The queue replay's table.
pub fn format_queue_table(scores: &[QueueScore], cfg: &ReplayConfig, drain_seconds: f64) -> String {
    let mut out = format!(
        "queue: c = {:.1} messages per step per ready pod, S = {} step(s), bounds [{}, {}], \
         step {} s, drainSeconds {drain_seconds}\n",
        cfg.capacity, cfg.startup_delay, cfg.min_replicas, cfg.max_replicas, cfg.step_seconds
    );
    out.push_str(&format!(
        "{:<14}{:>18}{:>16}{:>12}{:>14}{:>10}\n",
        "policy", "backlog msg-s", "longest drain s", "late %", "pod-steps", "actions"
    ));
    for s in scores {
        out.push_str(&format!(
            "{:<14}{:>18.0}{:>16.1}{:>12.2}{:>14}{:>10}\n",
            s.policy,
            s.backlog_message_seconds,
            s.longest_drain_seconds,
            s.late_steps_percent,
            s.pod_steps,
            s.actions
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ReplayConfig {
        ReplayConfig {
            capacity: 600.0, // 10 msg/s per pod at 60 s steps
            target_per_pod: 600.0,
            startup_delay: 1,
            min_replicas: 1,
            max_replicas: 40,
            step_seconds: 60.0,
            start_unix: 0,
        }
    }

    /// Quiet, a step to 80 msg/s held for an hour, quiet again.
    fn steady_peak() -> Vec<Option<f64>> {
        let mut v = vec![Some(600.0); 20];
        v.extend(vec![Some(4800.0); 60]);
        v.extend(vec![Some(600.0); 40]);
        v
    }

    #[test]
    fn a_queue_scaled_on_its_work_holds_at_peak_where_queue_length_flaps() {
        let arrivals = steady_peak();
        let ebb = replay_queue(&arrivals, &cfg(), 120.0, "ebb").unwrap();
        let qlen = replay_queue(&arrivals, &cfg(), 120.0, "queue-length").unwrap();
        // The work: 8 pods at 80 msg/s; the queue drains and nothing waits past 2 minutes
        // once they are there.
        assert!(ebb.late_steps_percent < 5.0, "{ebb:?}");
        assert!(
            ebb.backlog_message_seconds < qlen.backlog_message_seconds,
            "{ebb:?} vs {qlen:?}"
        );
        // The backlog target reads a drained queue as no load, scales away and refills.
        assert!(qlen.actions > ebb.actions, "{ebb:?} vs {qlen:?}");
    }

    #[test]
    fn the_oldest_message_is_tracked_exactly() {
        // One pod (600 per step) against 1200 per step for 5 steps: the queue grows by 600 a
        // step and its oldest message ages one step per step.
        let mut c = cfg();
        c.max_replicas = 1;
        let arrivals = vec![Some(1200.0); 5];
        let s = replay_queue(&arrivals, &c, 90.0, "rate").unwrap();
        // Ends of steps: backlog 600, 1200, ... 3000. FIFO: the oldest message at the end of
        // step t arrived during step t/2 (rounded down): aged 60, 60, 120, 120, 180 s (counted
        // from the start of its step): older than 90 s at 3 of 5 step ends.
        assert_eq!(s.late_steps_percent, 60.0);
        assert_eq!(
            s.backlog_message_seconds,
            60.0 * (600.0 + 1200.0 + 1800.0 + 2400.0 + 3000.0)
        );
        assert_eq!(s.longest_drain_seconds, 3000.0 / 10.0);
        assert_eq!(s.pod_steps, 5);
    }
}
