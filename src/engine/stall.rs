//! Scale-ups that do not help: the pods a scale-up added that do not become Ready, what their
//! status says is wrong, and how long a new pod really takes to become Ready.
//!
//! Pure, like the rest of the engine: the caller hands in what each pod of the workload says
//! ([`PodState`], from a pod watch) and the time. [`StallWatch`] tracks the latest scale-up
//! until the workload has as many Ready pods as it asked for; past a budget (the learned
//! startup delay times [`BUDGET_MARGIN`], bounded) the scale-up is stalled, and the diagnosis
//! is the pattern most of the pods that are not Ready show. While stalled, the decision
//! machine adds no replicas (it never piles Pending pods on a full cluster) and keeps what it
//! has; it tries one scale-up again after a backoff that doubles up to [`MAX_BACKOFF`]. It
//! never scales down because pods crash: that is for a human.
//!
//! [`StartupDelay`] learns the startup delay (pod created -> Ready) from the pods themselves,
//! as a high quantile over recent starts.

use std::collections::{HashSet, VecDeque};

use super::Millis;

/// What is wrong with a pod that is not Ready, in the terms its status uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Pattern {
    /// The scheduler found no node (`PodScheduled=False`, reason `Unschedulable`): no room on
    /// any node, taints, affinity.
    Unschedulable,
    /// A container keeps crashing (`waiting.reason: CrashLoopBackOff`).
    CrashLoopBackOff,
    /// The image cannot be pulled (`ImagePullBackOff`, `ErrImagePull`, `InvalidImageName`).
    ImagePull,
    /// A container was killed for memory (`lastState.terminated.reason: OOMKilled`).
    OomKilled,
    /// A container's configuration cannot be built (`CreateContainerConfigError`: a missing
    /// Secret or ConfigMap key).
    CreateContainerConfigError,
    /// Running, but the readiness probe fails.
    ReadinessProbe,
    /// Not Ready for a reason not listed here: the pod's own reason and message say.
    Unknown,
}

impl Pattern {
    /// The condition reason and the webhook's `pattern`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Unschedulable => "Unschedulable",
            Pattern::CrashLoopBackOff => "CrashLoopBackOff",
            Pattern::ImagePull => "ImagePullBackOff",
            Pattern::OomKilled => "OOMKilled",
            Pattern::CreateContainerConfigError => "CreateContainerConfigError",
            Pattern::ReadinessProbe => "ReadinessProbeFailing",
            Pattern::Unknown => "Unknown",
        }
    }
}

/// One pod of the workload, as the watch reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    /// Its name (for the diagnosis).
    pub name: String,
    /// Its uid: a start is learned once per pod.
    pub uid: String,
    /// When it was created.
    pub created: Millis,
    /// When it became Ready (its Ready condition's last transition), while it is Ready.
    pub ready_since: Option<Millis>,
    /// While not Ready: what its status says, when it says something.
    pub problem: Option<(Pattern, String)>,
    /// Being deleted: counted neither as Ready nor as stalled.
    pub terminating: bool,
}

/// The stall budget is the startup delay times this.
pub const BUDGET_MARGIN: i64 = 2;
/// Bounds of the stall budget.
pub const MIN_BUDGET: Millis = 30_000;
pub const MAX_BUDGET: Millis = 900_000;
/// The first wait before trying a stalled scale-up again; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Millis = 60_000;
pub const MAX_BACKOFF: Millis = 900_000;

/// The diagnosis of a stalled scale-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// The pattern most pods that are not Ready show.
    pub pattern: Pattern,
    /// One of those pods' own words (the scheduler's message, the container's reason).
    pub message: String,
    /// Those pods, by name (at most [`MAX_NAMED_PODS`]).
    pub pods: Vec<String>,
    /// Replicas the workload asks for.
    pub wanted: i32,
    /// Pods Ready.
    pub ready: i32,
    /// Pods not Ready (and not terminating).
    pub not_ready: i32,
    /// When the scale-up that stalled was made.
    pub scaled_at: Millis,
    /// When it was found stalled.
    pub since: Millis,
}

/// Pods named in a diagnosis.
pub const MAX_NAMED_PODS: usize = 5;

