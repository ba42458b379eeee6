//! deploy/ (the kustomize base, with and without components/cert-manager) and the Helm chart,
//! under the values users set, checked with the tools users and CI systems check manifests
//! with (built by scripts/build-chart-tools.sh):
//! - `helm lint --strict` and `helm template` of each set of values;
//! - kubeconform `-strict` against Kubernetes 1.36's JSON schemas (PyPI `kubernetes-validate`),
//!   the ScaledTarget CRD's own schema, and cert-manager's and the Prometheus Operator's CRDs,
//!   every object with a schema (none skipped);
//! - kube-score, with each check left out justified below ([`KUBE_SCORE_IGNORED`]).
//!
//! And what the chart's values mean: the schema refuses wrong values, the PDB lets a drain
//! through at any replica count, two releases in two namespaces do not share a cluster-scoped
//! name, the Prometheus and NetworkPolicy options render what they say.

mod manifests;

use std::collections::BTreeSet;
use std::path::Path;

use manifests::{
    CHART, DEPLOY, documents, helm, helm_template, kustomize, of_kind, one, overlay, run, set_args,
    tools_dir,
};
use serde_json::{Value, json};

/// The Kubernetes version the schemas are of (scripts/build-chart-tools.sh extracts it).
const KUBERNETES: &str = "1.36.0";

/// One set of `--set` values and what it is for.
struct Values {
    name: &'static str,
    namespace: &'static str,
    set: &'static [&'static str],
}

