//! A real Kubernetes control plane on loopback: etcd, kube-apiserver with the aggregation
//! layer, kube-controller-manager (whose HPA controller is the real consumer of ebb's metrics
//! API), kube-scheduler, and kwok, which makes pods on its fake node Running and Ready.
//! Recipe and flags: `shared/reference/local-control-plane.md`.
//!
//! Besides kwok's default fast stages, kwok plays the fault stages of `kwok-fault-stages.yaml`
//! on pods that ask for them by label ([`FAULT_LABEL`], [`READY_AFTER_LABEL`]): crash loops,
//! OOM kills, image pulls that fail, missing config, readiness that never comes, slow starts,
//! in the shapes kubelet writes. Pods without those labels
//! are Running and Ready at once, as before.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::certs::{Ca, CertPair, Usage};
use super::process::{ManagedProcess, free_port, wait_until};
use super::{StackError, start_error};

/// The name of the fake node kwok manages.
pub const NODE_NAME: &str = "kwok-node-0";
/// The annotation that tells kwok to manage a node.
const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// A pod label that makes kwok fail the pod as kubelet reports it: [`FAULT_CRASHLOOP`],
/// [`FAULT_OOMKILLED`], [`FAULT_IMAGEPULL`], [`FAULT_CONFIGERROR`] or [`FAULT_UNREADY`].
pub const FAULT_LABEL: &str = "ebb.dev/fault";
/// [`FAULT_LABEL`]'s value for a container that keeps crashing: phase Running, Ready False,
/// waiting `CrashLoopBackOff` with the last termination (`Error`, exit 1), one more restart
/// every 10 s.
pub const FAULT_CRASHLOOP: &str = "crashloop";
/// [`FAULT_LABEL`]'s value for an image that cannot be pulled: Pending, waiting
/// `ImagePullBackOff`.
pub const FAULT_IMAGEPULL: &str = "imagepull";
/// [`FAULT_LABEL`]'s value for a container killed for memory as soon as it runs: the crash
/// loop of [`FAULT_CRASHLOOP`] with the last termination `OOMKilled`, exit 137.
pub const FAULT_OOMKILLED: &str = "oomkilled";
/// [`FAULT_LABEL`]'s value for a container that cannot be created: Pending, waiting
/// `CreateContainerConfigError` (`secret "<container>-config" not found`).
pub const FAULT_CONFIGERROR: &str = "configerror";
/// [`FAULT_LABEL`]'s value for a container that runs and never becomes ready (its readiness
/// probe failing): Running, the container running, Ready False.
pub const FAULT_UNREADY: &str = "unready";
/// A pod label whose value is a Go duration (`"20s"`): the pod starts at once (Running, its
/// containers running but not ready) and becomes Ready that long after.
pub const READY_AFTER_LABEL: &str = "ebb.dev/ready-after";
/// The fault stages (kwok Stage objects), given to kwok after its default stages.
const FAULT_STAGES: &str = include_str!("kwok-fault-stages.yaml");

/// What to run in the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Run the HPA controller in kube-controller-manager (off where a test needs ebb's Direct
    /// mode alone).
    pub hpa_controller: bool,
    /// `--horizontal-pod-autoscaler-sync-period` (upstream default 15 s).
    pub hpa_sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (upstream default 5 min).
    pub hpa_downscale_stabilization: Duration,
    /// Log every write to a `/scale` subresource (who, when, the count it set) to the API
    /// server's audit log ([`ControlPlane::audit_log`]): the soak's record of what was done.
    pub audit_scale_writes: bool,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            hpa_controller: true,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            audit_scale_writes: false,
        }
    }
}

