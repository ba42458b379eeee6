//! The RabbitMQ source against a real broker: backlog counts unacknowledged messages, rates
//! move, a regex aggregates queues, and the source reconnects by itself after a restart.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ebb::localstack::rabbitmq::RabbitMq;
use ebb::localstack::{Stack, StackOptions};
use ebb::source::{
    Aggregate, Connections, Measure, Query, RabbitMqConfig, SecretData, SecretRef, Source,
    SourceError,
};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use support::{eventually, start_stack};

fn rabbit_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        start_stack(StackOptions {
            rabbitmq: true,
            ..Default::default()
        })
    })
}

/// The connection Secret's data: management URL with credentials, and/or the AMQP URL.
fn secret(rabbit: &RabbitMq, management: bool, amqp: bool) -> SecretData {
    let mut data = SecretData::new();
    if management {
        let url = rabbit
            .management_url()
            .replace("http://", "http://guest:guest@");
        data.insert("managementUrl".into(), ByteString(url.into_bytes()));
    }
    if amqp {
        data.insert("amqpUrl".into(), ByteString(rabbit.amqp_url().into_bytes()));
    }
    data
}

fn config(queue: Option<&str>, regex: Option<&str>, measure: Measure) -> RabbitMqConfig {
    RabbitMqConfig {
        connection_secret_ref: SecretRef {
            name: "rabbit".into(),
        },
        queue: queue.map(Into::into),
        queue_regex: regex.map(Into::into),
        aggregate: Aggregate::Sum,
        vhost: None,
        measure,
        timeout: Some("3s".into()),
        empty_as: None,
    }
}

fn source(
    connections: &Connections,
    config: &RabbitMqConfig,
    data: &SecretData,
) -> Arc<dyn Source> {
    let query = Query::RabbitMq(config.resolve(data).unwrap());
    connections.source_for(&query).unwrap()
}