/// The values users set, one concern at a time.
const MATRIX: &[Values] = &[
    Values {
        name: "defaults (generated certificate)",
        namespace: "ebb-system",
        set: &[],
    },
    Values {
        name: "replicaCount 1",
        namespace: "ebb-system",
        set: &["replicaCount=1"],
    },
    Values {
        name: "replicaCount 3, minAvailable 2",
        namespace: "ebb-system",
        set: &["replicaCount=3", "podDisruptionBudget.minAvailable=2"],
    },
    Values {
        name: "cert-manager, own CA",
        namespace: "autoscaling",
        set: &["tls.certManager.enabled=true"],
    },
    Values {
        name: "cert-manager, ClusterIssuer",
        namespace: "autoscaling",
        set: &[
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=corp-ca",
            "tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    },
    Values {
        name: "a Secret of your own",
        namespace: "autoscaling",
        set: &["tls.existingSecret=ebb-tls", "tls.caBundle=Q0E="],
    },
    Values {
        name: "ServiceMonitor and PodMonitor",
        namespace: "ebb-system",
        set: &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
            "metrics.podMonitor.enabled=true",
            "metrics.prometheusAnnotations=false",
        ],
    },
    Values {
        name: "NetworkPolicy",
        namespace: "ebb-system",
        set: &[
            "networkPolicy.enabled=true",
            "networkPolicy.ingress.apiServer[0].ipBlock.cidr=10.0.0.0/24",
            "networkPolicy.ingress.metrics[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
            "networkPolicy.egress.sources.to[0].namespaceSelector.matchLabels.team=data",
        ],
    },
    Values {
        name: "image by digest",
        namespace: "ebb-system",
        set: &[
            "image.repository=registry.example.com:5000/ebb",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "image.pullPolicy=Always",
        ],
    },
    Values {
        name: "Secrets of two namespaces only",
        namespace: "ebb-system",
        set: &["secretAccess.namespaces={team-a,team-b}"],
    },
    Values {
        name: "Direct and Shadow only, no APIService, names overridden",
        namespace: "ebb-system",
        set: &["apiService.create=false", "fullnameOverride=scaler"],
    },
];

fn render(values: &Values) -> String {
    helm_template(values.namespace, values.set)
        .unwrap_or_else(|e| panic!("helm template ({}): {e}", values.name))
}

/// Each render to check: its name and its manifest.
fn all_renders() -> Vec<(String, String)> {
    let mut renders = vec![("deploy/".to_string(), kustomize(Path::new(DEPLOY)))];
    for components in [
        &["cert-manager"][..],
        &["network-policy"],
        &["cert-manager", "network-policy"],
    ] {
        renders.push((
            format!("deploy/ + components/{}", components.join(" + ")),
            kustomize(overlay(components).path()),
        ));
    }
    renders.extend(
        MATRIX
            .iter()
            .map(|v| (format!("chart: {}", v.name), render(v))),
    );
    renders
}

// ---- helm lint ---------------------------------------------------------------------------

#[test]
fn helm_lint_strict_passes_for_every_set_of_values() {
    let mut failed = Vec::new();
    for values in MATRIX {
        let mut args = vec!["lint", "--strict", CHART, "--namespace", values.namespace];
        args.extend(set_args(values.set));
        match helm(&args) {
            // Not even an [INFO] (such as "icon is recommended", which --strict lets through).
            Ok(out)
                if out.contains("1 chart(s) linted, 0 chart(s) failed")
                    && !["[INFO]", "[WARNING]", "[ERROR]"]
                        .iter()
                        .any(|level| out.contains(level)) => {}
            Ok(out) | Err(out) => failed.push(format!("{}:\n{out}", values.name)),
        }
    }
    assert!(
        failed.is_empty(),
        "helm lint --strict:\n{}",
        failed.join("\n")
    );
}

// ---- kubeconform -------------------------------------------------------------------------

/// The JSON schema kubeconform reads for one version of a CRD: its openAPIV3Schema made strict
/// as `kubectl` validates (kubeconform's openapi2jsonschema.py: no property beyond those
/// declared, int-or-string as either), and `nullable` as JSON Schema says it.
fn crd_version_schema(schema: &Value) -> Value {
    /// One schema, and the schemas in it: under `properties` a map of them, under `items`,
    /// `additionalProperties` and `not` one, under `allOf`, `anyOf` and `oneOf` a list.
    fn convert(v: &Value) -> Value {
        let Value::Object(map) = v else {
            return v.clone();
        };
        let each = |x: &Value| match x {
            Value::Array(list) => Value::Array(list.iter().map(convert).collect()),
            other => convert(other),
        };
        let mut out: serde_json::Map<String, Value> = map
            .iter()
            .map(|(k, x)| {
                let x = match k.as_str() {
                    "properties" | "patternProperties" => Value::Object(
                        x.as_object()
                            .unwrap()
                            .iter()
                            .map(|(name, s)| (name.clone(), convert(s)))
                            .collect(),
                    ),
                    "items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf" => {
                        each(x)
                    }
                    _ => x.clone(),
                };
                (k.clone(), x)
            })
            .collect();
        if map.get("x-kubernetes-int-or-string") == Some(&json!(true))
            || map.get("format") == Some(&json!("int-or-string"))
        {
            out.remove("type");
            out.remove("format");
            out.insert(
                "oneOf".into(),
                json!([{ "type": "string" }, { "type": "integer" }]),
            );
        }
        if map.contains_key("properties")
            && !map.contains_key("additionalProperties")
            && map.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
        {
            out.insert("additionalProperties".into(), json!(false));
        }
        if map.get("nullable") == Some(&json!(true)) {
            match out.get("type").cloned() {
                Some(Value::String(t)) => {
                    out.insert("type".into(), json!([t, "null"]));
                }
                _ if out.contains_key("oneOf") => {
                    out.get_mut("oneOf")
                        .unwrap()
                        .as_array_mut()
                        .unwrap()
                        .push(json!({ "type": "null" }));
                }
                _ => {}
            }
        }
        Value::Object(out)
    }
    let mut root = convert(schema);
    // What every object has beside its schema's own fields (the CRDs declare at most their types).
    let props = root["properties"].as_object_mut().expect("properties");
    for (field, schema) in [
        ("apiVersion", json!({ "type": "string" })),
        ("kind", json!({ "type": "string" })),
        ("metadata", json!({ "type": "object" })),
    ] {
        props.entry(field).or_insert(schema);
    }
    root["additionalProperties"] = json!(false);
    root
}

/// Writes the JSON schema of every version of every CRD in `manifests` where kubeconform's
/// `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` looks for it; returns the
/// kinds written.
fn write_crd_schemas(manifests: &[String], dir: &Path) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for crd in manifests
        .iter()
        .flat_map(|m| documents(m))
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        let group = crd["spec"]["group"].as_str().unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let name = version["name"].as_str().unwrap();
            let schema = crd_version_schema(&version["schema"]["openAPIV3Schema"]);
            let path = dir
                .join(group)
                .join(format!("{}_{name}.json", kind.to_lowercase()));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_vec_pretty(&schema).unwrap()).unwrap();
            kinds.insert(format!("{group}/{name}/{kind}"));
        }
    }
    kinds
}

/// kubeconform with every schema this project validates against.
struct Kubeconform {
    crd_schemas: tempfile::TempDir,
}

