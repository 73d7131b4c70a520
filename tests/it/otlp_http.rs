//! The OTLP/HTTP receiver (`source.kind = "otlp-http"`): the fixture POSTed as OTLP metrics, protobuf (plain and
//! gzip) and JSON, gives exactly the anomalies of the file replay; requests that are not metrics exports get the
//! status the OTLP/HTTP specification gives them; a stop scores everything acknowledged.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline::app;
use faultline::config::Config;
use prost::Message as _;

use crate::kafka::{file_replay, fixture_as_otlp, sorted};

/// One HTTP/1.1 request on a fresh connection; the response's status code and body.
fn request(port: u16, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "the receiver never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    write!(s, "{head}\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&out[..split]).split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

fn post(port: u16, content_type: &str, gzip: bool, body: &[u8]) -> (u16, Vec<u8>) {
    let encoding = if gzip { "\r\nContent-Encoding: gzip" } else { "" };
    request(port, &format!("POST /v1/metrics HTTP/1.1\r\nContent-Type: {content_type}{encoding}"), body)
}

fn gzipped(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn otlp_metrics_posted_over_http_give_exactly_the_file_replay_anomalies() {
    let (want, _) = file_replay();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("faultline-otlp-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("anomalies.jsonl");
    let text = format!(
        "[[sinks]]\nkind = \"jsonl\"\npath = {:?}\nevents = [\"anomaly\"]\n[engine]\nshards = 2\n[source]\nkind = \"otlp-http\"\n[source.otlp-http]\nlisten = \"127.0.0.1:{port}\"\n\
         [graph]\nedges = [[\"frontend\", \"checkout\"], [\"checkout\", \"payments\"], [\"checkout\", \"cart\"]]\n\
         [dead-letter]\npath = \"-\"\n",
        events.display().to_string()
    );
    let cfg = Config::from_layers(Some(("otlp-http.toml", &text)), []).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || app::run_config_until(&cfg, Vec::new(), stop))
    };
    for (i, r) in fixture_as_otlp().iter().enumerate() {
        let (status, body) = match i % 3 {
            0 => post(port, "application/x-protobuf", false, &r.encode_to_vec()),
            1 => post(port, "application/x-protobuf", true, &gzipped(&r.encode_to_vec())),
            _ => post(port, "application/json", false, &serde_json::to_vec(r).unwrap()),
        };
        assert_eq!(status, 200, "request {i}: {}", String::from_utf8_lossy(&body));
        if i == 7 {
            let (status, body) = post(port, "application/x-protobuf", false, b"\x0a\xff\xff garbage");
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        }
    }
    assert_eq!(request(port, "GET /v1/metrics HTTP/1.1", b"").0, 405);
    assert_eq!(request(port, "POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf", b"").0, 404);
    assert_eq!(post(port, "text/csv", false, b"a,b").0, 415);

    stop.store(true, Ordering::Relaxed);
    let summary = engine.join().unwrap().unwrap();
    assert_eq!(summary.points, 1600, "every acknowledged point scored once");
    assert_eq!(summary.dead_letters, 1, "the request that could not be decoded");
    let got: Vec<String> = std::fs::read_to_string(&events).unwrap().lines().map(String::from).collect();
    assert_eq!(sorted(got), sorted(want), "anomalies differ from the file replay");
    std::fs::remove_dir_all(&dir).unwrap();
    // the receiver closes with the run (tiny_http's acceptor thread lets go of the socket just after).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the receiver still listens after the run");
        std::thread::sleep(Duration::from_millis(10));
    }
}
