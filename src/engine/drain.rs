//! Scaling a queue on its work (`target.type: DrainTime`), not on its length alone.
//!
//! A backlog is the integral of arrivals minus service: once the workers keep up it reads near
//! zero whatever the load, so a target on the backlog alone scales the workers away at steady
//! peak and the queue refills (the classic flap of queue-length autoscaling). The work a queue
//! asks for is what arrives plus what must be caught up:
//!
//! ```text
//! work (msg/s) = arrival rate + backlog / drainSeconds
//! desired      = ceil(work / throughput per pod)
//! ```
//!
//! The machine reads the work as the metric's value against an AverageValue target of the
//! per-pod throughput, so bounds, tolerance, windows and policies apply as to any metric, and
//! in mode Hpa the owned HPA reads the work against the same throughput.
//!
//! The per-pod throughput is set (`throughputPerPod`) or learned ([`Throughput`]): the served
//! rate (acknowledgements per second) over the workload's pods, sampled only while messages
//! wait for a consumer (an idle pod says nothing about its limit), the median of the samples of
//! the last [`SAMPLE_WINDOW`], bounded, and moved only by more than [`MIN_CHANGE`] and at most
//! once per [`super::learning::TARGET_CHANGE_INTERVAL`]. With fewer than [`MIN_SAMPLES`]
//! samples the set value holds.
//!
//! Pure: time is an argument.

use std::collections::VecDeque;

use super::Millis;
use super::learning::{Change, TARGET_CHANGE_INTERVAL};
use super::target::Reading;

/// Samples of the per-pod served rate a learned throughput is the median of.
pub const SAMPLE_WINDOW: Millis = 60 * 60 * 1000;
/// Samples needed before a learned throughput replaces the set one.
pub const MIN_SAMPLES: usize = 5;
/// Relative move of the learned throughput below which the one in force stays.
pub const MIN_CHANGE: f64 = 0.1;
/// Samples kept at most (one hour at a 1 s interval).
const MAX_SAMPLES: usize = 3600;

/// A DrainTime target as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrainSpec {
    /// Any backlog should be gone within this many seconds.
    pub drain_seconds: f64,
    /// Messages per second one pod gets through: the value in force until one is learned.
    pub throughput: f64,
    /// Bounds of the learned throughput, when it is learned.
    pub learn: Option<(f64, f64)>,
}

impl DrainSpec {
    /// The work a queue asks for, in messages per second: what arrives plus the backlog
    /// spread over the drain time. Either read failing is no data, never a guess.
    pub fn work(&self, backlog: Reading, signals: Option<&QueueSignals>) -> Reading {
        let arrival = signals.map_or(Err(super::NoData::SourceFailed), |s| s.arrival)?;
        Ok(arrival.max(0.0) + backlog?.max(0.0) / self.drain_seconds.max(1e-3))
    }
}

/// What a poll read of a queue besides its backlog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSignals {
    /// Messages arriving per second (published to the queue).
    pub arrival: Reading,
    /// Messages served per second (acknowledged), when read.
    pub served: Option<f64>,
    /// Messages waiting for a consumer (ready, not delivered), when read: while some wait,
    /// the pods are saturated and their served rate is their throughput.
    pub waiting: Option<f64>,
}

/// The per-pod throughput of one DrainTime metric: set, then learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    spec: DrainSpec,
    /// (time, served rate per pod) while saturated, oldest first.
    samples: VecDeque<(Millis, f64)>,
    /// The throughput in force.
    current: f64,
    /// Whether `current` was learned (not the set value).
    learned: bool,
    changed_at: Option<Millis>,
}

impl Throughput {
    /// A throughput for `spec`, at its set value.
    pub fn new(spec: DrainSpec) -> Self {
        Self {
            spec,
            samples: VecDeque::new(),
            current: spec.throughput,
            learned: false,
            changed_at: None,
        }
    }

    /// The spec it was made for (a new spec starts a new throughput).
    pub fn spec(&self) -> &DrainSpec {
        &self.spec
    }

    /// Messages per second per pod in force.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// The learned throughput in force, if one is.
    pub fn learned(&self) -> Option<f64> {
        self.learned.then_some(self.current)
    }