impl Kubeconform {
    fn new() -> Kubeconform {
        let crd_schemas = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut crds = vec![std::fs::read_to_string(format!("{DEPLOY}/crd.yaml")).unwrap()];
        for dir in ["cert-manager-crds", "prometheus-operator-crds"] {
            for entry in std::fs::read_dir(tools_dir().join(dir)).unwrap() {
                crds.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        let kinds = write_crd_schemas(&crds, crd_schemas.path());
        for kind in [
            "ebb.dev/v1alpha1/ScaledTarget",
            "cert-manager.io/v1/Certificate",
            "cert-manager.io/v1/Issuer",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "monitoring.coreos.com/v1/PodMonitor",
        ] {
            assert!(kinds.contains(kind), "no schema for {kind}: {kinds:?}");
        }
        Kubeconform { crd_schemas }
    }

    /// kubeconform -strict over each manifest (one run for all: each run loads the schemas
    /// anew): one JSON result per object, per manifest.
    fn check_all(&self, manifests: &[&str]) -> Vec<Vec<Value>> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let files: Vec<String> = manifests
            .iter()
            .enumerate()
            .map(|(i, manifest)| {
                let file = dir.path().join(format!("{i}.yaml"));
                std::fs::write(&file, manifest).unwrap();
                file.to_str().unwrap().to_string()
            })
            .collect();
        let k8s = tools_dir().join("kubernetes-json-schema");
        let k8s_location = format!(
            "{}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            k8s.display()
        );
        let crd_location = format!(
            "{}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            self.crd_schemas.path().display()
        );
        let mut args = vec![
            "-strict",
            "-verbose",
            "-output",
            "json",
            "-kubernetes-version",
            KUBERNETES,
            "-schema-location",
            &k8s_location,
            "-schema-location",
            &crd_location,
        ];
        args.extend(files.iter().map(String::as_str));
        // Exit status 1 for invalid objects: the JSON says which.
        let out = run(&tools_dir().join("kubeconform"), &args).unwrap_or_else(|e| e);
        let json_start = out
            .find('{')
            .unwrap_or_else(|| panic!("kubeconform: {out}"));
        let report: Value = serde_json::Deserializer::from_str(&out[json_start..])
            .into_iter()
            .next()
            .unwrap()
            .unwrap_or_else(|e| panic!("kubeconform's JSON ({e}): {out}"));
        let results = report["resources"].as_array().cloned().unwrap_or_default();
        files
            .iter()
            .map(|file| {
                results
                    .iter()
                    .filter(|r| r["filename"] == file.as_str())
                    .cloned()
                    .collect()
            })
            .collect()
    }
}

/// `kind name: status (message)` of each result that is not `statusValid`.
fn not_valid(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .filter(|r| r["status"] != "statusValid")
        .map(|r| {
            format!(
                "{} {}: {} ({})",
                r["kind"], r["name"], r["status"], r["msg"]
            )
        })
        .collect()
}

#[test]
fn kubeconform_strict_finds_every_object_valid() {
    let kubeconform = Kubeconform::new();
    let mut failed = Vec::new();
    let renders = all_renders();
    let manifests: Vec<&str> = renders.iter().map(|(_, m)| m.as_str()).collect();
    let all_results = kubeconform.check_all(&manifests);
    for ((name, manifest), results) in renders.iter().zip(all_results) {
        let objects = documents(manifest).len();
        let bad = not_valid(&results);
        if !bad.is_empty() || results.len() != objects {
            failed.push(format!(
                "{name}: {} of {objects} objects checked\n  {}",
                results.len(),
                bad.join("\n  ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "kubeconform -strict:\n{}",
        failed.join("\n")
    );
}

/// The schemas are really in use: a mistyped field, a value of the wrong type and a
/// ScaledTarget that breaks its CRD's schema are each found; a ScaledTarget as the demo
/// writes it passes.
#[test]
fn kubeconform_finds_what_the_api_server_would_refuse() {
    let kubeconform = Kubeconform::new();
    let scaled_target = |spec: Value| {
        serde_yaml::to_string(&json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
            "metadata": { "name": "worker", "namespace": "demo" },
            "spec": spec,
        }))
        .unwrap()
    };
    let good = json!({
        "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
        "mode": "Direct", "minReplicas": 1, "maxReplicas": 20, "pollingInterval": "5s",
        "metrics": [{
            "name": "backlog",
            "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": "jobs" },
            "target": { "type": "AverageValue", "averageValue": "20" }
        }],
        "fallback": { "failureThreshold": 3, "replicas": 4 },
        "adaptive": {}
    });
    let mut unknown_field = good.clone();
    unknown_field["fallback"]["replica"] = json!(4);
    let mut wrong_type = good.clone();
    wrong_type["maxReplicas"] = json!("twenty");
    let mut typo_in_deployment: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{DEPLOY}/deployment.yaml")).unwrap(),
    )
    .unwrap();
    typo_in_deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] =
        json!("Always");
    let cases = [
        (
            "the demo's ScaledTarget",
            scaled_target(good),
            "statusValid",
        ),
        (
            "an unknown field",
            scaled_target(unknown_field),
            "statusInvalid",
        ),
        (
            "a string for an integer",
            scaled_target(wrong_type),
            "statusInvalid",
        ),
        (
            "a mistyped Deployment field",
            serde_yaml::to_string(&typo_in_deployment).unwrap(),
            "statusInvalid",
        ),
    ];
    let manifests: Vec<&str> = cases.iter().map(|(_, m, _)| m.as_str()).collect();
    for ((what, _, status), results) in cases.iter().zip(kubeconform.check_all(&manifests)) {
        assert!(
            results.len() == 1 && results[0]["status"] == *status,
            "{what}: {results:?}"
        );
    }
}

