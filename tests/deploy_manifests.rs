//! deploy/ installed on the real control plane, both ways ebb ships: the kustomize base
//! (`kubectl kustomize deploy/`) and the Helm chart (`helm template deploy/helm/ebb`). Each is
//! server-side applied to a control plane of its own (there is one external metrics APIService
//! per cluster) and checked for what came up: the CRD Established; 2 replicas with probes on
//! ebb's health endpoints, Ready on kwok's fake node (kwok runs no container: Ready is kwok's
//! word, not ebb's); a PodDisruptionBudget that counts them; the ServiceAccount's permissions
//! as the API server's authorizer decides them (SubjectAccessReview); and `ebb serve` started
//! with the Deployment's own arguments and environment as that ServiceAccount: it answers the
//! probes' paths, takes the Lease, and serves the APIService through the aggregator.
//!
//! Renders that need no cluster check that the chart and the base stay in step.

mod manifests;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use ebb::localstack::kube::{ControlPlane, ControlPlaneOptions, NODE_NAME, apply_yaml};
use ebb::localstack::process::{ManagedProcess, free_port};
use ebb::localstack::{Stack, StackOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use manifests::{
    CHART, DEPLOY, documents, from_json, helm_template, helm_with_secret, kustomize, named,
    of_kind, one, overlay, tools_dir,
};
use serde_json::{Value, json};
use support::{eventually, start_stack};

const EXTERNAL_METRICS: &str = "v1beta1.external.metrics.k8s.io";
const MINUTE: Duration = Duration::from_secs(60);

// ---- what an installation is made of -----------------------------------------------------

/// Names an installation is expected to have, and what the test learned from its render.
struct Install {
    namespace: String,
    /// Deployment, Service and ServiceAccount.
    name: String,
    /// The Secret the Deployment mounts for the serving certificate.
    tls_secret: String,
    lease_name: String,
}

impl Install {
    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// Starts a control plane of its own (no HPA controller: nothing here scales).
fn control_plane() -> Stack {
    start_stack(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn kube(stack: &Stack) -> &ControlPlane {
    stack.kube.as_ref().expect("a control plane")
}

/// A kubernetes.io/tls Secret with a serving certificate from the cluster CA, for the Service's
/// name, and for loopback, where this test runs `ebb serve`.
async fn create_tls_secret(client: &kube::Client, kube: &ControlPlane, install: &Install) {
    let svc = format!("{}.{}.svc", install.name, install.namespace);
    let cert = kube
        .serving_cert(&[&svc, "localhost", "127.0.0.1"])
        .expect("a serving certificate");
    let secret: Secret = from_json(json!({
        "metadata": { "name": install.tls_secret, "namespace": install.namespace },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": cert.cert_pem, "tls.key": cert.key_pem },
    }));
    Api::<Secret>::namespaced(client.clone(), &install.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the TLS Secret");
}

// ---- the checks --------------------------------------------------------------------------

/// Everything an installed `install` should show on the control plane.
async fn check_installation(stack: &Stack, install: &Install) {
    let kube = kube(stack);
    let client = kube.client().await.unwrap();
    let ns = &install.namespace;

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    eventually(MINUTE, "the CRD to be Established", || async {
        let crd = crds.get("scaledtargets.ebb.dev").await.ok()?;
        let conditions = crd.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(&install.name)
        .await
        .expect("the Deployment");
    let spec = deployment.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_spec = spec.template.spec.clone().unwrap();
    assert_eq!(
        pod_spec.service_account_name.as_deref(),
        Some(install.name.as_str())
    );
    let container = &pod_spec.containers[0];
    let api_port = check_container(container, &pod_spec, install);

    // The Service selects the Deployment's pods and forwards to the API port; the APIService
    // points at the Service.
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get(&install.name)
        .await
        .expect("the Service");
    let service_spec = service.spec.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    let service_selector = service_spec.selector.unwrap();
    assert!(
        service_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service's selector {service_selector:?} does not select pods labelled {pod_labels:?}"
    );
    let service_port = &service_spec.ports.unwrap()[0];
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String("https".into()))
    );
    assert_eq!(
        named_port(container, "https"),
        api_port,
        "the https port is where ebb listens"
    );
    let apiservice = Api::<APIService>::all(client.clone())
        .get(EXTERNAL_METRICS)
        .await
        .expect("the APIService");
    let backend = apiservice
        .spec
        .and_then(|s| s.service)
        .expect("a service-backed APIService");
    assert_eq!(
        (
            backend.namespace.as_deref(),
            backend.name.as_deref(),
            backend.port
        ),
        (
            Some(ns.as_str()),
            Some(install.name.as_str()),
            Some(service_port.port)
        )
    );

    // kwok runs the pods on its fake node; the disruption controller counts them for the PDB.
    let selector = spec
        .selector
        .match_labels
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    eventually(MINUTE, "2 ready replicas", || async {
        let status = deployments.get(&install.name).await.ok()?.status?;
        (status.ready_replicas == Some(2)).then_some(())
    })
    .await;
    let running = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 2);
    for pod in &running.items {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns);
    let pdb = pdbs.get(&install.name).await.expect("the PDB");
    assert_eq!(
        pdb.spec.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );
    eventually(
        MINUTE,
        "the PDB to count 2 healthy pods and allow 1 disruption",
        || async {
            let s = pdbs.get(&install.name).await.ok()?.status?;
            (s.expected_pods == Some(2)
                && s.current_healthy == Some(2)
                && s.disruptions_allowed == Some(1))
            .then_some(())
        },
    )
    .await;

    check_permissions(&client, install).await;
    serve_as_the_deployment(kube, &client, install, container, &running.items[0]).await;
}

/// The container's probes, environment, resources and hardening; returns the API port ebb
/// is told to listen on.
fn check_container(
    container: &Container,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    install: &Install,
) -> i32 {
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("an HTTP probe");
        assert_eq!(get.port, IntOrString::String("https".into()));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        get.path.unwrap()
    };
    assert_eq!(probe_path(&container.startup_probe), "/livez");
    assert_eq!(probe_path(&container.liveness_probe), "/livez");
    assert_eq!(probe_path(&container.readiness_probe), "/readyz");

    let env: BTreeMap<String, _> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let field_ref = |name: &str| {
        env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field_ref("EBB_IDENTITY").as_deref(), Some("metadata.name"));
    assert_eq!(
        field_ref("EBB_LEADER_ELECTION_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    let value = |name: &str| env[name].value.clone().unwrap_or_default();
    assert_eq!(value("EBB_LEASE_NAME"), install.lease_name);
    assert!(!value("RUST_LOG").is_empty());
    // The certificate files come from the Secret's volume.
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| value("EBB_TLS_CERT_FILE").starts_with(&format!("{}/", m.mount_path)))
        .expect("EBB_TLS_CERT_FILE is in a mounted volume");
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(install.tls_secret.as_str())
    );
    assert_eq!(
        value("EBB_TLS_PRIVATE_KEY_FILE"),
        format!("{}/tls.key", mount.mount_path)
    );
    assert_eq!(
        value("EBB_TLS_CERT_FILE"),
        format!("{}/tls.crt", mount.mount_path)
    );

    let resources = container.resources.as_ref().unwrap();
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list.as_ref().unwrap_or_else(|| panic!("no {what}"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}: {list:?}"
        );
    }
    let pod_sc = pod.security_context.as_ref().unwrap();
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert!(pod_sc.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );

    value("EBB_API_LISTEN")
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("EBB_API_LISTEN is host:port")
}

fn named_port(container: &Container, name: &str) -> i32 {
    container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no container port {name}"))
        .container_port
}

/// Asks the authorizer what the ServiceAccount may do. What ebb does at run time is allowed;
/// neighbours of it that ebb does not need are not.
async fn check_permissions(client: &kube::Client, install: &Install) {
    let user = install.user();
    let groups = [
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{}", install.namespace),
        "system:authenticated".to_string(),
    ];
    let can = |attrs: Value| {
        let review: SubjectAccessReview = from_json(json!({
            "spec": { "user": user, "groups": groups, "resourceAttributes": attrs }
        }));
        let client = client.clone();
        async move {
            Api::<SubjectAccessReview>::all(client)
                .create(&PostParams::default(), &review)
                .await
                .expect("a SubjectAccessReview")
                .status
                .unwrap()
                .allowed
        }
    };
    let ns = install.namespace.as_str();
    let attrs = |verb: &str, group: &str, resource: &str| json!({ "verb": verb, "group": group, "resource": resource });
    let within = |mut attrs: Value, ns: &str| {
        attrs["namespace"] = ns.into();
        attrs
    };
    // RBAC takes effect when the authorizer's informers see the bindings.
    eventually(
        MINUTE,
        "the ServiceAccount's bindings to take effect",
        || async {
            can(attrs("list", "ebb.dev", "scaledtargets"))
                .await
                .then_some(())
        },
    )
    .await;
    let sub = |mut attrs: Value, subresource: &str| {
        attrs["subresource"] = subresource.into();
        attrs
    };
    let allowed = [
        attrs("watch", "ebb.dev", "scaledtargets"),
        within(
            sub(attrs("patch", "ebb.dev", "scaledtargets"), "status"),
            "team-a",
        ),
        within(
            sub(attrs("patch", "apps", "deployments"), "scale"),
            "team-a",
        ),
        within(sub(attrs("get", "apps", "deployments"), "scale"), "team-a"),
        within(
            attrs("create", "autoscaling", "horizontalpodautoscalers"),
            "team-a",
        ),
        within(
            attrs("delete", "autoscaling", "horizontalpodautoscalers"),
            "team-a",
        ),
        within(attrs("create", "events.k8s.io", "events"), "team-a"),
        // Source credentials and webhooks named by a ScaledTarget (rbac-controller.yaml).
        within(attrs("get", "", "secrets"), "team-a"),
        within(attrs("create", "coordination.k8s.io", "leases"), ns),
        within(attrs("update", "coordination.k8s.io", "leases"), ns),
        attrs("create", "authentication.k8s.io", "tokenreviews"),
        attrs("create", "authorization.k8s.io", "subjectaccessreviews"),
        json!({ "verb": "get", "resource": "configmaps", "namespace": "kube-system",
                "name": "extension-apiserver-authentication" }),
    ];
    let denied = [
        // Reading Secrets by name only: never listing or watching them.
        attrs("list", "", "secrets"),
        within(attrs("watch", "", "secrets"), "team-a"),
        within(attrs("create", "", "secrets"), ns),
        within(attrs("get", "", "configmaps"), "kube-system"),
        within(attrs("patch", "apps", "deployments"), "team-a"),
        within(attrs("create", "", "pods"), "team-a"),
        within(attrs("patch", "ebb.dev", "scaledtargets"), "team-a"),
        within(attrs("delete", "coordination.k8s.io", "leases"), ns),
        attrs(
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
        ),
        attrs("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ];
    let mut wrong = Vec::new();
    for (expected, list) in [(true, &allowed[..]), (false, &denied[..])] {
        for a in list {
            if can(a.clone()).await != expected {
                wrong.push(format!(
                    "{}: {a}",
                    if expected { "denied" } else { "allowed" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));

    // The HPA controller reads the metrics ebb serves.
    let hpa = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
    let review: SubjectAccessReview = from_json(json!({ "spec": { "user": hpa,
        "resourceAttributes": { "verb": "list", "group": "external.metrics.k8s.io",
                                "resource": "rabbitmq-backlog", "namespace": "team-a" } } }));
    let status = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(status.allowed, "{hpa} may not read external metrics");
}

/// What the kubelet would do with the Deployment, minus the container: `ebb serve` with the
/// container's arguments and environment (field references resolved for `pod`), the
/// ServiceAccount's token, and the TLS Secret's files where the volume mount puts them. Only
/// the listen addresses move to free loopback ports.
async fn serve_as_the_deployment(
    kube: &ControlPlane,
    client: &kube::Client,
    install: &Install,
    container: &Container,
    pod: &Pod,
) {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    let ns = &install.namespace;
    let pod_name = pod.metadata.name.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(
            &install.name,
            &PostParams::default(),
            &from_json::<TokenRequest>(json!({ "spec": { "audiences": [] } })),
        )
        .await
        .expect("a token for the ServiceAccount")
        .status
        .unwrap()
        .token;
    let kubeconfig = dir.path().join("kubeconfig");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &kubeconfig,
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "c", "cluster": {
                "server": kube.server_url, "certificate-authority-data": b64(kube.ca_pem()) } }],
            "users": [{ "name": "sa", "user": { "token": token } }],
            "contexts": [{ "name": "sa", "context": { "cluster": "c", "user": "sa" } }],
            "current-context": "sa",
        }))
        .unwrap(),
    )
    .unwrap();

    // The Secret volume: each key a file.
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&install.tls_secret)
        .await
        .expect("the TLS Secret");
    let volume_dir = dir.path().join("serving-cert");
    std::fs::create_dir(&volume_dir).unwrap();
    for (key, value) in secret.data.unwrap() {
        std::fs::write(volume_dir.join(key), value.0).unwrap();
    }
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "serving-cert")
        .expect("the serving-cert mount");

    let api_port = free_port();
    // As in a container, ebb is PID 1 of a PID namespace of its own, where the kernel drops
    // every signal it has no handler for: the kubelet's SIGTERM included.
    let mut cmd = Command::new(on_path("unshare"));
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        env!("CARGO_BIN_EXE_ebb"),
    ])
    .env_clear()
    .env("KUBECONFIG", &kubeconfig)
    .args(container.args.clone().unwrap_or_default());
    for var in container.env.clone().unwrap_or_default() {
        let value = match (var.value, var.value_from.and_then(|v| v.field_ref)) {
            (Some(value), _) => value,
            (None, Some(f)) if f.field_path == "metadata.name" => pod_name.clone(),
            (None, Some(f)) if f.field_path == "metadata.namespace" => ns.clone(),
            other => panic!(
                "{}: an env source this test cannot resolve: {other:?}",
                var.name
            ),
        };
        let value = match var.name.as_str() {
            "EBB_API_LISTEN" => format!("127.0.0.1:{api_port}"),
            "EBB_METRICS_LISTEN" => format!("127.0.0.1:{}", free_port()),
            _ => match value.strip_prefix(&mount.mount_path) {
                Some(file) => format!("{}{file}", volume_dir.display()),
                None => value,
            },
        };
        cmd.env(var.name, value);
    }
    let log = dir.path().join("ebb.log");
    let ebb = ManagedProcess::spawn("ebb serve", cmd, &log).expect("ebb serve starts");

    // The probes' paths, over HTTPS as the kubelet asks (verifying the certificate, which the
    // kubelet does not).
    ebb::install_crypto_provider();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(kube.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for probe in [&container.startup_probe, &container.readiness_probe] {
        let path = probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap();
        let url = format!("https://localhost:{api_port}{path}");
        eventually(MINUTE, &format!("{url} to answer 200"), || async {
            if !ebb.is_running() {
                panic!("ebb serve exited:\n{}", ebb.log_tail(30));
            }
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
    let leases = Api::<Lease>::namespaced(client.clone(), ns);
    eventually(MINUTE, "ebb serve to hold the Lease", || async {
        let holder = leases
            .get_opt(&install.lease_name)
            .await
            .ok()??
            .spec?
            .holder_identity?;
        (holder == pod_name).then_some(())
    })
    .await;

    // Through the aggregator: the Service made to point at loopback (no pod runs ebb here), the
    // APIService trusting the cluster CA that signed the Secret's certificate.
    // Another field manager than the install's: an apply of these few fields by the same one
    // would drop every other field it owns.
    let pp = PatchParams::apply("deploy-manifests-test-loopback").force();
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            &install.name,
            &PatchParams::default(),
            // The API server drops the cluster IPs with the type change.
            &Patch::Merge(
                json!({ "spec": { "type": "ExternalName", "externalName": "localhost",
                                            "selector": null } }),
            ),
        )
        .await
        .expect("the Service points at loopback");
    let apiservices = Api::<APIService>::all(client.clone());
    apiservices
        .patch(
            EXTERNAL_METRICS,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "spec": { "service": { "namespace": ns, "name": install.name, "port": api_port },
                          "caBundle": b64(kube.ca_pem()) }
            })),
        )
        .await
        .expect("the APIService patched");
    kube.wait_api_service_available(EXTERNAL_METRICS)
        .await
        .expect("the APIService to be Available");
    let req = http::Request::get("/apis/external.metrics.k8s.io/v1beta1")
        .body(Vec::new())
        .unwrap();
    let discovery = client
        .request_text(req)
        .await
        .expect("discovery through the aggregator");
    assert!(discovery.contains("APIResourceList"), "{discovery}");

    // What the kubelet does to stop the pod. Without a SIGTERM handler ebb would run until
    // the grace period ends in SIGKILL.
    let unshare = ebb.pid();
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    let pid_1: i32 = std::fs::read_to_string(&children)
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .expect("ebb serve, the child of unshare");
    // SAFETY: a plain kill(2) of a process this test started.
    assert_eq!(unsafe { libc::kill(pid_1, libc::SIGTERM) }, 0);
    eventually(
        Duration::from_secs(10),
        "ebb serve (PID 1 of its namespace) to exit on SIGTERM",
        || async { (!ebb.is_running()).then_some(()) },
    )
    .await;
}