/// A running control plane. Dropping it stops every process (in reverse start order).
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: dependents first, etcd last.
    kwok: ManagedProcess,
    scheduler: ManagedProcess,
    controller_manager: ManagedProcess,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    /// How the API server was started, to start it again ([`ControlPlane::restart_apiserver`]).
    apiserver_command: (PathBuf, Vec<String>),
    dir: PathBuf,
    cluster_ca: Ca,
    front_proxy_ca: Ca,
    /// `https://127.0.0.1:<port>`
    pub server_url: String,
    /// A kubeconfig for `admin` in group `system:masters`.
    pub admin_kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with binaries
    /// from `bin`, state under `dir`, and waits until a Deployment could get Ready pods.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        options: &ControlPlaneOptions,
    ) -> Result<Self, StackError> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        let cluster_ca = Ca::new("ebb-localstack-ca")?;
        let front_proxy_ca = Ca::new("ebb-localstack-front-proxy-ca")?;
        let ca_file = pki.join("ca.crt");
        std::fs::write(&ca_file, cluster_ca.cert_pem())?;
        let front_proxy_ca_file = pki.join("front-proxy-ca.crt");
        std::fs::write(&front_proxy_ca_file, front_proxy_ca.cert_pem())?;
        let (apiserver_crt, apiserver_key) = cluster_ca
            .issue(
                "kube-apiserver",
                None,
                &[
                    "127.0.0.1",
                    "localhost",
                    "10.0.0.1",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                ],
                Usage::Server,
            )?
            .write(&pki, "apiserver")?;
        // The aggregator presents this certificate to extension API servers such as ebb; they
        // trust X-Remote-* headers only from it.
        let (proxy_crt, proxy_key) = front_proxy_ca
            .issue("front-proxy-client", None, &[], Usage::Client)?
            .write(&pki, "front-proxy-client")?;
        let (sa_private, sa_public) = super::certs::service_account_keys()?;
        let sa_key = pki.join("sa.key");
        let sa_pub = pki.join("sa.pub");
        std::fs::write(&sa_key, sa_private)?;
        std::fs::write(&sa_pub, sa_public)?;

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let api_port = free_port();
        let server_url = format!("https://127.0.0.1:{api_port}");

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.args([
            "--name=default",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=default={peer_url}"),
            // A throwaway cluster: durability buys nothing and fsync costs seconds on slow disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let etcd = ManagedProcess::spawn("etcd", etcd, &dir.join("etcd.log"))?;

        let mut apiserver_args: Vec<String> = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", apiserver_crt.display()),
            format!("--tls-private-key-file={}", apiserver_key.display()),
            format!("--client-ca-file={}", ca_file.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            // The endpoint reconciler rejects a loopback advertise address.
            "--endpoint-reconciler-type=none".into(),
            // The aggregation layer.
            format!(
                "--requestheader-client-ca-file={}",
                front_proxy_ca_file.display()
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!("--proxy-client-cert-file={}", proxy_crt.display()),
            format!("--proxy-client-key-file={}", proxy_key.display()),
            "--v=1".into(),
        ]
        .into();
        if options.audit_scale_writes {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_SCALE_WRITES)?;
            apiserver_args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", dir.join(AUDIT_LOG).display()),
                "--audit-log-format=json".into(),
                // Each event written before the response: none is lost when the server stops.
                "--audit-log-mode=blocking".into(),
            ]);
        }
        let apiserver_command = (bin.join("kube-apiserver"), apiserver_args);
        let apiserver = spawn_apiserver(&apiserver_command, dir)?;

        // Kubeconfigs: admin for us and kwok, the well-known users bootstrap RBAC binds for the
        // controller manager and the scheduler.
        let write_kubeconfig = |name: &str, user: &str, group: Option<&str>| {
            let pair = cluster_ca.issue(user, group, &[], Usage::Client)?;
            write_kubeconfig(dir, name, &server_url, cluster_ca.cert_pem(), &pair)
        };
        let admin_kubeconfig = write_kubeconfig("admin", "admin", Some("system:masters"))?;
        let kcm_kubeconfig = write_kubeconfig(
            "kube-controller-manager",
            "system:kube-controller-manager",
            None,
        )?;
        let scheduler_kubeconfig =
            write_kubeconfig("kube-scheduler", "system:kube-scheduler", None)?;

        let client = kube_client(&admin_kubeconfig).await?;
        if !apiserver_ready(&client, Duration::from_secs(90)).await {
            return Err(start_error(
                &apiserver,
                "/readyz did not answer ok within 90 s",
            ));
        }

        let mut controllers = vec![
            "deployment-controller",
            "replicaset-controller",
            "garbage-collector-controller",
            "namespace-controller",
            "serviceaccount-controller",
            "serviceaccount-token-controller",
            "disruption-controller",
            "root-ca-certificate-publisher-controller",
            // Lifts the not-ready taint the API server puts on every new node once kwok reports
            // it Ready.
            "node-lifecycle-controller",
        ];
        if options.hpa_controller {
            controllers.push("horizontal-pod-autoscaler-controller");
        }
        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.args([
            &format!("--kubeconfig={}", kcm_kubeconfig.display()),
            &format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
            &format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", free_port()),
            "--leader-elect=false",
            &format!("--controllers={}", controllers.join(",")),
            &format!("--service-account-private-key-file={}", sa_key.display()),
            &format!("--root-ca-file={}", ca_file.display()),
            // Each controller acts as its own service account, as in a real cluster: the HPA
            // controller reads external metrics as kube-system:horizontal-pod-autoscaler.
            "--use-service-account-credentials=true",
            &format!(
                "--horizontal-pod-autoscaler-sync-period={}ms",
                options.hpa_sync_period.as_millis()
            ),
            &format!(
                "--horizontal-pod-autoscaler-downscale-stabilization={}ms",
                options.hpa_downscale_stabilization.as_millis()
            ),
            "--v=1",
        ]);
        let controller_manager = ManagedProcess::spawn(
            "kube-controller-manager",
            kcm,
            &dir.join("kube-controller-manager.log"),
        )?;

        let mut scheduler = Command::new(bin.join("kube-scheduler"));
        scheduler.args([
            &format!("--kubeconfig={}", scheduler_kubeconfig.display()),
            &format!(
                "--authentication-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            &format!(
                "--authorization-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", free_port()),
            "--leader-elect=false",
        ]);
        let scheduler =
            ManagedProcess::spawn("kube-scheduler", scheduler, &dir.join("kube-scheduler.log"))?;

        // kwok's --config is a list: the default stages from the build, then the fault stages,
        // written here so that the cached build stays as built.
        let fault_stages = dir.join("kwok-fault-stages.yaml");
        std::fs::write(&fault_stages, FAULT_STAGES)?;
        let kwok = spawn_kwok(bin, dir, &admin_kubeconfig, &fault_stages).await?;

        let plane = Self {
            kwok,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            apiserver_command,
            dir: dir.to_path_buf(),
            cluster_ca,
            front_proxy_ca,
            server_url,
            admin_kubeconfig,
        };
        plane.create_fake_node(&client).await?;
        plane.wait_for_default_service_account(&client).await?;
        Ok(plane)
    }

    /// Stops the kube-apiserver (SIGTERM, as a rolling restart does), waits `down`, and starts
    /// it again with the same flags, port and etcd; returns once `/readyz` answers ok.
    pub async fn restart_apiserver(&mut self, down: Duration) -> Result<(), StackError> {
        self.apiserver.stop(Duration::from_secs(10));
        tokio::time::sleep(down).await;
        self.apiserver = spawn_apiserver(&self.apiserver_command, &self.dir)?;
        let client = kube_client(&self.admin_kubeconfig).await?;
        if apiserver_ready(&client, Duration::from_secs(90)).await {
            Ok(())
        } else {
            Err(start_error(
                &self.apiserver,
                "/readyz did not answer ok within 90 s of a restart",
            ))
        }
    }

    /// The API server's audit log (JSON lines), when `audit_scale_writes` is on.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join(AUDIT_LOG)
    }

    async fn create_fake_node(&self, client: &kube::Client) -> Result<(), StackError> {
        self.create_node(client, NODE_NAME, &[], &[]).await
    }

    /// Adds a node kwok manages: `name`, with `labels` and `taints` (key, value, effect) of its
    /// own, and waits until it is Ready. A test that taints a node, or fills it, takes one of
    /// its own so that the tests beside it keep theirs.
    pub async fn add_node(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        taints: &[(&str, &str, &str)],
    ) -> Result<(), StackError> {
        self.create_node(&self.client().await?, name, labels, taints)
            .await
    }

    async fn create_node(
        &self,
        client: &kube::Client,
        name: &str,
        labels: &[(&str, &str)],
        taints: &[(&str, &str, &str)],
    ) -> Result<(), StackError> {
        let mut node_labels = serde_json::json!({ "type": "kwok", "kubernetes.io/hostname": name });
        for (k, v) in labels {
            node_labels[*k] = (*v).into();
        }
        let taints: Vec<serde_json::Value> = taints
            .iter()
            .map(|(key, value, effect)| {
                serde_json::json!({ "key": key, "value": value, "effect": effect })
            })
            .collect();
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1 },
                "labels": node_labels,
            },
            "spec": { "taints": taints },
            "status": {
                "allocatable": { "cpu": "1000", "memory": "4Ti", "ephemeral-storage": "1Ti", "pods": "10000" },
                "capacity": { "cpu": "1000", "memory": "4Ti", "ephemeral-storage": "1Ti", "pods": "10000" },
            },
        }))?;
        let nodes = Api::<Node>::all(client.clone());
        nodes.create(&PostParams::default(), &node).await?;
        let ready = wait_until(Duration::from_secs(60), || async {
            nodes.get(name).await.is_ok_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;
        if ready {
            Ok(())
        } else {
            Err(start_error(
                &self.kwok,
                &format!("kwok node {name} did not become Ready within 60 s"),
            ))
        }
    }

    /// Pods are rejected until the namespace's `default` ServiceAccount exists.
    async fn wait_for_default_service_account(
        &self,
        client: &kube::Client,
    ) -> Result<(), StackError> {
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), "default");
        let ok = wait_until(Duration::from_secs(60), || async {
            sas.get("default").await.is_ok()
        })
        .await;
        if ok {
            Ok(())
        } else {
            Err(start_error(
                &self.controller_manager,
                "the default ServiceAccount did not appear within 60 s",
            ))
        }
    }

    /// A new client as `admin` (system:masters), bound to the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, StackError> {
        kube_client(&self.admin_kubeconfig).await
    }

    /// A kubeconfig for `user` (and optional `group`), authenticated by a client certificate.
    pub fn kubeconfig_for(&self, user: &str, group: Option<&str>) -> Result<PathBuf, StackError> {
        let pair = self.cluster_ca.issue(user, group, &[], Usage::Client)?;
        let name = user.replace([':', '/'], "-");
        write_kubeconfig(
            &self.dir,
            &name,
            &self.server_url,
            self.cluster_ca.cert_pem(),
            &pair,
        )
    }

    /// A serving certificate from the cluster CA, for an aggregated API server.
    pub fn serving_cert(&self, sans: &[&str]) -> Result<CertPair, StackError> {
        Ok(self.cluster_ca.issue(
            sans.first().copied().unwrap_or("server"),
            None,
            sans,
            Usage::Server,
        )?)
    }

    /// The cluster CA in PEM: an APIService's caBundle when the server cert came from
    /// [`Self::serving_cert`].
    pub fn ca_pem(&self) -> &str {
        self.cluster_ca.cert_pem()
    }

    /// A client certificate from the front-proxy CA (only `front-proxy-client` is an allowed
    /// name): lets tests forge what the aggregator sends, and prove a server checks the name.
    pub fn front_proxy_client_cert(&self, common_name: &str) -> Result<CertPair, StackError> {
        Ok(self
            .front_proxy_ca
            .issue(common_name, None, &[], Usage::Client)?)
    }

    /// Creates a namespace (with its `default` ServiceAccount awaited).
    pub async fn create_namespace(&self, name: &str) -> Result<(), StackError> {
        let client = self.client().await?;
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let sas = Api::<ServiceAccount>::namespaced(client, name);
        if wait_until(Duration::from_secs(30), || async {
            sas.get("default").await.is_ok()
        })
        .await
        {
            Ok(())
        } else {
            Err(StackError::Timeout(format!(
                "the default ServiceAccount of namespace {name}"
            )))
        }
    }

    /// Where the processes' logs and state live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The processes, for status lines and liveness checks.
    pub fn processes(&self) -> [&ManagedProcess; 5] {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
            &self.kwok,
        ]
    }
}