// ---- kube-score --------------------------------------------------------------------------

/// kube-score's checks left out for every render, and why.
const KUBE_SCORE_IGNORED: &[(&str, &str)] = &[(
    "container-image-pull-policy",
    // kube-score wants `Always` so that imagePullSecrets are checked at every pod start. The
    // image is named by a release tag or a digest, which do not move, and with `Always` a
    // registry outage would keep ebb (and with it every HPA that reads external metrics) from
    // restarting. `image.pullPolicy=Always` is one value away for clusters that want it.
    "IfNotPresent: a registry outage must not keep the autoscaler from restarting",
)];

/// kube-score's checks left out for one render, because of what the user chose in it.
fn kube_score_ignored_for(docs: &[Value]) -> Vec<(&'static str, &'static str)> {
    let mut ignored = Vec::new();
    if of_kind(docs, "NetworkPolicy").is_empty() {
        // The NetworkPolicy is opt-in (`networkPolicy.enabled`): its peers (where the
        // kube-apiserver calls from, where Prometheus runs, the sources' ports) are the
        // cluster's, and a wrong default would cut ebb off from them. The render with it on
        // is checked with this test in force.
        ignored.push(("pod-networkpolicy", "NetworkPolicy off"));
    }
    if of_kind(docs, "Deployment")
        .iter()
        .any(|d| d["spec"]["replicas"] == 1)
    {
        // One replica is the user's choice (replicaCount=1), which the chart supports: the
        // PodDisruptionBudget still lets a drain through.
        ignored.push(("deployment-replicas", "replicaCount 1"));
    }
    ignored
}

/// kube-score's findings (WARNING and CRITICAL lines) for `manifest`, with the optional checks
/// that apply to ebb enabled too.
fn kube_score(manifest: &str) -> Vec<String> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, manifest).unwrap();
    let mut args = vec![
        "score",
        "--output-format",
        "ci",
        "--kubernetes-version",
        "v1.36",
        "--enable-optional-test",
        "container-seccomp-profile",
        "--enable-optional-test",
        "container-ports-check",
    ];
    let ignored = kube_score_ignored_for(&documents(manifest));
    for (test, _why) in KUBE_SCORE_IGNORED.iter().chain(&ignored) {
        args.extend(["--ignore-test", test]);
    }
    args.push(file.to_str().unwrap());
    // Exit status 1 on a CRITICAL finding: the lines say which.
    let out = run(&tools_dir().join("kube-score"), &args).unwrap_or_else(|e| e);
    assert!(out.contains("[OK]"), "kube-score checked nothing: {out}");
    out.lines()
        .filter(|l| l.starts_with("[WARNING]") || l.starts_with("[CRITICAL]"))
        .map(str::to_string)
        .collect()
}

#[test]
fn kube_score_finds_nothing() {
    let mut failed = Vec::new();
    for (name, manifest) in all_renders() {
        let findings = kube_score(&manifest);
        if !findings.is_empty() {
            failed.push(format!("{name}:\n  {}", findings.join("\n  ")));
        }
    }
    assert!(failed.is_empty(), "kube-score:\n{}", failed.join("\n"));
}

