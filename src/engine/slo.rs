//! The per-pod target learned from an SLO signal (`spec.metrics[].slo`): the highest load per
//! pod at which the SLO held, with a safety margin.
//!
//! Every poll pairs the load per ready pod with the SLO signal (a latency, an error ratio: the
//! SLO holds while it is at or below `objective`). The pairs go into bins of the log load per
//! pod relative to the static target; each bin counts readings and violations. The violation
//! rate is fitted as a non-decreasing function of the load per pod (isotonic regression, pool
//! adjacent violators: more load per pod never makes the SLO easier), so a violation at low load
//! (an outage downstream) is pooled with the good readings around it instead of pulling the
//! target down on its own.
//!
//! - **Knee**: the lowest load per pod whose fitted rate exceeds `allowedViolations`, when the
//!   readings at or above it have too many violations for that rate by a binomial test at 1 %
//!   (a few unlucky readings are not a knee). Learned target: `knee * (1 - margin)`.
//! - **No knee**: the SLO held at every load seen. The limit is the level the highest
//!   [`MIN_TAIL_SAMPLES`] readings reached; the target is `limit * (1 - margin)` but never below
//!   the static target (nothing says the static target is unsafe). Load per pod above the
//!   target happens while scale-ups catch up, so the target rises only through loads that were
//!   seen to be safe.
//! - Bounds: `[minTargetRatio, maxTargetRatio]` times the static target. Fallback: the static
//!   target until `minHistorySeconds` and `MIN_TAIL_SAMPLES / allowedViolations` paired readings.
//! - Forgetting: when the counts reach 8x that, all halve (a new release may change capacity).
//!
//! Pure: time is an argument; memory is fixed (two arrays of [`SLO_BINS`]).

use statrs::distribution::{Binomial, DiscreteCDF};

use super::Millis;
use super::adaptive::{HISTOGRAM_CAP_FACTOR, MIN_TAIL_SAMPLES};

/// Width of a bin of the log load per pod (2 %).
pub const SLO_BIN: f64 = 0.02;
/// Bins covering load per pod from 1/8 to 8 times the static target.
pub const SLO_BINS: usize = 208;
/// The lowest bin's lower edge, as the log of a multiple of the static target.
const SLO_LOW: f64 = -(SLO_BINS as f64) * SLO_BIN / 2.0;
/// Significance of the binomial test that makes a knee.
const KNEE_SIGNIFICANCE: f64 = 0.01;

/// How the SLO target is learned (`spec.metrics[].slo`, besides the query).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
// No `deny_unknown_fields`: the CRD flattens this next to the query (the API server prunes
// unknown fields there).
#[serde(rename_all = "camelCase")]
pub struct SloConfig {
    /// The SLO holds while the signal is at or below this value (e.g. 0.25 for a p99 latency in
    /// seconds, 0.01 for an error ratio).
    pub objective: f64,
    /// Share of readings that may break the objective at a load per pod that still counts as
    /// safe.
    #[serde(default = "default_allowed_violations")]
    pub allowed_violations: f64,
    /// Safety margin under the learned limit (0.1: the target is 90 % of it).
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Lowest learned target, as a multiple of the static target.
    #[serde(default = "default_min_target_ratio")]
    pub min_target_ratio: f64,
    /// Highest learned target, as a multiple of the static target.
    #[serde(default = "default_max_target_ratio")]
    pub max_target_ratio: f64,
}

fn default_allowed_violations() -> f64 {
    0.01
}
fn default_margin() -> f64 {
    0.1
}
fn default_min_target_ratio() -> f64 {
    0.5
}
fn default_max_target_ratio() -> f64 {
    2.0
}

impl SloConfig {
    /// A configuration with the defaults for this objective.
    pub fn with_objective(objective: f64) -> Self {
        Self {
            objective,
            allowed_violations: default_allowed_violations(),
            margin: default_margin(),
            min_target_ratio: default_min_target_ratio(),
            max_target_ratio: default_max_target_ratio(),
        }
    }

