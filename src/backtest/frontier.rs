//! Reference policies tuned in hindsight (`ebb backtest --frontier`): how cheap a simple
//! policy family can be on *this* trace at a given tau_U when its one parameter is chosen
//! knowing the whole trace. No causal policy can tune itself that way, so these rows are a
//! yardstick for a learned policy, not competitors: a goal below them asks for foresight.
//!
//! Each family scales a base level by `exp(k * scale_t)` and takes the pods for it:
//! `D_t = ceil(base_t * exp(k * scale_t) / c)`. Decisions grow with `k`, so supply does too and
//! tau_U falls: the smallest `k` meeting the risk (found by bisection) is the family's cheapest
//! point at that risk, for each window it tries.
//! - `held+H`: base = the highest of the last W readings, scale = 1 (`H = exp(k) - 1`, a fixed
//!   headroom over a fixed scale-down window).
//! - `held+k*noise`: base as above, scale = the noise of the last 256 readings (the same
//!   estimate as ebb's tolerance rule): more headroom in noisy hours, less in calm ones.
//! - `clairvoyant`: base = the median of the load from two steps before to two steps after t
//!   (it reads the future: the level of the load is known, only the noise around it is not),
//!   scale = the noise as above. What even perfect knowledge of the level costs.

use serde::Serialize;

use super::metrics::Elasticity;
use super::replay::{Replay, ReplayConfig};
use crate::engine::adaptive::{NOISE_WINDOW, noise_sigma};
use crate::engine::ceil_eps;

/// Window lengths (in steps) tried for the held families: roughly 1.5x apart, from the latest
/// reading alone to half an hour of minutes.
pub const WINDOWS: [usize; 8] = [1, 2, 3, 5, 8, 12, 20, 30];

/// Half-width (in steps) of the clairvoyant family's centred median.
const CLAIRVOYANT_HALF_WIDTH: usize = 2;

/// Differences the noise estimate needs before it is used (0 noise before: no headroom).
const MIN_NOISE_DIFFS: usize = 8;

/// Bisection steps: the parameter to about 1e-9 of its range.
const BISECTION_STEPS: usize = 40;

/// A reference family (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Family {
    /// Fixed headroom over the window's highest reading.
    HeldHeadroom,
    /// Headroom proportional to the recent noise over the window's highest reading.
    HeldNoise,
    /// Headroom proportional to the noise over the true (future-centred) level.
    Clairvoyant,
}

impl Family {
    /// Every family, in table order.
    pub const ALL: [Family; 3] = [Family::HeldHeadroom, Family::HeldNoise, Family::Clairvoyant];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Family::HeldHeadroom => "held+H",
            Family::HeldNoise => "held+k*noise",
            Family::Clairvoyant => "clairvoyant",
        }
    }

    /// Upper end of the parameter search: a headroom of 10x, or 50 noise sigmas.
    fn max_parameter(self) -> f64 {
        match self {
            Family::HeldHeadroom => 11f64.ln(),
            Family::HeldNoise | Family::Clairvoyant => 50.0,
        }
    }
}

/// What the frontier is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrontierOptions {
    /// The tau_U each family is tuned to, in % of scored steps.
    pub risk_percent: f64,
    /// Only rows with at most this many actions count (none: any).
    pub max_actions: Option<u64>,
}

/// One family's cheapest point at the risk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontierRow {
    /// The family.
    pub family: Family,
    /// Window in steps (the held families; `None` for the clairvoyant one).
    pub window_steps: Option<usize>,
    /// `k`: the log headroom for `held+H`, noise sigmas for the others.
    pub parameter: f64,
    /// Headroom over the base, in % of it, on average over the scored steps.
    pub mean_headroom_percent: f64,
    /// Scores at that parameter.
    #[serde(flatten)]
    pub scores: Elasticity,
    /// Cost divided by the oracle's.
    pub cost_vs_oracle: f64,
}

/// Base level and scale of one family's decisions at every step.
struct Levels {
    base: Vec<f64>,
    scale: Vec<f64>,
}

