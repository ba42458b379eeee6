//! Seasonal forecast for scaling up ahead of load: detection of a daily or weekly period by
//! autocorrelation, and a robust same-phase estimator of how the load changes between two
//! phases of that period. Pure and bounded: hourly means for the last four weeks and, per phase
//! bucket, the last [`PROFILE_CYCLES`] cycles. Time is an argument (`Millis`).
//!
//! The forecast only ever raises a recommendation (see `adaptive`): it answers "how much higher
//! will the load be at the same point of the cycle a few minutes from now", never "how low".

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::{Data, OrderStatistics};

use super::Millis;

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;

/// Hourly means kept for period detection: four weeks, enough for three weekly lags.
pub const HOURLY_HISTORY: usize = 24 * 7 * 4;
/// Cycles of each phase bucket the profile keeps; the median over them ignores one or two
/// cycles with an outburst (a match day, an outage) out of five.
pub const PROFILE_CYCLES: usize = 5;
/// Phase buckets per day (15 minutes each): fine enough for a startup horizon of minutes,
/// coarse enough that each bucket averages many samples.
pub const BUCKETS_PER_DAY: usize = 96;
/// One-sided significance of the autocorrelation test: a period is claimed only when its
/// autocorrelation exceeds what white noise reaches with probability 1 %.
pub const PERIOD_SIGNIFICANCE: f64 = 0.99;
/// A period needs this many whole cycles in the hourly history before it is tested: fewer
/// cycles make a single coincidence look periodic.
pub const MIN_CYCLES: usize = 3;

/// A detected period of the load.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum Period {
    /// 24 hours.
    Daily,
    /// 7 days.
    Weekly,
}

impl Period {
    /// Length in milliseconds.
    pub fn millis(self) -> Millis {
        match self {
            Period::Daily => DAY_MS,
            Period::Weekly => 7 * DAY_MS,
        }
    }

    fn hours(self) -> usize {
        (self.millis() / HOUR_MS) as usize
    }

    fn buckets(self) -> usize {
        (self.millis() / DAY_MS) as usize * BUCKETS_PER_DAY
    }
}

/// The seasonal model: feeds on observations, detects a period, forecasts ratios.
#[derive(Debug, Clone)]
pub struct Seasonal {
    /// Mean log-load of each past hour, oldest first (`None`: no sample that hour).
    hourly: Vec<Option<f64>>,
    /// The hour being accumulated: (hour index, sum of log-load, count).
    hour_acc: Option<(i64, f64, u32)>,
    /// The 15-minute bucket being accumulated: (bucket index since epoch, sum, count).
    bucket_acc: Option<(i64, f64, u32)>,
    /// Per phase bucket of a week (7 * 96), the mean log-load of the last cycles, newest last.
    /// Daily phases read the same time of day across the days of the ring.
    weekly_buckets: Vec<Ring>,
    /// The period found at the last hourly check.
    period: Option<Period>,
    /// Autocorrelation of hourly changes at the daily and weekly lags, at the last check.
    acf: (Option<f64>, Option<f64>),
    /// Scratch for medians, so forecasting does not allocate.
    scratch: Vec<f64>,
}

/// A small ring of the last values of one phase bucket.
#[derive(Debug, Clone, Default)]
struct Ring {
    values: [f64; PROFILE_CYCLES],
    len: usize,
    next: usize,
}

impl Ring {
    fn push(&mut self, v: f64) {
        self.values[self.next] = v;
        self.next = (self.next + 1) % PROFILE_CYCLES;
        self.len = (self.len + 1).min(PROFILE_CYCLES);
    }

    fn values(&self) -> &[f64] {
        &self.values[..self.len]
    }
}

impl Default for Seasonal {
    fn default() -> Self {
        Self::new()
    }
}

impl Seasonal {
    /// An empty model.
    pub fn new() -> Self {
        Self {
            hourly: Vec::with_capacity(HOURLY_HISTORY),
            hour_acc: None,
            bucket_acc: None,
            weekly_buckets: vec![Ring::default(); Period::Weekly.buckets()],
            period: None,
            acf: (None, None),
            scratch: Vec::with_capacity(PROFILE_CYCLES * 7),
        }
    }

