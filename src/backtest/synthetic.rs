//! Synthetic load series for `ebb backtest --synthetic`, seeded so that every run gives the same
//! series, each with multiplicative noise of 5 %:
//! - shapes with a known answer, a week of minutes each: a step, bursts, flat noise, a daily
//!   cycle;
//! - loads that stress what real loads do (issue #19), long enough for ebb's risk to be
//!   calibrated (14 days, `engine::adaptive::CALIBRATION_HISTORY`): weekly cycles, level
//!   shifts, heavy-tailed bursts, a slow drift (four weeks of minutes each), a month at hourly
//!   steps, and a short history (three days) where ebb must say it is not calibrated.

use super::trace::Trace;

/// Monday 2024-01-01 00:00 UTC: step 0 of every synthetic series.
pub const START_UNIX: i64 = 1_704_067_200;
/// Steps of one minute.
pub const STEP_SECONDS: i64 = 60;
/// A week of minutes.
pub const STEPS: usize = 7 * 1440;
/// Level of the load outside steps and bursts.
pub const LEVEL: f64 = 1000.0;
/// Standard deviation of the multiplicative noise.
pub const NOISE: f64 = 0.05;

/// A synthetic shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Flat, then three times the load from day 4 on.
    Step,
    /// Flat with bursts of 4x lasting 10 minutes, starting in one hour in eight at random.
    Burst,
    /// Flat noise only: a policy should not scale at all.
    Flat,
    /// A daily sinusoid (amplitude 60 %) with noise.
    Daily,
    /// Four weeks: the daily cycle, at half the load on Saturdays and Sundays.
    Weekly,
    /// Four weeks: a flat level that moves, about every day and a half at random, by a factor
    /// between 1/2 and 2 (log-uniform; kept within 1/4 and 4 times the start).
    LevelShift,
    /// Four weeks: flat, with bursts starting in one hour in six at random, their height
    /// Pareto-distributed (1 + a Pareto of index 1.5 and scale 0.5, at most 20x) and their
    /// length from 1 to 30 minutes.
    HeavyTail,
    /// Four weeks: the daily cycle (amplitude 40 %) on a level that grows threefold,
    /// exponentially.
    Drift,
    /// A month (31 days, 744 steps) at hourly steps: the weekly load, summed by the hour.
    Hourly,
    /// Three days of the daily cycle: too short for the risk to be calibrated.
    Short,
}

impl Shape {
    /// Steps of the series.
    pub fn steps(self) -> usize {
        match self {
            Shape::Step | Shape::Burst | Shape::Flat | Shape::Daily => STEPS,
            Shape::Weekly | Shape::LevelShift | Shape::HeavyTail | Shape::Drift => 28 * 1440,
            Shape::Hourly => 31 * 24,
            Shape::Short => 3 * 1440,
        }
    }

    /// Seconds per step.
    pub fn step_seconds(self) -> i64 {
        match self {
            Shape::Hourly => 3600,
            _ => STEP_SECONDS,
        }
    }
}

