//! The replay loop and supply model of backtest-protocol.md (sections 2 to 4).

use super::metrics::{self, Elasticity};
use crate::engine::policy::{ReplayPolicy, Served, StepContext, demand};

/// The fixed quantities of one replay (protocol section 2).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReplayConfig {
    /// Load one pod serves per step within its SLO (`c`): what demand is counted in.
    pub capacity: f64,
    /// Load per pod the policies are configured to aim for (`c` unless overridden).
    pub target_per_pod: f64,
    /// Steps before an added pod is ready (`S`).
    pub startup_delay: usize,
    /// Lower bound on decisions.
    pub min_replicas: u32,
    /// Upper bound on decisions.
    pub max_replicas: u32,
    /// Step length in seconds.
    pub step_seconds: f64,
    /// Unix seconds of step 0 (0 when unknown).
    pub start_unix: i64,
}

impl ReplayConfig {
    /// The protocol's defaults for a load series: `c = median / 10` over known points,
    /// bounds `[1, ceil(1.5 * max d)]`, `S = 1` for steps up to a minute, else 0. `capacity` and
    /// `startup_delay` override. `None` when the series has no known point.
    pub fn for_series(
        load: &[Option<f64>],
        step_seconds: f64,
        capacity: Option<f64>,
        startup_delay: Option<usize>,
    ) -> Option<Self> {
        let capacity = match capacity {
            Some(c) => c,
            None => median(load)? / 10.0,
        };
        let max_demand = load.iter().flatten().map(|&l| demand(l, capacity)).max()?;
        let max_replicas =
            crate::engine::ceil_eps(1.5 * max_demand as f64).min(u32::MAX as f64) as u32;
        Some(Self {
            capacity,
            target_per_pod: capacity,
            startup_delay: startup_delay.unwrap_or(if step_seconds <= 60.0 { 1 } else { 0 }),
            min_replicas: 1,
            max_replicas: max_replicas.max(1),
            step_seconds,
            start_unix: 0,
        })
    }

    /// D before step 0 (protocol section 3): the demand at the first known step, within the
    /// bounds.
    pub fn warm_start(&self, load: &[Option<f64>]) -> u32 {
        load.iter()
            .flatten()
            .next()
            .map(|&l| demand(l, self.capacity))
            .unwrap_or(self.min_replicas)
            .clamp(self.min_replicas, self.max_replicas)
    }

    /// Demand in pods at each step (`None` where the load is missing).
    pub fn demand(&self, load: &[Option<f64>]) -> Vec<Option<u32>> {
        load.iter()
            .map(|l| l.map(|l| demand(l, self.capacity)))
            .collect()
    }
}

/// The median of the known points (mean of the two middle ones for an even count).
pub fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Decisions of one replay, with the warm start they began from.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// D before step 0: the demand at the first known step.
    pub warm: u32,
    /// D_t for every step, clamped to the bounds.
    pub decisions: Vec<u32>,
}

impl Replay {
    /// D_t for any t, the warm start for t < 0.
    pub fn decision(&self, t: isize) -> u32 {
        if t < 0 {
            self.warm
        } else {
            self.decisions[t as usize]
        }
    }

    /// The scores of these decisions against `demand` over steps `from..` (supply with
    /// startup delay `startup_delay`; D_{from-1} precedes).
    pub fn score(&self, demand: &[Option<u32>], startup_delay: usize, from: usize) -> Elasticity {
        let supply = self.supply(startup_delay);
        let before = self.decision(from as isize - 1);
        metrics::score(demand, &supply, &self.decisions, before, from)
    }

    /// Ready supply `s_t = min(D_{t-S}, ..., D_t)` at every step.
    pub fn supply(&self, startup_delay: usize) -> Vec<u32> {
        (0..self.decisions.len() as isize)
            .map(|t| {
                (t - startup_delay as isize..=t)
                    .map(|k| self.decision(k))
                    .min()
                    .unwrap_or(self.warm)
            })
            .collect()
    }
}

