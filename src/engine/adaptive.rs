//! Thresholds learned from history. Three separate, bounded, explainable rules adjust the
//! reactive recommendation (the HPA's `ceil(load / target)`):
//!
//! - **headroom** for the startup delay: the `1 - underProvisionRisk` quantile of the load's
//!   largest growth over the horizon a decision must cover (pod startup plus one observation),
//!   corrected by the polls actually short; per phase of the day when asked;
//! - **tolerance**: a band around the current count inside which scale-down waits, from the
//!   measured noise of the signal (MAD of first differences of the log-load);
//! - **scale-down window**: how long a scale-down waits, from how soon the load came back after
//!   past drops.
//!
//! A fourth rule, optional, learns the per-pod target itself from an SLO signal
//! ([`super::slo`]).
//!
//! Each value has hard bounds in [`AdaptiveConfig`] and falls back to the static HPA defaults
//! (no headroom, tolerance 0.1, window 300 s) while its history is short. A seasonal forecast
//! ([`super::forecast`]) may raise the recommendation ahead of a daily or weekly rise; nothing
//! lowers it below the reactive one. The math, bounds and fallbacks are in `docs/adaptive.md`.
//!
//! [`AdaptiveState`] is a state machine fed observations with their time; memory is bounded
//! (fixed histograms, ring buffers), and a step allocates nothing once warm.

use std::collections::VecDeque;

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::{Data, OrderStatistics};

use super::forecast::{Period, Seasonal};
use super::{DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, DEFAULT_TOLERANCE, Millis, ceil_eps};

/// A tail quantile is trusted once about this many samples lie beyond it.
pub const MIN_TAIL_SAMPLES: f64 = 10.0;
/// Below this many samples, the threshold of the extrapolated tail is the 90th percentile
/// (about a tenth of the samples beyond it) rather than the quantile with
/// [`MIN_TAIL_SAMPLES`] beyond it: lower, the bulk, not the tail, would shape the fit.
pub const MIN_EXTRAPOLATION_SAMPLES: u64 = 10 * MIN_TAIL_SAMPLES as u64;
/// Width of a growth histogram bin, in log-load (0.2 %).
pub const GROWTH_BIN: f64 = 0.002;
/// Growth histogram bins: up to e^1.4, about 4x over the horizon; more falls in the last bin.
pub const GROWTH_BINS: usize = 700;
/// When a histogram holds this many samples (in multiples of the minimum), its counts halve:
/// bounded memory, and older behaviour weighs less than recent.
pub const HISTOGRAM_CAP_FACTOR: u64 = 8;
/// Phases of the day for the headroom (3 hours each): enough to follow a daily cycle's rise and
/// fall, few enough that each phase gathers a tail's worth of samples within days.
pub const PHASES_PER_DAY: usize = 8;
/// First differences kept for the noise estimate.
pub const NOISE_WINDOW: usize = 256;
/// Share of pure-noise changes the tolerance band absorbs. The band only ever delays a
/// scale-down, so the quantile is one-sided: 95 % of the noise-driven falls stay inside it.
pub const TOLERANCE_CONFIDENCE: f64 = 0.95;
/// A learned value is reported (as an event) when it moves by at least this fraction.
pub const REPORT_CHANGE: f64 = 0.1;
/// MAD to standard deviation for normal data (1 / Phi^-1(3/4)).
const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

const HOUR_MS: Millis = 3_600_000;
/// History the risk is calibrated from: with at least this much, the share of polls short of
/// capacity lands near the `underProvisionRisk` asked (docs/adaptive.md, "Calibration",
/// measured on two weeks at 1-minute steps and a month at hourly steps); with less, the
/// rules aim at the risk without the history to hit it, and status says so.
pub const CALIBRATION_HISTORY: Millis = 14 * 24 * HOUR_MS;
/// The risk correction's step per poll, in ln(1 + headroom): a poll short of capacity raises
/// it by this much (less the risk), a covered one lowers it by this times the risk.
pub const RISK_STEP: f64 = 0.01;
/// The risk correction stays within this (the headroom factor within e^-0.7 = 0.5 and
/// e^0.7 = 2 times what the histograms say).
pub const RISK_CORRECTION_BOUND: f64 = 0.7;

/// Errors of the adaptive rules' configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdaptiveError {
    /// A bound pair or a duration that cannot be used.
    #[error("adaptive: {field}: {message}")]
    Invalid {
        /// The camelCase field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How the adaptive rules are configured (ScaledTarget `spec.adaptive`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Learn from history; off: the static HPA behaviour (no headroom, tolerance 0.1, 300 s).
    pub enabled: bool,
    /// No learned value is used before this much history, whatever the sample counts say.
    pub min_history_seconds: u64,
    /// Time from a scale-up to the new pods being ready; the headroom covers this horizon plus
    /// one observation interval.
    pub startup_delay_seconds: u64,
    /// Lower bound of the learned headroom (fraction of the load, 0.2 = 20 %).
    pub min_headroom: f64,
    /// Upper bound of the learned headroom.
    pub max_headroom: f64,
    /// Lower bound of the learned tolerance (fraction).
    pub min_tolerance: f64,
    /// Upper bound of the learned tolerance.
    pub max_tolerance: f64,
    /// Lower bound of the learned scale-down stabilization window.
    pub min_scale_down_window_seconds: u64,
    /// Upper bound of the learned scale-down stabilization window; also how long a drop is
    /// watched for a recurrence.
    pub max_scale_down_window_seconds: u64,
    /// Scale up ahead of a daily or weekly rise when the history shows one.
    pub forecast: bool,
    /// Learn the headroom per phase of the day (3-hour phases) once a daily cycle shows: every
    /// phase then gets the same risk, and the volatile hours cost more. Off (the default): one
    /// headroom for all hours, the risk asked being the share of all polls short; it lets the
    /// misses gather in the volatile hours and costs less for the same overall risk.
    pub phase_of_day: bool,
    /// Share of decisions allowed to fall short of the load within the startup horizon: the
    /// headroom covers the `1 - underProvisionRisk` quantile of the growth.
    pub under_provision_risk: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_history_seconds: 3600,
            startup_delay_seconds: 60,
            min_headroom: 0.0,
            max_headroom: 1.0,
            min_tolerance: 0.0,
            max_tolerance: 0.3,
            min_scale_down_window_seconds: 0,
            max_scale_down_window_seconds: 1800,
            forecast: true,
            phase_of_day: false,
            under_provision_risk: 0.005,
        }
    }
}

