//! The kernel benchmark's cases as a markdown table: points/s per implementation and series count, the ratio to
//! scalar and the fraction of the triad (bandwidth) bound. Each round times every case once, in turn, and the table
//! keeps each case's best round, so a machine shared with other work slows every case alike instead of whichever
//! criterion happened to be measuring. `--rounds N` (default 41).

use std::time::Instant;

use anyhow::{Context, bail};
use faultline_benches::kernels::{BYTES_PER_POINT, Bench, SERIES};
use faultline_kernels::Kernels;

fn main() -> anyhow::Result<()> {
    let mut rounds = 41usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().context("--rounds needs a number")?.parse()?,
            other => bail!("unknown argument {other:?}; expected --rounds N"),
        }
    }
    println!(
        "kernels: {:?}, detected {}; best of {rounds} interleaved rounds; {BYTES_PER_POINT} B per point\n",
        Kernels::available().iter().map(|k| k.name()).collect::<Vec<_>>(),
        Kernels::detect()
    );
    println!("| series | case | Mpoints/s | GB/s | × scalar (same form) | % of triad |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in SERIES {
        let mut bench = Bench::new(n);
        let mut cases = bench.cases();
        // Short timings (about 2 ms at scalar speed, one call at 1M series) so that some land between other work.
        let reps = (200_000 / n).max(1);
        let mut best = vec![f64::INFINITY; cases.len()];
        for _ in 0..rounds {
            for (case, best) in cases.iter_mut().zip(&mut best) {
                let t = Instant::now();
                for _ in 0..reps {
                    (case.run)();
                }
                *best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
        }
        let rate = |name: &str| {
            let i = cases.iter().position(|c| c.name == name).expect("case exists");
            n as f64 / best[i]
        };
        let triad = rate("triad");
        for case in &cases {
            let r = rate(&case.name);
            let form = case.name.rsplit_once('-').map_or("", |(form, _)| form);
            let vs_scalar =
                if case.name == "triad" { "".into() } else { format!("{:.1}", r / rate(&format!("{form}-scalar"))) };
            println!(
                "| {n} | {} | {:.0} | {:.1} | {vs_scalar} | {:.0} % |",
                case.name,
                r / 1e6,
                r * BYTES_PER_POINT as f64 / 1e9,
                100.0 * r / triad
            );
        }
    }
    Ok(())
}