/// Replay `load` through `policy` (protocol section 3): at step t the policy sees the load up
/// to t-1, its past decisions and the ready pods; its answer is clamped to the bounds.
pub fn replay(load: &[Option<f64>], cfg: &ReplayConfig, policy: &mut dyn ReplayPolicy) -> Replay {
    let warm = cfg.warm_start(load);
    let mut out = Replay {
        warm,
        decisions: Vec::with_capacity(load.len()),
    };
    for t in 0..load.len() {
        let previous = out.decision(t as isize - 1);
        // Pods ready at the start of t: min(D_{t-S}..D_{t-1}); with S = 0 simply D_{t-1}.
        let s = cfg.startup_delay.max(1) as isize;
        let ready = (t as isize - s..t as isize)
            .map(|k| out.decision(k))
            .min()
            .unwrap_or(previous);
        // The step before: its ready supply min(D_{t-1-S}..D_{t-1}) and their utilization.
        let last_served = t.checked_sub(1).and_then(|last| {
            let load = load[last]?;
            let pods = (last as isize - cfg.startup_delay as isize..=last as isize)
                .map(|k| out.decision(k))
                .min()?;
            Some(Served {
                pods,
                utilization: load / (f64::from(pods.max(1)) * cfg.capacity),
            })
        });
        let ctx = StepContext {
            step: t,
            step_seconds: cfg.step_seconds,
            start_unix: cfg.start_unix,
            observed: &load[..t],
            decisions: &out.decisions,
            previous,
            ready,
            target_per_pod: cfg.target_per_pod,
            last_served,
            min_replicas: cfg.min_replicas,
            max_replicas: cfg.max_replicas,
        };
        let d = policy
            .decide(&ctx)
            .clamp(cfg.min_replicas, cfg.max_replicas);
        out.decisions.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::metrics::score;
    use crate::engine::baseline::OracleBaseline;

    #[test]
    fn oracle_by_hand_with_a_gap() {
        let load = [Some(10.0), Some(30.0), None, Some(5.0)];
        let cfg = ReplayConfig {
            capacity: 10.0,
            target_per_pod: 10.0,
            startup_delay: 1,
            min_replicas: 1,
            max_replicas: 5,
            step_seconds: 60.0,
            start_unix: 0,
        };
        let demand = cfg.demand(&load);
        assert_eq!(demand, vec![Some(1), Some(3), None, Some(1)]);
        let r = replay(&load, &cfg, &mut OracleBaseline::new(demand.clone(), 1));
        assert_eq!((r.warm, r.decisions.clone()), (1, vec![3, 3, 1, 1]));
        let supply = r.supply(1);
        assert_eq!(supply, vec![1, 3, 1, 1]);
        let e = score(&demand, &supply, &r.decisions, r.warm, 0);
        assert_eq!((e.steps, e.cost, e.a_u, e.a_o), (3, 5, 0, 0));
        assert_eq!((e.actions, e.reversals), (2, 1));
        // Scoring from step 2 on: D_1 = 3 precedes, one action (3 -> 1), no reversal.
        let e = score(&demand, &supply, &r.decisions, r.decision(1), 2);
        assert_eq!((e.steps, e.cost, e.actions, e.reversals), (1, 1, 1, 0));
    }

    /// Records what the replay tells it, and asks for a fixed sequence.
    struct Recorder {
        asks: Vec<u32>,
        seen: Vec<Option<Served>>,
    }

    impl ReplayPolicy for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
            self.seen.push(ctx.last_served);
            self.asks[ctx.step]
        }
    }

    #[test]
    fn the_last_step_served_is_its_ready_supply_and_their_utilization() {
        let load = [Some(10.0), Some(40.0), None, Some(20.0), Some(30.0)];
        let mut cfg = ReplayConfig::for_series(&load, 60.0, Some(10.0), Some(1)).unwrap();
        cfg.target_per_pod = 15.0;
        let mut p = Recorder {
            asks: vec![4, 4, 1, 1, 1],
            seen: Vec::new(),
        };
        let r = replay(&load, &cfg, &mut p);
        assert_eq!(r.supply(1), vec![1, 4, 1, 1, 1]);
        let served = |pods, utilization| Some(Served { pods, utilization });
        assert_eq!(
            p.seen,
            vec![
                None,           // nothing observed yet
                served(1, 1.0), // step 0: 10 on the warm pod of capacity 10
                served(4, 1.0), // step 1: 40 on the 4 pods added at step 0
                None,           // step 2: missing
                served(1, 2.0), // step 3: 20 on 1 pod, twice what it serves
            ]
        );
    }

    #[test]
    fn protocol_defaults_from_the_series() {
        let load = [Some(100.0), None, Some(300.0), Some(200.0), Some(1000.0)];
        let cfg = ReplayConfig::for_series(&load, 60.0, None, None).unwrap();
        // median of 100, 200, 300, 1000 is 250: c = 25; max demand 40 -> max 60 replicas.
        assert_eq!(cfg.capacity, 25.0);
        assert_eq!((cfg.startup_delay, cfg.max_replicas), (1, 60));
        assert_eq!(
            ReplayConfig::for_series(&load, 3600.0, None, None)
                .unwrap()
                .startup_delay,
            0
        );
        assert!(ReplayConfig::for_series(&[None, None], 60.0, None, None).is_none());
    }
}
