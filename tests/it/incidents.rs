//! Incidents grouped by time and call-graph proximity (issue 5): two faults at once in unrelated parts of the graph
//! are two incidents, each with its own root cause.

use faultline::config::Config;

use crate::support::run;

/// Two call chains that share nothing, `web -> api -> db` and `shop -> cart -> redis`, with 1-minute latency and
/// error-rate points for 5 hours. db's latency triples from minute 240 and redis's from minute 241, each for 40
/// minutes; every caller sees its callee's latency one minute later.
fn two_concurrent_faults() -> String {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        // Sum of four uniforms: roughly normal, deterministic.
        (0..4)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .sum::<f64>()
            * 0.03
    };
    let t0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
    let chains = [(["web", "api", "db"], 240), (["shop", "cart", "redis"], 241)];
    let mut out = String::new();
    for m in 0..300i64 {
        for (chain, start) in chains {
            // Depth 0 is the root of the chain's fault; each caller follows one minute later.
            for (depth, svc) in chain.iter().rev().enumerate() {
                let faulty = m >= start + depth as i64 && m < start + 40 + depth as i64;
                let own = 20.0 + 10.0 * depth as f64;
                let latency = own * if faulty { 3.0 } else { 1.0 } * (1.0 + noise());
                let errors = 0.002 * (1.0 + noise());
                let time = t0 + m * 60_000;
                out.push_str(&format!(
                    "{{\"time\":{time},\"service\":\"{svc}\",\"metric\":\"latency_p99_ms\",\"value\":{latency:.3}}}\n\
                     {{\"time\":{time},\"service\":\"{svc}\",\"metric\":\"error_rate\",\"value\":{errors:.6}}}\n"
                ));
            }
        }
    }
    out
}

fn config(points: &std::path::Path, edges: &str) -> Config {
    let toml = format!(
        "[source]\nkind = \"jsonl\"\npath = {:?}\n[graph]\nedges = {edges}\n[[sinks]]\nkind = \"summary\"\n",
        points.display().to_string()
    );
    Config::from_layers(Some(("concurrent.toml", &toml)), std::iter::empty()).unwrap()
}

/// (top candidate, affected services) of every closed incident, sorted.
fn incidents(cfg: &Config) -> Vec<(String, Vec<String>)> {
    let out = run(cfg);
    let mut v: Vec<(String, Vec<String>)> = out
        .reports
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["status"] == "closed")
        .map(|r| {
            let affected = r["affected_services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string());
            (r["candidates"][0]["service"].as_str().unwrap().to_string(), affected.collect())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn issue_5_concurrent_faults_in_unrelated_parts_of_the_graph_give_two_incidents() {
    let dir = std::env::temp_dir().join(format!("faultline-it-concurrent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let points = dir.join("points.jsonl");
    std::fs::write(&points, two_concurrent_faults()).unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let graph = r#"[["web", "api"], ["api", "db"], ["shop", "cart"], ["cart", "redis"]]"#;
    assert_eq!(
        incidents(&config(&points, graph)),
        vec![
            ("db".to_string(), names(&["api", "db", "web"])),
            ("redis".to_string(), names(&["cart", "redis", "shop"]))
        ]
    );

    // Without a graph Faultline cannot tell the faults apart: grouping by time alone makes one incident.
    let one = incidents(&config(&points, "[]"));
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].1.len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}
