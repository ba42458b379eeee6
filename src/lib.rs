//! ebb: a Kubernetes autoscaler that reads load signals (Prometheus, RabbitMQ), learns from their
//! history, and turns them into replica counts, either through the HPA (as an external metrics
//! API server) or by scaling workloads itself.
//!
//! Layers, from the bottom up (nothing below imports from above); see `docs/architecture.md`:
//! `engine` (pure decisions) <- `backtest`; `source` <- `collect` <- `api`, `controller`;
//! `cli` wires the parts; `import` converts other autoscalers' objects to ScaledTargets. `localstack` starts the real services ebb talks to, for the demo and
//! the tests; `demo` runs ebb on them; `status` is the terminal view of ScaledTargets.

pub mod api;
pub mod backtest;
pub mod cli;
pub mod collect;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod engine;
pub mod history;
pub mod import;
pub mod localstack;
pub mod soak;
pub mod source;
pub mod status;
pub mod telemetry;

/// jemalloc for every binary of the crate (ebb itself, its tests and benches, so that what they
/// measure is what runs). Measured with `cargo bench --bench controller` at 5,000 targets: the
/// process keeps 10 % less resident memory than with glibc's allocator, which keeps freed pages
/// of the startup's transient peaks (lists, first statuses, Events) and fragments across its
/// per-thread arenas; mimalloc kept 20 % more (docs/peers.md, "Memory per target"). Feature
/// `jemalloc`, on by default; off, heap profilers that hook malloc see every allocation.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Installs ring as the process's rustls provider (kube, reqwest and lapin all use rustls;
/// Cargo.toml enables only ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
