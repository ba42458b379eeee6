//! The step-wise interface `ebb backtest` replays policies through (backtest-protocol.md,
//! section 3). A policy sees, at step t, the observed load up to t-1 (missing points stay
//! missing), its own past decisions and the pods ready at the start of step t; it returns the
//! desired replica count D_t. The replay clamps it to the bounds.

use super::ceil_eps;

/// What a policy may know at step `step`.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// The step being decided (0-based, on the trace's grid).
    pub step: usize,
    /// Length of one step in seconds.
    pub step_seconds: f64,
    /// Unix seconds of step 0, for policies that follow the time of day or week.
    pub start_unix: i64,
    /// The load observed at steps `0..step` (one step of observation lag); `None` is missing.
    pub observed: &'a [Option<f64>],
    /// This policy's decisions for steps `0..step`, after clamping.
    pub decisions: &'a [u32],
    /// D_{t-1}: the last decision, or the warm start before step 0.
    pub previous: u32,
    /// Pods ready at the start of the step: `min(D_{t-S}, ..., D_{t-1})`.
    pub ready: u32,
    /// Load per pod per step the policies are configured to aim for: the protocol's `c`, or
    /// `--target-per-pod` (a static target set too high or too low).
    pub target_per_pod: f64,
    /// The pods that served the last observed step and how loaded they were, when it is known.
    pub last_served: Option<Served>,
    /// Lower bound on decisions.
    pub min_replicas: u32,
    /// Upper bound on decisions.
    pub max_replicas: u32,
}

/// What served the last observed step (t-1), as a service's own metrics would tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// Ready pods during the step: `s_{t-1}`.
    pub pods: u32,
    /// `lambda_{t-1} / (s_{t-1} * c)`: the load over what those pods serve within their SLO.
    /// Above 1 the SLO broke; it is the signal a latency or error objective stands for.
    pub utilization: f64,
}

impl StepContext<'_> {
    /// The most recent observation (lambda_{t-1}), if it is known.
    pub fn last_observation(&self) -> Option<f64> {
        self.observed.last().copied().flatten()
    }
}

/// A policy the backtest can replay step by step.
pub trait ReplayPolicy {
    /// Short name shown in the results table.
    fn name(&self) -> &str;
    /// The desired replica count for `ctx.step`.
    fn decide(&mut self, ctx: &StepContext<'_>) -> u32;
    /// For a policy with a learned headroom under a bound: at how many of its decisions the
    /// headroom was held at the bound (`maxHeadroom`), short of what the risk asked needed.
    fn decisions_at_max_headroom(&self) -> Option<u64> {
        None
    }
}

/// Pods needed for a load: `max(1, ceil(load / capacity))` (protocol section 2).
pub fn demand(load: f64, capacity: f64) -> u32 {
    let pods = ceil_eps(load / capacity);
    if pods.is_nan() {
        return 1;
    }
    // Saturating float-to-int conversion: absurd loads become u32::MAX, never a panic.
    (pods as u32).max(1)
}
