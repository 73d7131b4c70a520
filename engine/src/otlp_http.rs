//! An OTLP/HTTP receiver as a source (`source.kind = "otlp-http"`): OpenTelemetry SDKs and Collectors push metrics
//! straight to Faultline with `POST /v1/metrics`, no Kafka needed (an edge box, a single service's sidecar).
//!
//! The HTTP thread decodes each request (protobuf or JSON, gzip or not) into a batch of points and queues it; the
//! pipeline's source thread takes queued batches in arrival order. Answers follow the OTLP/HTTP specification:
//! 200 with an empty `ExportMetricsServiceResponse` once the request's points are queued; 400 with the reason for a
//! request that cannot be decoded (it is dead-lettered too); 503 with `Retry-After` when the queue is full, which
//! senders retry (backpressure, nothing dropped); 413, 415, 404 and 405 for what is not a metrics export.
//!
//! Delivery: a 200 means queued, not yet scored. On SIGTERM/SIGINT (or `stop-when-idle`) the receiver stops taking
//! requests and everything queued is scored before the run ends; a crash loses what was queued.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tracing::{info, warn};

use crate::config::OtlpHttpConfig;
use crate::error::{Error, Result, RetryHint};
use crate::model::Batch;
use crate::otlp::OtlpDecoder;
use crate::source::{DeadLetters, Source};

/// Largest request body accepted (after decompression).
const MAX_BODY: u64 = 32 << 20;
/// Poll interval of the source thread while nothing is queued (bounds how late a stop flag is noticed).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What the HTTP thread hands the source thread.
enum Intake {
    Points(Batch),
    /// A request that could not be decoded: where from, why, and its body (lossy text, at most 4 KiB).
    Bad {
        at: String,
        reason: String,
        raw: String,
    },
}

pub struct OtlpHttpSource {
    /// `None` once closed: dropping it closes the listening socket.
    server: Option<Arc<tiny_http::Server>>,
    thread: Option<JoinHandle<()>>,
    rx: Receiver<Intake>,
    addr: String,
    max_wait: Duration,
    stop_when_idle: Duration,
    stop: Arc<AtomicBool>,
    last_request: Instant,
    stopped: bool,
}

