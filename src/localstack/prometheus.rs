//! A real Prometheus (the Debian package) on a free loopback port with its own data dir, the
//! remote-write receiver on (so tests push exact samples) and out-of-order ingestion allowed
//! (so history can be backfilled through the same door).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{ManagedProcess, free_port, wait_until};
use super::{StackError, start_error};

/// A job Prometheus scrapes.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    pub job: String,
    /// `host:port`
    pub address: String,
    pub interval: Duration,
}

/// A running (or stopped, between `stop` and `start`) Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    process: Option<ManagedProcess>,
    dir: PathBuf,
    port: u16,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with data under `dir`, scraping `targets`.
    pub async fn start(dir: &Path, targets: &[ScrapeTarget]) -> Result<Self, StackError> {
        std::fs::create_dir_all(dir.join("data"))?;
        let mut config = String::from(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
             storage:\n  tsdb:\n    out_of_order_time_window: 30d\n",
        );
        if !targets.is_empty() {
            config.push_str("scrape_configs:\n");
            for t in targets {
                config.push_str(&format!(
                    "  - job_name: {:?}\n    scrape_interval: {}ms\n    static_configs:\n      - targets: [{:?}]\n",
                    t.job,
                    t.interval.as_millis(),
                    t.address
                ));
            }
        }
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let mut prometheus = Self {
            process: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            http: super::http_client(),
        };
        prometheus.start_again().await?;
        Ok(prometheus)
    }

    /// Starts the process again after [`Self::stop`], on the same port and data.
    pub async fn start_again(&mut self) -> Result<(), StackError> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new("prometheus");
        cmd.args([
            &format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ),
            &format!("--storage.tsdb.path={}", self.dir.join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{}", self.port),
            "--web.enable-remote-write-receiver",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=60d",
        ]);
        let process = ManagedProcess::spawn("prometheus", cmd, &self.dir.join("prometheus.log"))?;
        let url = format!("{}/-/ready", self.url());
        let http = &self.http;
        let ready = wait_until(Duration::from_secs(30), || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if !ready {
            return Err(start_error(&process, "/-/ready did not answer within 30 s"));
        }
        self.process = Some(process);
        Ok(())
    }

    /// Stops the process (data and port are kept for [`Self::start_again`]).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests this Prometheus has answered on the API `handlers` (e.g. `/api/v1/query`), summed
    /// over status codes, from its own `prometheus_http_requests_total`: what a caller cost it.
    pub async fn requests_served(&self, handlers: &[&str]) -> Result<u64, StackError> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(requests_served_in(&text, handlers))
    }

    /// Pushes samples through the remote-write receiver. `labels` must include `__name__`;
    /// samples are `(unix milliseconds, value)`.
    pub async fn push(
        &self,
        labels: &[(&str, &str)],
        samples: &[(i64, f64)],
    ) -> Result<(), StackError> {
        let body = remote_write::encode(labels, samples);
        let response = self
            .http
            .post(format!("{}/api/v1/write", self.url()))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            Err(StackError::Upstream(format!(
                "remote write: {status}: {}",
                response.text().await.unwrap_or_default()
            )))
        }
    }
}

/// The sum of `prometheus_http_requests_total` over the series whose `handler` is one of
/// `handlers`, in Prometheus's text exposition.
fn requests_served_in(exposition: &str, handlers: &[&str]) -> u64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("prometheus_http_requests_total{"))
        .filter(|series| {
            handlers
                .iter()
                .any(|h| series.contains(&format!("handler=\"{h}\"")))
        })
        .filter_map(|series| series.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The buckets of histogram `name` in a text exposition, summed over the series carrying every
/// label pair in `labels`: (upper bound, cumulative count), by upper bound.
pub fn histogram_buckets(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter(|series| {
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|series| {
            let le = series.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()?
            };
            let count = series.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Series that differ in other labels add up, bucket by bucket.
    buckets.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    buckets
}

/// The `q` quantile of what a cumulative histogram observed between two reads of it
/// ([`histogram_buckets`]): the upper bound of the first bucket holding it. NaN when nothing
/// was observed, or when the reads are not of one histogram's life (other buckets, or a count
/// that fell: the process restarted between them), so as to give no figure rather than a
/// wrong one. An empty `before` is a histogram not there yet.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let same_life = before.is_empty()
        || (before.len() == after.len()
            && before
                .iter()
                .zip(after)
                .all(|(b, a)| b.0 == a.0 && a.1 >= b.1));
    if !same_life {
        return f64::NAN;
    }
    let grown = |i: usize| after[i].1 - before.get(i).map_or(0.0, |b| b.1);
    let Some(total) = after.len().checked_sub(1).map(grown) else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    (0..after.len())
        .find(|&i| grown(i) >= q * total)
        .map_or(f64::NAN, |i| after[i].0)
}

/// The remote-write 1.0 wire format: a snappy-compressed protobuf `WriteRequest`
/// (prometheus/prometheus prompb/remote.proto, types.proto).
mod remote_write {
    #[derive(Clone, PartialEq, prost::Message)]
    struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Label {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Sample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }

    pub(super) fn encode(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Vec<u8> {
        use prost::Message as _;
        let mut labels: Vec<Label> = labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect();
        // The receiver requires labels sorted by name.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels,
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| Sample { value, timestamp })
                    .collect(),
            }],
        };
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy compression of an in-memory buffer")
    }
}

