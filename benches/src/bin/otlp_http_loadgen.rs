//! End-to-end OTLP/HTTP benchmark: synthetic OTLP protobuf requests of 1000 points POSTed to the engine's
//! OTLP/HTTP receiver on loopback by client threads, through decoding, shards, detection and incidents (no sinks'
//! IO: a JSON-lines sink to /dev/null). Prints points/s, the requests that got 503 (and were retried) and the run
//! summary as JSON.
//!
//! ```text
//! cargo run --release -p faultline-benches --bin otlp_http_loadgen -- SERIES TICKS [CLIENTS] [GZIP]
//! ```
//!
//! The time runs from the first request to the end of the run, after the last acknowledged point was scored.
//! `BENCH_SHARDS` sets the shard count (default 2).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faultline::config::Config;
use faultline_benches::telemetry::{points_per_record, tick_records};

/// One POST on a fresh connection; the status code.
fn post(port: u16, body: &[u8], gzip: bool) -> anyhow::Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let encoding = if gzip { "Content-Encoding: gzip\r\n" } else { "" };
    write!(
        s,
        "POST /v1/metrics HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\n{encoding}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let head = String::from_utf8_lossy(&out[..out.len().min(32)]).into_owned();
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad response {head:?}"))
}

fn gzipped(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("in memory");
    e.finish().expect("in memory")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(d), |s| s.parse().with_context(|| format!("argument {}: {s:?}", i + 1)))
    };
    let (series, ticks, clients) = (arg(0, 10_000)?, arg(1, 20)?, arg(2, 2)?.max(1));
    let gzip = args.get(3).is_some_and(|g| g == "gzip");
    if series < 1000 {
        bail!("SERIES must be at least 1000 (requests carry 1000 points)");
    }
    let shards: usize = std::env::var("BENCH_SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    // Requests in tick order; each client sends every `clients`-th group of a tick, so a series' points stay in order
    // (a series lives in one group, and ticks are sent one after another).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let requests: Vec<Vec<Vec<u8>>> = (0..ticks)
        .map(|t| {
            tick_records(false, series, t, &mut rng)
                .into_iter()
                .map(|(_, b)| if gzip { gzipped(&b) } else { b })
                .collect()
        })
        .collect();
    let points = (ticks * (series / 1000).max(1) * points_per_record(series)) as u64;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = format!(
        "[engine]\nshards = {shards}\n[source]\nkind = \"otlp-http\"\n[source.otlp-http]\nlisten = \"127.0.0.1:{port}\"\n\
         [[sinks]]\nkind = \"jsonl\"\npath = \"/dev/null\"\n[dead-letter]\npath = \"-\"\n"
    );
    let cfg = Config::from_layers(Some(("otlp-http-loadgen.toml", &text)), [])?;
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || faultline::app::run_config_until(&cfg, Vec::new(), stop))
    };
    // Wait for the receiver.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the receiver did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let retried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for tick in &requests {
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let retried = Arc::clone(&retried);
                    scope.spawn(move || -> anyhow::Result<()> {
                        for body in tick.iter().skip(c).step_by(clients) {
                            loop {
                                match post(port, body, gzip)? {
                                    200 => break,
                                    503 => {
                                        retried.fetch_add(1, Ordering::Relaxed);
                                        std::thread::sleep(Duration::from_millis(1));
                                    }
                                    s => bail!("status {s}"),
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            }
            Ok(())
        })?;
    }
    let sent_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let summary = engine.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))??;
    let total_s = started.elapsed().as_secs_f64();
    if summary.points != points {
        bail!("scored {} points of {points}", summary.points);
    }
    let out = serde_json::json!({
        "series": series,
        "ticks": ticks,
        "clients": clients,
        "gzip": gzip,
        "shards": shards,
        "requests": requests.iter().map(Vec::len).sum::<usize>(),
        "points": points,
        "retried_503": retried.load(Ordering::Relaxed),
        "all_acknowledged_s": sent_s,
        "all_scored_s": total_s,
        "points_per_s": points as f64 / total_s,
        "cpu_s_per_million_points": summary.cpu_s_per_million_points,
        "summary": summary,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
