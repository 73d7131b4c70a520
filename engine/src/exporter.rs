//! The engine's own metrics over HTTP while it runs (`[metrics] listen`): Prometheus text at `/metrics`, liveness at
//! `/healthz`, readiness at `/readyz` (200 once a Kafka source has partitions assigned; at once for other sources).
//!
//! The counters are the shards' own cache-padded atomics and a few the source and collector threads publish once a
//! batch; a scrape reads them into a fresh `prometheus` registry and encodes it. Nothing on the per-point path
//! changes: the only addition there is one histogram observation per batch in the collector.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tracing::{info, warn};

use crate::error::{Error, Result, RetryHint};
use crate::metrics::ShardCounters;

/// What a Kafka source shares with the exporter: whether partitions are assigned, and each assigned partition's
/// consumer lag (records behind the high watermark) from librdkafka's statistics.
#[derive(Debug, Default)]
pub struct SourceGauges {
    pub assigned: AtomicBool,
    /// `(topic, partition) -> lag`, replaced by each statistics report.
    pub lag: Mutex<Vec<(String, i32, i64)>>,
}

/// The live state a scrape reads.
#[derive(Debug)]
pub struct Live {
    pub counters: Arc<Vec<ShardCounters>>,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    pub incidents: AtomicU64,
    /// From hand-off to the router until the batch's events are written, in seconds.
    pub batch_latency: Histogram,
    pub source: Option<Arc<SourceGauges>>,
}

impl Live {
    pub fn new(counters: Arc<Vec<ShardCounters>>, source: Option<Arc<SourceGauges>>) -> Result<Self> {
        let buckets = prometheus::exponential_buckets(0.000_25, 2.0, 18).map_err(prom_err)?;
        let batch_latency = Histogram::with_opts(
            HistogramOpts::new(
                "faultline_batch_latency_seconds",
                "From a batch's hand-off to the router until its events were written",
            )
            .buckets(buckets),
        )
        .map_err(prom_err)?;
        Ok(Self {
            counters,
            dead_letters: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            incidents: AtomicU64::new(0),
            batch_latency,
            source,
        })
    }

    fn ready(&self) -> bool {
        self.source.as_ref().is_none_or(|g| g.assigned.load(Ordering::Relaxed))
    }
}

fn prom_err(e: prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {e}"))
}

/// The Prometheus text of `live` now.
pub fn render(live: &Live) -> Result<String> {
    let r = Registry::new();
    let sum = |f: fn(&ShardCounters) -> &AtomicU64| live.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum();
    let counter = |name: &str, help: &str, v: u64| -> Result<()> {
        let c = IntCounter::new(name, help).map_err(prom_err)?;
        c.inc_by(v);
        r.register(Box::new(c)).map_err(prom_err)
    };
    let points = IntCounterVec::new(Opts::new("faultline_points_total", "Points scored, by shard"), &["shard"])
        .map_err(prom_err)?;
    for (i, c) in live.counters.iter().enumerate() {
        points.with_label_values(&[&i.to_string()]).inc_by(c.points.load(Ordering::Relaxed));
    }
    r.register(Box::new(points)).map_err(prom_err)?;
    counter(
        "faultline_warm_up_points_total",
        "Points read again from before the committed offsets to warm the models (not in points)",
        sum(|c| &*c.warm_up_points),
    )?;
    counter("faultline_anomalies_total", "Anomaly events raised", sum(|c| &*c.anomalies))?;
    counter("faultline_late_points_total", "Points not newer than their series' last point", sum(|c| &*c.late))?;
    counter(
        "faultline_series_limit_refused_points_total",
        "Points of series without a model refused because engine.max-series series are modelled",
        sum(|c| &*c.refused),
    )?;
    counter(
        "faultline_series_restored_total",
        "Series that took back the model saved before the restart (engine.state-dir)",
        sum(|c| &*c.restored),
    )?;
    counter(
        "faultline_series_forgotten_total",
        "Series forgotten after sending no point for engine.series-idle (models freed, slots reused)",
        sum(|c| &*c.forgotten),
    )?;
    counter(
        "faultline_suppressed_low_volume_total",
        "Anomalous points silenced by the low-volume guard",
        sum(|c| &*c.low_volume),
    )?;
    counter(
        "faultline_learning_paused_points_total",
        "Points scored under a learning pause",
        sum(|c| &*c.learning_paused),
    )?;
    counter("faultline_feedback_verdicts_total", "Operator verdicts applied", sum(|c| &*c.feedback_verdicts))?;
    counter(
        "faultline_level_shifts_reverted_total",
        "Level shifts undone within detector.level-shift.revert-within (an outage: the model put back as before it)",
        sum(|c| &*c.shifts_reverted),
    )?;
    counter(
        "faultline_dead_letters_total",
        "Records that could not be decoded",
        live.dead_letters.load(Ordering::Relaxed),
    )?;
    counter("faultline_batches_total", "Batches handed to the shards", live.batches.load(Ordering::Relaxed))?;
    counter("faultline_incidents_total", "Incidents closed", live.incidents.load(Ordering::Relaxed))?;
    let series = IntGauge::new("faultline_series", "Series with a model").map_err(prom_err)?;
    series.set(i64::try_from(sum(|c| &*c.series)).unwrap_or(i64::MAX));
    r.register(Box::new(series)).map_err(prom_err)?;
    let ready = IntGauge::new("faultline_ready", "1 once the source is ready (a Kafka source: partitions assigned)")
        .map_err(prom_err)?;
    ready.set(i64::from(live.ready()));
    r.register(Box::new(ready)).map_err(prom_err)?;
    if let Some(cpu) = crate::clock::process_cpu() {
        let c = prometheus::Gauge::new("process_cpu_seconds_total", "CPU time of the process, every thread")
            .map_err(prom_err)?;
        c.set(cpu.as_secs_f64());
        r.register(Box::new(c)).map_err(prom_err)?;
    }
    if let Some(g) = &live.source {
        let lag = IntGaugeVec::new(
            Opts::new("faultline_kafka_consumer_lag", "Records behind the partition's high watermark"),
            &["topic", "partition"],
        )
        .map_err(prom_err)?;
        for (topic, partition, v) in g.lag.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            lag.with_label_values(&[topic.as_str(), &partition.to_string()]).set(*v);
        }
        r.register(Box::new(lag)).map_err(prom_err)?;
    }
    r.register(Box::new(live.batch_latency.clone())).map_err(prom_err)?;
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&r.gather(), &mut out).map_err(prom_err)?;
    String::from_utf8(out).map_err(|e| Error::Internal(format!("metrics: {e}")))
}