/// The audit log's file name in the control plane's directory.
const AUDIT_LOG: &str = "audit.log";

/// Writes to any `/scale` subresource, with the request and the answer (the count set); nothing
/// else.
const AUDIT_SCALE_WRITES: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse
    verbs: ["patch", "update"]
    resources:
      - group: "*"
        resources: ["*/scale"]
  - level: None
"#;

fn spawn_apiserver(
    (binary, args): &(PathBuf, Vec<String>),
    dir: &Path,
) -> Result<ManagedProcess, StackError> {
    let mut cmd = Command::new(binary);
    cmd.args(args);
    Ok(ManagedProcess::spawn(
        "kube-apiserver",
        cmd,
        &dir.join("kube-apiserver.log"),
    )?)
}

async fn apiserver_ready(client: &kube::Client, within: Duration) -> bool {
    wait_until(within, || {
        crate::controller::recovery::api_server_ready(client, Duration::from_secs(5))
    })
    .await
}

fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    ca_pem: &str,
    pair: &CertPair,
) -> Result<PathBuf, StackError> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "ebb-local", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem) } }],
        "users": [{ "name": name, "user": {
            "client-certificate-data": b64(&pair.cert_pem),
            "client-key-data": b64(&pair.key_pem) } }],
        "contexts": [{ "name": name, "context": { "cluster": "ebb-local", "user": name } }],
        "current-context": name,
    });
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