/// The latest scale-up, until its pods are Ready.
#[derive(Debug, Clone, Default)]
pub struct StallWatch {
    /// The scale-up being watched: (when, to how many).
    scale_up: Option<(Millis, i32)>,
    stall: Option<Stall>,
    /// While stalled: when a scale-up may be tried again.
    retry_at: Option<Millis>,
    /// The one scale-up tried after the backoff is on its way: no more until it is judged.
    retrying: bool,
    backoff: Millis,
}

impl StallWatch {
    /// The workload was scaled from `from` to `to` at `now`.
    pub fn scaled(&mut self, now: Millis, from: i32, to: i32) {
        if to > from {
            self.scale_up = Some((now, to));
            // One try after the backoff: it is judged afresh, and nothing more is added
            // meanwhile.
            self.retrying = self.stall.is_some();
            self.retry_at = None;
        } else if self.scale_up.is_some_and(|(_, wanted)| to < wanted) {
            // Scaled down below the watched count: watch what is left.
            self.scale_up = self.scale_up.map(|(at, _)| (at, to));
        }
    }

    /// Looks at the pods at `now`: clears a scale-up whose pods are Ready, finds a stall past
    /// `budget`. Returns the stall when one was found at this call (to escalate once).
    pub fn observe(&mut self, now: Millis, pods: &[PodState], budget: Millis) -> Option<&Stall> {
        let (at, wanted) = self.scale_up?;
        let live: Vec<&PodState> = pods.iter().filter(|p| !p.terminating).collect();
        let ready = live.iter().filter(|p| p.ready_since.is_some()).count() as i32;
        if ready >= wanted {
            self.scale_up = None;
            self.stall = None;
            self.retry_at = None;
            self.retrying = false;
            self.backoff = 0;
            return None;
        }
        if now - at < budget || self.stall.as_ref().is_some_and(|s| s.scaled_at == at) {
            return None;
        }
        let not_ready: Vec<&PodState> = live
            .iter()
            .copied()
            .filter(|p| p.ready_since.is_none())
            .collect();
        let (pattern, message) = diagnose(&not_ready);
        self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        self.retry_at = Some(now + self.backoff);
        self.retrying = false;
        self.stall = Some(Stall {
            pattern,
            message,
            pods: not_ready
                .iter()
                .filter(|p| p.problem.as_ref().is_none_or(|(q, _)| *q == pattern))
                .take(MAX_NAMED_PODS)
                .map(|p| p.name.clone())
                .collect(),
            wanted,
            ready,
            not_ready: not_ready.len() as i32,
            scaled_at: at,
            since: now,
        });
        self.stall.as_ref()
    }

    /// The stall in force, if any.
    pub fn stall(&self) -> Option<&Stall> {
        self.stall.as_ref()
    }

    /// Whether a scale-up is held back at `now`: stalled, and the backoff not over or the
    /// one try after it not yet judged.
    pub fn holds_scale_up(&self, now: Millis) -> bool {
        self.stall.is_some() && (self.retrying || self.retry_at.is_some_and(|t| now < t))
    }

    /// When the backoff ends, while it holds.
    pub fn retry_at(&self) -> Option<Millis> {
        self.retry_at.filter(|_| self.stall.is_some())
    }
}

