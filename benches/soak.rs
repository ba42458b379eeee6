//! `cargo bench --bench soak [-- --minutes 20 --seed S --targets 200]`: ebb under moving load
//! and a seeded schedule of overlapping faults on a local stack of its own; prints the table
//! (docs/reliability.md has a run's). Without `--seed` the seed is drawn and printed, so that
//! a run can be repeated.

use std::time::Duration;

use ebb::soak::schedule::Profile;
use ebb::soak::{SoakOptions, run};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let minutes = value("--minutes").unwrap_or(20);
    let seed = value("--seed").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    });
    let targets = value("--targets").unwrap_or(200) as usize;
    let profile = if args.iter().any(|a| a == "--short") {
        Profile::short()
    } else {
        Profile::minutes(minutes)
    };
    eprintln!("[soak] seed {seed} (repeat with --seed {seed})");
    let report = tokio::runtime::Runtime::new()?.block_on(run(SoakOptions {
        profile,
        seed,
        targets,
        ebb: env!("CARGO_BIN_EXE_ebb").into(),
    }))?;
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("soak-{seed}.md")), report.to_string())?;
    if !report.passed() {
        anyhow::bail!("a count that must be zero is not");
    }
    Ok(())
}
