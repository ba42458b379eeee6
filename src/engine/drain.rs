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
//! rate over the workload's pods, sampled only while the pods are saturated and settled:
//! - saturated: more messages wait for a consumer than the pods serve in
//!   [`SATURATION_SECONDS`] (a pod that keeps up says nothing about its limit; a few messages
//!   waiting between two fetches do not make it saturated);
//! - settled: the pod count has not changed for [`SETTLE`] (a pod just added is counted before
//!   it serves, which would read as a slow pod).
//!
//! The learned value is the median of the samples of the last [`SAMPLE_WINDOW`], bounded, and
//! moves only by more than [`MIN_CHANGE`] and at most once per
//! [`super::learning::TARGET_CHANGE_INTERVAL`]. With fewer than [`MIN_SAMPLES`] samples the set
//! value holds. Misjudged either way, it corrects in the safe direction: a throughput learned
//! too high leaves the pods saturated, which is when samples come.
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
/// Pods are saturated when more messages wait than they serve in this many seconds.
pub const SATURATION_SECONDS: f64 = 2.0;
/// The pod count must have held this long before a sample is taken.
pub const SETTLE: Millis = 30 * 1000;

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
    /// The pod count and since when it holds.
    pods_since: Option<(i32, Millis)>,
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
            pods_since: None,
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
        if pods.is_some_and(|p| self.pods_since.is_none_or(|(q, _)| q != p)) {
            self.pods_since = pods.map(|p| (p, now));
        }
        let settled = self
            .pods_since
            .filter(|&(p, since)| p > 0 && now - since >= SETTLE)
            .map(|(p, _)| p);
        if let (Some(s), Some(pods)) = (signals, settled) {
            let served = s.served.filter(|r| r.is_finite() && *r > 0.0);
            let waiting = s.waiting.filter(|w| w.is_finite());
            if let (Some(served), Some(waiting)) = (served, waiting)
                && waiting >= (served * SATURATION_SECONDS).max(1.0)
            {
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

    /// Feeds `signals` with `pods` at each second of `seconds`; the changes reported.
    fn feed(
        t: &mut Throughput,
        seconds: std::ops::Range<i64>,
        s: QueueSignals,
        pods: i32,
    ) -> Vec<(i64, Change)> {
        seconds
            .filter_map(|k| Some((k, t.observe(k * SEC, "jobs", Some(&s), Some(pods))?)))
            .collect()
    }

    #[test]
    fn at_the_count_the_work_asks_for_a_backlog_drains_within_the_drain_time() {
        // A backlog left by an outage, arrivals going on: once the pods the work asks for are
        // ready, their spare capacity clears the backlog within drainSeconds.
        for drain_seconds in [10.0, 60.0, 300.0] {
            for throughput in [0.5, 3.0, 10.0, 250.0] {
                for arrival in [0.0, 7.0, 50.0, 4000.0] {
                    for backlog in [1.0, 600.0, 3000.0, 1e6] {
                        let s = DrainSpec {
                            drain_seconds,
                            throughput,
                            learn: None,
                        };
                        let q = QueueSignals {
                            arrival: Ok(arrival),
                            served: None,
                            waiting: None,
                        };
                        let work = s.work(Ok(backlog), Some(&q)).unwrap();
                        let pods = (work / throughput).ceil();
                        let spare = pods * throughput - arrival;
                        let drained_in = backlog / spare;
                        assert!(
                            drained_in <= drain_seconds * (1.0 + 1e-9),
                            "{s:?} a={arrival} B={backlog}: {pods} pods drain in {drained_in} s"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn throughput_is_learned_only_while_saturated_pods_are_settled() {
        let mut t = Throughput::new(spec(true));
        // Keeping up: 8 pods serving 40 msg/s, a few messages waiting between fetches, say
        // nothing about their limit.
        assert!(feed(&mut t, 0..100, signals(40.0, 30.0), 8).is_empty());
        assert_eq!((t.current(), t.learned(), t.samples()), (5.0, None, 0));
        // Saturated (300 waiting, more than 2 s of service), but 4 pods only just now: the
        // count has not settled.
        feed(&mut t, 100..129, signals(40.0, 300.0), 4);
        assert_eq!(t.samples(), 0);
        // Settled: 4 pods get through 40 msg/s: 10 per pod.
        let changes = feed(&mut t, 130..140, signals(40.0, 300.0), 4);
        assert_eq!(t.learned(), Some(10.0));
        assert_eq!(
            changes.len(),
            1,
            "one change once enough samples: {changes:?}"
        );
        assert!(
            changes[0].1.message.contains("5.000 -> 10.000"),
            "{changes:?}"
        );
    }

    #[test]
    fn the_learned_throughput_is_bounded_and_rate_limited() {
        let mut t = Throughput::new(spec(true));
        feed(&mut t, 0..70, signals(400.0, 5000.0), 2);
        assert_eq!(t.learned(), Some(40.0), "200 msg/s per pod, bounded at 40");
        // Slower pods from now on: the median moves once the new samples dominate, but the
        // throughput in force changes at most every five minutes.
        let at: Vec<i64> = feed(&mut t, 70..1000, signals(12.0, 50.0), 2)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(t.current(), 6.0);
        assert!(
            !at.is_empty() && at.windows(2).all(|w| w[1] - w[0] >= 300),
            "{at:?}"
        );
        // Without learning the set value holds whatever is observed.
        let mut fixed = Throughput::new(spec(false));
        assert!(feed(&mut fixed, 0..100, signals(400.0, 5000.0), 2).is_empty());
        assert_eq!(fixed.current(), 5.0);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut t = Throughput::new(spec(true));
        feed(&mut t, 0..40, signals(20.0, 50.0), 2);
        assert_eq!(
            t.samples(),
            10,
            "from 30 s on, once 2 pods have held for 30 s"
        );
        t.observe(SAMPLE_WINDOW + 80 * SEC, "jobs", None, Some(2));
        assert_eq!(t.samples(), 0);
        assert_eq!(
            t.learned(),
            Some(10.0),
            "the learned value stays without new samples"
        );
    }
}