    /// Feed one positive load reading taken at `ts`. Readings must come in time order; zero,
    /// negative or non-finite loads carry no phase information and are skipped.
    pub fn observe(&mut self, ts: Millis, load: f64) {
        if !(load.is_finite() && load > 0.0) {
            return;
        }
        let v = load.ln();
        let hour = ts.div_euclid(HOUR_MS);
        match &mut self.hour_acc {
            Some((h, sum, n)) if *h == hour => {
                *sum += v;
                *n += 1;
            }
            acc => {
                let closed = acc.replace((hour, v, 1));
                if let Some((h, sum, n)) = closed {
                    self.close_hour(h, sum / f64::from(n), hour);
                }
            }
        }
        let bucket_ms = DAY_MS / BUCKETS_PER_DAY as Millis;
        let bucket = ts.div_euclid(bucket_ms);
        match &mut self.bucket_acc {
            Some((b, sum, n)) if *b == bucket => {
                *sum += v;
                *n += 1;
            }
            acc => {
                if let Some((b, sum, n)) = acc.take() {
                    let phase = b.rem_euclid(Period::Weekly.buckets() as i64) as usize;
                    self.weekly_buckets[phase].push(sum / f64::from(n));
                }
                *acc = Some((bucket, v, 1));
            }
        }
    }

    /// Close hour `h` with mean `mean`; `next` is the hour now starting (gaps become `None`).
    fn close_hour(&mut self, h: i64, mean: f64, next: i64) {
        self.push_hour(Some(mean));
        // Whole hours without a sample between this one and the next.
        let gap = (next - h - 1).clamp(0, HOURLY_HISTORY as i64) as usize;
        for _ in 0..gap {
            self.push_hour(None);
        }
        self.period = self.detect();
    }

    fn push_hour(&mut self, v: Option<f64>) {
        if self.hourly.len() == HOURLY_HISTORY {
            self.hourly.remove(0);
        }
        self.hourly.push(v);
    }

    /// The period found in the history so far, if any.
    pub fn period(&self) -> Option<Period> {
        self.period
    }

    /// Autocorrelation of hourly changes at the daily and the weekly lag (when testable).
    pub fn autocorrelation(&self) -> (Option<f64>, Option<f64>) {
        self.acf
    }

    /// Test the daily and weekly lags. The series tested is the hour-to-hour change of the mean
    /// log-load: differencing removes growth and level shifts, which would otherwise correlate
    /// at every lag. A lag is significant when its autocorrelation exceeds the white-noise bound
    /// `z / sqrt(n)`; weekly wins over daily only when it correlates at least as well (a weekly
    /// pattern contains the daily one).
    fn detect(&mut self) -> Option<Period> {
        let diffs: Vec<Option<f64>> = self
            .hourly
            .windows(2)
            .map(|w| match (w[0], w[1]) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            })
            .collect();
        let z = Normal::standard().inverse_cdf(PERIOD_SIGNIFICANCE);
        let test = |p: Period| -> Option<f64> {
            let lag = p.hours();
            if diffs.len() < MIN_CYCLES * lag {
                return None;
            }
            autocorrelation(&diffs, lag)
        };
        let daily = test(Period::Daily);
        let weekly = test(Period::Weekly);
        self.acf = (daily, weekly);
        let n = diffs.iter().flatten().count() as f64;
        let bound = z / n.max(1.0).sqrt();
        match (daily, weekly) {
            (_, Some(w)) if w > bound && w >= daily.unwrap_or(f64::NEG_INFINITY) => {
                Some(Period::Weekly)
            }
            (Some(d), _) if d > bound => Some(Period::Daily),
            _ => None,
        }
    }

    /// The forecast ratio of the load at `to` over the load at `from` (`from <= to`): the
    /// median, over the kept cycles, of the phase bucket's mean log-load at `to` minus the
    /// median at `from`. `None` without a detected period or with fewer than two cycles in
    /// either bucket.
    pub fn ratio(&mut self, from: Millis, to: Millis) -> Option<f64> {
        let period = self.period?;
        let a = self.phase_median(period, from)?;
        let b = self.phase_median(period, to)?;
        Some((b - a).exp())
    }

    /// Median of the mean log-load at the phase of `ts` over the kept cycles of `period`.
    fn phase_median(&mut self, period: Period, ts: Millis) -> Option<f64> {
        let bucket_ms = DAY_MS / BUCKETS_PER_DAY as Millis;
        let bucket = ts.div_euclid(bucket_ms);
        self.scratch.clear();
        match period {
            Period::Weekly => {
                let phase = bucket.rem_euclid(Period::Weekly.buckets() as i64) as usize;
                self.scratch
                    .extend_from_slice(self.weekly_buckets[phase].values());
            }
            Period::Daily => {
                // The same time of day on each day of the week ring.
                let of_day = bucket.rem_euclid(BUCKETS_PER_DAY as i64) as usize;
                for d in 0..7 {
                    let ring = &self.weekly_buckets[d * BUCKETS_PER_DAY + of_day];
                    self.scratch.extend_from_slice(ring.values());
                }
            }
        }
        if self.scratch.len() < 2 {
            return None;
        }
        Some(Data::new(&mut self.scratch[..]).median())
    }
}

