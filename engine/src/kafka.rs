//! Kafka at the edges: a consumer-group source ([`source::KafkaSource`]), an idempotent producer for anomaly events,
//! root-cause reports ([`producer::KafkaSink`]) and dead letters ([`producer::KafkaProducer::dead_letter`]).
//!
//! rdkafka's `BaseConsumer` (polled on the source thread) and `ThreadedProducer` (delivery callbacks on its own
//! polling thread) need no async runtime, so the engine stays free of tokio: shard workers and the collector are
//! plain threads. Delivery is at-least-once: offsets are committed only up to records whose batch was scored and
//! whose outputs the broker acknowledged (see [`crate::delivery`]).

pub mod producer;
pub mod source;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::KafkaConfig;
use crate::error::{Error, RetryHint};

/// Header naming the JSON Schema id of an output record (`faultline.anomaly.v1`, `faultline.root-cause.v1`,
/// `faultline.dead-letter.v1`).
pub const HEADER_SCHEMA: &str = "faultline.schema";
/// Header with the MIME type of an output record's value (`application/json`).
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Dead-letter headers: where the record came from and why it was rejected.
pub const HEADER_SOURCE_TOPIC: &str = "faultline.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "faultline.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "faultline.source.offset";
pub const HEADER_REASON: &str = "faultline.reason";
pub const DEAD_LETTER_SCHEMA: &str = "faultline.dead-letter.v1";

/// A librdkafka client config: `bootstrap.servers`, then Faultline's `fixed` settings' defaults, then the shared
/// `[kafka.properties]` and the client's own `extra` properties, then the `fixed` settings again (they win).
pub(crate) fn client_config(
    kafka: &KafkaConfig,
    defaults: &[(&str, &str)],
    extra: &BTreeMap<String, String>,
    fixed: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.brokers.trim());
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in kafka.properties.iter().chain(extra) {
        c.set(k, v);
    }
    for (k, v) in fixed {
        c.set(*k, *v);
    }
    c
}

/// A Kafka client error as the engine's error, with a retry hint from librdkafka's own classification.
pub(crate) fn kafka_error(context: &str, e: &KafkaError) -> Error {
    let retry = match e.rdkafka_error_code() {
        Some(code) if is_transient(code) => RetryHint::Retry,
        _ => RetryHint::NoRetry,
    };
    Error::External { system: "kafka", message: format!("{context}: {e}"), retry }
}

/// Errors a running client recovers from by itself (broker restarts, leader moves, timeouts).
pub(crate) fn is_transient(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::UnknownTopicOrPartition
            | C::Resolve
            | C::QueueFull
            | C::RebalanceInProgress
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::OffsetNotAvailable
    )
}