    /// Check the values (the CRD's CEL rules check the same at admission).
    pub fn validate(&self) -> Result<(), String> {
        if !self.objective.is_finite() {
            return Err(format!("objective {} is not a number", self.objective));
        }
        if !(self.allowed_violations > 0.0 && self.allowed_violations < 0.5) {
            return Err(format!(
                "allowedViolations {} is not in (0, 0.5)",
                self.allowed_violations
            ));
        }
        if !(0.0..1.0).contains(&self.margin) {
            return Err(format!("margin {} is not in [0, 1)", self.margin));
        }
        if !(self.min_target_ratio > 0.0
            && self.min_target_ratio <= 1.0
            && self.max_target_ratio >= 1.0
            && self.max_target_ratio.is_finite())
        {
            return Err(format!(
                "need 0 < minTargetRatio <= 1 <= maxTargetRatio, got {} and {}",
                self.min_target_ratio, self.max_target_ratio
            ));
        }
        Ok(())
    }

    /// Paired readings needed before the learned target is used.
    pub fn min_samples(&self) -> u64 {
        (MIN_TAIL_SAMPLES / self.allowed_violations).round() as u64
    }
}

/// Where the SLO target in use comes from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum SloBasis {
    /// History too short: the static target.
    Static,
    /// The SLO broke above a load per pod: the target is under it by the margin.
    Knee,
    /// The SLO held at every load seen: the target follows the highest load seen.
    HeldUpTo,
}

impl SloBasis {
    /// The name shown in status and events.
    pub fn as_str(self) -> &'static str {
        match self {
            SloBasis::Static => "Static",
            SloBasis::Knee => "Knee",
            SloBasis::HeldUpTo => "HeldUpTo",
        }
    }
}

/// The learned per-pod target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloTarget {
    /// Load per pod to aim for.
    pub target: f64,
    /// Why.
    pub basis: SloBasis,
    /// The load per pod above which the SLO broke, if it did.
    pub knee: Option<f64>,
    /// Paired readings behind it.
    pub samples: u64,
}

impl SloTarget {
    /// A message when the target moved by more than `REPORT_CHANGE` or changed basis.
    pub fn change_from(&self, before: &SloTarget) -> Option<String> {
        let moved = (self.target / before.target - 1.0).abs() > super::adaptive::REPORT_CHANGE;
        (moved || self.basis != before.basis).then(|| {
            let knee = self.knee.map_or(String::new(), |k| {
                format!(", SLO broke above {k:.3} per pod")
            });
            format!(
                "slo target {:.3} -> {:.3} ({}{knee})",
                before.target,
                self.target,
                self.basis.as_str()
            )
        })
    }
}

/// The learning state of one metric's SLO target.
#[derive(Debug, Clone)]
pub struct SloLearner {
    config: SloConfig,
    static_target: f64,
    /// Readings and violations per bin (halved together when full).
    readings: Vec<u32>,
    violations: Vec<u32>,
    total: u64,
    first_ts: Option<Millis>,
    min_history: Millis,
    learned: SloTarget,
    /// A target learned before a restart, in use until the history is long enough again.
    resumed: Option<SloTarget>,
}

impl SloLearner {
    /// A learner with no history for a metric whose static per-pod target is `static_target`
    /// (> 0); `min_history_seconds` as in `spec.adaptive`.
    pub fn new(
        config: SloConfig,
        static_target: f64,
        min_history_seconds: u64,
    ) -> Result<Self, String> {
        config.validate()?;
        if !(static_target.is_finite() && static_target > 0.0) {
            return Err(format!("static target {static_target} is not positive"));
        }
        Ok(Self {
            config,
            static_target,
            readings: vec![0; SLO_BINS],
            violations: vec![0; SLO_BINS],
            total: 0,
            first_ts: None,
            min_history: min_history_seconds as Millis * 1000,
            learned: SloTarget {
                target: static_target,
                basis: SloBasis::Static,
                knee: None,
                samples: 0,
            },
            resumed: None,
        })
    }