/// The checks are in force: kube-score finds a container without limits and a pod that runs
/// as root in what would otherwise pass.
#[test]
fn kube_score_finds_what_it_should() {
    let mut docs = documents(&kustomize(Path::new(DEPLOY)));
    let deployment = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["containers"][0]["resources"]["limits"] = Value::Null;
    pod["securityContext"]["runAsUser"] = json!(0);
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    let manifest: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    let findings = kube_score(&manifest.join("---\n")).join("\n");
    for finding in [
        "CPU limit is not set",
        "Memory limit is not set",
        "The container is running with a low user ID",
        "The pod has a container with a writable root filesystem",
    ] {
        assert!(findings.contains(finding), "{finding}: {findings}");
    }
}

// ---- what the values mean ----------------------------------------------------------------

#[test]
fn the_values_schema_refuses_wrong_values() {
    for (set, what) in [
        ("replicaCount=two", "replicaCount"),
        ("replicaCount=0", "replicaCount"),
        ("replicas=3", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("logJson=yes", "logJson"),
        ("ports.metrics=80800", "metrics"),
        ("podDisruptionBudget.maxUnavailable=0", "maxUnavailable"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("secretAccess.namespaces={Team_A}", "namespaces"),
    ] {
        let err = helm_template("ebb-system", &[set]).expect_err(&format!("--set {set} rendered"));
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(what),
            "--set {set}: {err}"
        );
    }
}

/// `secretAccess.namespaces`: a Role and RoleBinding per listed namespace, no cluster-wide
/// Secret grant, and ebb told the list; by default the ClusterRole grants every namespace's.
#[test]
fn secret_access_is_granted_where_it_is_listed_and_nowhere_else() {
    let grants_secrets = |role: &Value| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("secrets"))
        })
    };
    let env = |docs: &[Value]| -> Option<Value> {
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "EBB_SECRET_NAMESPACES")
            .map(|e| e["value"].clone())
    };
    let defaults = documents(&helm_template("ebb-system", &[]).unwrap());
    assert!(
        of_kind(&defaults, "ClusterRole")
            .into_iter()
            .any(grants_secrets)
    );
    assert!(!defaults.iter().any(|d| d["kind"] == "Role"));
    assert_eq!(env(&defaults), None);

    let docs = documents(
        &helm_template("ebb-system", &["secretAccess.namespaces={team-a,team-b}"]).unwrap(),
    );
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert!(
        !cluster_roles.iter().any(|r| grants_secrets(r)),
        "{cluster_roles:?}"
    );
    for ns in ["team-a", "team-b"] {
        let in_ns = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["namespace"] == ns)
                .unwrap_or_else(|| panic!("no {kind} in {ns}"))
        };
        let role = in_ns("Role");
        assert!(grants_secrets(role), "{role}");
        let binding = in_ns("RoleBinding");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["namespace"], "ebb-system");
        assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    }
    assert_eq!(env(&docs), Some(json!("team-a,team-b")));
}

