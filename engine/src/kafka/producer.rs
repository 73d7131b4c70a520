//! The idempotent producer behind the Kafka sinks and the dead-letter topic, with delivery acknowledgements
//! counted in an [`AckTracker`].
//!
//! One `ThreadedProducer` (its own thread polls for delivery reports) serves every Kafka output of a run. Each
//! record is numbered by the tracker before it is handed to librdkafka; the delivery callback acknowledges (or
//! fails) that number. The collector asks the sinks for a [`Ticket`] after each batch, so a batch counts as done
//! only once everything produced for it is acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, warn};

use super::{
    DEAD_LETTER_SCHEMA, HEADER_CONTENT_TYPE, HEADER_REASON, HEADER_SCHEMA, HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, client_config, kafka_error,
};
use crate::config::KafkaConfig;
use crate::delivery::{AckTracker, Ticket};
use crate::error::{Error, Result, RetryHint};
use crate::event::{ANOMALY_SCHEMA, AnomalyEvent, ROOT_CAUSE_SCHEMA, RootCauseReport};
use crate::sink::Sink;

/// Routes delivery reports to the tracker.
pub struct AckContext {
    tracker: Arc<AckTracker>,
}

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka producer error (librdkafka retries by itself).");
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        match result {
            Ok(_) => self.tracker.ack(id as u64),
            Err((e, _)) => {
                error!(%e, "A Kafka output record was not delivered; its input will not be committed.");
                self.tracker.fail(id as u64, e.to_string());
            }
        }
    }
}

/// Where a dead-lettered input record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The shared idempotent producer (`enable.idempotence=true`, so `acks=all` and ordered, duplicate-free retries).
pub struct KafkaProducer {
    producer: ThreadedProducer<AckContext>,
    tracker: Arc<AckTracker>,
    flush_timeout: Duration,
}

impl KafkaProducer {
    pub fn new(kafka: &KafkaConfig, flush_timeout: Duration) -> Result<Arc<Self>> {
        let tracker = AckTracker::new();
        let cfg = client_config(
            kafka,
            // Outputs are few and latency matters more than batching them: 1 ms, not librdkafka's 5 ms.
            &[("linger.ms", "1"), ("client.id", "faultline-producer")],
            &kafka.producer_properties,
            &[("enable.idempotence", "true"), ("acks", "all")],
        );
        let producer = cfg
            .create_with_context(AckContext { tracker: Arc::clone(&tracker) })
            .map_err(|e| kafka_error("cannot create the Kafka producer", &e))?;
        Ok(Arc::new(Self { producer, tracker, flush_timeout }))
    }

    pub fn tracker(&self) -> &Arc<AckTracker> {
        &self.tracker
    }

    /// Hands one record to librdkafka (waiting while its queue is full); the tracker learns when it is delivered.
    pub fn send(&self, topic: &str, key: &[u8], payload: &[u8], headers: OwnedHeaders) -> Result<()> {
        self.tracker.check()?;
        let id = self.tracker.reserve();
        let mut record = BaseRecord::with_opaque_to(topic, id as usize).key(key).payload(payload).headers(headers);
        let mut waited = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: the producer thread drains the queue as the broker acknowledges.
                    record = r;
                    std::thread::sleep(Duration::from_micros(500));
                    if waited.elapsed() > Duration::from_secs(10) {
                        warn!(topic, "Kafka producer queue has been full for 10 s; still waiting for the broker.");
                        waited = Instant::now();
                    }
                    self.tracker.check()?;
                }
                Err((e, _)) => {
                    self.tracker.fail(id, e.to_string());
                    return Err(kafka_error(&format!("cannot produce to {topic}"), &e));
                }
            }
        }
    }

    /// Waits for every record handed over so far to be acknowledged.
    pub fn flush(&self) -> Result<()> {
        self.tracker.check()?;
        if let Err(e) = self.producer.flush(self.flush_timeout) {
            return Err(kafka_error("flushing the Kafka producer", &e));
        }
        if !self.tracker.wait_all(self.flush_timeout) {
            self.tracker.check()?;
            return Err(Error::External {
                system: "kafka",
                message: format!(
                    "{} output records still unacknowledged after {:?}",
                    self.tracker.in_flight(),
                    self.flush_timeout
                ),
                retry: RetryHint::Retry,
            });
        }
        Ok(())
    }

    /// Sends an undecodable input record, unchanged, to the dead-letter topic with headers saying where it came
    /// from and why it was rejected.
    pub fn dead_letter(&self, topic: &str, origin: Origin<'_>, key: &[u8], raw: &[u8], reason: &str) -> Result<()> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header { key: HEADER_SCHEMA, value: Some(DEAD_LETTER_SCHEMA) })
            .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(origin.topic) })
            .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(partition.as_str()) })
            .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(offset.as_str()) })
            .insert(Header { key: HEADER_REASON, value: Some(reason) });
        self.send(topic, key, raw, headers)
    }
}

/// Anomaly events (keyed by service) and/or root-cause reports (keyed by incident id) as JSON records on a topic,
/// with `faultline.schema` and `content-type` headers. The value is the same JSON as the JSON-lines sink writes.
pub struct KafkaSink {
    producer: Arc<KafkaProducer>,
    topic: String,
    anomalies: bool,
    reports: bool,
    buf: Vec<u8>,
}

impl KafkaSink {
    pub fn new(producer: Arc<KafkaProducer>, topic: &str, anomalies: bool, reports: bool) -> Self {
        Self { producer, topic: topic.into(), anomalies, reports, buf: Vec::with_capacity(2048) }
    }

    fn send<T: serde::Serialize>(&mut self, key: &str, schema: &str, value: &T) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value)
            .map_err(|e| Error::Internal(format!("serialising an event: {e}")))?;
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: HEADER_SCHEMA, value: Some(schema) })
            .insert(Header { key: HEADER_CONTENT_TYPE, value: Some("application/json") });
        self.producer.send(&self.topic, key.as_bytes(), &self.buf, headers)
    }
}

impl Sink for KafkaSink {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()> {
        if self.anomalies { self.send(&ev.key.service.clone(), ANOMALY_SCHEMA, &ev.to_wire()) } else { Ok(()) }
    }

    fn report(&mut self, r: &RootCauseReport) -> Result<()> {
        if self.reports { self.send(&r.incident_id, ROOT_CAUSE_SCHEMA, r) } else { Ok(()) }
    }

    fn finish(&mut self) -> Result<()> {
        self.producer.flush()
    }

    fn ticket(&mut self) -> Result<Option<Ticket>> {
        self.producer.tracker.check()?;
        Ok(Some(self.producer.tracker.ticket()))
    }
}