#[cfg(test)]
mod tests {
    use super::{histogram_buckets, quantile_between, requests_served_in};

    /// ebb's histogram as prometheus-client writes it, for two verbs and two codes.
    fn exposition(fast: u64, slow: u64) -> String {
        let series = |verb: &str, code: &str, le: &str, n: u64| {
            format!(
                "ebb_api_request_duration_seconds_bucket{{verb=\"{verb}\",code=\"{code}\",le=\"{le}\"}} {n}\n"
            )
        };
        let mut text = String::from("# TYPE ebb_api_request_duration_seconds histogram\n");
        let all = fast + slow;
        for (le, n) in [
            ("0.0001", fast),
            ("0.0002", fast),
            ("0.0004", all),
            ("+Inf", all),
        ] {
            text += &series("list", "200", le, n);
            text += &series("get", "200", le, 7);
            text += &series("list", "404", le, 3);
        }
        text + "ebb_api_request_duration_seconds_count{verb=\"list\",code=\"200\"} 1\n"
    }

    #[test]
    fn histogram_quantiles_between_two_reads() {
        let labels = [("verb", "list"), ("code", "200")];
        let name = "ebb_api_request_duration_seconds";
        // Series that differ in a label not asked for add up.
        let both = histogram_buckets(&exposition(1, 2), name, &[("code", "200")]);
        assert_eq!(
            both,
            [
                (0.0001, 8.0),
                (0.0002, 8.0),
                (0.0004, 10.0),
                (f64::INFINITY, 10.0)
            ]
        );
        let before = histogram_buckets(&exposition(0, 50), name, &labels);
        assert_eq!(
            before,
            [
                (0.0001, 0.0),
                (0.0002, 0.0),
                (0.0004, 50.0),
                (f64::INFINITY, 50.0)
            ]
        );
        // Between the reads: 98 fast, 2 slow. p50 and p98 are in the first bucket, p99 in the
        // third.
        let after = histogram_buckets(&exposition(98, 52), name, &labels);
        assert_eq!(quantile_between(&before, &after, 0.5), 0.0001);
        assert_eq!(quantile_between(&before, &after, 0.98), 0.0001);
        assert_eq!(quantile_between(&before, &after, 0.99), 0.0004);
        // The first read's 50 slow ones are not counted; read from nothing, they would be.
        assert_eq!(quantile_between(&[], &after, 0.98), 0.0004);
        // Nothing observed between the reads; no histogram at all.
        assert!(quantile_between(&after, &after, 0.99).is_nan());
        assert!(quantile_between(&[], &[], 0.99).is_nan());
        // A process restarted between the reads (counts fell), or other buckets: no figure.
        let restarted = histogram_buckets(&exposition(5, 1), name, &labels);
        assert!(quantile_between(&after, &restarted, 0.99).is_nan());
        assert!(quantile_between(&before[1..], &after, 0.99).is_nan());
    }

    #[test]
    fn requests_served_sums_the_named_handlers_over_status_codes() {
        // A cut of Prometheus 2.x's own /metrics.
        let exposition = r#"# HELP prometheus_http_requests_total Counter of HTTP requests.
# TYPE prometheus_http_requests_total counter
prometheus_http_requests_total{code="200",handler="/api/v1/query"} 12
prometheus_http_requests_total{code="400",handler="/api/v1/query"} 3
prometheus_http_requests_total{code="200",handler="/api/v1/query_range"} 5
prometheus_http_requests_total{code="200",handler="/api/v1/query_exemplars"} 100
prometheus_http_requests_total{code="200",handler="/-/ready"} 7
prometheus_http_request_duration_seconds_count{handler="/api/v1/query"} 15
"#;
        assert_eq!(requests_served_in(exposition, &["/api/v1/query"]), 15);
        assert_eq!(
            requests_served_in(exposition, &["/api/v1/query", "/api/v1/query_range"]),
            20
        );
        assert_eq!(requests_served_in(exposition, &["/api/v1/series"]), 0);
    }
}
