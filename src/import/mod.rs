//! `ebb import`: converters from other autoscalers' objects to ScaledTargets. Each reads YAML,
//! writes ScaledTargets and reports, field by field, what it could not carry over as it was.

pub mod keda;

use std::io::Read as _;

/// Flags of `ebb import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub from: ImportFrom,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImportFrom {
    /// KEDA ScaledObjects (and the TriggerAuthentications they name) to ScaledTargets: YAML
    /// on stdout, one line per field not carried over as it was on stderr (docs/keda.md).
    Keda(KedaArgs),
}

#[derive(Debug, clap::Args)]
pub struct KedaArgs {
    /// A YAML file of ScaledObjects and TriggerAuthentications (`---`-separated, or a `kind:
    /// List` as `kubectl get -o yaml` prints it); `-` reads stdin.
    pub file: String,
    /// Exit 2 when anything was dropped, changed in meaning or needs an action (notes do not
    /// count); objects that cannot be converted exit 1 either way.
    #[arg(long)]
    pub check: bool,
}

/// Exit code of `--check` when something was not carried over as it was.
pub const EXIT_LOSSY: i32 = 2;
/// Exit code when an object was refused (or the input unreadable).
pub const EXIT_REFUSED: i32 = 1;

/// Runs the import; returns the process exit code.
pub fn run(args: &ImportArgs) -> anyhow::Result<i32> {
    match &args.from {
        ImportFrom::Keda(keda_args) => run_keda(keda_args),
    }
}

fn run_keda(args: &KedaArgs) -> anyhow::Result<i32> {
    let text = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file))?
    };
    let outcome = keda::import(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.file))?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(outcome.to_yaml()?.as_bytes())?;
        stdout.flush()?;
    }
    for finding in &outcome.findings {
        eprintln!("{finding}");
    }
    for refusal in &outcome.refusals {
        eprintln!("{refusal}");
    }
    let lossy = outcome
        .findings
        .iter()
        .filter(|f| f.loss.fails_check())
        .count();
    eprintln!(
        "ebb import keda: {} ScaledTarget(s) written, {} ScaledObject(s) refused, {lossy} field(s) not carried over as they were",
        outcome.targets.len(),
        outcome.refused_objects(),
    );
    Ok(if !outcome.refusals.is_empty() {
        EXIT_REFUSED
    } else if args.check && lossy > 0 {
        EXIT_LOSSY
    } else {
        0
    })
}