impl OtlpHttpSource {
    /// Listens on `cfg.listen` (port 0 picks a free one). `stop` is polled between batches: set it to stop taking
    /// requests, score what is queued and end.
    pub fn new(cfg: &OtlpHttpConfig, stop: Arc<AtomicBool>) -> Result<Self> {
        let server = tiny_http::Server::http(cfg.listen.trim()).map_err(|e| Error::External {
            system: "otlp-http",
            message: format!("cannot listen on {} (source.otlp-http.listen): {e}", cfg.listen),
            retry: RetryHint::NoRetry,
        })?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_string();
        let (tx, rx) = bounded(cfg.queue.max(1));
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("otlp-http".into())
            .spawn(move || receive(&s, &tx))
            .map_err(|e| Error::Internal(format!("cannot start the OTLP/HTTP thread: {e}")))?;
        info!(%addr, "Receiving OTLP metrics at POST /v1/metrics.");
        Ok(Self {
            server: Some(server),
            thread: Some(thread),
            rx,
            addr,
            max_wait: cfg.max_wait.0,
            stop_when_idle: cfg.stop_when_idle.0,
            stop,
            last_request: Instant::now(),
            stopped: false,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops taking requests (later ones are refused by the closed socket); what is queued stays queued.
    fn close(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Some(server) = &self.server {
                server.unblock();
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            // The thread's handle is gone with it: this is the last one, and the socket closes.
            self.server = None;
        }
    }

    fn take(&mut self, item: Intake, batch: &mut Batch, dead: &mut DeadLetters) -> Result<()> {
        self.last_request = Instant::now();
        match item {
            Intake::Points(b) => {
                batch.extend_from(&b, 0..b.len());
                Ok(())
            }
            Intake::Bad { at, reason, raw } => dead.record("otlp-http", &at, &reason, &raw),
        }
    }
}

impl Drop for OtlpHttpSource {
    fn drop(&mut self) {
        self.close();
    }
}

impl Source for OtlpHttpSource {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> Result<bool> {
        let mut first: Option<Instant> = None;
        loop {
            if !self.stopped {
                let idle = !self.stop_when_idle.is_zero() && self.last_request.elapsed() >= self.stop_when_idle;
                if self.stop.load(Ordering::Relaxed) || idle {
                    info!(idle, "Stop requested: no more requests taken; scoring what is queued.");
                    self.close();
                }
            }
            if self.stopped {
                // Drain: everything acknowledged with 200 is scored.
                while batch.len() < max {
                    match self.rx.try_recv() {
                        Ok(item) => self.take(item, batch, dead)?,
                        Err(_) => return Ok(false),
                    }
                }
                return Ok(true);
            }
            let wait = match first {
                Some(t) => match self.max_wait.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(true),
                },
                None => IDLE_POLL,
            };
            match self.rx.recv_timeout(wait) {
                Ok(item) => {
                    self.take(item, batch, dead)?;
                    if !batch.is_empty() && first.is_none() {
                        first = Some(Instant::now());
                    }
                    if batch.len() >= max {
                        return Ok(true);
                    }
                }
                Err(RecvTimeoutError::Timeout) if batch.is_empty() => return Ok(true),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("otlp-http {}", self.addr)
    }

    fn finish(&mut self, _clean: bool) -> Result<()> {
        self.close();
        Ok(())
    }
}

/// The HTTP thread: answers every request, queueing its points.
fn receive(server: &tiny_http::Server, tx: &Sender<Intake>) {
    let mut decoder = OtlpDecoder::new();
    let mut n = 0u64;
    for mut req in server.incoming_requests() {
        n += 1;
        let at = format!("request {n} from {}", req.remote_addr().map_or("?".to_string(), |a| a.to_string()));
        let header = |name: &str| {
            req.headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_ascii_lowercase())
        };
        let json = header("Content-Type").is_some_and(|c| c.starts_with("application/json"));
        let proto = header("Content-Type").is_some_and(|c| c.starts_with("application/x-protobuf"));
        let gzip = header("Content-Encoding").is_some_and(|c| c == "gzip");
        let (status, body): (u16, Vec<u8>) = if req.url().split('?').next() != Some("/v1/metrics") {
            (404, b"not found: OTLP metrics are POSTed to /v1/metrics\n".to_vec())
        } else if *req.method() != tiny_http::Method::Post {
            (405, b"method not allowed: POST\n".to_vec())
        } else if !json && !proto {
            (415, b"unsupported content type: application/x-protobuf or application/json\n".to_vec())
        } else {
            let mut raw = Vec::new();
            let read = if gzip {
                flate2::read::MultiGzDecoder::new(req.as_reader()).take(MAX_BODY + 1).read_to_end(&mut raw)
            } else {
                req.as_reader().take(MAX_BODY + 1).read_to_end(&mut raw)
            };
            match read {
                Err(e) => (400, format!("cannot read the request body: {e}\n").into_bytes()),
                Ok(_) if raw.len() as u64 > MAX_BODY => (413, b"request body over 32 MiB\n".to_vec()),
                Ok(_) => {
                    let mut batch = Batch::default();
                    let decoded = if json {
                        decoder.decode_json(&raw, &mut batch)
                    } else {
                        decoder.decode_proto(&raw, &mut batch)
                    };
                    let item = match decoded {
                        Ok(_) => Intake::Points(batch),
                        Err(reason) => {
                            let text = if json {
                                String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned()
                            } else {
                                format!("<{} bytes of protobuf>", raw.len())
                            };
                            Intake::Bad { at: at.clone(), reason, raw: text }
                        }
                    };
                    let bad = matches!(item, Intake::Bad { .. });
                    match tx.try_send(item) {
                        Ok(()) if bad => (400, b"cannot decode the request (dead-lettered)\n".to_vec()),
                        // An empty ExportMetricsServiceResponse: nothing rejected.
                        Ok(()) => (200, if json { b"{}".to_vec() } else { Vec::new() }),
                        Err(TrySendError::Full(_)) => (503, b"busy: retry later\n".to_vec()),
                        Err(TrySendError::Disconnected(_)) => (503, b"shutting down\n".to_vec()),
                    }
                }
            }
        };
        let content_type: &[u8] = match (status, json) {
            (200, true) => b"application/json",
            (200, false) => b"application/x-protobuf",
            _ => b"text/plain; charset=utf-8",
        };
        let mut resp = tiny_http::Response::from_data(body).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type) {
            resp.add_header(h);
        }
        if status == 503
            && let Ok(h) = tiny_http::Header::from_bytes(&b"Retry-After"[..], &b"1"[..])
        {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            warn!(%e, %at, "Could not answer an OTLP/HTTP request.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::units::HumanDuration;

    /// POSTs an empty (valid) protobuf export; the status code.
    fn post_empty(addr: &str) -> u16 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
                   Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split(' ').nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_full_queue_answers_503_until_the_pipeline_takes_what_is_queued() {
        let cfg = OtlpHttpConfig {
            listen: "127.0.0.1:0".into(),
            queue: 1,
            max_wait: HumanDuration(Duration::from_millis(5)),
            stop_when_idle: HumanDuration(Duration::ZERO),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut source = OtlpHttpSource::new(&cfg, Arc::clone(&stop)).unwrap();
        let addr = source.addr().to_string();
        assert_eq!(post_empty(&addr), 200, "queued");
        assert_eq!(post_empty(&addr), 503, "the queue is full: the sender retries");
        let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
        let mut batch = Batch::default();
        assert!(source.next_batch(&mut batch, 16, &mut dead).unwrap());
        assert_eq!(post_empty(&addr), 200, "room again");
        stop.store(true, Ordering::Relaxed);
        // The queued request is taken before the end is reported; then the socket is closed.
        assert!(!source.next_batch(&mut batch, 16, &mut dead).unwrap());
        // The listening socket closes (tiny_http's acceptor thread lets go of it just after).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_ok() {
            assert!(Instant::now() < deadline, "still listening after the stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(dead.count(), 0);
    }
}
