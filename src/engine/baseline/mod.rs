//! Baseline policies for comparison, each on the [`ReplayPolicy`](super::policy::ReplayPolicy)
//! interface and each following backtest-protocol.md section 6 to the letter, so that their
//! figures can be checked against an independent implementation.

pub mod hpa;
pub mod kpa;
pub mod oracle;

pub use hpa::HpaBaseline;
pub use kpa::KpaBaseline;
pub use oracle::OracleBaseline;

/// The baselines' names, in table order.
pub const NAMES: [&str; 3] = ["oracle", "hpa", "kpa"];