/// A kube client from a kubeconfig file.
pub async fn kube_client(kubeconfig: &Path) -> Result<kube::Client, StackError> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).map_err(kube::Error::from)?,
        &KubeConfigOptions::default(),
    )
    .await
    .map_err(kube::Error::from)?;
    Ok(kube::Client::try_from(config)?)
}

/// Server-side applies every document of a multi-document YAML `manifest` (what `kubectl apply
/// --server-side` does), resolving each kind through discovery. Returns how many objects were
/// applied. Used to install deploy/'s manifests on the local control plane.
pub async fn apply_yaml(
    client: &kube::Client,
    manifest: &str,
    field_manager: &str,
) -> Result<usize, StackError> {
    use kube::api::{DynamicObject, Patch, PatchParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::Scope;
    let mut applied = 0;
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| StackError::Upstream(format!("manifest YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(serde_json::to_value(value)?)?;
        let types = object.types.as_ref().ok_or_else(|| {
            StackError::Upstream("a manifest document without apiVersion/kind".into())
        })?;
        let gvk = GroupVersionKind::try_from(types)
            .map_err(|e| StackError::Upstream(format!("manifest apiVersion: {e}")))?;
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> =
            match (capabilities.scope, object.metadata.namespace.as_deref()) {
                (Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(client.clone(), ns, &resource)
                }
                (Scope::Namespaced, None) => {
                    Api::default_namespaced_with(client.clone(), &resource)
                }
                (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
            };
        let name = object.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&object),
        )
        .await?;
        applied += 1;
    }
    Ok(applied)
}

impl ControlPlane {
    /// Registers an external metrics API server that listens on loopback `port` with a
    /// certificate from [`Self::serving_cert`]: applies `manifest` (deploy/apiservice.yaml: the
    /// Service and the APIService) with the Service made an ExternalName to `localhost` (no pods
    /// run ebb here) and the APIService given the port and the cluster CA as its caBundle, then
    /// waits until the aggregator reports it Available.
    pub async fn register_api_service(&self, manifest: &str, port: u16) -> Result<(), StackError> {
        use base64::Engine as _;
        let client = self.client().await?;
        let mut names = Vec::new();
        let mut docs = Vec::new();
        for document in serde_yaml::Deserializer::from_str(manifest) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
                .map_err(|e| StackError::Upstream(format!("manifest YAML: {e}")))?;
            let mut doc = serde_json::to_value(value)?;
            match doc["kind"].as_str() {
                Some("Service") => {
                    doc["spec"] =
                        serde_json::json!({ "type": "ExternalName", "externalName": "localhost" });
                }
                Some("APIService") => {
                    doc["spec"]["service"]["port"] = port.into();
                    doc["spec"]["caBundle"] = base64::engine::general_purpose::STANDARD
                        .encode(self.ca_pem())
                        .into();
                    if let Some(name) = doc["metadata"]["name"].as_str() {
                        names.push(name.to_string());
                    }
                }
                _ => {}
            }
            docs.push(
                serde_yaml::to_string(&doc).map_err(|e| StackError::Upstream(e.to_string()))?,
            );
        }
        apply_yaml(&client, &docs.join("---\n"), "ebb-localstack").await?;
        for name in names {
            self.wait_api_service_available(&name).await?;
        }
        Ok(())
    }

    /// Waits (up to a minute) until the aggregator reports APIService `name` Available: it
    /// reached the server behind it and found the group version served.
    pub async fn wait_api_service_available(&self, name: &str) -> Result<(), StackError> {
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
        let apiservices = Api::<APIService>::all(self.client().await?);
        let available = wait_until(Duration::from_secs(60), || async {
            apiservices
                .get(name)
                .await
                .ok()
                .and_then(|s| s.status?.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Available" && c.status == "True")
                })
        })
        .await;
        if available {
            Ok(())
        } else {
            Err(StackError::Timeout(format!(
                "APIService {name} to be Available"
            )))
        }
    }
}