/// Sample autocorrelation of a series with gaps at `lag`, over the pairs where both are known.
fn autocorrelation(x: &[Option<f64>], lag: usize) -> Option<f64> {
    let known: Vec<f64> = x.iter().flatten().copied().collect();
    if known.len() < 2 {
        return None;
    }
    let mean = known.iter().sum::<f64>() / known.len() as f64;
    let var = known.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / known.len() as f64;
    if var <= 0.0 {
        return None;
    }
    let (mut sum, mut pairs) = (0.0, 0usize);
    for i in lag..x.len() {
        if let (Some(a), Some(b)) = (x[i - lag], x[i]) {
            sum += (a - mean) * (b - mean);
            pairs += 1;
        }
    }
    (pairs > 0).then(|| sum / pairs as f64 / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn feed(model: &mut Seasonal, days: i64, f: impl Fn(i64) -> f64) {
        for m in 0..days * 1440 {
            model.observe(m * MIN, f(m));
        }
    }

    /// Deterministic pseudo-noise in [-1, 1].
    fn noise(i: i64) -> f64 {
        let x = (i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    }

    #[test]
    fn daily_sinusoid_is_detected_and_forecast() {
        let mut s = Seasonal::new();
        let f = |m: i64| {
            let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            1000.0 * (1.0 + 0.5 * phase.sin()) * (1.0 + 0.05 * noise(m))
        };
        feed(&mut s, 10, f);
        assert_eq!(s.period(), Some(Period::Daily));
        // From the trough (18:00) to 6 hours later (midnight): 500 -> 1000, about 2x.
        let day10 = 10 * 1440;
        let r = s
            .ratio((day10 + 18 * 60) * MIN, (day10 + 24 * 60) * MIN)
            .unwrap();
        assert!((r - 2.0).abs() < 0.15, "ratio {r}");
    }

    #[test]
    fn flat_noise_has_no_period() {
        let mut s = Seasonal::new();
        feed(&mut s, 10, |m| 1000.0 * (1.0 + 0.1 * noise(m)));
        assert_eq!(s.period(), None);
        assert_eq!(s.ratio(0, 5 * MIN), None);
    }

    #[test]
    fn a_weekly_pattern_needs_three_weeks_and_wins_over_daily() {
        let mut s = Seasonal::new();
        // Weekdays follow a daily cycle, weekends stay flat.
        let f = |m: i64| {
            let day = m / 1440;
            let amplitude = if day % 7 >= 5 { 0.0 } else { 0.8 };
            let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            1000.0 * (1.0 + amplitude * phase.sin()) * (1.0 + 0.05 * noise(m))
        };
        // Twenty days: too short to test a weekly lag three times over.
        feed(&mut s, 20, f);
        assert_eq!(s.period(), Some(Period::Daily));
        let mut s = Seasonal::new();
        feed(&mut s, 24, f);
        assert_eq!(s.period(), Some(Period::Weekly));
    }
}
