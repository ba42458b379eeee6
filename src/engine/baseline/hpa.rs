//! The HPA with default behavior on an External metric with an AverageValue target of `c` per
//! pod, reduced to one decision per replay step as backtest-protocol.md section 6 fixes it:
//! tolerance 0.1; scale-down stabilization over the recommendations of the last 300 s (this
//! one included; a step with a missing metric records none but still ages the window); the
//! default scale-up policies (4 pods or 100 % per 15 s) applied once per 15 s sync in the step;
//! the default scale-down policy never binds.

use crate::engine::policy::{ReplayPolicy, StepContext};
use crate::engine::{
    DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, DEFAULT_SCALE_UP_POLICIES, DEFAULT_TOLERANCE, Policy,
    ceil_eps,
};

/// The HPA controller's sync period in seconds.
pub const SYNC_PERIOD_SECONDS: f64 = 15.0;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct HpaBaseline {
    /// Recommendations of the last steps inside the window, by step modulo its length.
    window: Vec<Option<u32>>,
}

/// One sync's scale-up limit under the default policies: `max(x + 4, 2x)`.
pub fn default_scale_up_limit(current: u64) -> u64 {
    DEFAULT_SCALE_UP_POLICIES
        .iter()
        .map(|p| match *p {
            Policy::Pods { value, .. } => current + value as u64,
            Policy::Percent { value, .. } => current * (100 + value as u64) / 100,
        })
        .max()
        .unwrap_or(current)
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
        let ratio = load / (ctx.capacity * current as f64);
        let want = if (ratio - 1.0).abs() <= DEFAULT_TOLERANCE {
            current
        } else {
            ceil_eps(load / ctx.capacity) as u32
        };
        self.window[slot] = Some(want);
        let highest = self.window.iter().flatten().copied().max().unwrap_or(want);
        let rec = current.max(want).min(highest);
        if rec <= current {
            return rec;
        }
        let syncs = (ctx.step_seconds / SYNC_PERIOD_SECONDS).round().max(1.0) as u32;
        let mut limit = current as u64;
        for _ in 0..syncs {
            if limit >= rec as u64 {
                break;
            }
            limit = default_scale_up_limit(limit);
        }
        rec.min(limit.min(u32::MAX as u64) as u32)
    }
}
