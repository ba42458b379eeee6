//! ebb's container image, built and run for real. `scripts/build-image` makes an OCI archive of
//! the `ebb` these tests built; umoci unpacks it into a runtime bundle; runc runs it in fresh
//! namespaces (mount, PID, IPC, UTS, network, cgroup) with a read-only root, as user 65532
//! without capabilities and with no_new_privs, as the Deployment in deploy/ asks:
//! - the archive is reproducible (two builds, one digest and the same bytes), carries what the
//!   README says (user, entrypoint, command, OCI labels) and skopeo reads it as `skopeo copy`
//!   would;
//! - `ebb --version` runs in it; its root holds ebb, glibc's loader and exactly the libraries
//!   ebb needs, the CA bundle, /etc/passwd and group, and nothing else: no shell, and a host
//!   binary that needs a host library fails in it;
//! - `ebb serve` runs in it as a pod of deploy/deployment.yaml would on the local control plane
//!   (`kubectl kustomize deploy/` applied): the container's args, environment (downward API
//!   resolved), user, memory and CPU limits, the serving certificate and the ServiceAccount's
//!   token mounted where the kubelet mounts them, the in-cluster API address in
//!   KUBERNETES_SERVICE_HOST/PORT. Its probe paths answer 200 over HTTPS on 0.0.0.0:6443 inside
//!   the container, /metrics on :8080, it takes the Lease under the pod's name, the aggregator
//!   reaches it as the APIService, and SIGTERM (ebb is PID 1) stops it within 10 s.
//!
//! The network: the container joins a network namespace this test makes (a thread unshares
//! CLONE_NEWNET, brings up its loopback and stays there; runc joins it through
//! /proc/PID/task/TID/ns/net). No veth, bridge, route or iptables rule: like `kubectl
//! port-forward`, the test crosses between the namespaces with sockets made on either side. A
//! listener inside the container's namespace on 127.0.0.1:<the API server's port> forwards to the
//! host's kube-apiserver, and the probes connect to 127.0.0.1:6443 inside the container's
//! namespace (through a host loopback port, so that the aggregator can reach ebb too). The
//! namespace goes with the container and the thread.
//!
//! What is left behind: nothing. runc's state lives in a directory per container under
//! /run/ebb-image-test, removed with `runc delete --force` by a Drop guard (also after a
//! panic); one a killed test run left is removed by the next run. The container's mounts are in
//! its own mount namespace; the test checks that the host's mount table and network interfaces
//! are as before, and that runc lists no container.
//!
//! Skipped, with a message, only when umoci or runc is missing even after
//! scripts/install-packages.sh (they are Debian packages). Needs root, as runc does.

mod support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ebb::localstack::kube::{ControlPlaneOptions, apply_yaml};
use ebb::localstack::process::ManagedProcess;
use ebb::localstack::{Stack, StackOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Service, ServiceAccount};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{eventually, start_stack};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const EBB: &str = env!("CARGO_BIN_EXE_ebb");
const MINUTE: Duration = Duration::from_secs(60);
/// Where runc keeps its state: one directory per container, `<test pid>-<name>`.
const RUNC_ROOT: &str = "/run/ebb-image-test";
/// Where the kubelet mounts the ServiceAccount's token, CA and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

// ---- the image ---------------------------------------------------------------------------