    /// Saturated samples in the window.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// Takes one reading of the queue and the pods serving it; returns a change to report
    /// when the throughput in force moved.
    pub fn observe(
        &mut self,
        now: Millis,
        metric: &str,
        signals: Option<&QueueSignals>,
        pods: Option<i32>,
    ) -> Option<Change> {
        let (lo, hi) = self.spec.learn?;
        if let (Some(s), Some(pods)) = (signals, pods.filter(|&p| p > 0)) {
            let saturated = s.waiting.is_some_and(|w| w >= 1.0);
            if let Some(served) = s.served.filter(|r| saturated && r.is_finite() && *r > 0.0) {
                if self.samples.len() == MAX_SAMPLES {
                    self.samples.pop_front();
                }
                self.samples.push_back((now, served / f64::from(pods)));
            }
        }
        while self
            .samples
            .front()
            .is_some_and(|&(at, _)| now - at > SAMPLE_WINDOW)
        {
            self.samples.pop_front();
        }
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        let wanted = median(self.samples.iter().map(|&(_, r)| r)).clamp(lo, hi.max(lo));
        let moved = (wanted - self.current).abs() > MIN_CHANGE * self.current;
        let due = self
            .changed_at
            .is_none_or(|t| now - t >= TARGET_CHANGE_INTERVAL.as_millis() as Millis);
        if !(moved && due) {
            return None;
        }
        let message = format!(
            "throughput per pod {:.3} -> {:.3} msg/s (median of {} samples while messages waited)",
            self.current,
            wanted,
            self.samples.len()
        );
        self.current = wanted;
        self.learned = true;
        self.changed_at = Some(now);
        Some(Change {
            metric: metric.to_string(),
            message,
        })
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NoData;

    const SEC: Millis = 1000;

    fn spec(learn: bool) -> DrainSpec {
        DrainSpec {
            drain_seconds: 60.0,
            throughput: 5.0,
            learn: learn.then_some((1.0, 40.0)),
        }
    }

    fn signals(served: f64, waiting: f64) -> QueueSignals {
        QueueSignals {
            arrival: Ok(served),
            served: Some(served),
            waiting: Some(waiting),
        }
    }

    #[test]
    fn work_is_arrivals_plus_the_backlog_over_the_drain_time() {
        let s = spec(false);
        let q = signals(80.0, 0.0);
        assert_eq!(s.work(Ok(600.0), Some(&q)), Ok(90.0));
        assert_eq!(
            s.work(Ok(0.0), Some(&q)),
            Ok(80.0),
            "no backlog: the arrivals"
        );
        // Either read failing is no data, never a number.
        assert_eq!(s.work(Err(NoData::Empty), Some(&q)), Err(NoData::Empty));
        let no_rate = QueueSignals {
            arrival: Err(NoData::SourceFailed),
            ..q
        };
        assert_eq!(s.work(Ok(10.0), Some(&no_rate)), Err(NoData::SourceFailed));
        assert_eq!(s.work(Ok(10.0), None), Err(NoData::SourceFailed));
    }

    #[test]
    fn throughput_is_learned_only_while_messages_wait() {
        let mut t = Throughput::new(spec(true));
        // Keeping up (nothing waits): 8 pods serving 40 msg/s say nothing about their limit.
        for k in 0..100 {
            assert!(
                t.observe(k * SEC, "jobs", Some(&signals(40.0, 0.0)), Some(8))
                    .is_none()
            );
        }
        assert_eq!((t.current(), t.learned()), (5.0, None));
        // Saturated: 4 pods get through 40 msg/s while messages wait: 10 per pod.
        let mut changes = Vec::new();
        for k in 100..110 {
            changes.extend(t.observe(k * SEC, "jobs", Some(&signals(40.0, 300.0)), Some(4)));
        }
        assert_eq!(t.learned(), Some(10.0));
        assert_eq!(
            changes.len(),
            1,
            "one change, once enough samples: {changes:?}"
        );
        assert!(
            changes[0].message.contains("5.000 -> 10.000"),
            "{changes:?}"
        );
    }

    #[test]
    fn the_learned_throughput_is_bounded_and_rate_limited() {
        let mut t = Throughput::new(spec(true));
        for k in 0..10 {
            t.observe(k * SEC, "jobs", Some(&signals(400.0, 50.0)), Some(2));
        }
        assert_eq!(t.learned(), Some(40.0), "200 msg/s per pod, bounded at 40");
        // Slower pods from now on: the median moves once the new samples dominate, but the
        // throughput in force changes at most every five minutes.
        let mut at = Vec::new();
        for k in 10..1000 {
            if t.observe(k * SEC, "jobs", Some(&signals(12.0, 50.0)), Some(2))
                .is_some()
            {
                at.push(k);
            }
        }
        assert_eq!(t.current(), 6.0);
        assert!(at.windows(2).all(|w| w[1] - w[0] >= 300), "{at:?}");
        // Without learning the set value holds whatever is observed.
        let mut fixed = Throughput::new(spec(false));
        for k in 0..100 {
            assert!(
                fixed
                    .observe(k * SEC, "jobs", Some(&signals(400.0, 50.0)), Some(2))
                    .is_none()
            );
        }
        assert_eq!(fixed.current(), 5.0);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut t = Throughput::new(spec(true));
        for k in 0..10 {
            t.observe(k * SEC, "jobs", Some(&signals(20.0, 5.0)), Some(2));
        }
        assert_eq!(t.samples(), 10);
        t.observe(SAMPLE_WINDOW + 20 * SEC, "jobs", None, Some(2));
        assert_eq!(t.samples(), 0);
        assert_eq!(
            t.learned(),
            Some(10.0),
            "the learned value stays without new samples"
        );
    }
}