impl AdaptiveConfig {
    /// Check bounds: finite, non-negative, min <= max.
    pub fn validate(&self) -> Result<(), AdaptiveError> {
        let frac = |field, lo: f64, hi: f64| {
            if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo <= hi) {
                return Err(AdaptiveError::Invalid {
                    field,
                    message: format!("need 0 <= min <= max, got [{lo}, {hi}]"),
                });
            }
            Ok(())
        };
        frac(
            "minHeadroom/maxHeadroom",
            self.min_headroom,
            self.max_headroom,
        )?;
        frac(
            "minTolerance/maxTolerance",
            self.min_tolerance,
            self.max_tolerance,
        )?;
        if !(self.under_provision_risk > 0.0 && self.under_provision_risk <= 0.5) {
            return Err(AdaptiveError::Invalid {
                field: "underProvisionRisk",
                message: format!("{} is not in (0, 0.5]", self.under_provision_risk),
            });
        }
        if self.max_tolerance >= 1.0 {
            return Err(AdaptiveError::Invalid {
                field: "maxTolerance",
                message: format!("{} would never scale down; use < 1", self.max_tolerance),
            });
        }
        if self.min_scale_down_window_seconds > self.max_scale_down_window_seconds {
            return Err(AdaptiveError::Invalid {
                field: "minScaleDownWindowSeconds/maxScaleDownWindowSeconds",
                message: format!(
                    "min {} > max {}",
                    self.min_scale_down_window_seconds, self.max_scale_down_window_seconds
                ),
            });
        }
        Ok(())
    }

    /// How much history (seconds) the rules can use at `interval` (ms, > 0): the least of
    /// `minHistorySeconds` and what the headroom needs (a tail's worth of growth samples over
    /// the longest candidate window and the horizon), the tolerance (its noise window) and,
    /// when the forecast or the phase of day is on, the period check (three days). What a
    /// restart backfills; a longer history only refines the same values.
    pub fn history_wanted_seconds(&self, interval: Millis) -> u64 {
        let interval = interval.max(1);
        let steps = |seconds: u64| ((seconds as i64 * 1000) / interval) as u64;
        let horizon = steps(self.startup_delay_seconds) + 2;
        let longest = steps(self.max_scale_down_window_seconds) + 1;
        let q = 1.0 - self.under_provision_risk.clamp(f64::MIN_POSITIVE, 0.5);
        let readings = (min_tail_count(q) + longest + horizon).max(NOISE_WINDOW as u64 + 1);
        let mut seconds = (readings * interval as u64).div_ceil(1000);
        if self.enabled && (self.forecast || self.phase_of_day) {
            seconds = seconds.max(super::forecast::MIN_CYCLES as u64 * 86_400);
        }
        seconds.max(self.min_history_seconds)
    }
}

/// Where a learned value comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum Basis {
    /// The static default: history too short, or adaptive off.
    Static,
    /// The whole history.
    History,
    /// The whole history, too short for the quantile itself: its tail is extrapolated from
    /// the quantile that has [`MIN_TAIL_SAMPLES`] beyond it.
    Extrapolated,
    /// The history at this hour of the day (UTC), the load having a daily cycle.
    HourOfDay(u8),
    /// Held at `maxHeadroom`: the growth quantile, with the correction from the polls short,
    /// asks for more, so the risk asked is not honoured within that bound (raise it, or
    /// accept more polls short).
    MaxHeadroom,
}

/// The values in use, for status (`learned`) and events.
#[derive(
    Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Learned {
    /// Extra capacity over the reactive recommendation (fraction of the load).
    pub headroom: f64,
    /// Where the headroom comes from.
    pub headroom_basis: Basis,
    /// Relative band inside which a scale-down waits.
    pub tolerance: f64,
    /// Where the tolerance comes from.
    pub tolerance_basis: Basis,
    /// Scale-down stabilization window.
    pub scale_down_window_seconds: u64,
    /// Where the window comes from.
    pub scale_down_window_basis: Basis,
    /// Measured noise: standard deviation of a reading around the level (fraction), if known.
    pub noise: Option<f64>,
    /// Period found in the history, if any.
    pub period: Option<Period>,
    /// Growth samples behind the headroom.
    pub growth_samples: u64,
    /// The history spans [`CALIBRATION_HISTORY`]: the risk asked is the risk got.
    #[serde(default)]
    pub calibrated: bool,
    /// What the polls short of capacity so far added to the headroom's growth quantile (ln of
    /// the factor on 1 + headroom): above 0 when the histograms alone fell short more often
    /// than the risk asked, below 0 when they over-protected.
    #[serde(default)]
    pub risk_correction: f64,
}

impl Learned {
    fn fallback() -> Self {
        Self {
            headroom: 0.0,
            headroom_basis: Basis::Static,
            tolerance: DEFAULT_TOLERANCE,
            tolerance_basis: Basis::Static,
            scale_down_window_seconds: DEFAULT_DOWNSCALE_STABILIZATION_SECONDS as u64,
            scale_down_window_basis: Basis::Static,
            noise: None,
            period: None,
            growth_samples: 0,
            calibrated: false,
            risk_correction: 0.0,
        }
    }

    /// A one-line event message when a value moved materially since `before` (its basis
    /// changed, or it moved by [`REPORT_CHANGE`] relative); `None` otherwise.
    pub fn change_from(&self, before: &Learned) -> Option<String> {
        let moved = |a: f64, b: f64| (a - b).abs() > REPORT_CHANGE * a.abs().max(b.abs()).max(0.01);
        let mut parts = Vec::new();
        if self.headroom_basis != before.headroom_basis || moved(self.headroom, before.headroom) {
            parts.push(format!(
                "headroom {:.3} -> {:.3} ({:?})",
                before.headroom, self.headroom, self.headroom_basis
            ));
        }
        if self.tolerance_basis != before.tolerance_basis || moved(self.tolerance, before.tolerance)
        {
            parts.push(format!(
                "tolerance {:.3} -> {:.3} ({:?})",
                before.tolerance, self.tolerance, self.tolerance_basis
            ));
        }
        if self.scale_down_window_basis != before.scale_down_window_basis
            || moved(
                self.scale_down_window_seconds as f64,
                before.scale_down_window_seconds as f64,
            )
        {
            parts.push(format!(
                "scaleDownWindow {}s -> {}s ({:?})",
                before.scale_down_window_seconds,
                self.scale_down_window_seconds,
                self.scale_down_window_basis
            ));
        }
        if self.period != before.period {
            parts.push(format!("period {:?} -> {:?}", before.period, self.period));
        }
        if self.calibrated && !before.calibrated {
            parts.push(format!(
                "calibrated for the risk ({} days of history)",
                CALIBRATION_HISTORY / (24 * HOUR_MS)
            ));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Why the adjusted recommendation is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptiveReason {
    /// No reading this time: the current count stays.
    NoData,
    /// The reactive recommendation itself.
    Reactive,
    /// Raised by the learned headroom.
    Headroom,
    /// Raised by the seasonal forecast.
    Forecast,
    /// A scale-down held back by the (learned) scale-down window.
    Stabilized,
    /// A scale-down smaller than the (learned) tolerance band.
    WithinTolerance,
}

impl AdaptiveReason {
    /// A CamelCase reason string for conditions and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoData => "NoData",
            Self::Reactive => "Reactive",
            Self::Headroom => "LearnedHeadroom",
            Self::Forecast => "SeasonalForecast",
            Self::Stabilized => "LearnedScaleDownWindow",
            Self::WithinTolerance => "LearnedTolerance",
        }
    }
}

impl std::fmt::Display for AdaptiveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one recommendation needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// The reactive recommendation (the HPA's proposal); the result is never below it.
    pub reactive: u32,
    /// The latest load reading the reactive recommendation came from, `None` when missing.
    pub load: Option<f64>,
    /// The per-pod target the load is compared against.
    pub target_per_pod: f64,
    /// The current replica count.
    pub current: u32,
}

