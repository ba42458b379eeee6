//! A real RabbitMQ (the Debian package) with the management plugin, its own node name, data
//! dir, Erlang port mapper and free loopback ports.
//!
//! We run `/usr/lib/rabbitmq/bin/rabbitmq-server` (not Debian's `/usr/sbin` wrapper, which
//! switches user through `su` and so escapes our process group), with `RUNNING_UNDER_SYSTEMD`
//! set so that the script `exec`s the Erlang VM: the pid we hold is the broker's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{ManagedProcess, free_port, wait_until};
use super::{StackError, start_error};

const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A queue's message counts, and its publish rate as the broker's statistics give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueCounts {
    pub ready: i64,
    pub unacked: i64,
    /// Messages published a second (`message_stats.publish_details.rate`), when present.
    pub publish_rate: Option<f64>,
    /// Messages published since the queue was declared (`message_stats.publish`), when present.
    pub published: Option<u64>,
}

impl QueueCounts {
    /// Ready + unacknowledged: the backlog ebb's RabbitMQ source scales on.
    pub fn backlog(&self) -> i64 {
        self.ready + self.unacked
    }
}

/// Declares `queue` (not durable, default arguments) on `channel`: what publishers and consumers
/// in the demo and the tests do before they use a queue. Idempotent.
pub async fn declare_queue(channel: &lapin::Channel, queue: &str) -> Result<(), StackError> {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .map_err(|e| StackError::Upstream(format!("AMQP queue.declare {queue}: {e}")))?;
    Ok(())
}

/// A running (or stopped, between `stop` and `start_again`) RabbitMQ node.
#[derive(Debug)]
pub struct RabbitMq {
    // Field order is drop order: the broker before its port mapper.
    broker: Option<ManagedProcess>,
    /// Held for its Drop: stopped after the broker.
    _epmd: ManagedProcess,
    dir: PathBuf,
    node: String,
    amqp_port: u16,
    management_port: u16,
    dist_port: u16,
    epmd_port: u16,
    http: reqwest::Client,
}

impl RabbitMq {
    /// Starts a broker with data under `dir` and waits until its management API answers.
    pub async fn start(dir: &Path) -> Result<Self, StackError> {
        static INSTANCE: AtomicU32 = AtomicU32::new(0);
        std::fs::create_dir_all(dir)?;
        let amqp_port = free_port();
        let management_port = free_port();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp_port}\n\
                 management.tcp.port = {management_port}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 loopback_users = none\n\
                 # Statistics (and so rates) every second rather than every 5 s: tests wait less.\n\
                 collect_statistics_interval = 1000\n"
            ),
        )?;
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n")?;
        std::fs::write(dir.join("rabbitmq-env.conf"), "")?;

        // An Erlang port mapper of our own: the shared one on 4369 would outlive us.
        let epmd_port = free_port();
        let mut epmd = Command::new("epmd");
        epmd.args(["-port", &epmd_port.to_string()]);
        let epmd = ManagedProcess::spawn("epmd", epmd, &dir.join("epmd.log"))?;

        let node = format!(
            "ebb-{}-{}@localhost",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut rabbit = Self {
            broker: None,
            _epmd: epmd,
            dir: dir.to_path_buf(),
            node,
            amqp_port,
            management_port,
            dist_port: free_port(),
            epmd_port,
            http: super::http_client(),
        };
        rabbit.start_again().await?;
        Ok(rabbit)
    }

    fn env(&self, cmd: &mut Command) {
        let d = &self.dir;
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_LOGS", "-")
            .env("RUNNING_UNDER_SYSTEMD", "1");
    }

    /// Starts the broker again after [`Self::stop`]: same node, ports and data.
    pub async fn start_again(&mut self) -> Result<(), StackError> {
        if self.broker.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(SERVER_SCRIPT);
        self.env(&mut cmd);
        let broker = ManagedProcess::spawn("rabbitmq", cmd, &self.dir.join("rabbitmq.log"))?;
        let url = format!("{}/api/overview", self.management_url());
        let http = &self.http;
        // It boots in seconds on an idle machine; one busy compiling has taken over 90.
        let ready = wait_until(Duration::from_secs(180), || async {
            http.get(&url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if !ready {
            return Err(start_error(
                &broker,
                "the management API did not answer within 180 s",
            ));
        }
        self.broker = Some(broker);
        Ok(())
    }

    /// Stops the broker (gracefully: SIGTERM makes the Erlang VM shut the node down).
    pub fn stop(&mut self) {
        self.broker = None;
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `http://127.0.0.1:<port>` (user guest, password guest).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    /// An AMQP connection as guest (publishers and consumers in the demo and the tests).
    pub async fn connect(&self) -> Result<lapin::Connection, StackError> {
        crate::install_crypto_provider();
        lapin::Connection::connect(&self.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .map_err(|e| StackError::Upstream(format!("AMQP connect: {e}")))
    }

    /// Ready and unacknowledged messages of `queue` (vhost `/`) as the management API counts
    /// them; `None` while the queue does not exist or the API has no figures yet.
    pub async fn queue_counts(&self, queue: &str) -> Result<Option<QueueCounts>, StackError> {
        let url = format!("{}/api/queues/%2f/{queue}", self.management_url());
        let response = self
            .http
            .get(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let q: serde_json::Value = response.error_for_status()?.json().await?;
        Ok(
            match (
                q["messages_ready"].as_i64(),
                q["messages_unacknowledged"].as_i64(),
            ) {
                (Some(ready), Some(unacked)) => Some(QueueCounts {
                    ready,
                    unacked,
                    publish_rate: q["message_stats"]["publish_details"]["rate"].as_f64(),
                    published: q["message_stats"]["publish"].as_u64(),
                }),
                _ => None,
            },
        )
    }

    /// Empties `queue` (vhost `/`) of its ready messages.
    pub async fn purge(&self, queue: &str) -> Result<(), StackError> {
        let url = format!("{}/api/queues/%2f/{queue}/contents", self.management_url());
        self.http
            .delete(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A `rabbitmqctl` command set up to reach this node.
    pub fn rabbitmqctl(&self) -> Command {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut cmd);
        cmd.args(["-n", &self.node]);
        cmd
    }
}