/// `name`'s path on `PATH` (the child's environment is cleared, so it cannot look it up).
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

// ---- the tests ---------------------------------------------------------------------------

#[tokio::test]
async fn the_kustomize_base_comes_up_on_the_control_plane() {
    let stack = control_plane();
    let kube = kube(&stack);
    let client = kube.client().await.unwrap();
    let manifest = kustomize(Path::new(DEPLOY));
    let install = Install {
        namespace: "ebb-system".into(),
        name: "ebb".into(),
        tls_secret: "ebb-serving-cert".into(),
        lease_name: "ebb-controller".into(),
    };
    let applied = apply_yaml(&client, &manifest, "deploy-manifests-test")
        .await
        .expect("deploy/ applies");
    assert_eq!(applied, documents(&manifest).len());
    create_tls_secret(&client, kube, &install).await;
    check_installation(&stack, &install).await;
}

#[tokio::test]
async fn the_helm_chart_comes_up_on_the_control_plane() {
    let stack = control_plane();
    let kube = kube(&stack);
    let client = kube.client().await.unwrap();
    // Not ebb-system: the chart follows the release namespace everywhere.
    let install = Install {
        namespace: "autoscaling".into(),
        name: "ebb".into(),
        tls_secret: "ebb-tls".into(),
        lease_name: "ebb-controller".into(),
    };
    kube.create_namespace(&install.namespace).await.unwrap();
    create_tls_secret(&client, kube, &install).await;
    let manifest = helm_with_secret(&install.namespace, &install.tls_secret, kube.ca_pem());
    let docs = documents(&manifest);
    assert_eq!(
        one(&docs, "APIService")["spec"]["caBundle"],
        base64::engine::general_purpose::STANDARD.encode(kube.ca_pem())
    );
    let applied = apply_yaml(&client, &manifest, "deploy-manifests-test")
        .await
        .expect("the chart applies");
    assert_eq!(applied, docs.len());
    check_installation(&stack, &install).await;

    // `helm install` itself, beside it: a release of the same name in a namespace Helm creates,
    // with the chart's defaults but the APIService (taken: the one object two releases cannot
    // share). Its cluster-scoped objects and its RoleBinding in kube-system are named after its
    // namespace, so they do not clash with the first release's.
    let home = tempfile::tempdir().unwrap();
    let helm = |args: &[&str]| {
        let out = Command::new(tools_dir().join("helm"))
            .args(args)
            .args(["--namespace", "second", "--set", "apiService.create=false"])
            .env("KUBECONFIG", &kube.admin_kubeconfig)
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helm {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let stdout = helm(&["install", "ebb", CHART, "--create-namespace"]);
    assert!(
        stdout.contains("STATUS: deployed")
            && stdout.contains("is installed in namespace second (2 replicas"),
        "{stdout}"
    );
    let second = Api::<Deployment>::namespaced(client.clone(), "second")
        .get("ebb")
        .await
        .expect("the second release's Deployment");
    assert_eq!(second.spec.unwrap().replicas, Some(2));
    // The certificate the chart generated is kept by `helm upgrade`.
    let secrets = Api::<Secret>::namespaced(client.clone(), "second");
    let generated = secrets
        .get("ebb-serving-cert")
        .await
        .expect("the generated Secret")
        .data
        .unwrap();
    assert!(generated.contains_key("tls.crt") && generated.contains_key("ca.crt"));
    helm(&["upgrade", "ebb", CHART, "--set", "replicaCount=3"]);
    let upgraded = secrets.get("ebb-serving-cert").await.unwrap().data.unwrap();
    assert_eq!(upgraded, generated, "helm upgrade replaced the certificate");
    let second = Api::<Deployment>::namespaced(client.clone(), "second")
        .get("ebb")
        .await
        .unwrap();
    assert_eq!(second.spec.unwrap().replicas, Some(3));

    // How docs/deploy.md has users upgrade the CRD, which `helm upgrade` leaves alone.
    let crds = format!("{CHART}/crds/");
    let applied = manifests::run(
        &manifests::bin_dir().join("kubectl"),
        &[
            "--kubeconfig",
            kube.admin_kubeconfig.to_str().unwrap(),
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crds,
        ],
    )
    .expect("kubectl apply of the chart's CRDs");
    assert!(
        applied.contains("scaledtargets.ebb.dev serverside-applied"),
        "{applied}"
    );
}

/// The chart's RBAC rules, bindings and pod template are the base's: one can not drift from
/// the other.
#[test]
fn the_chart_renders_what_the_base_holds() {
    let base = documents(&kustomize(Path::new(DEPLOY)));
    let chart = documents(&helm_with_secret("ebb-system", "ebb-serving-cert", "CA"));

    // The chart prefixes the names of cluster-scoped objects (and of the RoleBinding in
    // kube-system) with the release namespace, where the base has one namespace only.
    let unprefixed = |name: &Value| {
        let name = name.as_str().unwrap();
        json!(name.strip_prefix("ebb-system:").unwrap_or(name))
    };
    let rules = |docs: &[Value], name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole" && unprefixed(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))["rules"]
            .clone()
    };
    assert_eq!(
        rules(&chart, "ebb-controller"),
        rules(&base, "ebb-controller")
    );
    assert_eq!(
        rules(&chart, "ebb:external-metrics-reader"),
        rules(&base, "ebb:external-metrics-reader")
    );
    // Every binding: same name, role and subjects.
    let bindings = |docs: &[Value]| {
        let mut all: Vec<Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
            .map(|d| {
                let mut role = d["roleRef"].clone();
                role["name"] = unprefixed(&role["name"]);
                json!([
                    d["kind"],
                    unprefixed(&d["metadata"]["name"]),
                    d["metadata"]["namespace"],
                    role,
                    d["subjects"]
                ])
            })
            .collect();
        all.sort_by_key(|v| v.to_string());
        all
    };
    assert_eq!(bindings(&chart), bindings(&base));

    // The pod template, less the labels (the chart adds Helm's).
    let pod = |docs: &[Value]| {
        let mut spec = one(docs, "Deployment")["spec"]["template"]["spec"].clone();
        spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
            ["podAffinityTerm"]["labelSelector"] = Value::Null;
        spec
    };
    assert_eq!(pod(&chart), pod(&base));
    // The pod's annotations (prometheus.io/*).
    let annotations = |docs: &[Value]| {
        one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"].clone()
    };
    assert_eq!(annotations(&chart), annotations(&base));
    for kind in ["APIService", "PodDisruptionBudget", "Service"] {
        let spec = |docs: &[Value]| {
            let mut s = one(docs, kind)["spec"].clone();
            s["selector"] = Value::Null;
            s["caBundle"] = Value::Null;
            s
        };
        assert_eq!(spec(&chart), spec(&base), "{kind}");
    }
    let kinds = |docs: &[Value]| {
        let mut k: Vec<String> = docs.iter().map(|d| d["kind"].to_string()).collect();
        k.sort();
        k
    };
    // The NetworkPolicy: the chart's option (default peers: any) and the base's component.
    let policy = |docs: &[Value]| one(docs, "NetworkPolicy")["spec"].clone();
    let with_policy = documents(
        &helm_template(
            "ebb-system",
            &[
                "tls.existingSecret=t",
                "tls.caBundle=Q0E=",
                "networkPolicy.enabled=true",
            ],
        )
        .unwrap(),
    );
    let mut chart_policy = policy(&with_policy);
    chart_policy["podSelector"] = Value::Null;
    let mut base_policy = policy(&documents(&kustomize(overlay(&["network-policy"]).path())));
    base_policy["podSelector"] = Value::Null;
    assert_eq!(chart_policy, base_policy);
    // The chart leaves the namespace to `helm install --create-namespace`.
    let mut base_kinds = kinds(&base);
    base_kinds.retain(|k| k != "\"Namespace\"");
    assert_eq!(kinds(&chart), base_kinds);
}

#[test]
fn the_chart_takes_at_most_one_source_of_the_serving_certificate() {
    let err = helm_template(
        "ebb-system",
        &["tls.existingSecret=x", "tls.certManager.enabled=true"],
    )
    .expect_err("renders with two certificates");
    assert!(err.contains("not both"), "{err}");
    let err = helm_template("ebb-system", &["tls.existingSecret=x"])
        .expect_err("renders an APIService without a CA");
    assert!(err.contains("tls.caBundle"), "{err}");
    // Without the APIService (modes Direct and Shadow) no CA is needed.
    helm_template(
        "ebb-system",
        &["tls.existingSecret=x", "apiService.create=false"],
    )
    .expect("renders without an APIService");
}

/// With no source given, the chart generates a CA and a serving certificate: the Secret the
/// pods mount holds a certificate that the kube-apiserver accepts for the Service's name when
/// it trusts the APIService's caBundle.
#[test]
fn the_chart_generates_a_serving_certificate_by_default() {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    ebb::install_crypto_provider();
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 string"))
            .unwrap()
    };
    let docs = documents(&helm_template("autoscaling", &[]).expect("the default values render"));
    let deployment = one(&docs, "Deployment");
    let mounted = deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
        .as_str()
        .unwrap();
    let secret = named(&docs, "Secret", mounted);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca_bundle = b64(&one(&docs, "APIService")["spec"]["caBundle"]);
    assert_eq!(ca_bundle, b64(&secret["data"]["ca.crt"]));

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&ca_bundle) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
        .build()
        .unwrap();
    let cert = CertificateDer::from_pem_slice(&b64(&secret["data"]["tls.crt"])).unwrap();
    let service = one(&docs, "Service")["metadata"]["name"].as_str().unwrap();
    for name in [
        format!("{service}.autoscaling.svc"),
        format!("{service}.autoscaling.svc.cluster.local"),
    ] {
        verifier
            .verify_server_cert(
                &cert,
                &[],
                &ServerName::try_from(name.clone()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("the generated certificate for {name}: {e}"));
    }
    let other = ServerName::try_from("ebb.elsewhere.svc").unwrap();
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &other, &[], UnixTime::now())
            .is_err(),
        "the certificate is for the Service's name only"
    );
    // The key is the certificate's: ebb can serve with the pair.
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&b64(&secret["data"]["tls.key"])).unwrap();
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the generated key matches the certificate");
}

