//! Command line: one clap struct per subcommand, each flag with an env fallback where it makes
//! sense in a container. `run` dispatches; it is the only place that wires the layers together.

use clap::{Parser, Subcommand};

/// ebb: a custom-metrics autoscaler for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "ebb", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay a recorded load series through policies and print elasticity metrics.
    Backtest(crate::backtest::BacktestArgs),
    /// Start the local stack (Kubernetes control plane with kwok nodes, Prometheus, RabbitMQ)
    /// on loopback with a sample workload, and keep it up until Ctrl-C.
    Demo(crate::localstack::DemoArgs),
    /// Print the ScaledTarget CustomResourceDefinition (YAML), as `deploy/crd.yaml` holds it.
    Crd,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    match cli.command {
        Command::Backtest(args) => crate::backtest::run(&args),
        Command::Demo(args) => crate::localstack::run_demo(args),
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml());
            Ok(())
        }
    }
}
