//! Synthetic load series for `ebb backtest --synthetic`: shapes with a known answer (a step, bursts,
//! flat noise, a daily cycle), each a week of minutes with multiplicative noise of 5 %, seeded so
//! that every run gives the same series.

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

/// The series of `shape`.
pub fn generate(shape: Shape) -> Trace {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut burst_until = 0usize;
    let values = (0..STEPS)
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
                Shape::Daily => {
                    let phase = (t % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
                    LEVEL * (1.0 + 0.6 * phase.sin())
                }
            };
            Some((base * (1.0 + NOISE * rng.normal())).max(0.0))
        })
        .collect();
    Trace {
        start: START_UNIX,
        step_seconds: STEP_SECONDS,
        values,
    }
}