/// cert-manager is not part of the local stack: what can be checked without it is that its
/// objects line up with the rest (the Certificate's Secret is the one mounted, its DNS name is
/// the Service's, the CA injected into the APIService is the Certificate's, every issuer
/// named is rendered).
fn check_cert_manager_objects(docs: &[Value], namespace: &str, own_issuer: bool) {
    let deployment = one(docs, "Deployment");
    let mounted = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .unwrap();
    let service = one(docs, "Service")["metadata"]["name"].as_str().unwrap();
    let serving = of_kind(docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == mounted)
        .expect("a Certificate for the mounted Secret");
    let dns = serving["spec"]["dnsNames"].as_array().unwrap();
    assert!(
        dns.contains(&json!(format!("{service}.{namespace}.svc"))),
        "{dns:?}"
    );
    assert_eq!(
        one(docs, "APIService")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!(
            "{namespace}/{}",
            serving["metadata"]["name"].as_str().unwrap()
        )
    );
    assert!(one(docs, "APIService")["spec"]["caBundle"].is_null());
    if own_issuer {
        // Self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
        let issuer = named(
            docs,
            "Issuer",
            serving["spec"]["issuerRef"]["name"].as_str().unwrap(),
        );
        let ca_secret = issuer["spec"]["ca"]["secretName"].as_str().unwrap();
        let ca = of_kind(docs, "Certificate")
            .into_iter()
            .find(|c| c["spec"]["secretName"] == ca_secret)
            .expect("the CA's Certificate");
        assert_eq!(ca["spec"]["isCA"], true);
        let root = named(
            docs,
            "Issuer",
            ca["spec"]["issuerRef"]["name"].as_str().unwrap(),
        );
        assert!(root["spec"]["selfSigned"].is_object());
        for d in of_kind(docs, "Issuer")
            .into_iter()
            .chain(of_kind(docs, "Certificate"))
        {
            assert_eq!(d["metadata"]["namespace"], namespace);
        }
    } else {
        assert!(of_kind(docs, "Issuer").is_empty());
    }
}

