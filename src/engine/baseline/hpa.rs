//! The HPA with default behavior on an External metric with an AverageValue target of `c` per
//! pod, reduced to one decision per replay step as backtest-protocol.md section 6 fixes it:
//! tolerance 0.1; scale-down stabilization over the recommendations of the last 300 s (this
//! one included; a step with a missing metric records none but still ages the window); the
//! default scale-up policies (4 pods or 100 % per 15 s) applied once per 15 s sync in the step;
//! the default scale-down policy never binds. The tolerance band and the scale-up limit are the
//! engine's own ([`Tolerances::within`], [`scale_up_limit`] with the default behavior); the
//! proposal is the protocol's float form `ceil(load / c - 1e-9)`, so that any `--capacity`
//! works (the engine proper takes milli-unit integers).

use crate::engine::hpa::{SYNC_PERIOD_MS, ScalingState, Tolerances, scale_up_limit};
use crate::engine::policy::{ReplayPolicy, StepContext};
use crate::engine::{
    Behavior, DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, DEFAULT_TOLERANCE, ceil_eps,
};

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct HpaBaseline {
    /// Recommendations of the last steps inside the window, by step modulo its length.
    window: Vec<Option<u32>>,
    /// The default behavior, whose scale-up policies limit each sync.
    behavior: Behavior,
    /// No scale events: each sync's limit starts from its own current count.
    no_events: ScalingState,
}

impl ReplayPolicy for HpaBaseline {
    fn name(&self) -> &str {
        "hpa"
    }

    fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
        let len = ceil_eps(DEFAULT_DOWNSCALE_STABILIZATION_SECONDS as f64 / ctx.step_seconds)
            .max(1.0) as usize;
        if self.window.len() != len {
            self.window = vec![None; len];
        }
        // The slot of step t - len leaves the window whatever this step brings.
        let slot = ctx.step % len;
        self.window[slot] = None;
        let current = ctx.previous;
        let Some(load) = ctx.last_observation() else {
            return current;
        };
        let ratio = load / (ctx.target_per_pod * current as f64);
        let tolerance = Tolerances {
            up: DEFAULT_TOLERANCE,
            down: DEFAULT_TOLERANCE,
        };
        let want = if tolerance.within(ratio) {
            current
        } else {
            ceil_eps(load / ctx.target_per_pod) as u32
        };
        self.window[slot] = Some(want);
        let highest = self.window.iter().flatten().copied().max().unwrap_or(want);
        let rec = current.max(want).min(highest);
        if rec <= current {
            return rec;
        }
        let syncs = (ctx.step_seconds * 1000.0 / SYNC_PERIOD_MS as f64)
            .round()
            .max(1.0) as u32;
        // The engine's own scale-up limit, once per sync: max(x + 4, 2x) with the defaults.
        let mut limit = i32::try_from(current).unwrap_or(i32::MAX);
        for _ in 0..syncs {
            if i64::from(limit) >= i64::from(rec) {
                break;
            }
            limit = scale_up_limit(&self.behavior, &self.no_events, limit, 0);
        }
        rec.min(u32::try_from(limit).unwrap_or(0))
    }
}
