//! Baseline policies for comparison, each on the [`ReplayPolicy`](super::policy::ReplayPolicy)
//! interface and each following backtest-protocol.md section 6 to the letter, so that their
//! figures can be checked against an independent implementation.

pub mod hpa;
pub mod hpa_engine;
pub mod kpa;
pub mod oracle;

pub use hpa::HpaBaseline;
pub use hpa_engine::HpaEngineBaseline;
pub use kpa::KpaBaseline;
pub use oracle::OracleBaseline;

/// The baselines' names, in table order. `oracle`, `hpa` and `kpa` are the protocol's
/// (section 6); `hpa-engine` replays the engine's own HPA at its 15 s sync.
pub const NAMES: [&str; 4] = ["oracle", "hpa", "kpa", "hpa-engine"];