#[test]
fn the_cert_manager_component_issues_the_mounted_secret() {
    let overlay = overlay(&["cert-manager"]);
    check_cert_manager_objects(&documents(&kustomize(overlay.path())), "ebb-system", true);
}

#[test]
fn the_chart_lets_cert_manager_issue_the_certificate() {
    let docs = documents(&helm_template("autoscaling", &["tls.certManager.enabled=true"]).unwrap());
    check_cert_manager_objects(&docs, "autoscaling", true);
    let docs = documents(
        &helm_template(
            "autoscaling",
            &[
                "tls.certManager.enabled=true",
                "tls.certManager.issuerRef.name=corp-ca",
                "tls.certManager.issuerRef.kind=ClusterIssuer",
            ],
        )
        .unwrap(),
    );
    check_cert_manager_objects(&docs, "autoscaling", false);
    let serving = one(&docs, "Certificate");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({ "name": "corp-ca", "kind": "ClusterIssuer" })
    );
}

#[test]
fn the_chart_values_reach_the_deployment() {
    let docs = documents(
        &helm_template(
            "autoscaling",
            &[
                "tls.existingSecret=t",
                "apiService.create=false",
                "image.tag=9.9.9",
                "replicaCount=3",
                "logLevel=debug",
                "logJson=false",
                "leaderElection.leaseName=my-lease",
                "leaderElection.namespace=elsewhere",
                "leaderElection.leaseDurationSeconds=30",
                "podDisruptionBudget.enabled=false",
                "nodeSelector.pool=system",
            ],
        )
        .unwrap(),
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(of_kind(&docs, "APIService").is_empty());
    let deployment: Deployment = from_json(one(&docs, "Deployment").clone());
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.node_selector.unwrap(),
        BTreeMap::from([("pool".to_string(), "system".to_string())])
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/ebb-autoscaler/ebb:9.9.9")
    );
    let env: BTreeMap<_, _> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    for (k, v) in [
        ("RUST_LOG", "debug"),
        ("EBB_LOG_JSON", "false"),
        ("EBB_LEASE_NAME", "my-lease"),
        ("EBB_LEADER_ELECTION_NAMESPACE", "elsewhere"),
        ("EBB_LEASE_DURATION_SECONDS", "30"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    // The default tag is the chart's appVersion, which is ebb's version.
    let docs = documents(&helm_with_secret("x", "t", "CA"));
    let image =
        one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        image,
        format!("ghcr.io/ebb-autoscaler/ebb:{}", env!("CARGO_PKG_VERSION"))
    );
}
