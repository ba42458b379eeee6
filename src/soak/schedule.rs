//! The soak's fault schedule: which faults, when and for how long, drawn from a seed so that a
//! run can be repeated. Pure: no clock, no I/O.

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Prometheus is killed, then started again.
    PrometheusKilled,
    /// Prometheus goes down for half of each [`Profile::flap_period`] and up for the other.
    PrometheusFlapping,
    /// Prometheus answers after a delay (a proxy in front of it holds each answer).
    SlowUpstream,
    /// One query group's metric is renamed: its query returns an empty vector.
    EmptyVector,
    /// RabbitMQ is stopped, then started again (its queues come back empty).
    RabbitMqRestarted,
    /// The kube-apiserver is stopped, then started again.
    ApiServerRestarted,
    /// The replica holding the Lease is SIGKILLed, and started again later.
    LeaderKilled,
    /// A replica is SIGKILLed while a load step has targets acting, and started again later.
    EbbKilledMidPoll,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::PrometheusKilled,
        FaultKind::PrometheusFlapping,
        FaultKind::SlowUpstream,
        FaultKind::EmptyVector,
        FaultKind::RabbitMqRestarted,
        FaultKind::ApiServerRestarted,
        FaultKind::LeaderKilled,
        FaultKind::EbbKilledMidPoll,
    ];

    /// What it acts on: faults on one resource never overlap; on different ones they may.
    pub fn resource(self) -> &'static str {
        match self {
            Self::PrometheusKilled | Self::PrometheusFlapping | Self::SlowUpstream => "prometheus",
            Self::EmptyVector => "metric",
            Self::RabbitMqRestarted => "rabbitmq",
            Self::ApiServerRestarted => "apiserver",
            Self::LeaderKilled | Self::EbbKilledMidPoll => "ebb",
        }
    }

    /// Whether the fault makes metric sources fail (what "scale-downs while a source failed"
    /// is counted against).
    pub fn fails_sources(self) -> bool {
        !matches!(
            self,
            Self::ApiServerRestarted | Self::LeaderKilled | Self::EbbKilledMidPoll
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PrometheusKilled => "prometheus killed",
            Self::PrometheusFlapping => "prometheus flapping",
            Self::SlowUpstream => "slow prometheus",
            Self::EmptyVector => "empty vector",
            Self::RabbitMqRestarted => "rabbitmq restarted",
            Self::ApiServerRestarted => "apiserver restarted",
            Self::LeaderKilled => "leader killed",
            Self::EbbKilledMidPoll => "ebb killed mid-poll",
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// From the soak's start.
    pub start: Duration,
    /// How long the fault lasts (a killed process stays down this long).
    pub duration: Duration,
    /// [`FaultKind::EmptyVector`]: the query group renamed. [`FaultKind::EbbKilledMidPoll`]:
    /// which replica (0 or 1).
    pub which: usize,
    /// [`FaultKind::SlowUpstream`]: the delay of each answer.
    pub delay: Duration,
}

impl Fault {
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }
}

/// How long a run is and how long its faults last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub total: Duration,
    /// No fault starts before this (ebb learns the targets, the HPAs sync).
    pub warm_up: Duration,
    /// No fault lasts beyond `total - cool_down` (every fault's recovery is measured).
    pub cool_down: Duration,
    /// Fault durations are drawn from their ranges scaled by this (1 for a full run).
    pub scale: f64,
    /// Prometheus flapping: down for half of each period, up for the other half.
    pub flap_period: Duration,
}

impl Profile {
    /// A full run of `minutes`.
    pub fn minutes(minutes: u64) -> Self {
        Self {
            total: Duration::from_secs(minutes * 60),
            warm_up: Duration::from_secs(90),
            cool_down: Duration::from_secs(90),
            scale: 1.0,
            flap_period: Duration::from_secs(40),
        }
    }

    /// The short soak the test suite runs: every fault kind, shorter. Its faults end by 170 s,
    /// and 40 s after them every target must decide normally again: two polls and a probe
    /// period, since targets that backed off through API server restarts are polled as soon as
    /// the server answers ([`crate::controller`]'s recovery), not at their backoff's end (up to
    /// [`crate::controller::errors::TRANSIENT_CAP`], a minute, later).
    pub fn short() -> Self {
        let cool_down = Duration::from_secs(40);
        Self {
            total: Duration::from_secs(170) + cool_down,
            warm_up: Duration::from_secs(45),
            cool_down,
            scale: 0.3,
            flap_period: Duration::from_secs(16),
        }
    }
}