/// The load known at step t under the protocol: lambda_{t-1}, the last known value carried
/// over gaps (the first known value before the first reading).
fn observed(load: &[Option<f64>]) -> Vec<f64> {
    let first = load.iter().flatten().next().copied().unwrap_or(0.0);
    let mut last = first;
    let mut out = Vec::with_capacity(load.len());
    for l in load {
        out.push(last);
        if let Some(v) = l {
            last = *v;
        }
    }
    out
}

/// Noise known at each step: ebb's estimate over the last [`NOISE_WINDOW`] first differences of
/// the log-load observed before it (loads floored at one pod's, as in ebb), over fewer while
/// the series is young; 0 before [`MIN_NOISE_DIFFS`] differences.
fn noise(load: &[Option<f64>], capacity: f64) -> Vec<f64> {
    let mut diffs: Vec<f64> = Vec::with_capacity(NOISE_WINDOW);
    let mut next = 0;
    let mut scratch = Vec::with_capacity(NOISE_WINDOW);
    let mut out = Vec::with_capacity(load.len());
    let mut sigma = 0.0;
    for t in 0..load.len() {
        out.push(sigma);
        if let (Some(a), Some(b)) = (t.checked_sub(1).and_then(|p| load[p]), load[t]) {
            let d = (b.max(capacity) / a.max(capacity)).ln();
            if diffs.len() < NOISE_WINDOW {
                diffs.push(d);
            } else {
                diffs[next] = d;
            }
            next = (next + 1) % NOISE_WINDOW;
            if diffs.len() >= MIN_NOISE_DIFFS {
                sigma = noise_sigma(&diffs, &mut scratch);
            }
        }
    }
    out
}