/// xorshift64*: a small deterministic generator (no dependency for a test series).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The daily sinusoid at minute `t` of a day, amplitude `amplitude`, around 1.
fn daily(minute: usize, amplitude: f64) -> f64 {
    let phase = (minute % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
    1.0 + amplitude * phase.sin()
}

/// The weekly load at minute `t`: the daily cycle, at half on Saturday and Sunday (step 0 is a
/// Monday).
fn weekly(minute: usize) -> f64 {
    let weekend = (minute / 1440) % 7 >= 5;
    LEVEL * daily(minute, 0.6) * if weekend { 0.5 } else { 1.0 }
}

/// The series of `shape`.
pub fn generate(shape: Shape) -> Trace {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut burst_until = 0usize;
    let mut burst_height = 1.0;
    let mut level = LEVEL;
    let steps = shape.steps();
    let noisy = |rng: &mut Rng, base: f64| (base * (1.0 + NOISE * rng.normal())).max(0.0);
    let values = (0..steps)
        .map(|t| {
            let base = match shape {
                Shape::Flat => LEVEL,
                Shape::Step => {
                    if t >= 4 * 1440 {
                        3.0 * LEVEL
                    } else {
                        LEVEL
                    }
                }
                Shape::Burst => {
                    if t % 60 == 0 && rng.next_f64() < 1.0 / 8.0 {
                        burst_until = t + 10;
                    }
                    if t < burst_until { 4.0 * LEVEL } else { LEVEL }
                }
                Shape::Daily | Shape::Short => LEVEL * daily(t, 0.6),
                Shape::Weekly => weekly(t),
                Shape::LevelShift => {
                    if t % 60 == 0 && rng.next_f64() < 1.0 / 36.0 {
                        let factor = 2f64.powf(2.0 * rng.next_f64() - 1.0);
                        level = (level * factor).clamp(LEVEL / 4.0, 4.0 * LEVEL);
                    }
                    level
                }
                Shape::HeavyTail => {
                    if t >= burst_until && t % 60 == 0 && rng.next_f64() < 1.0 / 6.0 {
                        // Pareto(index 1.5, scale 0.5) by inversion.
                        let u = rng.next_f64().max(f64::MIN_POSITIVE);
                        burst_height = (1.0 + 0.5 * u.powf(-1.0 / 1.5)).min(20.0);
                        burst_until = t + 1 + (rng.next_f64() * 30.0) as usize;
                    }
                    if t < burst_until {
                        burst_height * LEVEL
                    } else {
                        LEVEL
                    }
                }
                Shape::Drift => {
                    let growth = 3f64.powf(t as f64 / steps as f64);
                    LEVEL * growth * daily(t, 0.4)
                }
                Shape::Hourly => {
                    // Sixty minutes of the weekly load, each with its own noise.
                    let sum: f64 = (t * 60..(t + 1) * 60)
                        .map(|m| noisy(&mut rng, weekly(m)))
                        .sum();
                    return Some(sum);
                }
            };
            Some(noisy(&mut rng, base))
        })
        .collect();
    Trace {
        start: START_UNIX,
        step_seconds: shape.step_seconds(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(shape: Shape) -> Vec<f64> {
        generate(shape).values.into_iter().flatten().collect()
    }

    /// The stressing families are what their names say, and long enough to be calibrated on
    /// (except the short one).
    #[test]
    fn each_family_has_its_length_and_its_character() {
        let day = |shape: Shape| 86_400 / shape.step_seconds() as usize;
        for shape in [
            Shape::Weekly,
            Shape::LevelShift,
            Shape::HeavyTail,
            Shape::Drift,
        ] {
            assert_eq!(generate(shape).values.len() / day(shape), 28, "{shape:?}");
        }
        assert_eq!(generate(Shape::Hourly).values.len(), 744);
        assert_eq!(generate(Shape::Hourly).step_seconds, 3600);
        assert_eq!(generate(Shape::Short).values.len(), 3 * 1440);

        // Weekly: weekends at about half the weekdays.
        let w = known(Shape::Weekly);
        let mean = |from: usize, days: usize| {
            w[from * 1440..(from + days) * 1440].iter().sum::<f64>() / (days * 1440) as f64
        };
        let ratio = mean(5, 2) / mean(0, 5);
        assert!((0.45..0.55).contains(&ratio), "{ratio}");

        // Level shifts: the level moves several times, by up to 2x, within [1/4, 4].
        let l = known(Shape::LevelShift);
        let hourly: Vec<f64> = l.chunks(60).map(|c| c.iter().sum::<f64>() / 60.0).collect();
        let shifts = hourly
            .windows(2)
            .filter(|w| (w[1] / w[0]).ln().abs() > 0.1)
            .count();
        assert!((8..40).contains(&shifts), "{shifts} shifts");
        assert!(
            l.iter()
                .all(|&v| v < 4.0 * LEVEL * 1.3 && v > LEVEL / 4.0 * 0.7)
        );

        // Heavy tail: most bursts are small and a few are huge.
        let h = known(Shape::HeavyTail);
        let above = |x: f64| h.iter().filter(|&&v| v > x * LEVEL).count();
        assert!(above(1.5) > 5 * above(4.0), "{} {}", above(1.5), above(4.0));
        assert!(above(8.0) > 0, "a burst of 8x or more in four weeks");

        // Drift: the last week's load is 3^(3/4) (about 2.3) times the first's.
        let d = known(Shape::Drift);
        let week = |k: usize| d[k * 7 * 1440..(k + 1) * 7 * 1440].iter().sum::<f64>();
        assert!(week(3) > 2.0 * week(0), "{} {}", week(3), week(0));

        // Hourly: an hour holds sixty minutes of load (the daily peak, 1.6x, at 06:00 Monday).
        let hour = known(Shape::Hourly);
        assert!((hour[6] / (60.0 * LEVEL) - 1.6).abs() < 0.1, "{}", hour[6]);
    }
}
