//! `deploy/crd.yaml` and the Helm chart's copy are exactly what `ebb crd` prints: the CRD is
//! declared once, in Rust.

use std::process::Command;

#[test]
fn deploy_holds_the_crd_that_ebb_crd_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .arg("crd")
        .output()
        .expect("ebb crd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(printed, ebb::crd::crd_yaml());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd.yaml");
    let on_disk = std::fs::read_to_string(path).expect("deploy/crd.yaml");
    assert!(
        on_disk == printed,
        "deploy/crd.yaml is out of date: run `cargo run -- crd > deploy/crd.yaml`"
    );
}

/// Helm installs CRDs only from a chart's own `crds/` directory, so the chart keeps a copy.
#[test]
fn the_helm_chart_holds_the_same_crd() {
    let chart = "deploy/helm/ebb/crds/scaledtargets.ebb.dev.yaml";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(chart);
    let copy = std::fs::read_to_string(path).expect("the chart's CRD");
    assert!(
        copy == ebb::crd::crd_yaml(),
        "{chart} is out of date: run `cargo run -- crd > {chart}`"
    );
}

#[test]
fn the_crd_has_the_short_name_printer_columns_and_rules() {
    let crd: serde_json::Value = serde_yaml::from_str(&ebb::crd::crd_yaml()).unwrap();
    assert_eq!(crd["spec"]["group"], "ebb.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "st");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Target", "Mode", "Min", "Max", "Current", "Desired", "Active", "Fallback", "Age"
        ]
    );
    // The condition columns read the conditions the controller writes (one place for names).
    use ebb::engine::conditions::{ACTIVE, FALLBACK};
    for (column, condition) in [("Active", ACTIVE), ("Fallback", FALLBACK)] {
        let path = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == column)
            .unwrap()["jsonPath"]
            .as_str()
            .unwrap();
        assert_eq!(
            path,
            format!(".status.conditions[?(@.type==\"{condition}\")].status")
        );
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["minReplicas"]["default"], 1);
    assert_eq!(spec["properties"]["pollingInterval"]["default"], "15s");
    assert_eq!(spec["properties"]["mode"]["default"], "Hpa");
    let rules = spec["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains("self.minReplicas <= self.maxReplicas"),
        "{rules}"
    );
}
