//! The oracle: knows the future demand and decides `max(d_t, ..., d_{t+S})`, the cheapest
//! decisions that are never under-provisioned given the startup delay. The bound to approach.

use crate::engine::policy::{ReplayPolicy, StepContext};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct OracleBaseline {
    demand: Vec<Option<u32>>,
    startup_delay: usize,
}

impl OracleBaseline {
    /// An oracle over the whole demand series (missing points as `None`).
    pub fn new(demand: Vec<Option<u32>>, startup_delay: usize) -> Self {
        Self {
            demand,
            startup_delay,
        }
    }
}

impl ReplayPolicy for OracleBaseline {
    fn name(&self) -> &str {
        "oracle"
    }

    fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
        let t = ctx.step;
        let end = t
            .saturating_add(self.startup_delay)
            .min(self.demand.len().saturating_sub(1));
        let ahead = self.demand.get(t..=end).unwrap_or_default();
        // Hold the previous value when nothing in the horizon is known.
        ahead
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(ctx.previous)
    }
}