/// The adjusted recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    /// Replicas to ask for (before min/max bounds).
    pub replicas: u32,
    /// Why.
    pub reason: AdaptiveReason,
}

/// Counts of a quantity in fixed bins, halved when full (u16: the cap stays below 65 536).
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u16>,
    total: u64,
}

impl Histogram {
    fn new(bins: usize) -> Self {
        Self {
            counts: vec![0; bins],
            total: 0,
        }
    }

    fn add(&mut self, bin: usize, cap: u64) {
        let bin = bin.min(self.counts.len() - 1);
        self.counts[bin] = self.counts[bin].saturating_add(1);
        self.total += 1;
        if self.total >= cap {
            self.halve();
        }
    }

    /// Halves every count, keeping the total: an odd count's half sample is carried to the
    /// next bin up. Halving each bin alone would drop every bin holding one sample, and the
    /// tail a high quantile is read from is made of such bins: after each halving the
    /// headroom fell, until the polls short brought it back. Carried upwards, two lone samples
    /// become one in the higher one's bin (the estimate stays on the safe side).
    fn halve(&mut self) {
        let mut carry = 0u32;
        self.total = 0;
        for c in &mut self.counts {
            let held = u32::from(*c) + carry;
            *c = (held / 2) as u16;
            carry = held % 2;
            self.total += u64::from(*c);
        }
    }

    /// The growth (in log units, `bin * GROWTH_BIN`) at quantile `q`, and whether it was
    /// extrapolated. With [`MIN_TAIL_SAMPLES`] beyond it, the empirical quantile. With fewer,
    /// the quantile `u` that has them (but never below the 90th percentile: below it the bulk,
    /// not the tail, would shape the fit), plus an exponential tail fitted to the samples
    /// beyond it (peaks over a threshold with shape 0): `u + mean excess * ln(p_u / (1 - q))`,
    /// where `p_u` is the share beyond `u`. While fewer than `1 / (1 - q)` samples are known,
    /// the `q` quantile lies beyond every one of them, so it is at least the largest growth
    /// seen: from the first sample on (a series of hourly readings would otherwise have no
    /// headroom through its first day, a few bursts of equal height none at all). `None`
    /// without samples.
    fn tail_growth(&self, q: f64) -> Option<(f64, bool)> {
        let n = self.total as f64;
        if n * (1.0 - q) >= MIN_TAIL_SAMPLES {
            return Some((self.quantile_bin(q)? as f64 * GROWTH_BIN, false));
        }
        let largest = self.counts.iter().rposition(|&c| c > 0)?;
        let p_u = (MIN_TAIL_SAMPLES / n).min(MIN_TAIL_SAMPLES / MIN_EXTRAPOLATION_SAMPLES as f64);
        let u = self.quantile_bin(1.0 - p_u)?;
        let (mut count, mut excess) = (0u64, 0u64);
        for (b, &c) in self.counts.iter().enumerate().skip(u + 1) {
            count += u64::from(c);
            excess += (b - u) as u64 * u64::from(c);
        }
        let mean_excess = if count == 0 {
            0.0
        } else {
            excess as f64 / count as f64 * GROWTH_BIN
        };
        let mut growth = u as f64 * GROWTH_BIN + mean_excess * (p_u / (1.0 - q)).ln();
        if n * (1.0 - q) < 1.0 {
            growth = growth.max(largest as f64 * GROWTH_BIN);
        }
        Some((growth, true))
    }

    /// The smallest bin with at least `q` of the total at or below it.
    fn quantile_bin(&self, q: f64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let need = (q * self.total as f64).ceil() as u64;
        let mut acc = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += u64::from(c);
            if acc >= need {
                return Some(i);
            }
        }
        Some(self.counts.len() - 1)
    }
}

/// What is learned for one candidate scale-down window of `len` readings: the growth over the
/// horizon relative to the highest reading of the window (overall and per phase of the day), and
/// the mean log-ratio of that highest reading to the latest one (what holding it costs).
#[derive(Debug, Clone)]
struct Candidate {
    len: usize,
    growth_all: Histogram,
    growth_by_phase: Vec<Histogram>,
    /// Sum and count of ln(window max / latest reading), halved with `growth_all`.
    hold_sum: f64,
    hold_n: f64,
}

/// The learning state of one target: feed it every reading with [`Self::observe`], ask it with
/// [`Self::recommend`]. Readings are expected on a grid of `interval` (the polling interval);
/// a longer gap is missing data.
#[derive(Debug, Clone)]
pub struct AdaptiveState {
    config: AdaptiveConfig,
    interval: Millis,
    /// Load one pod serves: growth below one pod's worth cannot need a pod, so loads are
    /// floored at it before taking ratios.
    target_per_pod: f64,
    /// Readings a decision must cover: startup delay plus one observation.
    horizon: usize,
    first_ts: Option<Millis>,
    last_ts: Option<Millis>,
    /// The last readings (`None`: missing), oldest first: the longest candidate window plus the
    /// horizon after it.
    recent: VecDeque<(Millis, Option<f64>)>,
    candidates: Vec<Candidate>,
    /// Last first differences of the log-load (ring), and a scratch copy for the median.
    diffs: Vec<f64>,
    diffs_next: usize,
    scratch: Vec<f64>,
    seasonal: Seasonal,
    learned: Learned,
    /// Readings in the scale-down window in use.
    window_len: usize,
    /// Added to the growth quantile (ln): what the polls short of capacity so far say the
    /// histograms miss ([`Self::track`]).
    risk_correction: f64,
}

