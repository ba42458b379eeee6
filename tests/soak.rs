//! The short soak: every fault kind once, overlapping, on a stack of its own, with a fixed
//! seed; the three counts that must be zero are (`cargo bench --bench soak` runs the long one).

use ebb::soak::schedule::{FaultKind, Profile};
use ebb::soak::{SoakOptions, run};

const SEED: u64 = 20261203;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overlapping_faults_no_scale_down_while_failing_nothing_twice_no_change_unrecorded() {
    let report = run(SoakOptions {
        profile: Profile::short(),
        seed: SEED,
        targets: 30,
        ebb: env!("CARGO_BIN_EXE_ebb").into(),
    })
    .await
    .expect("the soak runs");
    eprintln!("{report}");
    let kinds: std::collections::BTreeSet<FaultKind> = report.faults.iter().map(|f| f.0).collect();
    assert_eq!(
        kinds.len(),
        FaultKind::ALL.len(),
        "every kind was carried out: {kinds:?}"
    );
    assert!(
        report.ebb_writes > 0 && report.hpa_writes > 0,
        "the load moved nothing"
    );
    let f = &report.findings;
    assert_eq!(f.scale_downs_while_failing, Vec::<String>::new());
    assert_eq!(f.repeated_actions, Vec::<String>::new());
    assert_eq!(f.changes_without_event, Vec::<String>::new());
    // Back by itself: after the last fault, every target decides normally again.
    assert_eq!(report.normal_at_end, report.targets, "{report}");
}
