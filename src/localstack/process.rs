//! Child processes that cannot outlive us.
//!
//! Three layers, because test binaries keep their shared stack in a `static` that is never
//! dropped, and because a test run can be killed:
//! 1. `Drop` of a [`ManagedProcess`] stops it in order (SIGTERM to its process group, then
//!    SIGKILL after a grace period).
//! 2. An `atexit` hook does the same for every process still registered when the process exits
//!    normally (the test harness calls `exit` after the last test, also after a panic).
//! 3. `PR_SET_PDEATHSIG(SIGKILL)` kills the child if we die without running either (SIGKILL of
//!    the test binary, a crash). The kernel sends it when the *thread* that forked the child
//!    exits, so every child is forked by one spawner thread that lives as long as the process.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A started service process, logging to a file, stopped on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ebb-localstack-spawner".into())
            .spawn(move || {
                // Children are reaped by their ManagedProcess (waitpid); this thread only forks.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The channel's sender lives in a static: this loop never ends while we run.
            })
            .expect("spawn the localstack spawner thread");
        // SAFETY: `kill_all_registered` is an `extern "C" fn()` with no arguments, as atexit wants.
        unsafe { libc::atexit(kill_all_registered) };
        Mutex::new(tx)
    })
}

/// pid -> process group of every live child, for the atexit hook.
fn registry() -> &'static Mutex<HashMap<u32, String>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

extern "C" fn kill_all_registered() {
    let pids: Vec<u32> = match registry().try_lock() {
        Ok(map) => map.keys().copied().collect(),
        Err(_) => return,
    };
    for &pid in &pids {
        signal_group(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in &pids {
        wait_exit(pid, deadline);
        signal_group(pid, libc::SIGKILL);
        reap(pid);
    }
    for dir in cleanup_dirs().lock().map(|d| d.clone()).unwrap_or_default() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Directories removed by the atexit hook (for stacks kept in statics, never dropped).
pub(crate) fn cleanup_dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(Default::default)
}

fn signal_group(pid: u32, sig: i32) {
    // Each child leads its own process group (setpgid in pre_exec), so this also reaches what
    // it started (Erlang's helper processes, for instance).
    unsafe {
        libc::kill(-(pid as i32), sig);
        libc::kill(pid as i32, sig);
    }
}

fn reap(pid: u32) -> bool {
    let mut status = 0;
    let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    r == pid as i32 || r == -1
}

fn wait_exit(pid: u32, deadline: Instant) -> bool {
    loop {
        if reap(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl ManagedProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`, in its own process group, with a
    /// parent-death signal. `name` is used in errors and logs.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .expect("spawner lock")
            .send((cmd, tx))
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        let child = rx
            .recv()
            .map_err(|_| std::io::Error::other("spawner thread is gone"))??;
        let pid = child.id();
        // We reap by pid ourselves; dropping `Child` does not kill or wait.
        drop(child);
        registry()
            .lock()
            .expect("registry lock")
            .insert(pid, name.to_string());
        Ok(Self {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        !reap(self.pid)
    }

    /// The last `n` lines of the process's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        signal_group(self.pid, libc::SIGTERM);
        if !wait_exit(self.pid, Instant::now() + grace) {
            signal_group(self.pid, libc::SIGKILL);
            wait_exit(self.pid, Instant::now() + Duration::from_secs(5));
        }
        // Whatever the leader left in its group goes too.
        signal_group(self.pid, libc::SIGKILL);
        if let Ok(mut map) = registry().lock() {
            map.remove(&self.pid);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The last `n` lines of a log file ("" if it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback TCP port that is free now and not handed out before by this process.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral loopback port");
        if given.lock().expect("ports lock").insert(port) {
            return port;
        }
    }
}

/// Polls `ready` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ready().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
