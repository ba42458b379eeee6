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
//! rate over the workload's Ready pods, sampled only while the pods are saturated and settled:
//! - saturated: more messages wait for a consumer than the pods serve in
//!   [`SATURATION_SECONDS`] (a pod that keeps up says nothing about its limit; a few messages
//!   waiting between two fetches do not make it saturated);
//! - settled: the Ready count has not changed for [`SETTLE`] (a broker's rate covers its last
//!   sample interval, so just after a change it still counts the pods that were there);
//! - the served rate is the broker's when it reads one above 0.0, else what the counts prove:
//!   messages are conserved, so over readings since the count settled, at least
//!   [`PUBLISHED_SPAN`] apart, `served = published counter growth - backlog growth`. A broker
//!   whose rates read 0.0 in most polls (RabbitMQ's do, polled more often than its
//!   statistics move, and for minutes on a starved machine) would otherwise give a sample in
//!   one poll of five, and a count that moves every few polls none: the throughput stays at
//!   its set value, and a set value too high keeps the count moving.
//!
//! The learned value is the median of the samples of the last [`SAMPLE_WINDOW`], bounded, and
//! moves only by more than [`MIN_CHANGE`] and at most once per
//! [`super::learning::TARGET_CHANGE_INTERVAL`]. With fewer than [`MIN_SAMPLES`] samples the set
//! value holds. Misjudged either way, it corrects in the safe direction: a throughput learned
//! too high leaves the pods saturated, which is when samples come.
//!
//! The arrival rate is the broker's own (RabbitMQ's publish rate, or the `arrivalRate` query)
//! when it reads one above 0.0. A broker's rates are samples of a statistics database that can
//! fall behind while its counts stay current: RabbitMQ's management API, read every 2 s with
//! statistics every second, reads 0.0 in four polls of five; on a starved machine it read
//! publish, deliver and ack rates of 0.0 for minutes while the queue grew by hundreds a second
//! (this project's CI machine, and the demo beside ten busy loops on two cores). Read as the
//! truth, that 0.0 is "no data" read as zero: the workers would scale on the backlog alone
//! and drown. So when the rate reads 0.0 ([`Throughput::work`]):
//! - the last non-zero rate stands for [`STALE_RATES_HOLD`];
//! - and the arrival rate is no lower than the counts prove. Messages are conserved, so over
//!   the last [`COUNT_SPAN`] of polls `arrival >= backlog growth + served`, served counted only
//!   while messages waited for a consumer at every poll (the Ready pods were busy, each at the
//!   throughput in force, or at the served rate per pod the broker last read while they were
//!   busy when that is lower);
//! - such a proof stands [`STALE_RATES_HOLD`] too: once the pods keep up, nothing waits and
//!   the counts prove nothing more;
//! - and the arrival rate is no lower than the queue's publish counter grew since the newest
//!   poll at least [`PUBLISHED_SPAN`] old (`QueueSignals::published`, when the source keeps
//!   one). Polls in step with the broker's samples can read 0.0 at every poll for good: the
//!   counter still grows by what arrived.
//!
//! Counting busy pods at a throughput set too high, `n` pods count `n * (set - real)` more
//! arrivals, so the count settles at `arrival / real`, not below it.
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
/// The Ready count must have held this long before a sample is taken: two of RabbitMQ's
/// default 5 s statistics intervals, so its rates cover only the pods counted.
pub const SETTLE: Millis = 10 * 1000;
/// Two readings of the counts closer than this say nothing of a rate (a poll read twice).
const MIN_COUNT_GAP: Millis = 1000;
/// The counts' growth is taken over about this long: a broker updates its counts every few
/// seconds, so the growth between two polls alone swings from nothing to double.
const COUNT_SPAN: Millis = 15 * 1000;
/// Two readings of the counts further apart than this prove only an average long gone.
const MAX_COUNT_GAP: Millis = 2 * 60 * 1000;
/// The least span the publish counter's growth is measured over: RabbitMQ's management
/// statistics (counts, counters and rates alike) move in steps of its 5 s samples, so a
/// shorter span reads 0 or a multiple of the rate.
const PUBLISHED_SPAN: Millis = 5 * 1000;
/// Readings of the counts kept at most.
const MAX_COUNTS: usize = 64;
/// While the broker reads an arrival rate of 0.0, its last non-zero one, and an arrival rate
/// the counts proved, stand this long.
pub const STALE_RATES_HOLD: Millis = 60 * 1000;

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
    /// Messages published to the queue so far (a counter), when read: its growth is the
    /// arrival rate, measured over the polls whatever the broker's own rate reads.
    pub published: Option<f64>,
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
    /// The Ready count and since when it holds.
    pods_since: Option<(i32, Millis)>,
    /// The counts read in the last [`MAX_COUNT_GAP`], oldest first: what the next ones prove
    /// an arrival rate from.
    counts: VecDeque<Counts>,
    /// The arrival rate the counts proved at the last reading, when it was above the
    /// broker's.
    counted_arrival: Option<f64>,
    /// The highest arrival rate the counts proved above the broker's, and when.
    proven: Option<(Millis, f64)>,
    /// The broker's last non-zero arrival rate, and when.
    last_arrival: Option<(Millis, f64)>,
    /// The served rate per Ready pod the broker last read while the pods were busy, and when.
    served_per_pod: Option<(Millis, f64)>,
}

