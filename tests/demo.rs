//! The README's main job: `ebb demo` runs one load cycle on the local stack, and ebb scales both
//! sample workloads up under the load and back down after it (the worker in mode Direct on the
//! work of a RabbitMQ queue, the web service through the HPA ebb owns on a Prometheus request
//! rate). At peak the worker holds the count the arrival rate needs: it does not scale down while
//! the rate holds, and overshoots by no more than the drain term asks.

use std::process::Command;

/// One summary line of the demo: `summary: NAME replicas FIRST -> peak PEAK -> LAST (scaled up
/// U times, down D times)`.
#[derive(Debug)]
struct Summary {
    first: i32,
    peak: i32,
    last: i32,
    downs: u32,
}

fn summary(stdout: &str, name: &str) -> Summary {
    let prefix = format!("summary: {name} replicas ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no summary for {name} in:\n{stdout}"));
    let numbers: Vec<i64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let [first, peak, last, _ups, downs] = numbers[..] else {
        panic!("unexpected summary line: {line}");
    };
    Summary {
        first: first as i32,
        peak: peak as i32,
        last: last as i32,
        downs: downs as u32,
    }
}

#[test]
fn the_demo_scales_both_workloads_up_under_load_and_down_after_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["demo", "--cycle", "150", "--cycles", "1", "--plain"])
        .output()
        .expect("ebb demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ebb demo failed:\n{stdout}\n{stderr}"
    );
    // `summary: queue jobs backlog B message-seconds, longest drain D s, worker at peak LO..HI
    // (needs N, the drain term up to T)`.
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: queue jobs "))
        .unwrap_or_else(|| panic!("no queue summary in:\n{stdout}"));
    let numbers: Vec<f64> = line
        .replace("..", " ")
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|s| s.trim_matches('.').parse().ok())
        .collect();
    let [_backlog, drain, lo, hi, needs, term] = numbers[..] else {
        panic!("unexpected queue summary: {line}");
    };
    assert!(
        lo >= needs,
        "the worker stayed at what the arrival rate needs while it held: {line}\n{stdout}"
    );
    assert!(
        hi <= needs + term + 1.0,
        "the worker overshot by no more than the drain term asks (+1 for rounding): {line}"
    );
    assert!(
        drain < 120.0,
        "the backlog never took minutes to drain: {line}"
    );
    for name in ["worker", "web"] {
        let s = summary(&stdout, name);
        assert_eq!(s.first, 1, "{name} starts at one replica: {s:?}\n{stdout}");
        assert!(s.peak >= 3, "{name} scaled up under load: {s:?}\n{stdout}");
        assert!(
            s.downs >= 1 && s.last < s.peak,
            "{name} scaled down after the load: {s:?}\n{stdout}"
        );
    }
}
