//! The controller's seam to metric values: [`MetricReader`], and its production implementation
//! [`CollectReader`], which reads the `collect` layer's deduplicated cache from memory.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::collect::{CachedValue, Collector, Subscription};
use crate::crd::Metric;
use crate::source::{SecretAccess, Secrets, SourceError, apply_empty_as};

/// Why a metric has no value. Never read as zero.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The source failed, refused, or answered with nothing to read.
    #[error("{}", source_message(.0))]
    Source(SourceError),
    /// A newly registered query has not been answered yet.
    #[error("source failed: {0}")]
    NoAnswer(String),
    /// The metric's configuration cannot be used by ebb itself.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The last answer is too old to stand for now: its refreshes have not landed.
    #[error("stale: {0}")]
    Stale(String),
    /// A formula with no value: an input without one, or a division by zero.
    #[error("no value: {0}")]
    Formula(String),
}

fn source_message(e: &SourceError) -> String {
    match e {
        SourceError::NoData(_)
        | SourceError::SecretNotFound(_)
        | SourceError::SecretRestricted(_) => e.to_string(),
        SourceError::Config(_) => format!("bad {e}"),
        _ => format!("source failed: {e}"),
    }
}

impl ReadError {
    /// The engine's reason for the missing value.
    pub fn no_data(&self) -> crate::engine::NoData {
        match self {
            ReadError::Source(SourceError::NoData(_)) => crate::engine::NoData::Empty,
            ReadError::Stale(_) => crate::engine::NoData::Stale,
            _ => crate::engine::NoData::SourceFailed,
        }
    }

    /// The reason of the `SourcesHealthy=False` condition it makes.
    pub fn reason(&self) -> &'static str {
        use crate::engine::conditions as cond;
        match self {
            ReadError::Source(e) => e.reason(),
            ReadError::NoAnswer(_) => cond::NO_ANSWER_YET,
            ReadError::Config(_) => cond::INVALID_CONFIGURATION,
            ReadError::Stale(_) => cond::STALE_READINGS,
            ReadError::Formula(_) => cond::FORMULA_NO_VALUE,
        }
    }
}

impl From<SourceError> for ReadError {
    fn from(e: SourceError) -> Self {
        ReadError::Source(e)
    }
}

/// A boxed future, so that readers can be shared as `Arc<dyn MetricReader>`.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<f64, ReadError>> + Send + 'a>>;

/// Past values as `(unix seconds, value)`, oldest first; `None` when the source keeps none.
pub type HistoryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<(i64, f64)>>, ReadError>> + Send + 'a>>;

/// Reads the current value of one metric of a ScaledTarget in `namespace`, polled every
/// `interval`.
pub trait MetricReader: Send + Sync {
    /// The metric's value now, or why there is none.
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a Metric,
        interval: Duration,
    ) -> ReadFuture<'a>;

    /// The metric's past values over `window` ending at `now` (Unix seconds), at a step of
    /// `interval` (whole seconds), from the source's own history (a Prometheus range query):
    /// what the adaptive rules learn from after a restart. `Ok(None)` when the source keeps
    /// none (RabbitMQ), the default.
    fn history<'a>(
        &'a self,
        _namespace: &'a str,
        _metric: &'a Metric,
        _interval: Duration,
        _window: Duration,
        _now: i64,
    ) -> HistoryFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}

/// Credentials are read again after this long, so a rotated Secret takes effect.
const RESOLVE_AGAIN_AFTER: Duration = Duration::from_secs(300);
/// A subscription nobody read for this long belongs to a metric or target that is gone.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How long a first read waits for the first fetch of a newly registered query.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(10);

struct Entry {
    subscription: Arc<Subscription>,
    resolved_at: Instant,
    last_read: Instant,
}