    /// Starts from a target learned before (read back from status after a restart): it stays
    /// in use, within the bounds, until the new history is long enough to learn from.
    pub fn resume(mut self, previous: SloTarget) -> Self {
        let cfg = &self.config;
        let (lo, hi) = (
            self.static_target * cfg.min_target_ratio,
            self.static_target * cfg.max_target_ratio,
        );
        if previous.target.is_finite() && previous.basis != SloBasis::Static {
            self.learned = SloTarget {
                target: previous.target.clamp(lo, hi),
                samples: 0,
                ..previous
            };
            self.resumed = Some(self.learned);
        }
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SloConfig {
        &self.config
    }

    /// The target in use after the latest reading.
    pub fn learned(&self) -> SloTarget {
        self.learned
    }

    /// One poll: the load per ready pod and the SLO signal at `ts`. A missing or non-finite
    /// value on either side is no reading (never a good or a bad one).
    pub fn observe(&mut self, ts: Millis, load_per_pod: Option<f64>, signal: Option<f64>) {
        let (Some(x), Some(s)) = (load_per_pod, signal) else {
            return;
        };
        if !(x.is_finite() && x > 0.0 && s.is_finite()) {
            return;
        }
        self.first_ts.get_or_insert(ts);
        let bin = ((x / self.static_target).ln() - SLO_LOW) / SLO_BIN;
        let bin = (bin.floor().max(0.0) as usize).min(SLO_BINS - 1);
        self.readings[bin] += 1;
        if s > self.config.objective {
            self.violations[bin] += 1;
        }
        self.total += 1;
        if self.total >= HISTOGRAM_CAP_FACTOR * self.config.min_samples() {
            self.total = 0;
            for (n, v) in self.readings.iter_mut().zip(&mut self.violations) {
                *n /= 2;
                *v = (*v / 2).min(*n);
                self.total += u64::from(*n);
            }
        }
        self.learned = self.compute(ts);
    }

    /// Lower edge of bin `i` as a load per pod.
    fn edge(&self, i: usize) -> f64 {
        self.static_target * (SLO_LOW + i as f64 * SLO_BIN).exp()
    }

    fn compute(&self, ts: Millis) -> SloTarget {
        let cfg = &self.config;
        let mut out = SloTarget {
            target: self.static_target,
            basis: SloBasis::Static,
            knee: None,
            samples: self.total,
        };
        let old_enough = self.first_ts.is_some_and(|f| ts - f >= self.min_history);
        if !old_enough || self.total < cfg.min_samples() {
            return match self.resumed {
                Some(r) => SloTarget {
                    samples: self.total,
                    ..r
                },
                None => out,
            };
        }
        let (lo, hi) = (
            self.static_target * cfg.min_target_ratio,
            self.static_target * cfg.max_target_ratio,
        );
        let margin = 1.0 - cfg.margin;
        if let Some(knee) = self.knee() {
            out.knee = Some(knee);
            out.basis = SloBasis::Knee;
            out.target = (knee * margin).clamp(lo, hi);
            return out;
        }
        // No knee: the level the highest readings reached (the lower edge of the bin where the
        // top MIN_TAIL_SAMPLES begin).
        let mut above = 0u64;
        let mut limit = None;
        for i in (0..SLO_BINS).rev() {
            above += u64::from(self.readings[i]);
            if above as f64 >= MIN_TAIL_SAMPLES {
                limit = Some(self.edge(i));
                break;
            }
        }
        if let Some(limit) = limit {
            out.basis = SloBasis::HeldUpTo;
            out.target = (limit * margin).max(self.static_target).clamp(lo, hi);
        }
        out
    }

    /// The knee: the lower edge of the lowest block of the isotonic fit whose violation rate
    /// is above the allowed one, when the readings from it up break the allowed rate
    /// significantly.
    fn knee(&self) -> Option<f64> {
        // Pool adjacent violators over the populated bins: blocks of (first bin, n, v).
        let mut blocks: Vec<(usize, u64, u64)> = Vec::new();
        for i in 0..SLO_BINS {
            let n = u64::from(self.readings[i]);
            if n == 0 {
                continue;
            }
            blocks.push((i, n, u64::from(self.violations[i])));
            while blocks.len() >= 2 {
                let (_, n2, v2) = blocks[blocks.len() - 1];
                let (_, n1, v1) = blocks[blocks.len() - 2];
                // Rates v1/n1 > v2/n2 break monotonicity: pool them.
                if (v1 as u128) * (n2 as u128) > (v2 as u128) * (n1 as u128) {
                    blocks.pop();
                    let last = blocks.last_mut().expect("two blocks");
                    last.1 += n2;
                    last.2 += v2;
                } else {
                    break;
                }
            }
        }
        // The evidence for a knee at a block is every reading at or above it (the fitted rate
        // only grows with the load): sparse bins just above a knee still count together.
        let allowed = self.config.allowed_violations;
        let (mut tail_n, mut tail_v) = (0u64, 0u64);
        let mut knee = None;
        for &(first, n, v) in blocks.iter().rev() {
            tail_n += n;
            tail_v += v;
            if (v as f64) <= allowed * n as f64 {
                break; // this block and those below it are within the allowed rate
            }
            // P(at least tail_v violations in tail_n readings at the allowed rate).
            let p = match Binomial::new(allowed, tail_n) {
                Ok(b) if tail_v > 0 => b.sf(tail_v - 1),
                _ => 1.0,
            };
            if p < KNEE_SIGNIFICANCE {
                knee = Some(self.edge(first));
            }
        }
        knee
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    /// A service that holds its SLO up to `capacity` per pod and breaks it above (latency 0.1 s
    /// below, 1 s above), read at loads per pod spread over `lo..hi`.
    fn feed(l: &mut SloLearner, capacity: f64, lo: f64, hi: f64, n: usize, start: Millis) {
        for k in 0..n {
            // A deterministic spread over the range (golden-ratio sequence).
            let u = (k as f64 * 0.618_033_988_75).fract();
            let x = lo + (hi - lo) * u;
            let latency = if x > capacity { 1.0 } else { 0.1 };
            l.observe(start + k as Millis * MIN, Some(x), Some(latency));
        }
    }

    fn learner(target: f64) -> SloLearner {
        SloLearner::new(SloConfig::with_objective(0.25), target, 3600).unwrap()
    }

    #[test]
    fn a_target_above_capacity_comes_down_under_the_knee() {
        let mut l = learner(100.0);
        feed(&mut l, 80.0, 40.0, 110.0, 3000, 0);
        let t = l.learned();
        assert_eq!(t.basis, SloBasis::Knee, "{t:?}");
        let knee = t.knee.unwrap();
        assert!((78.0..=81.0).contains(&knee), "{t:?}");
        assert!((t.target - knee * 0.9).abs() < 1e-9, "{t:?}");
        assert!(t.target < 100.0);
    }

    #[test]
    fn sparse_readings_above_the_knee_count_together() {
        let mut cfg = SloConfig::with_objective(0.25);
        cfg.allowed_violations = 0.2; // 50 readings are enough
        let mut l = SloLearner::new(cfg, 100.0, 0).unwrap();
        // 60 readings over 40..110: one or two per 2 % bin.
        feed(&mut l, 80.0, 40.0, 110.0, 60, 0);
        let t = l.learned();
        assert_eq!(t.basis, SloBasis::Knee, "{t:?}");
        assert!((76.0..=81.0).contains(&t.knee.unwrap()), "{t:?}");
    }

    #[test]
    fn a_target_below_capacity_rises_only_through_loads_seen_to_be_safe() {
        let mut l = learner(100.0);
        // Readings up to 130 per pod, all within the SLO (capacity 200).
        feed(&mut l, 200.0, 50.0, 130.0, 3000, 0);
        let t = l.learned();
        assert_eq!(t.basis, SloBasis::HeldUpTo, "{t:?}");
        assert!(t.knee.is_none());
        assert!((0.9 * 125.0..=0.9 * 130.0).contains(&t.target), "{t:?}");
        // Never seen above the static target / 0.9: it stays at the static target.
        let mut l = learner(100.0);
        feed(&mut l, 200.0, 50.0, 105.0, 3000, 0);
        assert_eq!(l.learned().target, 100.0);
    }

    #[test]
    fn violations_at_low_load_pool_with_the_good_readings_around_them() {
        let mut l = learner(100.0);
        feed(&mut l, 200.0, 50.0, 120.0, 3000, 0);
        let before = l.learned();
        // An outage downstream: ten bad readings at 60 per pod.
        for k in 0..10 {
            l.observe(4_000 * MIN + k * MIN, Some(60.0), Some(5.0));
        }
        let after = l.learned();
        assert_eq!(after.basis, SloBasis::HeldUpTo, "{after:?}");
        assert_eq!(after.target, before.target);
    }

    #[test]
    fn short_history_and_missing_values_keep_the_static_target() {
        let mut l = learner(100.0);
        // Plenty of readings but within the first hour (one a second).
        for k in 0..3000 {
            l.observe(k * 1000, Some(150.0), Some(1.0));
        }
        assert_eq!(l.learned().basis, SloBasis::Static);
        assert_eq!(l.learned().target, 100.0);
        let mut l = learner(100.0);
        for k in 0..3000 {
            l.observe(k * MIN, None, Some(1.0));
            l.observe(k * MIN + 1, Some(150.0), None);
            l.observe(k * MIN + 2, Some(150.0), Some(f64::NAN));
        }
        assert_eq!(l.learned().samples, 0);
    }

    #[test]
    fn bounds_hold_and_bad_configs_are_refused() {
        let mut l = learner(100.0);
        feed(&mut l, 20.0, 10.0, 110.0, 3000, 0);
        assert_eq!(l.learned().basis, SloBasis::Knee);
        assert_eq!(l.learned().target, 50.0, "min ratio 0.5");
        let mut cfg = SloConfig::with_objective(0.25);
        cfg.margin = 1.0;
        assert!(SloLearner::new(cfg, 100.0, 0).is_err());
        let mut cfg = SloConfig::with_objective(0.25);
        cfg.min_target_ratio = 1.5;
        assert!(cfg.validate().is_err());
        assert!(SloLearner::new(SloConfig::with_objective(0.25), 0.0, 0).is_err());
    }

    #[test]
    fn a_changed_capacity_is_relearned_as_old_counts_halve() {
        let mut l = learner(100.0);
        feed(&mut l, 80.0, 40.0, 110.0, 3000, 0);
        assert!(l.learned().knee.unwrap() < 81.0);
        // A release doubles capacity: the old violations fade out with the halvings.
        feed(&mut l, 200.0, 40.0, 110.0, 40_000, 4_000 * MIN);
        let t = l.learned();
        assert_eq!(t.basis, SloBasis::HeldUpTo, "{t:?}");
        assert!(t.target > 90.0, "{t:?}");
    }

    #[test]
    fn a_resumed_target_holds_until_the_new_history_is_long_enough() {
        let mut first = learner(100.0);
        feed(&mut first, 80.0, 40.0, 110.0, 3000, 0);
        let learned = first.learned();
        let mut l = learner(100.0).resume(learned);
        assert_eq!(l.learned().target, learned.target);
        feed(&mut l, 80.0, 40.0, 110.0, 30, 0);
        assert_eq!(
            l.learned().target,
            learned.target,
            "30 readings are not enough"
        );
        feed(&mut l, 80.0, 40.0, 110.0, 3000, 100 * MIN);
        assert!((l.learned().target - learned.target).abs() < 2.0);
        // A static one is no prior; one outside today's bounds is clamped.
        let fresh = learner(100.0).resume(SloTarget {
            target: 1000.0,
            basis: SloBasis::HeldUpTo,
            knee: None,
            samples: 5,
        });
        assert_eq!(fresh.learned().target, 200.0);
    }

    #[test]
    fn changes_are_reported_when_material() {
        let a = SloTarget {
            target: 100.0,
            basis: SloBasis::Static,
            knee: None,
            samples: 0,
        };
        let b = SloTarget {
            target: 72.0,
            basis: SloBasis::Knee,
            knee: Some(80.0),
            samples: 3000,
        };
        let msg = b.change_from(&a).unwrap();
        assert!(
            msg.contains("100.000 -> 72.000 (Knee, SLO broke above 80.000"),
            "{msg}"
        );
        assert!(b.change_from(&b).is_none());
    }
}