/// How many times kwok is started before the stack gives up on it.
const KWOK_STARTS: usize = 3;

/// Starts kwok and waits until its server answers `/healthz` (it serves only once its
/// controllers and CEL environments are set up). kwok v0.8.0 can die while it sets them up: two
/// goroutines fill easycel's type cache, a plain Go map, at once ("concurrent map writes", a
/// fatal error, seen in CI). That is a start-up race, not a fault of the stack, so a kwok that
/// exits before it serves is started again, up to [`KWOK_STARTS`] times.
async fn spawn_kwok(
    bin: &Path,
    dir: &Path,
    admin_kubeconfig: &Path,
    fault_stages: &Path,
) -> Result<ManagedProcess, StackError> {
    let http = super::http_client();
    let mut attempt = 1;
    loop {
        let port = free_port();
        let mut kwok = Command::new(bin.join("kwok"));
        kwok.args([
            &format!("--kubeconfig={}", admin_kubeconfig.display()),
            "--manage-all-nodes=false",
            &format!(
                "--manage-nodes-with-annotation-selector={}={}",
                KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
            ),
            &format!("--config={}", bin.join("kwok-stages.yaml").display()),
            &format!("--config={}", fault_stages.display()),
            "--node-ip=10.0.1.1",
            "--cidr=10.1.0.0/16",
            &format!("--server-address=127.0.0.1:{port}"),
        ]);
        let process = ManagedProcess::spawn("kwok", kwok, &dir.join("kwok.log"))?;
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        let serving = wait_until(Duration::from_secs(60), || async {
            !process.is_running()
                || http
                    .get(&healthz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if serving && process.is_running() {
            return Ok(process);
        }
        if attempt == KWOK_STARTS || process.is_running() {
            let reason = if process.is_running() {
                "kwok did not answer /healthz within 60 s".to_string()
            } else {
                format!("kwok exited while starting, {attempt} times")
            };
            return Err(start_error(&process, &reason));
        }
        tracing::warn!(
            attempt,
            log_tail = %process.log_tail(3),
            "kwok exited while starting; starting it again"
        );
        attempt += 1;
    }
}