/// The PodDisruptionBudget lets a node drain evict a replica whatever the replica count: with
/// `minAvailable: 1` and 1 replica, no drain could.
#[test]
fn the_disruption_budget_never_blocks_a_drain() {
    for replicas in [1, 2, 3] {
        let set = format!("replicaCount={replicas}");
        let docs = documents(&helm_template("ebb-system", &[&set]).unwrap());
        let pdb = &one(&docs, "PodDisruptionBudget")["spec"];
        assert_eq!(pdb["maxUnavailable"], 1, "{set}: {pdb}");
        assert!(pdb["minAvailable"].is_null(), "{set}: {pdb}");
    }
    let base = documents(&kustomize(Path::new(DEPLOY)));
    assert_eq!(
        one(&base, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    // minAvailable instead, when below the replica count.
    let docs = documents(
        &helm_template(
            "ebb-system",
            &["replicaCount=3", "podDisruptionBudget.minAvailable=2"],
        )
        .unwrap(),
    );
    let pdb = &one(&docs, "PodDisruptionBudget")["spec"];
    assert_eq!(
        (pdb["minAvailable"].clone(), pdb["maxUnavailable"].clone()),
        (json!(2), Value::Null)
    );
    let err = helm_template("ebb-system", &["podDisruptionBudget.minAvailable=2"])
        .expect_err("minAvailable 2 of 2 replicas rendered");
    assert!(err.contains("must be below replicaCount"), "{err}");
}

/// Objects outside the release namespace (cluster-scoped, and the RoleBinding in kube-system)
/// carry the namespace in their names: a release `ebb` in `team-a` and one in `team-b` share
/// none, but the APIService, which is one per cluster.
#[test]
fn two_releases_in_two_namespaces_share_no_name() {
    let outside = |namespace: &str| -> BTreeSet<String> {
        let docs = documents(&helm_template(namespace, &[]).unwrap());
        docs.iter()
            .filter(|d| d["metadata"]["namespace"] != namespace)
            .filter(|d| d["kind"] != "CustomResourceDefinition")
            .map(|d| {
                let field = |v: &Value| v.as_str().unwrap().to_string();
                format!("{} {}", field(&d["kind"]), field(&d["metadata"]["name"]))
            })
            .collect()
    };
    let (a, b) = (outside("team-a"), outside("team-b"));
    assert!(a.len() >= 6, "{a:?}");
    let shared: Vec<_> = a.intersection(&b).collect();
    assert_eq!(
        shared,
        ["APIService v1beta1.external.metrics.k8s.io"],
        "{a:?}"
    );
}

/// Prometheus finds ebb's /metrics each way the chart offers, on the port ebb listens on.
#[test]
fn prometheus_can_scrape_the_metrics_port() {
    let docs = documents(
        &helm_template(
            "ebb-system",
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.podMonitor.enabled=true",
                "ports.metrics=9102",
            ],
        )
        .unwrap(),
    );
    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    let listen = env
        .iter()
        .find(|e| e["name"] == "EBB_METRICS_LISTEN")
        .unwrap()["value"]
        .clone();
    assert_eq!(listen, "0.0.0.0:9102");
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(port["containerPort"], 9102);
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9102");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    // The Service's metrics port leads to it; the ServiceMonitor names that port and selects
    // the Service; the PodMonitor names the container's port and selects the pods.
    let service = one(&docs, "Service");
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port on the Service");
    assert_eq!(service_port["targetPort"], "metrics");
    let selects = |selector: &Value, labels: &Value| {
        selector["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(selects(
        &monitor["spec"]["selector"],
        &service["metadata"]["labels"]
    ));
    let monitor = one(&docs, "PodMonitor");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert!(selects(
        &monitor["spec"]["selector"],
        &pod["metadata"]["labels"]
    ));
    // Without the options, no Operator objects (their CRDs may be missing).
    let docs = documents(&helm_template("ebb-system", &[]).unwrap());
    assert!(of_kind(&docs, "ServiceMonitor").is_empty() && of_kind(&docs, "PodMonitor").is_empty());
}

/// The NetworkPolicy selects ebb's pods and lets in and out only what ebb needs: the API and
/// metrics ports in (from the peers given), DNS, the kube-apiserver and the sources out.
#[test]
fn the_network_policy_allows_what_ebb_needs() {
    let docs = documents(&helm_template("ebb-system", &[]).unwrap());
    assert!(of_kind(&docs, "NetworkPolicy").is_empty(), "off by default");
    let values = MATRIX.iter().find(|v| v.name == "NetworkPolicy").unwrap();
    let docs = documents(&render(values));
    let policy = &one(&docs, "NetworkPolicy")["spec"];
    let pod_labels = &one(&docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in policy["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v);
    }
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = policy["ingress"].as_array().unwrap();
    let ports = |rule: &Value| -> Vec<Value> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].clone())
            .collect()
    };
    assert_eq!(ingress.len(), 2);
    assert_eq!(ports(&ingress[0]), [json!("https")]);
    assert_eq!(
        ingress[0]["from"],
        json!([{ "ipBlock": { "cidr": "10.0.0.0/24" } }])
    );
    assert_eq!(ports(&ingress[1]), [json!("metrics")]);
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let egress = policy["egress"].as_array().unwrap();
    let egress_ports: Vec<Vec<Value>> = egress.iter().map(ports).collect();
    assert_eq!(
        egress_ports[0],
        [json!(53), json!(53)],
        "DNS over UDP and TCP"
    );
    assert_eq!(
        egress_ports[1],
        [json!(443), json!(6443)],
        "the kube-apiserver"
    );
    assert!(egress_ports[2].contains(&json!(9090)) && egress_ports[2].contains(&json!(15672)));
    assert_eq!(
        egress[2]["to"][0]["namespaceSelector"]["matchLabels"]["team"],
        "data"
    );
    // The named ports are the container's.
    let container = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let names: Vec<&Value> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert!(names.contains(&&json!("https")) && names.contains(&&json!("metrics")));
}