/// The highest of the last `window` observed values at each step.
fn held(observed: &[f64], window: usize) -> Vec<f64> {
    (0..observed.len())
        .map(|t| {
            observed[t.saturating_sub(window - 1)..=t]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect()
}

/// The median of the known load within `CLAIRVOYANT_HALF_WIDTH` steps of t, future included
/// (the observed value where none is known).
fn centred_level(load: &[Option<f64>], observed: &[f64]) -> Vec<f64> {
    let mut window = Vec::with_capacity(2 * CLAIRVOYANT_HALF_WIDTH + 1);
    (0..load.len())
        .map(|t| {
            let end = (t + CLAIRVOYANT_HALF_WIDTH + 1).min(load.len());
            window.clear();
            window.extend(
                load[t.saturating_sub(CLAIRVOYANT_HALF_WIDTH)..end]
                    .iter()
                    .flatten(),
            );
            if window.is_empty() {
                return observed[t];
            }
            window.sort_by(f64::total_cmp);
            window[window.len() / 2]
        })
        .collect()
}

/// Scores one family's decisions as the replay scores the policies' (same warm start,
/// supply and metrics).
struct Tuner<'a> {
    cfg: &'a ReplayConfig,
    demand: Vec<Option<u32>>,
    warm: u32,
    scored_from: usize,
    oracle_cost: u64,
}

impl Tuner<'_> {
    fn evaluate(&self, levels: &Levels, k: f64) -> Elasticity {
        let cfg = self.cfg;
        let decisions = levels
            .base
            .iter()
            .zip(&levels.scale)
            .map(|(&b, &s)| {
                let pods = ceil_eps(b * (k * s).exp() / cfg.capacity);
                (pods.min(u32::MAX as f64) as u32).clamp(cfg.min_replicas, cfg.max_replicas)
            })
            .collect();
        let replay = Replay {
            warm: self.warm,
            decisions,
        };
        replay.score(&self.demand, cfg.startup_delay, self.scored_from)
    }

    /// The smallest parameter whose tau_U is within the risk, and its row.
    fn tune(
        &self,
        family: Family,
        levels: &Levels,
        window: Option<usize>,
        opts: FrontierOptions,
    ) -> Option<FrontierRow> {
        let meets = |k: f64| self.evaluate(levels, k).tau_u <= opts.risk_percent;
        let (mut lo, mut hi) = (0.0, family.max_parameter());
        if !meets(hi) {
            return None;
        }
        if meets(lo) {
            hi = lo;
        }
        for _ in 0..BISECTION_STEPS {
            if hi <= lo {
                break;
            }
            let mid = (lo + hi) / 2.0;
            if meets(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let scores = self.evaluate(levels, hi);
        if opts.max_actions.is_some_and(|m| scores.actions > m) {
            return None;
        }
        let scored = &levels.scale[self.scored_from.min(levels.scale.len())..];
        let mean_headroom_percent = 100.0 * scored.iter().map(|s| (hi * s).exp_m1()).sum::<f64>()
            / scored.len().max(1) as f64;
        Some(FrontierRow {
            family,
            window_steps: window,
            parameter: hi,
            mean_headroom_percent,
            scores,
            cost_vs_oracle: scores.cost as f64 / self.oracle_cost.max(1) as f64,
        })
    }
}

/// Base and scale of a family at every step (one window for the held families).
fn levels_of(
    family: Family,
    window: usize,
    load: &[Option<f64>],
    observed: &[f64],
    sigma: &[f64],
) -> Levels {
    match family {
        Family::HeldHeadroom => Levels {
            base: held(observed, window),
            scale: vec![1.0; load.len()],
        },
        Family::HeldNoise => Levels {
            base: held(observed, window),
            scale: sigma.to_vec(),
        },
        Family::Clairvoyant => Levels {
            base: centred_level(load, observed),
            scale: sigma.to_vec(),
        },
    }
}

/// Tune each family to the risk and return its cheapest row (none for a family where no
/// parameter within range meets it, or no window stays within the action budget).
pub fn frontier(
    load: &[Option<f64>],
    cfg: &ReplayConfig,
    scored_from: usize,
    oracle_cost: u64,
    opts: FrontierOptions,
) -> Vec<FrontierRow> {
    let tuner = Tuner {
        cfg,
        demand: cfg.demand(load),
        warm: cfg.warm_start(load),
        scored_from,
        oracle_cost,
    };
    let observed = observed(load);
    let sigma = noise(load, cfg.capacity);
    Family::ALL
        .iter()
        .filter_map(|&family| {
            let windows: &[usize] = match family {
                Family::Clairvoyant => &[0],
                _ => &WINDOWS,
            };
            windows
                .iter()
                .filter_map(|&w| {
                    let levels = levels_of(family, w, load, &observed, &sigma);
                    let window = (family != Family::Clairvoyant).then_some(w);
                    tuner.tune(family, &levels, window, opts)
                })
                .min_by_key(|r| r.scores.cost)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::replay::replay;
    use crate::engine::baseline::OracleBaseline;

    fn tuner<'a>(load: &[Option<f64>], cfg: &'a ReplayConfig) -> Tuner<'a> {
        let demand = cfg.demand(load);
        let r = replay(load, cfg, &mut OracleBaseline::new(demand.clone(), 1));
        let oracle_cost = r.score(&demand, 1, 0).cost;
        Tuner {
            cfg,
            demand,
            warm: r.warm,
            scored_from: 0,
            oracle_cost,
        }
    }

    /// A deterministic noisy series: a slow wave times pseudo-random noise of +-10 %.
    fn noisy(n: usize) -> Vec<Option<f64>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|t| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let level = 1000.0 * (1.5 + (t as f64 / 300.0).sin());
                Some(level * (1.0 + 0.2 * (u - 0.5)))
            })
            .collect()
    }

    fn rows(load: &[Option<f64>], opts: FrontierOptions) -> Vec<FrontierRow> {
        let cfg = ReplayConfig::for_series(load, 60.0, None, None).unwrap();
        frontier(load, &cfg, 0, tuner(load, &cfg).oracle_cost, opts)
    }

    #[test]
    fn each_family_meets_the_risk_at_the_smallest_parameter_that_does() {
        let load = noisy(3000);
        let cfg = ReplayConfig::for_series(&load, 60.0, None, None).unwrap();
        let t = tuner(&load, &cfg);
        let observed = observed(&load);
        let sigma = noise(&load, cfg.capacity);
        let opts = FrontierOptions {
            risk_percent: 1.0,
            max_actions: None,
        };
        for family in Family::ALL {
            let levels = levels_of(family, 3, &load, &observed, &sigma);
            let row = t.tune(family, &levels, None, opts).unwrap();
            assert!(row.scores.tau_u <= 1.0, "{row:?}");
            assert!(row.parameter > 0.0, "noise needs headroom: {row:?}");
            let below = t.evaluate(&levels, row.parameter * 0.999);
            assert!(
                below.tau_u > 1.0,
                "{family:?}: a smaller parameter also meets it"
            );
            assert!(below.cost <= row.scores.cost);
        }
    }

    /// A level that jumps by up to +-30 % every 10 steps, with +-2 % noise: what a held window
    /// learns late and the centred level knows at once.
    fn jumpy(n: usize) -> Vec<Option<f64>> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut level = 1000.0;
        (0..n)
            .map(|t| {
                if t % 10 == 0 {
                    level = (level * (1.0 + 0.6 * (uniform() - 0.5))).clamp(300.0, 3000.0);
                }
                Some(level * (1.0 + 0.04 * (uniform() - 0.5)))
            })
            .collect()
    }

    #[test]
    fn knowing_the_level_is_cheaper_than_holding_a_window_when_the_level_moves() {
        let rows = rows(
            &jumpy(3000),
            FrontierOptions {
                risk_percent: 0.5,
                max_actions: None,
            },
        );
        let cost = |f: Family| rows.iter().find(|r| r.family == f).unwrap().cost_vs_oracle;
        assert!(cost(Family::Clairvoyant) < cost(Family::HeldHeadroom));
        assert!(cost(Family::Clairvoyant) < cost(Family::HeldNoise));
        assert!(cost(Family::Clairvoyant) >= 1.0, "nothing beats the oracle");
    }

    #[test]
    fn a_budget_of_actions_rules_out_rows_that_exceed_it() {
        let load = noisy(3000);
        let free = FrontierOptions {
            risk_percent: 0.5,
            max_actions: None,
        };
        let best = rows(&load, free).remove(0);
        assert_eq!(best.family, Family::HeldHeadroom);
        let capped = FrontierOptions {
            max_actions: Some(best.scores.actions - 1),
            ..free
        };
        let capped_rows = rows(&load, capped);
        for r in &capped_rows {
            assert!(r.scores.actions < best.scores.actions, "{r:?}");
        }
        // The held+H row, if any, now uses another window.
        let held = capped_rows
            .iter()
            .find(|r| r.family == Family::HeldHeadroom);
        assert!(held.is_none_or(|r| r.window_steps != best.window_steps));
    }

    #[test]
    fn the_clairvoyant_level_reads_the_future_and_the_held_one_does_not() {
        let load: Vec<Option<f64>> = [1.0, 1.0, 1.0, 9.0, 9.0, 9.0, 9.0]
            .into_iter()
            .map(Some)
            .collect();
        let obs = observed(&load);
        assert_eq!(obs, vec![1.0, 1.0, 1.0, 1.0, 9.0, 9.0, 9.0]);
        assert_eq!(held(&obs, 2), vec![1.0, 1.0, 1.0, 1.0, 9.0, 9.0, 9.0]);
        // At t = 3, when the rise arrives, the centred median (1, 1, 9, 9, 9) already knows
        // it; the held level learns it a step later.
        let level = centred_level(&load, &obs);
        assert_eq!((level[2], level[3]), (1.0, 9.0));
    }

    #[test]
    fn noise_is_zero_until_there_are_enough_differences_then_tracks_the_spread() {
        let load = noisy(600);
        let sigma = noise(&load, 1.0);
        assert!(sigma[..=MIN_NOISE_DIFFS].iter().all(|&s| s == 0.0));
        assert!(sigma[MIN_NOISE_DIFFS + 1] > 0.0);
        // +-10 % uniform noise: sd of ln(1 + u) about 0.058.
        assert!((0.03..0.09).contains(&sigma[599]), "{}", sigma[599]);
    }
}
