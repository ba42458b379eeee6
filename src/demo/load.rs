//! The demo's load: a repeating profile, a RabbitMQ publisher with simulated workers draining
//! the queue at a rate proportional to the worker Deployment's replicas, and an HTTP service
//! whose request counter Prometheus scrapes, driven by a request ramp.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::localstack::StackError;
use crate::localstack::rabbitmq::declare_queue;

/// The shape of the load over one cycle: quiet, ramp up, peak, ramp down, quiet again (long
/// enough for scale-down). `level` is 0 when quiet, 1 at the peak.
#[derive(Debug, Clone, Copy)]
pub struct LoadProfile {
    pub cycle: Duration,
}

/// Phase boundaries as fractions of a cycle.
const QUIET_END: f64 = 0.10;
const RAMP_UP_END: f64 = 0.30;
const PEAK_END: f64 = 0.55;
const RAMP_DOWN_END: f64 = 0.70;

impl LoadProfile {
    /// The load level (0..=1) `elapsed` after the start.
    pub fn level(&self, elapsed: Duration) -> f64 {
        let x = self.position(elapsed);
        if x < QUIET_END {
            0.0
        } else if x < RAMP_UP_END {
            (x - QUIET_END) / (RAMP_UP_END - QUIET_END)
        } else if x < PEAK_END {
            1.0
        } else if x < RAMP_DOWN_END {
            1.0 - (x - PEAK_END) / (RAMP_DOWN_END - PEAK_END)
        } else {
            0.0
        }
    }

    /// The phase's name, for the live view.
    pub fn phase(&self, elapsed: Duration) -> &'static str {
        match self.position(elapsed) {
            x if x < QUIET_END => "quiet",
            x if x < RAMP_UP_END => "ramping up",
            x if x < PEAK_END => "peak",
            x if x < RAMP_DOWN_END => "ramping down",
            _ => "quiet (scale-down)",
        }
    }

    /// When the first ramp begins.
    pub fn first_ramp(&self) -> Duration {
        self.cycle.mul_f64(QUIET_END)
    }

    fn position(&self, elapsed: Duration) -> f64 {
        let cycle = self.cycle.as_secs_f64().max(1.0);
        (elapsed.as_secs_f64() % cycle) / cycle
    }
}

/// A rate that follows the profile between `base` and `peak` (per second).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub base: f64,
    pub peak: f64,
}

impl Rate {
    pub fn at(&self, level: f64) -> f64 {
        self.base + (self.peak - self.base) * level
    }
}

/// Counters shared between the load tasks and the live view.
#[derive(Debug, Default)]
pub struct LoadCounters {
    pub published: AtomicU64,
    pub consumed: AtomicU64,
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    /// Ready replicas of the worker Deployment, refreshed by the demo.
    pub worker_replicas: AtomicI32,
}

/// The work of one tick: `rate` per second over `tick`, carrying fractions to the next tick so
/// that low rates still happen.
struct Pacer {
    carry: f64,
}

impl Pacer {
    fn take(&mut self, rate: f64, tick: Duration) -> u64 {
        self.carry += rate.max(0.0) * tick.as_secs_f64();
        let n = self.carry.floor();
        self.carry -= n;
        n as u64
    }
}

const TICK: Duration = Duration::from_millis(200);

/// Publishes to `queue` at `rate` following `profile`, until the task is dropped.
pub async fn publish(
    channel: lapin::Channel,
    queue: String,
    profile: LoadProfile,
    rate: Rate,
    started: Instant,
    counters: Arc<LoadCounters>,
) -> Result<(), StackError> {
    declare_queue(&channel, &queue).await?;
    let mut pacer = Pacer { carry: 0.0 };
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let n = pacer.take(rate.at(profile.level(started.elapsed())), TICK);
        publish_messages(&channel, &queue, n).await?;
        counters.published.fetch_add(n, Ordering::Relaxed);
    }
}

/// Publishes `n` messages to `queue` through the default exchange.
pub async fn publish_messages(
    channel: &lapin::Channel,
    queue: &str,
    n: u64,
) -> Result<(), StackError> {
    for _ in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"job",
                Default::default(),
            )
            .await
            .map_err(amqp)?;
    }
    Ok(())
}

/// Simulated workers: each Ready replica of the worker Deployment processes `per_replica`
/// messages per second from `queue`.
pub async fn consume(
    channel: lapin::Channel,
    queue: String,
    per_replica: f64,
    counters: Arc<LoadCounters>,
) -> Result<(), StackError> {
    declare_queue(&channel, &queue).await?;
    let mut pacer = Pacer { carry: 0.0 };
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let replicas = counters.worker_replicas.load(Ordering::Relaxed).max(0);
        let n = pacer.take(per_replica * f64::from(replicas), TICK);
        for _ in 0..n {
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .map_err(amqp)?;
            if got.is_none() {
                break;
            }
            counters.consumed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn amqp(e: lapin::Error) -> StackError {
    StackError::Upstream(format!("AMQP: {e}"))
}

/// The sample web service: `GET /` counts a request in `demo_http_requests_total`, `GET /metrics`
/// exposes it for Prometheus. Returns once bound; serves until the runtime stops.
pub async fn serve_web(listener: tokio::net::TcpListener) -> Result<(), StackError> {
    use axum::routing::get;
    let requests = Counter::<u64>::default();
    let mut registry = Registry::with_prefix("demo_http");
    registry.register(
        "requests",
        "Requests served by the sample web service",
        requests.clone(),
    );
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let requests = requests.clone();
                async move {
                    requests.inc();
                    "ok"
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    // Writing to a String cannot fail.
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

/// Sends requests to `url` at `rate` following `profile`, until the task is dropped.
pub async fn request_ramp(
    url: String,
    profile: LoadProfile,
    rate: Rate,
    started: Instant,
    counters: Arc<LoadCounters>,
) {
    let http = reqwest::Client::new();
    let mut pacer = Pacer { carry: 0.0 };
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let n = pacer.take(rate.at(profile.level(started.elapsed())), TICK);
        for _ in 0..n {
            let (http, url, counters) = (http.clone(), url.clone(), counters.clone());
            tokio::spawn(async move {
                let ok = http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let counter = if ok {
                    &counters.requests
                } else {
                    &counters.request_errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_quiet_then_peaks_then_quiet_again_every_cycle() {
        let p = LoadProfile {
            cycle: Duration::from_secs(100),
        };
        let at = |s: u64| p.level(Duration::from_secs(s));
        assert_eq!(at(0), 0.0);
        assert!((at(20) - 0.5).abs() < 1e-9, "halfway up the ramp");
        assert_eq!(at(40), 1.0);
        assert!(at(60) > 0.0 && at(60) < 1.0);
        assert_eq!(at(90), 0.0);
        assert_eq!(at(140), 1.0, "the second cycle repeats the first");
        assert_eq!(p.first_ramp(), Duration::from_secs(10));
        assert_eq!(p.phase(Duration::from_secs(45)), "peak");
    }

    #[test]
    fn a_pacer_keeps_fractions_so_low_rates_still_happen() {
        let mut p = Pacer { carry: 0.0 };
        let total: u64 = (0..50).map(|_| p.take(2.5, TICK)).sum();
        assert_eq!(total, 25, "2.5/s over 10 s");
    }
}
