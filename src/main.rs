use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = ebb::cli::Cli::parse();
    ebb::cli::run(cli)
}