/// Reads through the [`Collector`]: each metric's query is registered once (identical
/// queries across targets are fetched once per interval) and every poll reads the cached
/// value from memory.
pub struct CollectReader {
    secrets: Secrets,
    collector: Collector,
    /// Keyed by namespace and the metric's source spec (JSON): equal specs share an entry.
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl CollectReader {
    pub fn new(client: kube::Client, collector: Collector) -> Self {
        Self {
            secrets: Secrets::new(client, SecretAccess::Any),
            collector,
            entries: Mutex::default(),
        }
    }

    /// Reads Secrets only within `access`.
    pub fn with_secret_access(mut self, access: SecretAccess) -> Self {
        self.secrets = self.secrets.with_access(access);
        self
    }

    async fn subscription(
        &self,
        namespace: &str,
        metric: &Metric,
        interval: Duration,
    ) -> Result<(Arc<Subscription>, bool), ReadError> {
        let spec = serde_json::to_string(&(&metric.prometheus, &metric.rabbitmq))
            .map_err(|e| ReadError::Config(e.to_string()))?;
        let key = (namespace.to_string(), spec);
        {
            let mut entries = self.entries.lock().expect("reader lock");
            let now = Instant::now();
            entries.retain(|_, e| now.duration_since(e.last_read) < FORGET_AFTER);
            if let Some(e) = entries.get_mut(&key)
                && now.duration_since(e.resolved_at) < RESOLVE_AGAIN_AFTER
            {
                e.last_read = now;
                return Ok((e.subscription.clone(), false));
            }
        }
        let query = match (&metric.prometheus, &metric.rabbitmq) {
            (Some(p), None) => p.resolve_with(&self.secrets, namespace).await?,
            (None, Some(r)) => r.resolve_with(&self.secrets, namespace).await?,
            _ => {
                return Err(ReadError::Config(
                    "a metric needs exactly one source".into(),
                ));
            }
        };
        let subscription = Arc::new(self.collector.register(query, interval)?);
        let now = Instant::now();
        self.entries.lock().expect("reader lock").insert(
            key,
            Entry {
                subscription: subscription.clone(),
                resolved_at: now,
                last_read: now,
            },
        );
        Ok((subscription, true))
    }
}

impl MetricReader for CollectReader {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a Metric,
        interval: Duration,
    ) -> ReadFuture<'a> {
        Box::pin(async move {
            let (subscription, new) = self.subscription(namespace, metric, interval).await?;
            let mut cached = subscription.get();
            if new || cached.is_none() {
                // A just-registered query is fetched at once; wait for that first answer
                // rather than report a failure the source never had.
                let deadline = Instant::now() + FIRST_FETCH_WAIT;
                while cached.is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    cached = subscription.get();
                }
            }
            let cached = cached.ok_or_else(|| {
                ReadError::NoAnswer(format!(
                    "no answer from {} yet",
                    subscription.query().describe()
                ))
            })?;
            let empty_as = metric.empty_as();
            let now = tokio::time::Instant::now();
            current_value(cached, now, subscription.stale_after(), empty_as)
        })
    }

    fn history<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a Metric,
        interval: Duration,
        window: Duration,
        now: i64,
    ) -> HistoryFuture<'a> {
        Box::pin(async move {
            let (subscription, _) = self.subscription(namespace, metric, interval).await?;
            Ok(subscription.source_history(window, now, interval).await?)
        })
    }
}

/// What a read makes of the cached outcome at `now`: its value (`emptyAs` applied) or its error;
/// but an outcome older than `stale_after` is [`ReadError::Stale`], whatever it holds: a value
/// whose refreshes stopped landing is not what the source says now (and an old "no data" is
/// not turned into `emptyAs` either).
fn current_value(
    cached: CachedValue,
    now: tokio::time::Instant,
    stale_after: Duration,
    empty_as: Option<f64>,
) -> Result<f64, ReadError> {
    let age = now.saturating_duration_since(cached.fetched_at);
    if age > stale_after {
        return Err(ReadError::Stale(format!(
            "the last answer is {}s old, over the {}s a refresh should take",
            age.as_secs(),
            stale_after.as_secs()
        )));
    }
    Ok(apply_empty_as(cached.result, empty_as)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    /// An outcome fetched at `fetched_at`.
    fn cached(result: Result<f64, SourceError>, fetched_at: tokio::time::Instant) -> CachedValue {
        CachedValue {
            result,
            due_at: fetched_at,
            fetched_at,
            timestamp: std::time::SystemTime::now(),
            last_ok: None,
        }
    }

    #[test]
    fn a_value_is_read_until_it_is_stale_then_it_is_no_data() {
        let fetched = tokio::time::Instant::now();
        let bound = Duration::from_secs(50);
        let read = |result: Result<f64, SourceError>, age: u64, empty_as| {
            let now = fetched + Duration::from_secs(age);
            current_value(cached(result, fetched), now, bound, empty_as)
        };
        assert_eq!(read(Ok(7.0), 0, None), Ok(7.0));
        assert_eq!(read(Ok(7.0), 50, None), Ok(7.0));
        let stale = read(Ok(7.0), 51, None);
        assert!(matches!(stale, Err(ReadError::Stale(_))), "{stale:?}");
        assert_eq!(stale.unwrap_err().no_data(), crate::engine::NoData::Stale);
        // emptyAs stands for a fresh "no data" only.
        let no_data = || Err(SourceError::NoData("empty".into()));
        assert_eq!(read(no_data(), 10, Some(0.0)), Ok(0.0));
        assert!(matches!(
            read(no_data(), 51, Some(0.0)),
            Err(ReadError::Stale(_))
        ));
        // A fresh failure stays the failure it is.
        let down = Err(SourceError::Unreachable("refused".into()));
        assert!(matches!(read(down, 1, None), Err(ReadError::Source(_))));
    }
}