/// True when umoci and runc are there (after scripts/install-packages.sh if they were not);
/// otherwise prints why `test` is skipped.
fn tools_or_skip(test: &str) -> bool {
    static MISSING: OnceLock<Vec<&'static str>> = OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        let missing = || {
            ["umoci", "runc", "skopeo"]
                .into_iter()
                .filter(|t| which(t).is_none())
                .collect::<Vec<_>>()
        };
        if missing().is_empty() {
            return vec![];
        }
        let status = Command::new(format!("{REPO}/scripts/install-packages.sh")).status();
        eprintln!("scripts/install-packages.sh: {status:?}");
        missing()
    });
    if missing.is_empty() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "runc runs containers as root here, as the kubelet's runtime does: run the tests as root"
        );
        true
    } else {
        eprintln!(
            "SKIPPED {test}: {} not installed and scripts/install-packages.sh could not install \
             them (Debian packages umoci, runc, skopeo)",
            missing.join(", ")
        );
        false
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd`, panics with its output unless it succeeds; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

struct Image {
    archive: PathBuf,
    digest: String,
    seconds: f64,
}

/// `scripts/build-image` of the ebb these tests built, into the test's target directory.
fn build_image(name: &str) -> Image {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let start = Instant::now();
    let stdout = run(Command::new(format!("{REPO}/scripts/build-image"))
        .args(["--binary", EBB, "--out"])
        .arg(&out)
        .stderr(Stdio::inherit()));
    let seconds = start.elapsed().as_secs_f64();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "the archive and the digest: {stdout}");
    assert_eq!(Path::new(lines[0]), out);
    assert!(lines[1].starts_with("sha256:"), "{stdout}");
    eprintln!("scripts/build-image: {} in {seconds:.1} s", lines[1]);
    Image {
        archive: out,
        digest: lines[1].to_string(),
        seconds,
    }
}

/// The image every test uses, built once per test binary.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| build_image("ebb-test.oci.tar"))
}

/// The archive unpacked into an OCI layout, its image config (from the manifest the index
/// names), and the layout's reference name.
struct Layout {
    dir: PathBuf,
    tag: String,
    manifest: Value,
    config: Value,
}

fn read_layout(archive: &Path, dir: &Path) -> Layout {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir));
    let json = |path: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let blob = |digest: &Value| {
        let digest = digest.as_str().unwrap();
        json(
            dir.join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
    };
    let index = json(dir.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let tag = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("a reference name")
        .to_string();
    let manifest = blob(&manifests[0]["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    Layout {
        dir: dir.to_path_buf(),
        tag,
        manifest,
        config,
    }
}

/// `umoci unpack`: a runtime bundle (config.json and rootfs/) of the layout's image.
fn unpack(layout: &Layout, bundle: &Path) {
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{}", layout.dir.display(), layout.tag))
        .arg(bundle));
}

// ---- running it with runc ----------------------------------------------------------------

/// A runc container and its state directory, deleted (with anything still running in it) on
/// drop.
struct Runc {
    root: PathBuf,
    id: String,
}

impl Runc {
    fn new(name: &str) -> Self {
        remove_stale_containers();
        let id = format!("{}-{name}", std::process::id());
        let root = Path::new(RUNC_ROOT).join(&id);
        std::fs::create_dir_all(&root).unwrap();
        Runc { root, id }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(which("runc").expect("runc"));
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// `runc run` of `bundle` in the foreground, to completion.
    fn run_to_end(&self, bundle: &Path) -> Output {
        self.command()
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .output()
            .expect("runc runs")
    }

    /// The container's init process (ebb) as the host sees it.
    fn pid(&self) -> u32 {
        let state: Value =
            serde_json::from_str(&run(self.command().args(["state", &self.id]))).unwrap();
        state["pid"].as_u64().expect("a pid") as u32
    }

    fn kill(&self, signal: &str) {
        run(self.command().args(["kill", &self.id, signal]));
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        delete_containers(&self.root);
    }
}

/// `runc delete --force` of every container under `root`, then `root` itself.
fn delete_containers(root: &Path) {
    let Some(runc) = which("runc") else { return };
    let list = Command::new(&runc)
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .output();
    for id in list
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
    {
        let _ = Command::new(&runc)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id])
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(root);
    // The parent too, when no other test (or test run) has a container in it.
    let _ = std::fs::remove_dir(RUNC_ROOT);
}

/// Containers of test runs that were killed before their guards ran.
fn remove_stale_containers() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(dirs) = std::fs::read_dir(RUNC_ROOT) else {
            return;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let pid: i32 = name
                .split('-')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            // SAFETY: kill(pid, 0) only checks that the process exists.
            if pid > 0 && unsafe { libc::kill(pid, 0) } != 0 {
                eprintln!("removing the containers of an earlier test run ({name})");
                delete_containers(&dir.path());
            }
        }
    });
}

/// What a container runs, beyond the bundle's image config.
struct Spec {
    /// Replaces the image's entrypoint and command, as a pod's `command` + `args` would.
    args: Vec<String>,
    /// Added to the image's environment.
    env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
    hostname: String,
    /// (host path, container path): read-only bind mounts, as the kubelet's volumes are.
    mounts: Vec<(PathBuf, String)>,
    /// A network namespace to join; none: a fresh one (runc brings up its loopback).
    netns: Option<PathBuf>,
    memory_limit: Option<u64>,
    /// CPU limit in millicores.
    cpu_limit: Option<u64>,
}

/// Rewrites the bundle's config.json (umoci's, from the image config) for `spec`: read-only
/// root, no capabilities, no_new_privs, fresh namespaces.
fn configure(bundle: &Path, spec: &Spec) {
    let path = bundle.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let p = &mut c["process"];
    p["terminal"] = false.into();
    p["args"] = json!(spec.args);
    let mut env: Vec<String> = p["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        // umoci adds TERM for its terminal; a pod has none.
        .filter(|v| !v.starts_with("TERM="))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    p["env"] = json!(env);
    p["user"] = json!({ "uid": spec.uid, "gid": spec.gid });
    let none: Vec<String> = vec![];
    p["capabilities"] = json!({ "bounding": none, "effective": none, "inheritable": none,
                                 "permitted": none, "ambient": none });
    p["noNewPrivileges"] = true.into();
    c["root"]["readonly"] = true.into();
    c["hostname"] = spec.hostname.clone().into();
    let mounts = c["mounts"].as_array_mut().unwrap();
    for (source, destination) in &spec.mounts {
        mounts.push(
            json!({ "destination": destination, "type": "bind", "source": source,
                            "options": ["rbind", "ro", "nosuid", "nodev"] }),
        );
    }
    let linux = &mut c["linux"];
    let mut namespaces: Vec<Value> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network" && n["type"] != "cgroup")
        .cloned()
        .collect();
    namespaces.push(match &spec.netns {
        Some(path) => json!({ "type": "network", "path": path }),
        None => json!({ "type": "network" }),
    });
    namespaces.push(json!({ "type": "cgroup" }));
    linux["namespaces"] = json!(namespaces);
    if let Some(bytes) = spec.memory_limit {
        linux["resources"]["memory"] = json!({ "limit": bytes });
    }
    if let Some(millis) = spec.cpu_limit {
        linux["resources"]["cpu"] = json!({ "quota": millis * 100, "period": 100_000 });
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

/// A spec that runs `args` as the image's user in a fresh network namespace.
fn plain(args: &[&str]) -> Spec {
    Spec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        uid: 65532,
        gid: 65532,
        hostname: "ebb".into(),
        mounts: vec![],
        netns: None,
        memory_limit: None,
        cpu_limit: None,
    }
}

/// The host's view, to check that a test left it as it found it: the mount table (the lines
/// naming `dir`) and the network interfaces.
fn host_state(dir: &Path) -> (Vec<String>, BTreeSet<String>) {
    let dir = dir.to_string_lossy();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(str::to_string)
        .collect();
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    (mounts, links)
}

// ---- a network namespace of the test's own -----------------------------------------------

enum NsRequest {
    Listen(SocketAddr, mpsc::Sender<std::io::Result<TcpListener>>),
    Connect(SocketAddr, mpsc::Sender<std::io::Result<TcpStream>>),
}

/// A thread in a network namespace of its own (loopback up) that makes sockets there: the
/// container joins the namespace at [`NetNs::path`]. Dropping it ends the thread; the
/// namespace ends with the last process and socket in it.
struct NetNs {
    path: PathBuf,
    requests: Mutex<mpsc::Sender<NsRequest>>,
}

impl NetNs {
    fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<NsRequest>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("container-netns".into())
            .spawn(move || {
                let entered = (|| {
                    // SAFETY: unshare(2) of this thread's network namespace only.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    loopback_up()?;
                    // SAFETY: gettid(2) has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    Ok(PathBuf::from(format!(
                        "/proc/{}/task/{tid}/ns/net",
                        std::process::id()
                    )))
                })();
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                for request in rx {
                    match request {
                        NsRequest::Listen(addr, reply) => {
                            let _ = reply.send(TcpListener::bind(addr));
                        }
                        NsRequest::Connect(addr, reply) => {
                            let _ = reply
                                .send(TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
                        }
                    }
                }
            })
            .unwrap();
        let path = ready_rx
            .recv()
            .unwrap()
            .expect("a network namespace (unshare CLONE_NEWNET)");
        Arc::new(NetNs {
            path,
            requests: Mutex::new(tx),
        })
    }

    fn listen(&self, addr: SocketAddr) -> TcpListener {
        let (tx, rx) = mpsc::channel();
        self.requests
            .lock()
            .unwrap()
            .send(NsRequest::Listen(addr, tx))
            .unwrap();
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("listen on {addr} in the namespace: {e}"))
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .lock()
            .unwrap()
            .send(NsRequest::Connect(addr, tx))
            .map_err(|_| std::io::Error::other("the namespace thread is gone"))?;
        let stream = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .unwrap()
            .map_err(|_| std::io::Error::other("the namespace thread is gone"))??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }
}

/// `ip link set lo up`, in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a socket for the ioctls, closed below; `req` is a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 { Ok(()) } else { Err(err) }
    }
}

/// Connections to `listener` (a socket in the container's namespace) are carried to `to` on the
/// host.
fn forward_out_of(listener: TcpListener, to: SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut host) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                }
            });
        }
    });
}

/// A host loopback port whose connections are carried to `to` inside the namespace.
async fn forward_into(ns: &Arc<NetNs>, to: SocketAddr) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ns = ns.clone();
    tokio::spawn(async move {
        while let Ok((mut host, _)) = listener.accept().await {
            let ns = ns.clone();
            tokio::spawn(async move {
                if let Ok(mut inside) = ns.connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut host, &mut inside).await;
                }
            });
        }
    });
    port
}

// ---- the deployment -----------------------------------------------------------------------

/// Bytes of a Kubernetes memory quantity as deploy/ writes them (Mi, Gi).
fn memory_bytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("memory quantity {q}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("memory quantity {q}: unit {unit}"),
    }
}

/// Millicores of a Kubernetes CPU quantity ("1", "500m").
fn cpu_millis(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<u64>().unwrap() * 1000,
    }
}

fn named_port(container: &Container, name: &str) -> u16 {
    container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no port {name}"))
        .container_port as u16
}

fn write_file(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).unwrap();
    // A Secret volume's default mode: readable by the container's user.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn readable_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn the_image_is_reproducible_and_carries_what_the_readme_says() {
    if !tools_or_skip("the_image_is_reproducible_and_carries_what_the_readme_says") {
        return;
    }
    let a = image();
    let b = build_image("ebb-test-again.oci.tar");
    assert_eq!(a.digest, b.digest, "two builds of one binary, two digests");
    assert!(
        std::fs::read(&a.archive).unwrap() == std::fs::read(&b.archive).unwrap(),
        "two builds of one binary, one digest but different archives"
    );
    std::fs::remove_file(&b.archive).unwrap();
    eprintln!(
        "image {}: {} bytes, built in {:.1} s (then {:.1} s)",
        a.digest,
        std::fs::metadata(&a.archive).unwrap().len(),
        a.seconds,
        b.seconds
    );

    let dir = tempfile::tempdir().unwrap();
    let layout = read_layout(&a.archive, &dir.path().join("layout"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(layout.tag, version);
    let c = &layout.config;
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["config"]["User"], "65532:65532");
    assert_eq!(c["config"]["Entrypoint"], json!(["/usr/local/bin/ebb"]));
    assert_eq!(c["config"]["Cmd"], json!(["serve"]));
    let labels = &c["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/ebb-autoscaler/ebb"
    );
    let head = run(Command::new("git")
        .args(["-C", REPO, "rev-parse", "HEAD"])
        .stderr(Stdio::null()));
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    assert!(revision.starts_with(head.trim()), "{revision} is not HEAD");
    let layers = layout.manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // deploy/ and the chart name one image, tagged with the version the image carries.
    let yaml = |path: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(format!("{REPO}/{path}")).unwrap()).unwrap()
    };
    let base = yaml("deploy/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let chart = yaml("deploy/helm/ebb/Chart.yaml");
    let values = yaml("deploy/helm/ebb/values.yaml");
    assert_eq!(
        values["image"]["tag"], "",
        "the chart's tag defaults to its appVersion"
    );
    let chart_image = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart["appVersion"].as_str().unwrap()
    );
    assert_eq!(
        base, chart_image,
        "deploy/ and the chart name different images"
    );
    assert_eq!(
        base.rsplit_once(':').unwrap().1,
        version,
        "deploy/'s image is not tagged with ebb's version"
    );

    // What `skopeo copy oci-archive:...` reads.
    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", a.archive.display()))))
    .unwrap();
    assert_eq!(inspect["Digest"], json!(a.digest));
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        version
    );
}

#[test]
fn ebb_runs_in_the_image_and_nothing_of_the_host_leaks_in() {
    if !tools_or_skip("ebb_runs_in_the_image_and_nothing_of_the_host_leaks_in") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = host_state(dir.path());
    let layout = read_layout(&image().archive, &dir.path().join("layout"));
    let bundle = dir.path().join("bundle");
    unpack(&layout, &bundle);
    let rootfs = bundle.join("rootfs");

    // Every file of the root: ebb, the loader and the libraries ebb links (readelf), the CA
    // bundle, users and groups, the licences. No shell, no other program.
    let mut files = BTreeSet::new();
    let mut stack = vec![rootfs.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(&rootfs).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                files.insert(rel);
            }
        }
    }
    let readelf = run(Command::new("readelf").args(["-dW", EBB]));
    let mut expected: BTreeSet<String> = readelf
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(|l| {
            let soname = l.split('[').nth(1).unwrap().trim_end_matches(']');
            format!("lib/x86_64-linux-gnu/{soname}")
        })
        .collect();
    expected.extend(
        [
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "lib64/ld-linux-x86-64.so.2",
            "usr/local/bin/ebb",
            "etc/passwd",
            "etc/group",
            "etc/nsswitch.conf",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/share/doc/libc6/copyright",
            "usr/share/doc/libgcc-s1",
            "usr/share/doc/ca-certificates/copyright",
        ]
        .map(String::from),
    );
    let doc_base: Vec<String> = files
        .iter()
        .filter(|f| f.starts_with("usr/share/doc/gcc-") && f.ends_with("-base/copyright"))
        .cloned()
        .collect();
    assert_eq!(doc_base.len(), 1, "libgcc-s1's copyright: {files:?}");
    expected.extend(doc_base);
    assert_eq!(files, expected, "the image's files");
    assert!(!rootfs.join("bin/sh").exists());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    // ebb runs: read-only root, user 65532, no capabilities.
    let runc = Runc::new("version");
    configure(&bundle, &plain(&["/usr/local/bin/ebb", "--version"]));
    let out = runc.run_to_end(&bundle);
    assert!(
        out.status.success(),
        "ebb --version in the container: {out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ebb {}", env!("CARGO_PKG_VERSION"))
    );

    // No shell to run.
    configure(&bundle, &plain(&["/bin/sh", "-c", "true"]));
    let out = runc.run_to_end(&bundle);
    assert!(!out.status.success(), "a shell ran in the image: {out:?}");

    // A host binary that needs a library the image lacks: the image's loader finds only the
    // image's libraries.
    let openssl = which("openssl").expect("openssl (scripts/install-packages.sh installs it)");
    let host_readelf = run(Command::new("readelf").arg("-dW").arg(&openssl));
    assert!(host_readelf.contains("[libssl.so.3]"), "{host_readelf}");
    let mut spec = plain(&["/opt/host/openssl", "version"]);
    spec.mounts.push((openssl, "/opt/host/openssl".into()));
    configure(&bundle, &spec);
    let out = runc.run_to_end(&bundle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        stderr.contains("error while loading shared libraries: libssl.so.3"),
        "{stderr}"
    );

    drop(runc);
    assert!(
        !Path::new(RUNC_ROOT)
            .join(format!("{}-version", std::process::id()))
            .exists()
    );
    assert_eq!(
        host_state(dir.path()),
        before,
        "the host's mounts or interfaces changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebb_serve_runs_in_the_image_as_the_deployment_on_the_control_plane() {
    if !tools_or_skip("ebb_serve_runs_in_the_image_as_the_deployment_on_the_control_plane") {
        return;
    }
    // The image and the control plane at once.
    let stack = std::thread::spawn(|| {
        start_stack(StackOptions {
            kube: Some(ControlPlaneOptions {
                hpa_controller: false,
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let image = tokio::task::spawn_blocking(image).await.unwrap();
    let stack: Stack = stack.join().unwrap();
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();

    // The kustomize base as users apply it, but the Deployment: this container is its pod.
    let bin = ebb::localstack::control_plane_bin().await.unwrap();
    let manifest =
        run(Command::new(bin.join("kubectl")).args(["kustomize", &format!("{REPO}/deploy")]));
    let mut deployment = None;
    let mut rest = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&manifest) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        if value["kind"] == "Deployment" {
            deployment = Some(serde_yaml::from_value::<Deployment>(value).unwrap());
        } else if !value.is_null() {
            rest.push(serde_yaml::to_string(&value).unwrap());
        }
    }
    apply_yaml(&client, &rest.join("---\n"), "image-test")
        .await
        .expect("the base applies");
    let deployment = deployment.expect("the base's Deployment");
    let ns = deployment.metadata.namespace.clone().unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == "ebb")
        .unwrap()
        .clone();
    let pod_name = "ebb-6d5f8c7b9-image".to_string();
    let service_account = pod.service_account_name.clone().unwrap();

    // What the kubelet mounts: the serving certificate's Secret and the ServiceAccount's token.
    let dir = tempfile::tempdir().unwrap();
    let before = host_state(dir.path());
    let cert_dir = dir.path().join("serving-cert");
    readable_dir(&cert_dir);
    let cert = kube
        .serving_cert(&[&format!("ebb.{ns}.svc"), "localhost", "127.0.0.1"])
        .unwrap();
    write_file(&cert_dir.join("tls.crt"), cert.cert_pem.as_bytes());
    write_file(&cert_dir.join("tls.key"), cert.key_pem.as_bytes());
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(
            &service_account,
            &PostParams::default(),
            &serde_json::from_value::<TokenRequest>(json!({ "spec": { "audiences": [] } }))
                .unwrap(),
        )
        .await
        .expect("a token for the ServiceAccount")
        .status
        .unwrap()
        .token
        .expect("a token");
    let sa_dir = dir.path().join("serviceaccount");
    readable_dir(&sa_dir);
    write_file(&sa_dir.join("token"), token.as_bytes());
    write_file(&sa_dir.join("ca.crt"), kube.ca_pem().as_bytes());
    write_file(&sa_dir.join("namespace"), ns.as_bytes());
    let mut mounts = vec![(sa_dir, SERVICE_ACCOUNT_DIR.to_string())];
    for m in container.volume_mounts.clone().unwrap_or_default() {
        assert_eq!(m.name, "serving-cert", "a volume this test cannot provide");
        assert_eq!(m.read_only, Some(true));
        mounts.push((cert_dir.clone(), m.mount_path));
    }

    // The container's network: its own namespace, where 127.0.0.1:<port> leads to the API
    // server (the pod's KUBERNETES_SERVICE_HOST/PORT).
    let netns = NetNs::new();
    let api_server: SocketAddr = kube
        .server_url
        .strip_prefix("https://")
        .unwrap()
        .parse()
        .unwrap();
    forward_out_of(netns.listen(api_server), api_server);

    // The container as the pod spec says: the image's entrypoint with the container's args;
    // the image's environment, the in-cluster one and the container's (downward API resolved).
    let mut env = vec![
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            api_server.ip().to_string(),
        ),
        (
            "KUBERNETES_SERVICE_PORT".to_string(),
            api_server.port().to_string(),
        ),
    ];
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
        env.push((var.name, value));
    }
    let layout = read_layout(&image.archive, &dir.path().join("layout"));
    assert!(container.command.is_none(), "the image's entrypoint runs");
    let mut args: Vec<String> =
        serde_json::from_value(layout.config["config"]["Entrypoint"].clone()).unwrap();
    args.extend(container.args.clone().unwrap_or_default());
    let pod_security = pod.security_context.clone().unwrap();
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let limits = container.resources.clone().unwrap().limits.unwrap();
    let spec = Spec {
        args,
        env,
        uid: pod_security.run_as_user.unwrap() as u32,
        gid: pod_security.run_as_group.unwrap() as u32,
        hostname: pod_name.clone(),
        mounts,
        netns: Some(netns.path.clone()),
        memory_limit: Some(memory_bytes(&limits["memory"].0)),
        cpu_limit: Some(cpu_millis(&limits["cpu"].0)),
    };
    let bundle = dir.path().join("bundle");
    unpack(&layout, &bundle);
    configure(&bundle, &spec);

    let runc = Runc::new("serve");
    let log = dir.path().join("ebb.log");
    let mut cmd = runc.command();
    cmd.args(["run", "--bundle"]).arg(&bundle).arg(&runc.id);
    let ebb = ManagedProcess::spawn("runc run (ebb serve)", cmd, &log).expect("runc starts");
    let started = Instant::now();
    let milestone = |what: &str| eprintln!("{:>5.1} s: {what}", started.elapsed().as_secs_f64());

    // The probes, over HTTPS to 0.0.0.0:6443 inside the container.
    let api_port = named_port(&container, "https");
    let https = forward_into(&netns, SocketAddr::from(([127, 0, 0, 1], api_port))).await;
    ebb::install_crypto_provider();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(kube.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for probe in [&container.startup_probe, &container.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        let path = get.path.clone().unwrap();
        let url = format!("https://localhost:{https}{path}");
        eventually(
            MINUTE,
            &format!("{path} in the container to answer 200"),
            || async {
                if !ebb.is_running() {
                    panic!("the container exited:\n{}", ebb.log_tail(30));
                }
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
    }

    milestone("/livez and /readyz answer 200 inside the container");

    // It runs as the pod spec says: user and group 65532, no capabilities, read-only root.
    let pid = runc.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["65532"; 4]);
    assert_eq!(field("Gid:"), ["65532"; 4]);
    assert_eq!(field("CapEff:"), ["0000000000000000"]);
    assert_eq!(field("NoNewPrivs:"), ["1"]);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("the container's root mount");
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "the root is not read-only: {root}"
    );

    // /metrics, plain HTTP on :8080.
    let metrics = forward_into(
        &netns,
        SocketAddr::from(([127, 0, 0, 1], named_port(&container, "metrics"))),
    )
    .await;
    let body = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("ebb_"), "{body}");

    // The controller: it takes the Lease under the pod's name.
    let lease_name = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "EBB_LEASE_NAME")
        .and_then(|v| v.value.clone())
        .unwrap();
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    eventually(MINUTE, "ebb in the container to hold the Lease", || async {
        let holder = leases
            .get_opt(&lease_name)
            .await
            .ok()??
            .spec?
            .holder_identity?;
        (holder == pod_name).then_some(())
    })
    .await;
    milestone("it holds the Lease");

    // The aggregator reaches it: the Service pointed at the host port that leads into the
    // container, the APIService trusting the CA of the mounted certificate.
    let apiservice = "v1beta1.external.metrics.k8s.io";
    Api::<Service>::namespaced(client.clone(), &ns)
        .patch(
            "ebb",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "type": "ExternalName", "externalName": "localhost",
                                            "selector": null } }),
            ),
        )
        .await
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Api::<APIService>::all(client.clone())
        .patch(
            apiservice,
            &PatchParams::apply("image-test-loopback").force(),
            &Patch::Apply(json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "spec": { "service": { "namespace": ns, "name": "ebb", "port": https },
                          "caBundle": b64(kube.ca_pem()) }
            })),
        )
        .await
        .unwrap();
    kube.wait_api_service_available(apiservice)
        .await
        .expect("the APIService served from the container to be Available");
    let discovery = client
        .request_text(
            http::Request::get("/apis/external.metrics.k8s.io/v1beta1")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .expect("discovery through the aggregator");
    assert!(discovery.contains("APIResourceList"), "{discovery}");
    milestone("the APIService is Available through the aggregator");

    // What the kubelet does to stop it: SIGTERM to PID 1 of the container.
    runc.kill("TERM");
    eventually(
        Duration::from_secs(10),
        "ebb (PID 1 of the container) to exit on SIGTERM",
        || async { (!ebb.is_running()).then_some(()) },
    )
    .await;
    milestone("it stopped on SIGTERM");
    let mut log_text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut log_text)
        .unwrap();
    assert!(!log_text.contains("panicked"), "{log_text}");
    eprintln!("the container's log, last lines:\n{}", ebb.log_tail(5));

    // Nothing left: no container, no state, the host's mounts and interfaces as before.
    drop(ebb);
    let state = runc.root.clone();
    drop(runc);
    drop(netns);
    assert!(!state.exists(), "runc's state {} is left", state.display());
    assert_eq!(
        host_state(dir.path()),
        before,
        "the host's mounts or interfaces changed"
    );
}
