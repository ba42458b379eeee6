//! The elasticity metrics of backtest-protocol.md section 5.

use serde::Serialize;

/// The scores of one policy over the scored steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Elasticity {
    /// Scored steps (known demand within the scored range).
    pub steps: usize,
    /// % of time under-provisioned.
    pub tau_u: f64,
    /// Mean relative under-provisioning, in %.
    pub theta_u: f64,
    /// % of time over-provisioned.
    pub tau_o: f64,
    /// Mean relative over-provisioning, in %.
    pub theta_o: f64,
    /// Missing pod-steps.
    pub a_u: u64,
    /// Surplus pod-steps.
    pub a_o: u64,
    /// Ready pod-steps.
    pub cost: u64,
    /// Steps whose decision differs from the previous one.
    pub actions: u64,
    /// Direction changes between consecutive non-zero changes of the decision.
    pub reversals: u64,
}

/// Score decisions against demand over steps `from..` (`from = 0`: the whole trace).
///
/// `previous_of_first` is D_{from-1} (the warm start when `from = 0`). Actions and reversals
/// count over every step of the range; the other figures over steps with known demand.
pub fn score(
    demand: &[Option<u32>],
    supply: &[u32],
    decisions: &[u32],
    previous_of_first: u32,
    from: usize,
) -> Elasticity {
    let mut e = Elasticity {
        steps: 0,
        tau_u: 0.0,
        theta_u: 0.0,
        tau_o: 0.0,
        theta_o: 0.0,
        a_u: 0,
        a_o: 0,
        cost: 0,
        actions: 0,
        reversals: 0,
    };
    let (mut under, mut over) = (0usize, 0usize);
    let (mut rel_u, mut rel_o) = (0.0f64, 0.0f64);
    let mut prev = previous_of_first;
    let mut last_sign = 0i8;
    for t in from..decisions.len() {
        let d_t = decisions[t];
        if d_t != prev {
            e.actions += 1;
            let sign = if d_t > prev { 1 } else { -1 };
            if last_sign != 0 && sign != last_sign {
                e.reversals += 1;
            }
            last_sign = sign;
        }
        prev = d_t;
        let Some(d) = demand[t] else { continue };
        let s = supply[t];
        e.steps += 1;
        e.cost += s as u64;
        if s < d {
            under += 1;
            e.a_u += (d - s) as u64;
            rel_u += (d - s) as f64 / d as f64;
        } else if s > d {
            over += 1;
            e.a_o += (s - d) as u64;
            rel_o += (s - d) as f64 / d as f64;
        }
    }
    if e.steps > 0 {
        let n = e.steps as f64;
        e.tau_u = 100.0 * under as f64 / n;
        e.theta_u = 100.0 * rel_u / n;
        e.tau_o = 100.0 * over as f64 / n;
        e.theta_o = 100.0 * rel_o / n;
    }
    e
}