/// The faults of a run, in start order: every kind in a seeded order (Prometheus's first),
/// again and again while they fit, each after a seeded gap and no earlier than the last fault on its resource ended
/// (with a pause of 10 s), so that faults on different resources overlap.
pub fn schedule(seed: u64, profile: Profile, groups: usize) -> Vec<Fault> {
    let mut rng = XorShiftRng::seed_from_u64(seed);
    let secs = |rng: &mut XorShiftRng, lo: f64, hi: f64| {
        Duration::from_secs_f64(rng.random_range(lo..hi) * profile.scale)
            .max(Duration::from_secs(3))
    };
    let last_end = profile.total.saturating_sub(profile.cool_down);
    let mut faults = Vec::new();
    let mut free: std::collections::HashMap<&str, Duration> = Default::default();
    let mut at = profile.warm_up;
    'rounds: loop {
        let mut kinds = FaultKind::ALL;
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.random_range(0..=i));
        }
        // Prometheus has three kinds one after another: they go first in a round, so that a
        // short run fits them all.
        kinds.sort_by_key(|k| k.resource() != "prometheus");
        let placed = faults.len();
        for kind in kinds {
            let duration = match kind {
                FaultKind::PrometheusKilled => secs(&mut rng, 30.0, 60.0),
                FaultKind::PrometheusFlapping => {
                    // Whole periods: it ends up.
                    let periods = (rng.random_range(2.0..4.0) * profile.scale).ceil().max(2.0);
                    profile.flap_period.mul_f64(periods)
                }
                FaultKind::SlowUpstream => secs(&mut rng, 40.0, 80.0),
                FaultKind::EmptyVector => secs(&mut rng, 40.0, 80.0),
                FaultKind::RabbitMqRestarted => secs(&mut rng, 10.0, 30.0),
                FaultKind::ApiServerRestarted => secs(&mut rng, 5.0, 15.0),
                FaultKind::LeaderKilled | FaultKind::EbbKilledMidPoll => secs(&mut rng, 10.0, 30.0),
            };
            let gap = secs(&mut rng, 15.0, 40.0);
            // The cadence moves by the gap; a busy resource delays only its own fault.
            let start = (at + gap).max(free.get(kind.resource()).copied().unwrap_or_default());
            if start + duration > last_end {
                continue;
            }
            at += gap;
            free.insert(kind.resource(), start + duration + Duration::from_secs(10));
            faults.push(Fault {
                kind,
                start,
                duration,
                which: match kind {
                    FaultKind::EmptyVector => rng.random_range(0..groups.max(1)),
                    FaultKind::EbbKilledMidPoll => rng.random_range(0..2),
                    _ => 0,
                },
                delay: match kind {
                    // Some answers within the 5 s timeout, some beyond it.
                    FaultKind::SlowUpstream => {
                        Duration::from_millis(rng.random_range(2_000..9_000))
                    }
                    _ => Duration::ZERO,
                },
            });
        }
        if faults.len() == placed {
            break 'rounds;
        }
    }
    faults.sort_by_key(|f| f.start);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let p = Profile::minutes(20);
        assert_eq!(schedule(7, p, 30), schedule(7, p, 30));
        assert_ne!(schedule(7, p, 30), schedule(8, p, 30));
    }

    #[test]
    fn every_kind_fits_in_both_profiles_within_their_bounds_and_one_resource_at_a_time() {
        for (profile, seeds) in [(Profile::minutes(20), 0..50), (Profile::short(), 0..50)] {
            for seed in seeds {
                let faults = schedule(seed, profile, 30);
                for kind in FaultKind::ALL {
                    assert!(
                        faults.iter().any(|f| f.kind == kind),
                        "seed {seed}, {profile:?}: no {kind:?} in {faults:#?}"
                    );
                }
                for f in &faults {
                    assert!(f.start >= profile.warm_up, "{f:?}");
                    assert!(f.end() <= profile.total - profile.cool_down, "{f:?}");
                    assert!(f.which < 30);
                }
                for (i, a) in faults.iter().enumerate() {
                    for b in &faults[i + 1..] {
                        if a.kind.resource() == b.kind.resource() {
                            assert!(b.start >= a.end(), "seed {seed}: {a:?} overlaps {b:?}");
                        }
                    }
                }
            }
        }
        // Faults on different resources do overlap somewhere in a full run.
        let faults = schedule(1, Profile::minutes(20), 30);
        let overlap = faults
            .iter()
            .enumerate()
            .any(|(i, a)| faults[i + 1..].iter().any(|b| b.start < a.end()));
        assert!(overlap, "{faults:#?}");
    }
}