/// The HTTP endpoint, serving until dropped.
pub struct Exporter {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: String,
}

impl Exporter {
    /// Listens on `addr` (`host:port`; port 0 picks a free one) and serves `live`.
    pub fn start(addr: &str, live: Arc<Live>) -> Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::External {
            system: "metrics",
            message: format!("cannot listen on {addr} (metrics.listen): {e}"),
            retry: RetryHint::NoRetry,
        })?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_string();
        info!(%addr, "Serving metrics at /metrics, /healthz and /readyz.");
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&s, &live))
            .map_err(|e| Error::Internal(format!("cannot start the metrics thread: {e}")))?;
        Ok(Self { server, thread: Some(thread), addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, live: &Live) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or_default().to_string();
        let (status, body, content_type) = match path.as_str() {
            "/metrics" => match render(live) {
                Ok(text) => (200, text, "text/plain; version=0.0.4; charset=utf-8"),
                Err(e) => (500, format!("{e}\n"), "text/plain; charset=utf-8"),
            },
            "/healthz" => (200, "ok\n".to_string(), "text/plain; charset=utf-8"),
            "/readyz" if live.ready() => (200, "ready\n".to_string(), "text/plain; charset=utf-8"),
            "/readyz" => (503, "no partitions assigned yet\n".to_string(), "text/plain; charset=utf-8"),
            _ => (404, "not found: /metrics, /healthz, /readyz\n".to_string(), "text/plain; charset=utf-8"),
        };
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            warn!(%e, "Could not answer a metrics request.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_reads_the_shards_counters_and_the_endpoint_serves_it() {
        let counters: Arc<Vec<ShardCounters>> = Arc::new((0..2).map(|_| ShardCounters::default()).collect());
        counters[0].add(&counters[0].points, 7);
        counters[1].add(&counters[1].points, 5);
        counters[1].add(&counters[1].anomalies, 3);
        let gauges = Arc::new(SourceGauges::default());
        gauges.lag.lock().unwrap().push(("telemetry".into(), 2, 41));
        let live = Arc::new(Live::new(Arc::clone(&counters), Some(Arc::clone(&gauges))).unwrap());
        live.dead_letters.store(2, Ordering::Relaxed);
        live.batch_latency.observe(0.003);
        let text = render(&live).unwrap();
        for line in [
            "faultline_points_total{shard=\"0\"} 7",
            "faultline_points_total{shard=\"1\"} 5",
            "faultline_anomalies_total 3",
            "faultline_dead_letters_total 2",
            "faultline_kafka_consumer_lag{partition=\"2\",topic=\"telemetry\"} 41",
            "faultline_ready 0",
            "faultline_batch_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }

        let exporter = Exporter::start("127.0.0.1:0", Arc::clone(&live)).unwrap();
        let get = |path: &str| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(exporter.addr()).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let metrics = get("/metrics");
        assert!(metrics.starts_with("HTTP/1.0 200") || metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("faultline_anomalies_total 3"));
        assert!(get("/healthz").contains(" 200 "));
        assert!(get("/readyz").contains(" 503 "), "not ready before partitions are assigned");
        gauges.assigned.store(true, Ordering::Relaxed);
        assert!(get("/readyz").contains(" 200 "));
        assert!(get("/nope").contains(" 404 "));
        drop(exporter);
    }
}
