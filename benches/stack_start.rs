//! What each service of the local stack costs to start (until ready) and stop.
//! `cargo bench --bench stack_start` prints a table (min / median / max over 3 runs).

use std::time::{Duration, Instant};

use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::{Stack, StackOptions};

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cases: [(&str, StackOptions); 4] = [
        (
            "control plane",
            StackOptions {
                kube: Some(ControlPlaneOptions::default()),
                ..Default::default()
            },
        ),
        (
            "prometheus",
            StackOptions {
                prometheus: true,
                ..Default::default()
            },
        ),
        (
            "rabbitmq",
            StackOptions {
                rabbitmq: true,
                ..Default::default()
            },
        ),
        ("all (concurrently)", StackOptions::all()),
    ];
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10}",
        "service", "start min", "median", "max", "stop med"
    );
    for (name, options) in cases {
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let stack = runtime
                .block_on(Stack::start(options.clone()))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            starts.push(t.elapsed());
            let t = Instant::now();
            drop(stack);
            stops.push(t.elapsed());
        }
        starts.sort();
        stops.sort();
        let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>10}",
            name,
            s(starts[0]),
            s(starts[1]),
            s(starts[2]),
            s(stops[1])
        );
    }
}
