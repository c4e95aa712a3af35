//! The renewal-scan benchmark: fills a store with synthetic certificate records, then times the
//! renewal scan ("next 1000 due") and the check-in lookup by thumbprint through the Store API
//! beside the same SQL run raw, on SQLite or PostgreSQL.
//!
//!     cargo run --release -p autoenroll-store --example scan -- [RECORDS] [DATABASE_URL]
//!
//! RECORDS defaults to 10,000,000; without a URL it uses a new SQLite file in a temporary
//! directory. A PostgreSQL database should be empty: the run adds records to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_store::Store;
use std::io::Write;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct ScanBench {
    records: i64,
    database: Option<String>,
    rounds: usize,
}

const CHUNK: i64 = 100_000;

fn summary(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    (ms(d[d.len() / 2]), ms(d[(d.len() * 99 / 100).min(d.len() - 1)]))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records = args.next().map(|a| a.replace('_', "").parse()).transpose()?.unwrap_or(10_000_000);
    scan(ScanBench { records, database: args.next(), rounds: 200 }).await
}

async fn scan(b: ScanBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = b.database.clone().unwrap_or_else(|| Store::sqlite_url(&dir.path().join("scan.db")));
    let store = Store::open(&url).await?;
    let base = 1_800_000_000;
    let (device, request) = store.bench_prepare(base).await?;
    eprintln!("filling {} records into {:?} ...", b.records, store.backend());
    let started = Instant::now();
    let mut done = 0;
    while done < b.records {
        let to = (done + CHUNK).min(b.records);
        store.bench_fill(done, to, device, request, base).await?;
        done = to;
        let rate = done as f64 / started.elapsed().as_secs_f64();
        eprint!("\r  {done:>10} / {} records ({:>3}%), {rate:.0}/s   ", b.records, done * 100 / b.records.max(1));
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    store.bench_analyze().await?;
    let fill = started.elapsed();

    // "Now" in the middle of the spread: about half the records are due.
    let now = base + 365 * 86_400;
    let mut api = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..b.rounds {
        let t = Instant::now();
        let n = store.due_for_renewal(autoenroll_core::UnixTime(now), 1000).await?.len();
        api.push(t.elapsed());
        let t = Instant::now();
        let m = store.bench_raw_due(now, 1000).await?;
        raw.push(t.elapsed());
        if n != m || n != 1000 {
            return Err(format!("expected 1000 due, got {n} / {m}").into());
        }
    }
    let (due_api, due_raw) = (summary(api), summary(raw));
    let mut api = Vec::new();
    let mut raw = Vec::new();
    for r in 0..b.rounds {
        // Spread lookups over the whole table.
        let i = (r as i64 * 7_919_993) % b.records;
        let tp = Store::bench_thumbprint(i);
        let t = Instant::now();
        let found = store.certificate_by_thumbprint(&tp).await?.is_some();
        api.push(t.elapsed());
        let t = Instant::now();
        let found_raw = store.bench_raw_thumbprint(&tp).await?;
        raw.push(t.elapsed());
        if !(found && found_raw) {
            return Err(format!("record {i} not found").into());
        }
    }
    let (tp_api, tp_raw) = (summary(api), summary(raw));
    println!(
        "renewal scan over {} records on {:?} (fill {:.1} s, {:.0} records/s)",
        b.records,
        store.backend(),
        fill.as_secs_f64(),
        b.records as f64 / fill.as_secs_f64()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "query", "API p50 ms", "API p99 ms", "raw p50 ms", "raw p99 ms", "ratio"
    );
    for (name, a, r) in
        [("next 1000 due for renewal", due_api, due_raw), ("check-in lookup by thumbprint", tp_api, tp_raw)]
    {
        println!("{:<34} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>8.2}", name, a.0, a.1, r.0, r.1, a.0 / r.0);
    }
    Ok(())
}