impl AdaptiveState {
    /// A state with no history. `interval` is the time between readings (> 0);
    /// `target_per_pod` the load one pod serves (> 0).
    pub fn new(
        config: AdaptiveConfig,
        interval: Millis,
        target_per_pod: f64,
    ) -> Result<Self, AdaptiveError> {
        config.validate()?;
        if interval <= 0 {
            return Err(AdaptiveError::Invalid {
                field: "interval",
                message: format!("{interval} ms is not positive"),
            });
        }
        if !(target_per_pod.is_finite() && target_per_pod > 0.0) {
            return Err(AdaptiveError::Invalid {
                field: "targetPerPod",
                message: format!("{target_per_pod} is not a positive number"),
            });
        }
        let startup = (config.startup_delay_seconds as i64 * 1000 + interval - 1) / interval;
        let horizon = startup as usize + 1;
        let lens = candidate_lengths(
            Self::steps(config.min_scale_down_window_seconds, interval) + 1,
            Self::steps(config.max_scale_down_window_seconds, interval) + 1,
        );
        let longest = *lens.last().unwrap_or(&1);
        let candidates = lens
            .into_iter()
            .map(|len| Candidate {
                len,
                growth_all: Histogram::new(GROWTH_BINS),
                growth_by_phase: vec![Histogram::new(GROWTH_BINS); PHASES_PER_DAY],
                hold_sum: 0.0,
                hold_n: 0.0,
            })
            .collect();
        let static_len = Self::steps(DEFAULT_DOWNSCALE_STABILIZATION_SECONDS as u64, interval) + 1;
        Ok(Self {
            horizon,
            first_ts: None,
            last_ts: None,
            recent: VecDeque::with_capacity(longest + horizon),
            candidates,
            diffs: Vec::with_capacity(NOISE_WINDOW),
            diffs_next: 0,
            scratch: Vec::with_capacity(NOISE_WINDOW),
            seasonal: Seasonal::new(),
            learned: Learned::fallback(),
            window_len: static_len.min(longest.max(static_len)),
            risk_correction: 0.0,
            config,
            interval,
            target_per_pod,
        })
    }

    /// Rebuild a state from recorded readings `(time, value)` in time order, e.g. a Prometheus
    /// range query after a restart: the same readings give the same learned values.
    pub fn backfill(
        config: AdaptiveConfig,
        interval: Millis,
        target_per_pod: f64,
        readings: impl IntoIterator<Item = (Millis, f64)>,
    ) -> Result<Self, AdaptiveError> {
        let mut s = Self::new(config, interval, target_per_pod)?;
        for (ts, v) in readings {
            s.observe(ts, v);
        }
        Ok(s)
    }