async fn connect(rabbit: &RabbitMq) -> (lapin::Connection, lapin::Channel) {
    ebb::install_crypto_provider();
    let conn =
        lapin::Connection::connect(&rabbit.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

async fn declare_and_publish(channel: &lapin::Channel, queue: &str, n: usize) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                // Persistent: survives a broker restart.
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Polls `source` until it returns `want`.
async fn until_value(source: &Arc<dyn Source>, want: f64, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        (source.fetch().await == Ok(want)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn backlog_counts_unacknowledged_messages_and_ready_does_not() {
    let rabbit = rabbit_stack().rabbitmq.as_ref().unwrap();
    let (conn, channel) = connect(rabbit).await;
    declare_and_publish(&channel, "orders", 37).await;
    // Take 5 deliveries and hold them unacknowledged.
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(5, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            "orders".into(),
            "held".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(consumer.next().await.unwrap().unwrap());
    }

    let connections = Connections::new();
    let both = secret(rabbit, true, true);
    let backlog = source(
        &connections,
        &config(Some("orders"), None, Measure::Backlog),
        &both,
    );
    let ready = source(
        &connections,
        &config(Some("orders"), None, Measure::Ready),
        &both,
    );
    until_value(&backlog, 37.0, "backlog 37").await;
    until_value(&ready, 32.0, "ready 32").await;
    // AMQP alone (passive declare) sees the ready messages too, and only those.
    let amqp_only = secret(rabbit, false, true);
    let amqp_ready = source(
        &connections,
        &config(Some("orders"), None, Measure::Ready),
        &amqp_only,
    );
    until_value(&amqp_ready, 32.0, "AMQP ready 32").await;
    // An unknown queue is an error, not 0, on both paths.
    let missing = config(Some("no-such-queue"), None, Measure::Ready);
    for data in [&both, &amqp_only] {
        let result = source(&connections, &missing, data).fetch().await;
        assert!(
            matches!(result, Err(SourceError::NotFound(_))),
            "{result:?}"
        );
    }
    // The AMQP source is fine after the failed declare closed its channel.
    assert_eq!(amqp_ready.fetch().await, Ok(32.0));
    drop(held);
    conn.close(0, "done".into()).await.unwrap();
}

/// A KEDA user's management URL names the vhost in the last segment of its path
/// (`.../%2f`), after any path prefix the API is served under.
#[tokio::test]
async fn a_management_url_that_names_its_vhost_reads_the_queue() {
    let rabbit = rabbit_stack().rabbitmq.as_ref().unwrap();
    let (_conn, channel) = connect(rabbit).await;
    declare_and_publish(&channel, "keda-style", 4).await;
    let mut data = SecretData::new();
    let url = format!(
        "{}/%2f",
        rabbit
            .management_url()
            .replace("http://", "http://guest:guest@")
    );
    data.insert("managementUrl".into(), ByteString(url.into_bytes()));
    let connections = Connections::default();
    let config = config(Some("keda-style"), None, Measure::Backlog);
    assert_eq!(config.resolve(&data).unwrap().vhost, "/");
    until_value(&source(&connections, &config, &data), 4.0, "the backlog").await;

    // Behind a reverse proxy that serves the management API under /rabbitmq (as an ingress
    // does, or RabbitMQ's management.path_prefix): the segments before the vhost are the
    // prefix, as KEDA reads them.
    let proxy = support::forwarding_proxy(rabbit.management_url(), |request| {
        let path = request.uri().path_and_query()?.as_str();
        path.strip_prefix("/rabbitmq").map(String::from)
    })
    .await;
    let url = format!(
        "{}/rabbitmq/%2f",
        proxy.replace("http://", "http://guest:guest@")
    );
    data.insert("managementUrl".into(), ByteString(url.into_bytes()));
    assert_eq!(config.resolve(&data).unwrap().vhost, "/");
    until_value(
        &source(&connections, &config, &data),
        4.0,
        "the backlog via the proxy",
    )
    .await;
}

#[tokio::test]
async fn publish_and_deliver_rates_move() {
    let rabbit = rabbit_stack().rabbitmq.as_ref().unwrap();
    let (conn, channel) = connect(rabbit).await;
    declare_and_publish(&channel, "rates", 0).await;
    let mut consumer = channel
        .basic_consume(
            "rates".into(),
            "auto".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move { while consumer.next().await.is_some() {} });
    let publisher = conn.create_channel().await.unwrap();
    let publishing = tokio::spawn(async move {
        loop {
            declare_and_publish(&publisher, "rates", 20).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let connections = Connections::new();
    let data = secret(rabbit, true, false);
    let publish = source(
        &connections,
        &config(Some("rates"), None, Measure::PublishRate),
        &data,
    );
    let deliver = source(
        &connections,
        &config(Some("rates"), None, Measure::DeliverRate),
        &data,
    );
    for (source, what) in [(&publish, "a publish rate"), (&deliver, "a deliver rate")] {
        let rate = eventually(Duration::from_secs(30), what, || async {
            source.fetch().await.ok().filter(|r| *r > 0.0)
        })
        .await;
        assert!(rate > 0.0);
    }
    publishing.abort();
    // The aborted publisher may leave its channel closing: the close result does not matter.
    let _ = conn.close(0, "done".into()).await;
}

#[tokio::test]
async fn a_regex_aggregates_the_queues_it_matches() {
    let rabbit = rabbit_stack().rabbitmq.as_ref().unwrap();
    let (conn, channel) = connect(rabbit).await;
    for (queue, n) in [
        ("shard-1", 3),
        ("shard-2", 5),
        ("shard-3", 7),
        ("shard-x-other", 100),
    ] {
        declare_and_publish(&channel, queue, n).await;
    }
    let connections = Connections::new();
    let data = secret(rabbit, true, false);
    let regex = r"shard-\d";
    for (aggregate, want) in [
        (Aggregate::Sum, 15.0),
        (Aggregate::Max, 7.0),
        (Aggregate::Avg, 5.0),
    ] {
        let config = RabbitMqConfig {
            aggregate,
            ..config(None, Some(regex), Measure::Backlog)
        };
        until_value(
            &source(&connections, &config, &data),
            want,
            &format!("{aggregate:?}"),
        )
        .await;
    }
    let none = source(
        &connections,
        &config(None, Some("nothing-.*"), Measure::Backlog),
        &data,
    );
    assert!(matches!(none.fetch().await, Err(SourceError::NoData(_))));
    conn.close(0, "done".into()).await.unwrap();
}

#[tokio::test]
async fn the_source_reconnects_by_itself_after_a_broker_restart() {
    // A private broker: this test restarts it.
    let mut stack = start_stack(StackOptions {
        rabbitmq: true,
        ..Default::default()
    });
    let rabbit = stack.rabbitmq.as_mut().unwrap();
    {
        let (conn, channel) = connect(rabbit).await;
        declare_and_publish(&channel, "durable", 9).await;
        conn.close(0, "done".into()).await.unwrap();
    }
    let connections = Connections::new();
    let amqp = source(
        &connections,
        &config(Some("durable"), None, Measure::Ready),
        &secret(rabbit, false, true),
    );
    let management = source(
        &connections,
        &config(Some("durable"), None, Measure::Backlog),
        &secret(rabbit, true, false),
    );
    until_value(&amqp, 9.0, "AMQP ready before the restart").await;
    until_value(&management, 9.0, "backlog before the restart").await;

    rabbit.stop();
    for source in [&amqp, &management] {
        let result = source.fetch().await;
        assert!(
            matches!(
                result,
                Err(SourceError::Unreachable(_) | SourceError::Timeout(_))
            ),
            "{result:?}"
        );
    }
    rabbit.start_again().await.unwrap();
    // The same sources, no new connection made by the test: they reconnect themselves.
    eventually(
        Duration::from_secs(60),
        "AMQP after the restart",
        || async { (amqp.fetch().await == Ok(9.0)).then_some(()) },
    )
    .await;
    until_value(&management, 9.0, "backlog after the restart").await;
    drop(stack);
}

#[tokio::test]
async fn the_measures_of_one_queue_asked_together_share_one_management_request() {
    let rabbit = rabbit_stack().rabbitmq.as_ref().unwrap();
    let (_conn, channel) = connect(rabbit).await;
    declare_and_publish(&channel, "shared", 7).await;
    let connections = Connections::new();
    let data = secret(rabbit, true, false);
    // What a DrainTime metric reads: the backlog, the publish and deliver rates, the ready
    // count, the publish counter.
    let measures = [
        Measure::Backlog,
        Measure::PublishRate,
        Measure::DeliverRate,
        Measure::Ready,
        Measure::Published,
    ];
    let sources: Vec<_> = measures
        .iter()
        .map(|&m| source(&connections, &config(Some("shared"), None, m), &data))
        .collect();
    let backlog = &sources[0];
    until_value(backlog, 7.0, "the backlog of 7").await;
    until_value(&sources[4], 7.0, "the publish counter at 7").await;
    tokio::time::sleep(ebb::source::rabbitmq::SHARE_WINDOW).await;
    let before = connections.rabbitmq_management_requests();
    let values = futures::future::join_all(sources.iter().map(|s| s.fetch())).await;
    assert_eq!(values[0], Ok(7.0));
    assert_eq!(values[3], Ok(7.0));
    assert_eq!(values[4], Ok(7.0), "the 7 messages published");
    assert!(values.iter().all(Result::is_ok), "{values:?}");
    assert_eq!(
        connections.rabbitmq_management_requests() - before,
        1,
        "five measures, one request"
    );
    // Past the window, a new request.
    tokio::time::sleep(ebb::source::rabbitmq::SHARE_WINDOW).await;
    backlog.fetch().await.unwrap();
    assert_eq!(connections.rabbitmq_management_requests() - before, 2);
}