/// A queue's counts at one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    at: Millis,
    backlog: f64,
    /// Messages waited for a consumer: the Ready pods were busy, serving this many a second.
    busy: Option<f64>,
    /// The queue's publish counter.
    published: Option<f64>,
    /// Messages waiting for a consumer.
    waiting: Option<f64>,
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
            counts: VecDeque::new(),
            counted_arrival: None,
            proven: None,
            last_arrival: None,
            served_per_pod: None,
        }
    }

    /// The work the queue asks for ([`DrainSpec::work`]), on the broker's rates read as the
    /// module's text says: a non-zero arrival rate is taken as read; a 0.0 stands in for
    /// nothing while a non-zero one is recent, and the arrival rate is then no lower than the
    /// counts prove. `ready`: the workload's Ready pods, the ones that serve. Either read
    /// failing is no data, as in [`DrainSpec::work`].
    pub fn work(
        &mut self,
        now: Millis,
        backlog: Reading,
        signals: Option<&QueueSignals>,
        ready: Option<i32>,
    ) -> Reading {
        let reported = self.spec.work(backlog, signals)?;
        let (backlog, s) = match (backlog, signals) {
            (Ok(b), Some(s)) => (b.max(0.0), s),
            _ => return Ok(reported),
        };
        // A busy pod serves the throughput in force, or what one was last seen to serve.
        let per_pod = self
            .served_per_pod
            .filter(|&(at, _)| now - at <= STALE_RATES_HOLD)
            .map_or(self.current, |(_, r)| r.min(self.current));
        let ready = ready.map(|r| f64::from(r.max(0)));
        let capacity = ready.map(|r| r * per_pod);
        let busy = match (s.waiting, capacity) {
            (Some(w), Some(c)) if c > 0.0 && w >= (c * SATURATION_SECONDS).max(1.0) => Some(c),
            _ => None,
        };
        let served = s.served.filter(|r| r.is_finite() && *r > 0.0);
        if let (Some(served), Some(_), Some(pods)) = (served, busy, ready) {
            self.served_per_pod = Some((now, served / pods));
        }
        let (counted, published) = self.count(now, backlog, busy, s);
        let reported_arrival = s.arrival.unwrap_or(0.0).max(0.0);
        let arrival = Self::recent(&mut self.last_arrival, now, Some(reported_arrival));
        self.counted_arrival = None;
        if reported_arrival > 0.0 {
            return Ok(reported);
        }
        // The broker read 0.0: between two samples, or behind. What the counts prove, and
        // while the pods were busy at every reading since the base, the proof stands.
        let counted = counted.map(|(growth, busy)| (growth + busy.unwrap_or(0.0), busy.is_some()));
        if let Some((c, true)) = counted {
            self.proven = Some((now, c));
        }
        let held = self
            .proven
            .filter(|&(at, _)| now - at <= STALE_RATES_HOLD)
            .map(|(_, p)| p);
        let floor = counted
            .map(|(c, _)| c)
            .into_iter()
            .chain(held)
            .chain(published)
            .reduce(f64::max);
        let used = floor.into_iter().chain(arrival).fold(0.0, f64::max);
        self.counted_arrival = floor.filter(|&f| f >= used && f > 0.0);
        Ok(reported + used)
    }

    /// A broker's rate as read: a finite non-zero reading, else the last one within
    /// [`STALE_RATES_HOLD`] (a statistics database between two samples, or behind, reads
    /// 0.0); `None` when there is neither.
    fn recent(last: &mut Option<(Millis, f64)>, now: Millis, rate: Option<f64>) -> Option<f64> {
        match rate.filter(|r| r.is_finite() && *r > 0.0) {
            Some(r) => {
                *last = Some((now, r));
                Some(r)
            }
            None => last
                .filter(|&(at, _)| now - at <= STALE_RATES_HOLD)
                .map(|(_, r)| r),
        }
    }

    /// Records the counts; returns the backlog's growth (msg/s) since the base reading (the
    /// newest at least [`COUNT_SPAN`] old, else the oldest there is) and, when the pods were
    /// busy at every reading since, the fewest busy pods' throughput; and the publish
    /// counter's growth (msg/s) since the newest reading at least [`PUBLISHED_SPAN`] old,
    /// when both read it and it did not go back (a queue declared again).
    fn count(
        &mut self,
        now: Millis,
        backlog: f64,
        busy: Option<f64>,
        signals: &QueueSignals,
    ) -> (Option<(f64, Option<f64>)>, Option<f64>) {
        let published = signals.published;
        while self
            .counts
            .front()
            .is_some_and(|c| now - c.at > MAX_COUNT_GAP)
        {
            self.counts.pop_front();
        }
        let base = self
            .counts
            .iter()
            .rposition(|c| now - c.at >= COUNT_SPAN)
            .or_else(|| (!self.counts.is_empty()).then_some(0))
            .filter(|&i| now - self.counts[i].at >= MIN_COUNT_GAP);
        let published_rate = published.and_then(|p| {
            let base = self
                .counts
                .iter()
                .rev()
                .find(|c| now - c.at >= PUBLISHED_SPAN)?;
            let grown = p - base.published?;
            (grown >= 0.0).then(|| grown / ((now - base.at) as f64 / 1000.0))
        });
        // Readings older than the base are never a base again.
        if let Some(i) = base {
            self.counts.drain(..i);
        }
        let growth_and_busy = base.map(|_| {
            let base = self.counts[0];
            let growth = (backlog - base.backlog) / ((now - base.at) as f64 / 1000.0);
            let busy = busy.and_then(|b| {
                let mut each = self.counts.iter();
                each.try_fold(b, |min, c| Some(min.min(c.busy?)))
            });
            (growth, busy)
        });
        if self
            .counts
            .back()
            .is_none_or(|c| now - c.at >= MIN_COUNT_GAP)
        {
            if self.counts.len() == MAX_COUNTS {
                self.counts.pop_front();
            }
            self.counts.push_back(Counts {
                at: now,
                backlog,
                busy,
                published,
                waiting: signals.waiting.filter(|w| w.is_finite()),
            });
        }
        (growth_and_busy, published_rate)
    }

    /// The arrival rate the counts proved at the last reading, when it was above the rate
    /// the broker reported (its rates lag or read zero).
    pub fn counted_arrival(&self) -> Option<f64> {
        self.counted_arrival
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

    /// Takes one reading of the queue and of the Ready pods serving it (after [`Self::work`]
    /// at the same `now`, which records the counts); returns a change to report when the
    /// throughput in force moved.
    pub fn observe(
        &mut self,
        now: Millis,
        metric: &str,
        signals: Option<&QueueSignals>,
        ready: Option<i32>,
    ) -> Option<Change> {
        let (lo, hi) = self.spec.learn?;
        if ready.is_some_and(|p| self.pods_since.is_none_or(|(q, _)| q != p)) {
            self.pods_since = ready.map(|p| (p, now));
        }
        let settled = self
            .pods_since
            .filter(|&(p, since)| p > 0 && now - since >= SETTLE);
        if let (Some(s), Some((pods, since))) = (signals, settled) {
            let served = s.served.filter(|r| r.is_finite() && *r > 0.0);
            let waiting = s.waiting.filter(|w| w.is_finite());
            let saturated =
                |served: f64, waiting: f64| waiting >= (served * SATURATION_SECONDS).max(1.0);
            let sample = match (served, waiting) {
                (Some(served), Some(waiting)) => saturated(served, waiting).then_some(served),
                _ => self.counted_served(now, since, saturated),
            };
            if let Some(served) = sample {
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

impl Throughput {
    /// The served rate (msg/s) the counts prove from the oldest reading since `since` to the
    /// one taken `now` (at least [`PUBLISHED_SPAN`] apart): the publish counter's growth less
    /// the backlog's, when both ends read the counter, it did not go back, and messages waited
    /// at every reading between (`saturated` at the rate proven).
    fn counted_served(
        &self,
        now: Millis,
        since: Millis,
        saturated: impl Fn(f64, f64) -> bool,
    ) -> Option<f64> {
        let last = self.counts.back().filter(|c| c.at == now)?;
        let first = self.counts.iter().position(|c| c.at >= since)?;
        let base = self.counts[first];
        if now - base.at < PUBLISHED_SPAN {
            return None;
        }
        let published = last.published? - base.published?;
        let seconds = (now - base.at) as f64 / 1000.0;
        let served = (published - (last.backlog - base.backlog)) / seconds;
        let waited = self
            .counts
            .range(first..)
            .all(|c| c.waiting.is_some_and(|w| saturated(served, w)));
        (published >= 0.0 && served > 0.0 && waited).then_some(served)
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
            published: None,
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

    /// A broker whose statistics fell behind: every rate reads 0.0, the counts are current.
    fn stale(waiting: f64) -> QueueSignals {
        stale_counted(waiting, None)
    }

    /// [`stale`], with the queue's publish counter read in the same answer.
    fn stale_counted(waiting: f64, published: Option<f64>) -> QueueSignals {
        QueueSignals {
            arrival: Ok(0.0),
            served: Some(0.0),
            waiting: Some(waiting),
            published,
        }
    }

    /// Drain within 30 s, 10 msg/s a pod, nothing learned.
    fn drain30() -> DrainSpec {
        DrainSpec {
            drain_seconds: 30.0,
            throughput: 10.0,
            learn: None,
        }
    }

    /// RabbitMQ's management statistics move in 5 s steps and its rates read non-zero only
    /// in the first second after a step: polls every 5 s that fall in the other four read
    /// 0.0 at every poll (seen in `cargo bench --bench live`: the worker scaled on its
    /// backlog alone through a ramp). The publish counter, read in the same answer, still
    /// grows by each step's messages: the arrival rate is its growth over the polls.
    #[test]
    fn the_publish_counter_measures_arrivals_a_broker_reading_zero_at_every_poll_hides() {
        let s = drain30();
        let mut t = Throughput::new(s);
        // A ramp: 20, 30, 40, 50 msg/s over successive 5 s steps; idle pods (nothing waits
        // for a consumer), so the counts alone prove little.
        let mut published = 1_000.0;
        let mut last = None;
        for (k, rate) in [20.0, 30.0, 40.0, 50.0].into_iter().enumerate() {
            published += rate * 5.0;
            let q = stale_counted(0.0, Some(published));
            last = Some(t.work((k as Millis + 1) * 5 * SEC, Ok(30.0), Some(&q), Some(2)));
            if k > 0 {
                assert_eq!(
                    last,
                    Some(Ok(rate + 1.0)),
                    "step {k}: {rate} msg/s + 30 / 30 s"
                );
            }
        }
        assert_eq!(last, Some(Ok(51.0)));
        // Without the counter, the same polls prove no arrivals at all.
        let mut t = Throughput::new(s);
        for k in 1..=4 {
            last = Some(t.work(k * 5 * SEC, Ok(30.0), Some(&stale(0.0)), Some(2)));
        }
        assert_eq!(last, Some(Ok(1.0)));
        // A counter that went back (the queue declared again) proves nothing; a broker that
        // reads its rate is taken as read.
        let mut t = Throughput::new(s);
        let q = |rate, published| QueueSignals {
            arrival: Ok(rate),
            served: Some(0.0),
            waiting: Some(0.0),
            published: Some(published),
        };
        let _ = t.work(0, Ok(0.0), Some(&q(0.0, 5_000.0)), Some(2));
        assert_eq!(
            t.work(5 * SEC, Ok(0.0), Some(&q(0.0, 10.0)), Some(2)),
            Ok(0.0)
        );
        assert_eq!(
            t.work(10 * SEC, Ok(0.0), Some(&q(7.0, 500.0)), Some(2)),
            Ok(7.0)
        );
    }

    #[test]
    fn the_counts_prove_an_arrival_rate_the_brokers_stale_rates_hide() {
        let s = drain30();
        let mut t = Throughput::new(s);
        // 80 msg/s arrive, 4 busy pods serve 40: the backlog grows by 40 a second, the broker
        // reads 0.0 for every rate.
        assert_eq!(t.work(0, Ok(300.0), Some(&stale(300.0)), Some(4)), Ok(10.0));
        let work = t.work(5 * SEC, Ok(500.0), Some(&stale(500.0)), Some(4));
        assert_eq!(work, Ok(80.0 + 500.0 / 30.0), "40 growth + 4 x 10 served");
        assert_eq!(t.counted_arrival(), Some(80.0));
        // Fewer messages waiting than the pods serve in 2 s: not busy, only the growth counts.
        let mut t = Throughput::new(s);
        let _ = t.work(0, Ok(0.0), Some(&stale(0.0)), Some(4));
        let work = t.work(5 * SEC, Ok(50.0), Some(&stale(50.0)), Some(4));
        assert_eq!(work, Ok(10.0 + 50.0 / 30.0), "10 msg/s growth alone");
        // A flat backlog of idle pods proves nothing: the broker's rate stands.
        let mut t = Throughput::new(s);
        let quiet = QueueSignals {
            arrival: Ok(2.0),
            served: Some(2.0),
            waiting: Some(0.0),
            published: None,
        };
        let _ = t.work(0, Ok(3.0), Some(&quiet), Some(8));
        assert_eq!(t.work(5 * SEC, Ok(3.0), Some(&quiet), Some(8)), Ok(2.1));
        assert_eq!(t.counted_arrival(), None);
        // A broker that reads its rates: its served rate, not the pods' set throughput (set
        // twice too high here: 3 pods said to do 20 serve 30 in all).
        let mut t = Throughput::new(DrainSpec {
            throughput: 20.0,
            ..s
        });
        let fresh = |waiting| QueueSignals {
            arrival: Ok(60.0),
            served: Some(30.0),
            waiting: Some(waiting),
            published: None,
        };
        let _ = t.work(0, Ok(600.0), Some(&fresh(600.0)), Some(3));
        assert_eq!(
            t.work(5 * SEC, Ok(750.0), Some(&fresh(750.0)), Some(3)),
            Ok(85.0)
        );
        assert_eq!(
            t.counted_arrival(),
            None,
            "30 growth + 30 served: the broker's 60"
        );
        // A broker between two samples reads 0.0 for a poll or four (RabbitMQ's management
        // API, statistics every second, read every 2 s): the last rate stands a while.
        let mut t = Throughput::new(s);
        let at = |rate| QueueSignals {
            arrival: Ok(rate),
            served: Some(rate),
            waiting: Some(0.0),
            published: None,
        };
        assert_eq!(t.work(0, Ok(0.0), Some(&at(60.0)), Some(6)), Ok(60.0));
        for k in 1..=30 {
            let work = t.work(k * 2 * SEC, Ok(0.0), Some(&at(0.0)), Some(6));
            assert_eq!(work, Ok(60.0), "at {k}");
        }
        assert_eq!(t.work(62 * SEC, Ok(0.0), Some(&at(0.0)), Some(6)), Ok(0.0));
        // Counts read twice in a poll, or minutes apart, prove no rate.
        let mut t = Throughput::new(s);
        let _ = t.work(0, Ok(0.0), Some(&stale(0.0)), Some(1));
        assert_eq!(
            t.work(10, Ok(100.0), Some(&stale(100.0)), Some(1)),
            Ok(100.0 / 30.0)
        );
        let later = 10 * 60 * SEC;
        assert_eq!(
            t.work(later, Ok(900.0), Some(&stale(900.0)), Some(1)),
            Ok(30.0)
        );
        // No data stays no data.
        assert_eq!(
            t.work(
                later + 5 * SEC,
                Err(NoData::Empty),
                Some(&stale(0.0)),
                Some(1)
            ),
            Err(NoData::Empty)
        );
    }

    /// A queue served by the pods the work asked for at the poll before (ready at once), the
    /// broker's rates all 0.0: the backlog and the pods at each poll.
    fn closed_loop(set: f64, real: f64, arrival: f64) -> (Vec<f64>, Vec<i32>) {
        let s = DrainSpec {
            drain_seconds: 30.0,
            throughput: set,
            learn: None,
        };
        let mut t = Throughput::new(s);
        let (dt, mut backlog, mut pods) = (5.0, 0.0, 1);
        let (mut backlogs, mut counts) = (Vec::new(), Vec::new());
        for k in 0..240 {
            let served = (backlog + arrival * dt).min(f64::from(pods) * real * dt);
            backlog += arrival * dt - served;
            backlogs.push(backlog);
            counts.push(pods);
            let work = t.work(k * 5 * SEC, Ok(backlog), Some(&stale(backlog)), Some(pods));
            pods = (work.unwrap() / set).ceil().max(1.0) as i32;
        }
        (backlogs, counts)
    }

    #[test]
    fn with_the_brokers_rates_stale_the_workers_keep_up_and_a_wrong_throughput_corrects() {
        // 80 msg/s against pods of 10 msg/s each, set right, or set 25 % too high (pods
        // really serve 8).
        for (set, real) in [(10.0, 10.0), (10.0, 8.0)] {
            let (backlogs, pods) = closed_loop(set, real, 80.0);
            let worst = backlogs[60..].iter().copied().fold(0.0, f64::max);
            // On the backlog alone, the pods would hold one only once it reached the 30 s
            // the drain time allows: 2,400 messages. With the counts, a few polls' worth:
            // the broker says nothing while the pods keep up, so once the proof's hold ends
            // the count falls and a backlog proves the arrivals again (a sawtooth the
            // machine's scale-down window and policies soften).
            assert!(
                worst < 80.0 * 15.0,
                "set {set}, real {real}: backlog up to {worst} once settled: {backlogs:?}"
            );
            // Counting busy pods at the set throughput feeds back, but converges: no runaway.
            let most = pods.iter().copied().max().unwrap();

            let needed = (80.0 / real).ceil() as i32;
            assert!(
                most <= needed + 3,
                "set {set}, real {real}: up to {most} pods, {needed} needed: {pods:?}"
            );
        }
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
                            published: None,
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
        let settle = SETTLE / SEC;
        feed(&mut t, 100..100 + settle, signals(40.0, 300.0), 4);
        assert_eq!(t.samples(), 0);
        // Settled: 4 pods get through 40 msg/s: 10 per pod.
        let changes = feed(&mut t, 100 + settle..110 + settle, signals(40.0, 300.0), 4);
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

    /// A broker whose rates read 0.0 (behind, or polled between two of its samples) while
    /// its counts move: the counts prove what the pods served, and the throughput is learned
    /// from them as from the broker's rates.
    #[test]
    fn the_counts_prove_the_served_rate_when_the_brokers_rates_read_zero() {
        // 60 msg/s arrive, 4 Ready pods get through 10 each: the backlog grows by 20 a second.
        // (published, backlog): the queue's counts.
        let run = |t: &mut Throughput, from: i64, to: i64, ready: i32, q: &mut (f64, f64)| {
            let mut changes = Vec::new();
            for k in from..to {
                q.0 += 60.0;
                q.1 += 60.0 - 10.0 * f64::from(ready);
                let s = stale_counted(q.1, Some(q.0));
                let _ = t.work(k * SEC, Ok(q.1), Some(&s), Some(ready));
                changes.extend(t.observe(k * SEC, "jobs", Some(&s), Some(ready)));
            }
            changes
        };
        let mut t = Throughput::new(spec(true));
        let changes = run(&mut t, 0, SETTLE / SEC + 10, 4, &mut (0.0, 400.0));
        assert_eq!(t.learned(), Some(10.0), "{changes:?}");
        assert!(
            changes[0].message.contains("5.000 -> 10.000"),
            "{changes:?}"
        );

        // No sample from a span the count changed in: 2 pods for a minute, then 4. Counted
        // over readings from before the change, they would read 60 - growth(20) = 40 msg/s
        // served by... 2 pods at 20, not 4 at 10.
        let mut t = Throughput::new(spec(true));
        let mut queue = (0.0, 400.0);
        run(&mut t, 0, 60, 2, &mut queue);
        let before = t.samples();
        run(&mut t, 60, 60 + SETTLE / SEC, 4, &mut queue);
        assert_eq!(
            t.samples(),
            before,
            "no sample until 4 pods held for SETTLE"
        );
        run(
            &mut t,
            60 + SETTLE / SEC,
            60 + SETTLE / SEC + 1,
            4,
            &mut queue,
        );
        assert_eq!(t.samples(), before + 1);
        assert_eq!(t.samples.back().map(|&(_, r)| r), Some(10.0));

        // Idle pods (nothing waits) and a counter that is not read prove no throughput.
        let mut t = Throughput::new(spec(true));
        for k in 0..60 {
            let idle = stale_counted(0.0, Some(k as f64 * 40.0));
            let _ = t.work(k * SEC, Ok(0.0), Some(&idle), Some(4));
            t.observe(k * SEC, "jobs", Some(&idle), Some(4));
            let unread = stale(500.0);
            let _ = t.work(k * SEC + 500, Ok(500.0), Some(&unread), Some(4));
            t.observe(k * SEC + 500, "jobs", Some(&unread), Some(4));
        }
        assert_eq!(t.samples(), 0);
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
        let settle = SETTLE / SEC;
        feed(&mut t, 0..settle + 10, signals(20.0, 50.0), 2);
        assert_eq!(t.samples(), 10, "once 2 pods have held for SETTLE");
        t.observe(SAMPLE_WINDOW + 80 * SEC, "jobs", None, Some(2));
        assert_eq!(t.samples(), 0);
        assert_eq!(
            t.learned(),
            Some(10.0),
            "the learned value stays without new samples"
        );
    }
}