    fn steps(seconds: u64, interval: Millis) -> usize {
        ((seconds as i64 * 1000) / interval) as usize
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// Readings a decision must cover (startup delay in intervals, plus one).
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// The values in use after the latest reading.
    pub fn learned(&self) -> Learned {
        self.learned
    }

    /// Whether the poll just read was short of capacity: more pods needed for its load than
    /// were Ready. While the learned headroom is in force, the growth quantile is corrected by
    /// the shortfalls so far (quantile tracking: each short poll raises the correction by
    /// [`RISK_STEP`] `* (1 - risk)`, each covered one lowers it by `RISK_STEP * risk`), so
    /// that over time the share of polls short is the risk asked, whatever the histograms
    /// leave out: the tolerance band and the held window, which add safety; the steps a burst
    /// covers, which a per-decision quantile counts once; a tail heavier than it extrapolates.
    pub fn track(&mut self, short: bool) {
        if self.learned.headroom_basis == Basis::Static {
            return;
        }
        let risk = self.config.under_provision_risk;
        let step = if short { 1.0 - risk } else { -risk };
        self.risk_correction = (self.risk_correction + RISK_STEP * step)
            .clamp(-RISK_CORRECTION_BOUND, RISK_CORRECTION_BOUND);
    }

    /// The correction [`Self::track`] added to the growth quantile (ln).
    pub fn risk_correction(&self) -> f64 {
        self.risk_correction
    }

    /// This state with `correction` (bounded) as its risk correction: one learned before a
    /// restart, or by the state a backfilled one replaces.
    pub fn with_risk_correction(mut self, correction: f64) -> Self {
        if correction.is_finite() {
            self.risk_correction = correction.clamp(-RISK_CORRECTION_BOUND, RISK_CORRECTION_BOUND);
        }
        self
    }

    /// A missing reading at `ts` (the source failed): it breaks the growth and noise chains;
    /// it never reads as zero.
    pub fn observe_missing(&mut self, ts: Millis) {
        self.push_reading(ts, None);
    }

    /// Feed one reading. Readings out of time order (not after the last one) are ignored;
    /// non-finite or negative values count as missing.
    pub fn observe(&mut self, ts: Millis, value: f64) {
        let value = (value.is_finite() && value >= 0.0).then_some(value);
        self.push_reading(ts, value);
    }

    fn capacity_of_recent(&self) -> usize {
        self.candidates.last().map_or(1, |c| c.len) + self.horizon
    }

    fn push_reading(&mut self, ts: Millis, value: Option<f64>) {
        if self.last_ts.is_some_and(|last| ts <= last) {
            return;
        }
        // Grid points skipped since the last reading are missing (only the ring's worth
        // matters).
        if let Some(last) = self.last_ts {
            let skipped =
                ((ts - last) / self.interval - 1).clamp(0, self.capacity_of_recent() as i64);
            for k in 1..=skipped {
                self.push_recent(last + k * self.interval, None);
            }
        }
        let previous = self.recent.back().and_then(|&(_, v)| v);
        self.push_recent(ts, value);
        self.first_ts.get_or_insert(ts);
        self.last_ts = Some(ts);
        if let Some(v) = value {
            // The period is learned whether or not the forecast is used: the headroom's phases
            // follow it too.
            self.seasonal.observe(ts, v);
            if let Some(p) = previous {
                let floor = self.target_per_pod;
                self.push_diff((v.max(floor) / p.max(floor)).ln());
            }
        }
        self.record_growth();
        self.learned = self.compute(ts);
    }

    fn push_recent(&mut self, ts: Millis, v: Option<f64>) {
        if self.recent.len() == self.capacity_of_recent() {
            self.recent.pop_front();
        }
        self.recent.push_back((ts, v));
    }

    /// Once a reading has its whole horizon after it, record for each candidate window ending
    /// at it the largest growth over the horizon relative to the window's highest reading.
    fn record_growth(&mut self) {
        let n = self.recent.len();
        if n < self.horizon + 1 {
            return;
        }
        let base_at = n - 1 - self.horizon;
        let (base_ts, Some(base)) = self.recent[base_at] else {
            return;
        };
        let floor = self.target_per_pod;
        let mut peak = f64::NEG_INFINITY;
        for &(_, v) in self.recent.iter().skip(base_at + 1) {
            match v {
                Some(v) => peak = peak.max(v),
                None => return,
            }
        }
        // What a decision must exceed: the load of one pod less than the peak's demand (a
        // count above it covers the peak), so growth is measured in the pods it needs.
        let must_exceed = (ceil_eps(peak / floor) - 1.0) * floor;
        let base = base.max(floor);
        let q = 1.0 - self.config.under_provision_risk;
        let cap = HISTOGRAM_CAP_FACTOR * min_tail_count(q);
        let phase = phase_of_day(base_ts);
        // Walk back from the base, widening the window; each candidate takes the max so far.
        let mut high = base;
        let mut len = 0usize;
        let mut idx = base_at as isize;
        for c in &mut self.candidates {
            while len < c.len && idx >= 0 {
                if let (_, Some(v)) = self.recent[idx as usize] {
                    high = high.max(v.max(floor));
                }
                len += 1;
                idx -= 1;
            }
            if len < c.len {
                break; // not enough history for this window and longer ones
            }
            // The bin whose headroom is strictly above the growth needed (0: none needed).
            let bin = if must_exceed < high {
                0
            } else {
                ((must_exceed / high).ln() / GROWTH_BIN).floor() as usize + 1
            };
            let before = c.growth_all.total;
            c.growth_all.add(bin, cap);
            if c.growth_all.total < before {
                c.hold_sum /= 2.0;
                c.hold_n /= 2.0;
            }
            c.hold_sum += (high / base).ln();
            c.hold_n += 1.0;
            c.growth_by_phase[phase].add(bin, cap);
        }
    }

    fn push_diff(&mut self, d: f64) {
        if self.diffs.len() < NOISE_WINDOW {
            self.diffs.push(d);
        } else {
            self.diffs[self.diffs_next] = d;
        }
        self.diffs_next = (self.diffs_next + 1) % NOISE_WINDOW;
    }

    /// The learned values at `ts`, each falling back to its static default while its history
    /// is short.
    fn compute(&mut self, ts: Millis) -> Learned {
        let mut l = Learned::fallback();
        let cfg = &self.config;
        l.period = self.seasonal.period();
        let static_len = Self::steps(l.scale_down_window_seconds, self.interval) + 1;
        self.window_len = static_len;
        let old_enough = self
            .first_ts
            .is_some_and(|f| ts - f >= cfg.min_history_seconds as i64 * 1000);
        l.calibrated = cfg.enabled && self.first_ts.is_some_and(|f| ts - f >= CALIBRATION_HISTORY);
        // Noise: sigma of one reading around the level, from the MAD of first differences
        // (a difference of two readings has sqrt(2) sigma).
        if self.diffs.len() == NOISE_WINDOW {
            l.noise = Some(noise_sigma(&self.diffs, &mut self.scratch));
        }
        if !(cfg.enabled && old_enough) {
            return l;
        }
        // Headroom and window together: for each candidate window with enough samples, the
        // headroom is its growth quantile (at this phase of the day when the load has a daily
        // cycle and the phase has enough samples); the window chosen is the one whose held
        // level plus headroom is lowest on average. Longer windows hold more but need less
        // headroom when bursts come back within them.
        let q = 1.0 - cfg.under_provision_risk;
        let need = min_tail_count(q);
        let phase = phase_of_day(ts);
        let daily = cfg.phase_of_day && matches!(l.period, Some(Period::Daily | Period::Weekly));
        // The window whose held level plus headroom costs least, among those whose headroom
        // is within `maxHeadroom` (one held at the bound does not cover what the others do).
        struct Choice {
            /// Held at the bound first, then the cost.
            rank: (bool, f64),
            headroom: f64,
            basis: Basis,
            len: usize,
            samples: u64,
        }
        let mut best: Option<Choice> = None;
        for c in &self.candidates {
            if c.growth_all.total == 0 || c.hold_n <= 0.0 {
                continue;
            }
            let by_phase = &c.growth_by_phase[phase];
            let (hist, basis) = if daily && by_phase.total >= need {
                (
                    by_phase,
                    Basis::HourOfDay((phase * 24 / PHASES_PER_DAY) as u8),
                )
            } else {
                (&c.growth_all, Basis::History)
            };
            let Some((growth, extrapolated)) = hist.tail_growth(q) else {
                continue;
            };
            let basis = if extrapolated {
                Basis::Extrapolated
            } else {
                basis
            };
            let wanted = (growth + self.risk_correction).exp_m1();
            let headroom = wanted.clamp(cfg.min_headroom, cfg.max_headroom);
            let basis = if wanted > cfg.max_headroom {
                Basis::MaxHeadroom
            } else {
                basis
            };
            let cost = headroom.ln_1p() + c.hold_sum / c.hold_n;
            let rank = (basis == Basis::MaxHeadroom, cost);
            if best.as_ref().is_none_or(|b| rank < b.rank) {
                best = Some(Choice {
                    rank,
                    headroom,
                    basis,
                    len: c.len,
                    samples: c.growth_all.total,
                });
            }
        }
        if let Some(Choice {
            headroom,
            basis,
            len,
            samples,
            ..
        }) = best
        {
            l.risk_correction = self.risk_correction;
            l.headroom = headroom;
            l.headroom_basis = basis;
            l.growth_samples = samples;
            l.scale_down_window_seconds = ((len as i64 - 1) * self.interval / 1000) as u64;
            l.scale_down_window_basis = Basis::History;
            self.window_len = len;
        }
        // Tolerance: the band holding TOLERANCE_CONFIDENCE of the changes between two noisy
        // readings of a steady load.
        if let Some(sigma) = l.noise {
            let z = Normal::standard().inverse_cdf(TOLERANCE_CONFIDENCE);
            l.tolerance =
                (z * std::f64::consts::SQRT_2 * sigma).clamp(cfg.min_tolerance, cfg.max_tolerance);
            l.tolerance_basis = Basis::History;
        }
        l
    }

    /// The recommendation at `now` (the decision time, after the latest reading): the highest
    /// reading of the scale-down window plus the headroom, raised by the forecast, and a
    /// scale-down only beyond the tolerance band. Never below `inputs.reactive` (when there is
    /// a reading).
    pub fn recommend(&mut self, now: Millis, inputs: Inputs) -> Recommendation {
        let Inputs {
            reactive,
            load,
            target_per_pod,
            current,
        } = inputs;
        let Some(load) = load.filter(|l| l.is_finite() && *l >= 0.0) else {
            return Recommendation {
                replicas: current,
                reason: AdaptiveReason::NoData,
            };
        };
        let l = self.learned;
        let pods = |x: f64| {
            let p = ceil_eps(x / target_per_pod);
            if p.is_nan() { 0 } else { p as u32 }
        };
        // The highest reading of the window (the latest one included).
        let held_load = self
            .recent
            .iter()
            .rev()
            .take(self.window_len)
            .filter_map(|&(_, v)| v)
            .fold(load, f64::max);
        let mut out = reactive;
        let mut why = AdaptiveReason::Reactive;
        let with_headroom = pods(load * (1.0 + l.headroom));
        if with_headroom > out {
            out = with_headroom;
            why = AdaptiveReason::Headroom;
        }
        let held = pods(held_load * (1.0 + l.headroom));
        if held > out {
            out = held;
            why = AdaptiveReason::Stabilized;
        }
        // The forecast level alone, without the headroom: the growth the headroom was learned
        // from already contains the seasonal rise over the horizon, so the forecast raises only
        // when the expected rise exceeds the headroom.
        if let Some(f) = self.forecast_peak(now) {
            let ahead = pods(load * f);
            if ahead > out {
                out = ahead;
                why = AdaptiveReason::Forecast;
            }
        }
        // A scale-down: only beyond the tolerance band.
        if out < current && f64::from(out) >= f64::from(current) * (1.0 - l.tolerance) {
            return Recommendation {
                replicas: current,
                reason: AdaptiveReason::WithinTolerance,
            };
        }
        Recommendation {
            replicas: out,
            reason: why,
        }
    }

    /// The seasonal forecast at `now`: the largest ratio from the latest reading to the
    /// readings of the horizon, when it is a rise (`None`: no rise, no period, or the forecast
    /// is off). The level to cover is the latest reading times this ratio.
    pub fn forecast_ratio(&mut self, now: Millis) -> Option<f64> {
        self.forecast_peak(now)
    }

    /// The largest forecast ratio from the latest reading to each reading of the horizon,
    /// when it is a rise.
    fn forecast_peak(&mut self, now: Millis) -> Option<f64> {
        if !(self.config.enabled && self.config.forecast) {
            return None;
        }
        let from = self.last_ts?;
        let mut peak: Option<f64> = None;
        for k in 0..self.horizon as i64 {
            let to = now + k * self.interval;
            if let Some(r) = self.seasonal.ratio(from, to) {
                peak = Some(peak.map_or(r, |p: f64| p.max(r)));
            }
        }
        peak.filter(|&p| p > 1.0)
    }
}

/// The noise of one reading around its level (a standard deviation in log units), from first
/// differences of the log-load: `1.4826 * MAD / sqrt(2)` (a difference of two readings carries
/// sqrt(2) times the noise; the MAD ignores bursts). `scratch` is reused to avoid allocating.
pub fn noise_sigma(log_diffs: &[f64], scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend_from_slice(log_diffs);
    let med = Data::new(&mut scratch[..]).median();
    for d in scratch.iter_mut() {
        *d = (*d - med).abs();
    }
    let mad = Data::new(&mut scratch[..]).median();
    MAD_TO_SIGMA * mad / std::f64::consts::SQRT_2
}

/// Candidate window lengths (in readings) from `min` to `max`: roughly doubling, so that a few
/// candidates span seconds to an hour.
fn candidate_lengths(min: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut len = min.max(1);
    while len < max {
        out.push(len);
        len = (len * 3).div_ceil(2).max(len + 1);
    }
    out.push(max.max(min).max(1));
    out
}

/// Samples needed before the `q` quantile has about [`MIN_TAIL_SAMPLES`] beyond it.
fn min_tail_count(q: f64) -> u64 {
    (MIN_TAIL_SAMPLES / (1.0 - q)).round() as u64
}

fn phase_of_day(ts: Millis) -> usize {
    let phase_ms = 24 * HOUR_MS / PHASES_PER_DAY as Millis;
    ts.div_euclid(phase_ms).rem_euclid(PHASES_PER_DAY as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::demand;

    const MIN: Millis = 60_000;

    fn inputs(load: f64, current: u32) -> Inputs {
        Inputs {
            reactive: demand(load, 100.0),
            load: Some(load),
            target_per_pod: 100.0,
            current,
        }
    }

    #[test]
    fn config_is_camel_case_and_checked() {
        let c: AdaptiveConfig =
            serde_yaml::from_str("maxHeadroom: 0.5\nmaxScaleDownWindowSeconds: 600\n").unwrap();
        assert_eq!(
            (c.max_headroom, c.max_scale_down_window_seconds),
            (0.5, 600)
        );
        assert!(c.enabled && c.forecast);
        assert!(serde_yaml::from_str::<AdaptiveConfig>("maxHedroom: 1").is_err());
        let bad = AdaptiveConfig {
            min_headroom: 0.5,
            max_headroom: 0.1,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("minHeadroom")
        );
        let never_down = AdaptiveConfig {
            max_tolerance: 1.0,
            ..Default::default()
        };
        assert!(never_down.validate().is_err());
        assert!(AdaptiveState::new(AdaptiveConfig::default(), 0, 1.0).is_err());
        assert!(AdaptiveState::new(AdaptiveConfig::default(), MIN, f64::NAN).is_err());
    }

    #[test]
    fn risk_up_to_one_half_and_the_history_the_rules_want() {
        let half = AdaptiveConfig {
            under_provision_risk: 0.5,
            ..Default::default()
        };
        assert!(half.validate().is_ok());
        let over = AdaptiveConfig {
            under_provision_risk: 0.51,
            ..Default::default()
        };
        assert!(
            over.validate()
                .unwrap_err()
                .to_string()
                .contains("(0, 0.5]")
        );
        // Defaults at 60 s: the period check's three days.
        let c = AdaptiveConfig::default();
        assert_eq!(c.history_wanted_seconds(MIN), 3 * 86_400);
        // Without it: 2,000 growth samples, the longest window (31) and the horizon (3).
        let plain = AdaptiveConfig {
            forecast: false,
            phase_of_day: false,
            ..c
        };
        assert_eq!(plain.history_wanted_seconds(MIN), (2000 + 31 + 3) * 60);
        let long = AdaptiveConfig {
            min_history_seconds: 10 * 86_400,
            ..plain
        };
        assert_eq!(long.history_wanted_seconds(MIN), 10 * 86_400);
    }

    #[test]
    fn histogram_quantile_and_halving() {
        let mut h = Histogram::new(10);
        for bin in 0..100 {
            h.add(bin % 10, 1000);
        }
        assert_eq!(h.quantile_bin(0.5), Some(4));
        assert_eq!(h.quantile_bin(0.99), Some(9));
        // Reaching the cap halves every count.
        for _ in 0..900 {
            h.add(0, 1000);
        }
        assert_eq!(h.total, 500);
        assert_eq!(h.counts[9], 5);
        // A tail of lone samples survives a halving: the 99th percentile stays where it was.
        let mut h = Histogram::new(100);
        for _ in 0..980 {
            h.add(0, 1000);
        }
        for bin in 50..69 {
            h.add(bin, 1000);
        }
        assert_eq!(h.quantile_bin(0.99), Some(59));
        h.add(69, 1000);
        assert_eq!(h.total, 500, "halved");
        assert_eq!(h.quantile_bin(0.99), Some(59));
        assert_eq!(h.counts[50..70].iter().sum::<u16>(), 10);
    }

    #[test]
    fn a_short_tail_is_extrapolated_and_a_long_one_read() {
        // Growth exponential with a mean of 10 bins, laid out on its exact quantiles: the
        // 99.5th percentile is 10 ln(200) = 53 bins.
        let exponential = |n: usize| {
            let mut h = Histogram::new(GROWTH_BINS);
            for i in 0..n {
                let p = (i as f64 + 0.5) / n as f64;
                h.add((-10.0 * (1.0 - p).ln()) as usize, u64::MAX);
            }
            h
        };
        let truth = 10.0 * 200f64.ln() * GROWTH_BIN;
        assert_eq!(exponential(0).tail_growth(0.995), None, "nothing known");
        let largest =
            |h: &Histogram| h.counts.iter().rposition(|&c| c > 0).unwrap() as f64 * GROWTH_BIN;
        // One sample: it is the headroom (the 99.5th percentile lies beyond it).
        let one = exponential(1);
        assert_eq!(one.tail_growth(0.995), Some((largest(&one), true)));
        // Fewer than 200 samples: never below the largest growth seen.
        for n in [2, 9, 30, 99, 199] {
            let h = exponential(n);
            let (g, extrapolated) = h.tail_growth(0.995).unwrap();
            assert!(extrapolated);
            assert!(g >= largest(&h), "{n}: {g} below the largest seen");
        }
        // From a few dozen samples on, the fitted tail finds the quantile no sample reached.
        for n in [30, 100, 300, 1000] {
            let h = exponential(n);
            let (g, extrapolated) = h.tail_growth(0.995).unwrap();
            assert!(extrapolated);
            assert!((g / truth - 1.0).abs() < 0.15, "{n}: {g} vs {truth}");
            if n < 100 {
                assert!(
                    largest(&h) < 0.85 * truth,
                    "{n}: the largest seen alone would be short"
                );
            }
        }
        let (g, extrapolated) = exponential(4000).tail_growth(0.995).unwrap();
        assert!(!extrapolated);
        assert!((g / truth - 1.0).abs() < 0.05, "{g} vs {truth}");
    }

    #[test]
    fn candidate_windows_span_the_bounds() {
        assert_eq!(
            candidate_lengths(1, 31),
            vec![1, 2, 3, 5, 8, 12, 18, 27, 31]
        );
        assert_eq!(candidate_lengths(11, 11), vec![11]);
    }

    #[test]
    fn the_headroom_is_learned_per_phase_of_the_day_only_when_asked() {
        // Minutes of a daily cycle whose afternoons are noisy: 2 % a minute, 15 % from 12:00
        // to 18:00 (UTC). At a 2 % risk a phase needs 500 growth samples: four days. Learned
        // at `minute_of_day` after five days.
        let noisy_afternoons = |phase_of_day: bool, at_minute_of_day: i64| {
            let cfg = AdaptiveConfig {
                under_provision_risk: 0.02,
                phase_of_day,
                ..AdaptiveConfig::default()
            };
            let mut s = AdaptiveState::new(cfg, MIN, 10.0).unwrap();
            let mut seed = 7u64;
            for k in 0..(5 * 1440 + at_minute_of_day) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let minute_of_day = k % 1440;
                let noise = if (720..1080).contains(&minute_of_day) {
                    0.15
                } else {
                    0.02
                };
                let cycle = (minute_of_day as f64 / 1440.0 * std::f64::consts::TAU).sin();
                s.observe(k * MIN, 1000.0 * (1.0 + 0.3 * cycle) * (1.0 + noise * u));
            }
            s.learned()
        };
        let pooled = noisy_afternoons(false, 300);
        assert_eq!(pooled.period, Some(Period::Daily));
        assert_eq!(pooled.headroom_basis, Basis::History, "{pooled:?}");
        // 05:00 and 14:00 fall in the phases from 03:00 and from 12:00.
        let morning = noisy_afternoons(true, 300);
        let afternoon = noisy_afternoons(true, 14 * 60);
        assert_eq!(morning.headroom_basis, Basis::HourOfDay(3), "{morning:?}");
        assert_eq!(
            afternoon.headroom_basis,
            Basis::HourOfDay(12),
            "{afternoon:?}"
        );
        assert!(!AdaptiveConfig::default().phase_of_day, "off by default");
    }

    #[test]
    fn the_risk_is_called_calibrated_once_the_history_spans_fourteen_days() {
        // Hourly readings: a month of them is the shortest history the calibration covers.
        let hour = 60 * MIN;
        let mut s = AdaptiveState::new(AdaptiveConfig::default(), hour, 100.0).unwrap();
        let mut before = s.learned();
        let mut reported_at = None;
        for k in 0..=(15 * 24) {
            let load = 1000.0 + 300.0 * ((k % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
            s.observe(k * hour, load);
            let l = s.learned();
            assert_eq!(l.calibrated, k * hour >= CALIBRATION_HISTORY, "at hour {k}");
            if let Some(m) = l.change_from(&before).filter(|m| m.contains("calibrated")) {
                assert!(reported_at.is_none(), "reported once: {m}");
                reported_at = Some(k);
            }
            before = l;
        }
        assert_eq!(
            reported_at,
            Some(14 * 24),
            "the change is reported when it happens"
        );
        // Learning off: nothing is calibrated, whatever the history.
        let off = AdaptiveConfig {
            enabled: false,
            ..Default::default()
        };
        let mut s = AdaptiveState::new(off, hour, 100.0).unwrap();
        for k in 0..=(15 * 24) {
            s.observe(k * hour, 1000.0);
        }
        assert!(!s.learned().calibrated);
    }

    #[test]
    fn static_behaviour_while_learning_holds_a_scale_down_for_300_s() {
        let mut s = AdaptiveState::new(AdaptiveConfig::default(), MIN, 100.0).unwrap();
        s.observe(0, 1000.0);
        let r = s.recommend(MIN, inputs(1000.0, 5));
        assert_eq!(
            r,
            Recommendation {
                replicas: 10,
                reason: AdaptiveReason::Reactive,
            }
        );
        // The load halves: the 1000 reading is still in the 300 s window.
        for k in 1..=5 {
            s.observe(k * MIN, 500.0);
            let r = s.recommend((k + 1) * MIN, inputs(500.0, 10));
            assert_eq!(
                (r.replicas, r.reason),
                (10, AdaptiveReason::Stabilized),
                "{k}"
            );
        }
        s.observe(6 * MIN, 500.0);
        assert_eq!(s.recommend(7 * MIN, inputs(500.0, 10)).replicas, 5);
        // A fall of one pod in ten stays inside the 0.1 band.
        s.observe(7 * MIN, 900.0);
        let r = s.recommend(8 * MIN, inputs(900.0, 10));
        assert_eq!(
            (r.replicas, r.reason),
            (10, AdaptiveReason::WithinTolerance)
        );
        // No reading: no change, never zero.
        s.observe_missing(8 * MIN);
        let r = s.recommend(
            9 * MIN,
            Inputs {
                load: None,
                ..inputs(0.0, 5)
            },
        );
        assert_eq!((r.replicas, r.reason), (5, AdaptiveReason::NoData));
    }

    #[test]
    fn out_of_order_and_bad_readings_are_ignored() {
        let mut s = AdaptiveState::new(AdaptiveConfig::default(), MIN, 100.0).unwrap();
        s.observe(2 * MIN, 1000.0);
        s.observe(MIN, 9e9);
        s.observe(3 * MIN, f64::NAN);
        assert_eq!(s.recent.len(), 2);
        assert_eq!(s.recent.back(), Some(&(3 * MIN, None)));
        assert_eq!(s.recent.front(), Some(&(2 * MIN, Some(1000.0))));
    }

    #[test]
    fn changes_are_reported_once_material() {
        let a = Learned::fallback();
        assert_eq!(a.change_from(&a), None);
        let b = Learned {
            headroom: 0.2,
            headroom_basis: Basis::History,
            ..a
        };
        let msg = b.change_from(&a).unwrap();
        assert!(msg.contains("headroom 0.000 -> 0.200 (History)"), "{msg}");
        let c = Learned {
            headroom: 0.205,
            ..b
        };
        assert_eq!(c.change_from(&b), None);
    }

    #[test]
    fn polls_short_of_capacity_raise_the_headroom_and_covered_ones_lower_it() {
        let risk = AdaptiveConfig::default().under_provision_risk;
        let mut s = AdaptiveState::new(AdaptiveConfig::default(), MIN, 10.0).unwrap();
        // Before anything is learned, a shortfall is not the learned headroom's to correct.
        for _ in 0..100 {
            s.track(true);
        }
        assert_eq!(s.risk_correction(), 0.0);
        // A sawtooth from 1000 to 1300: growth of up to 30 % within a few minutes.
        let load = |k: i64| 1000.0 + 50.0 * (k % 7) as f64;
        for k in 0..3000 {
            s.observe(k * MIN, load(k));
        }
        let learned = s.learned();
        assert_ne!(learned.headroom_basis, Basis::Static);
        for _ in 0..10 {
            s.track(true);
        }
        let raised = 10.0 * RISK_STEP * (1.0 - risk);
        assert!((s.risk_correction() - raised).abs() < 1e-12);
        s.observe(3000 * MIN, load(3000));
        let corrected = s.learned().headroom;
        assert!(
            ((1.0 + corrected) / (1.0 + learned.headroom) - raised.exp()).abs() < 1e-6,
            "{} -> {corrected}",
            learned.headroom
        );
        // One short poll in 1/risk is the risk asked: the correction is back where it was.
        for _ in 0..(10.0 * (1.0 - risk) / risk).round() as usize {
            s.track(false);
        }
        assert!(s.risk_correction().abs() < 1e-9, "{}", s.risk_correction());
        // Bounded either way.
        for _ in 0..10_000 {
            s.track(true);
        }
        assert_eq!(s.risk_correction(), RISK_CORRECTION_BOUND);
    }

    #[test]
    fn learned_headroom_covers_growth_at_the_chosen_quantile() {
        // A load alternating 1000 and 1300: the growth that matters is 30 % from a low reading
        // with a one-reading window, 0 with a window of two; the window of two costs less.
        let mut s = AdaptiveState::new(AdaptiveConfig::default(), MIN, 10.0).unwrap();
        for k in 0..3000 {
            s.observe(k * MIN, if k % 2 == 0 { 1000.0 } else { 1300.0 });
        }
        let l = s.learned();
        assert_eq!(l.headroom_basis, Basis::History);
        assert!(l.headroom < 0.01, "{l:?}");
        assert!(l.scale_down_window_seconds >= 60, "{l:?}");
        let r = s.recommend(3000 * MIN, inputs(1300.0, 13));
        assert!(r.replicas >= 13);
    }

    #[test]
    fn a_headroom_held_at_its_bound_says_so() {
        // A load growing 1 % a minute: over the startup horizon every window needs a few per
        // cent. Under a bound of 1 %, the headroom is that bound and its basis says the risk is
        // not honoured within it.
        let learn = |max_headroom: f64| {
            let config = AdaptiveConfig {
                max_headroom,
                ..Default::default()
            };
            let mut s = AdaptiveState::new(config, MIN, 10.0).unwrap();
            for k in 0..1500 {
                s.observe(k * MIN, 1000.0 * 1.01f64.powi(k as i32));
            }
            s.learned()
        };
        let free = learn(1.0);
        assert!(free.headroom > 0.01, "{free:?}");
        assert_ne!(free.headroom_basis, Basis::MaxHeadroom);
        let bound = learn(0.01);
        assert_eq!(bound.headroom, 0.01);
        assert_eq!(bound.headroom_basis, Basis::MaxHeadroom);
        assert!(bound.change_from(&free).unwrap().contains("MaxHeadroom"));
    }
}