/// The pattern most of `pods` show (ties: the first in [`Pattern`]'s order, the most
/// specific), with the words of the first pod showing it.
fn diagnose(pods: &[&PodState]) -> (Pattern, String) {
    let mut counts: Vec<(Pattern, usize, &str)> = Vec::new();
    for p in pods {
        let (pattern, message) = match &p.problem {
            Some((pattern, message)) => (*pattern, message.as_str()),
            None => (Pattern::Unknown, "not Ready, and its status says no more"),
        };
        match counts.iter_mut().find(|(q, _, _)| *q == pattern) {
            Some(c) => c.1 += 1,
            None => counts.push((pattern, 1, message)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts.first().map_or(
        (
            Pattern::Unknown,
            "no pod of the workload is there yet".into(),
        ),
        |(p, _, m)| (*p, m.to_string()),
    )
}

/// Starts kept for the quantile.
pub const STARTS_KEPT: usize = 64;
/// Starts needed before the learned delay is used.
pub const MIN_STARTS: usize = 5;
/// The quantile of the starts taken as the startup delay.
pub const STARTUP_QUANTILE: f64 = 0.9;

/// The startup delay learned from the workload's own pods.
#[derive(Debug, Clone, Default)]
pub struct StartupDelay {
    starts: VecDeque<Millis>,
    /// The pods seen Ready, by a hash of their uid (8 bytes each, not a uid's 60 or so: at
    /// 5,000 targets a set of uids took over a megabyte).
    seen: HashSet<u64>,
}

/// A pod's uid as [`StartupDelay`] remembers it: SipHash with fixed keys, the same in every run.
fn uid_hash(uid: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(uid)
}

impl StartupDelay {
    /// Learns the start of every pod seen Ready for the first time. A pod that was already
    /// Ready when first seen counts too: its Ready time is its own.
    pub fn observe(&mut self, pods: &[PodState]) {
        for p in pods {
            let Some(ready) = p.ready_since else { continue };
            if !self.seen.insert(uid_hash(&p.uid)) {
                continue;
            }
            let delay = ready - p.created;
            if delay < 0 {
                continue;
            }
            if self.starts.len() == STARTS_KEPT {
                self.starts.pop_front();
            }
            self.starts.push_back(delay);
        }
        // Forget pods that are gone, so that the set stays the size of the workload.
        if self.seen.len() > 4 * pods.len().max(STARTS_KEPT) {
            let present: HashSet<u64> = pods.iter().map(|p| uid_hash(&p.uid)).collect();
            self.seen.retain(|uid| present.contains(uid));
            self.seen.shrink_to_fit();
        }
    }

    /// The learned delay (the [`STARTUP_QUANTILE`] of the kept starts), once [`MIN_STARTS`]
    /// were seen; with how many.
    pub fn learned(&self) -> Option<(Millis, usize)> {
        if self.starts.len() < MIN_STARTS {
            return None;
        }
        let mut sorted: Vec<Millis> = self.starts.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64) * STARTUP_QUANTILE).ceil() as usize;
        Some((sorted[rank.clamp(1, sorted.len()) - 1], sorted.len()))
    }

    /// The stall budget: the learned delay (else `fallback`) times [`BUDGET_MARGIN`], bounded.
    pub fn budget(&self, fallback: Millis) -> Millis {
        let delay = self.learned().map_or(fallback, |(d, _)| d);
        (delay * BUDGET_MARGIN).clamp(MIN_BUDGET, MAX_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    //! On a simulated clock: pods are values, time is an argument.
    use super::*;

    const S: Millis = 1000;

    fn pod(
        name: &str,
        created: Millis,
        ready: Option<Millis>,
        problem: Option<Pattern>,
    ) -> PodState {
        PodState {
            name: name.into(),
            uid: format!("uid-{name}"),
            created,
            ready_since: ready,
            problem: problem.map(|p| (p, format!("{name}: {}", p.as_str()))),
            terminating: false,
        }
    }

    #[test]
    fn a_scale_up_whose_pods_stay_pending_stalls_after_the_budget_and_names_the_pattern() {
        let mut w = StallWatch::default();
        let budget = 120 * S;
        w.scaled(0, 2, 5);
        let mut pods = vec![
            pod("a", -600 * S, Some(-590 * S), None),
            pod("b", -600 * S, Some(-590 * S), None),
        ];
        for (i, name) in ["c", "d", "e"].into_iter().enumerate() {
            let problem = if i == 2 {
                Pattern::ImagePull
            } else {
                Pattern::Unschedulable
            };
            pods.push(pod(name, 0, None, Some(problem)));
        }
        assert!(
            w.observe(60 * S, &pods, budget).is_none(),
            "within the budget"
        );
        assert!(!w.holds_scale_up(60 * S));
        let stall = w.observe(120 * S, &pods, budget).cloned().expect("stalled");
        assert_eq!(stall.pattern, Pattern::Unschedulable);
        assert_eq!(stall.pods, ["c", "d"]);
        assert_eq!((stall.wanted, stall.ready, stall.not_ready), (5, 2, 3));
        assert_eq!(stall.message, "c: Unschedulable");
        // Found once: later looks do not report it again, and the hold lasts the backoff.
        assert!(w.observe(130 * S, &pods, budget).is_none());
        assert!(w.holds_scale_up(130 * S));
        assert_eq!(w.retry_at(), Some(120 * S + FIRST_BACKOFF));
        assert!(!w.holds_scale_up(120 * S + FIRST_BACKOFF));
        // One try after the backoff, and nothing more until it is judged.
        w.scaled(200 * S, 5, 6);
        assert!(w.holds_scale_up(210 * S));
        // The try stalls again: the backoff doubles.
        pods.push(pod("f", 200 * S, None, Some(Pattern::Unschedulable)));
        assert!(w.observe(330 * S, &pods, budget).is_some());
        assert_eq!(w.retry_at(), Some(330 * S + 2 * FIRST_BACKOFF));
        // The cause goes: every pod Ready, the stall clears and the backoff starts over.
        for p in &mut pods {
            p.ready_since = Some(400 * S);
            p.problem = None;
        }
        assert!(w.observe(400 * S, &pods, budget).is_none());
        assert!(w.stall().is_none() && !w.holds_scale_up(400 * S));
        w.scaled(500 * S, 6, 7);
        pods.push(pod("g", 500 * S, None, Some(Pattern::CrashLoopBackOff)));
        let stall = w.observe(700 * S, &pods, budget).cloned().unwrap();
        assert_eq!(stall.pattern, Pattern::CrashLoopBackOff);
        assert_eq!(w.retry_at(), Some(700 * S + FIRST_BACKOFF));
    }

    #[test]
    fn no_scale_up_no_stall_and_terminating_pods_count_for_nothing() {
        let mut w = StallWatch::default();
        let pods = [pod("a", 0, None, Some(Pattern::CrashLoopBackOff))];
        assert!(
            w.observe(3600 * S, &pods, 60 * S).is_none(),
            "no scale-up watched"
        );
        w.scaled(0, 1, 2);
        let mut pods = vec![
            pod("a", 0, Some(10 * S), None),
            pod("b", 0, Some(10 * S), None),
        ];
        pods[1].terminating = true;
        pods.push(pod("c", 0, None, None));
        let stall = w.observe(60 * S, &pods, 60 * S).cloned().unwrap();
        assert_eq!((stall.ready, stall.not_ready), (1, 1));
        assert_eq!(stall.pattern, Pattern::Unknown);
        // A scale-down below the watched count lowers what is waited for.
        w.scaled(70 * S, 2, 1);
        assert!(w.observe(80 * S, &pods, 60 * S).is_none());
        assert!(w.stall().is_none());
    }

    #[test]
    fn the_startup_delay_is_a_high_quantile_of_the_pods_own_starts() {
        let mut d = StartupDelay::default();
        assert_eq!(d.budget(60 * S), 120 * S, "the static value until learned");
        let mut pods = Vec::new();
        for (i, secs) in [20, 22, 25, 21, 90].into_iter().enumerate() {
            pods.push(pod(
                &format!("p{i}"),
                1000 * S,
                Some((1000 + secs) * S),
                None,
            ));
            d.observe(&pods);
        }
        // Five starts: the 0.9 quantile is the slowest (ceil(4.5) = 5th of 5).
        assert_eq!(d.learned(), Some((90 * S, 5)));
        // Seen again, a pod is not counted twice.
        d.observe(&pods);
        assert_eq!(d.learned().unwrap().1, 5);
        for i in 5..20 {
            pods.push(pod(&format!("p{i}"), 2000 * S, Some((2000 + 24) * S), None));
        }
        d.observe(&pods);
        // Twenty starts (20, 21, 22, fifteen of 24, 25, 90): the 18th is 24 s; the one slow
        // start no longer sets it.
        assert_eq!(d.learned(), Some((24 * S, 20)));
        assert_eq!(d.budget(60 * S), 48 * S);
        // Bounded: a 1 s start still leaves MIN_BUDGET.
        let mut fast = StartupDelay::default();
        let quick: Vec<PodState> = (0..5)
            .map(|i| pod(&format!("q{i}"), 0, Some(S), None))
            .collect();
        fast.observe(&quick);
        assert_eq!(fast.budget(60 * S), MIN_BUDGET);
    }
}
