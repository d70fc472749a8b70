//! Prints the latency of sequential 256-byte record puts (one client, one request at a
//! time): the commit latency a single writer sees.
//!
//! Usage: `cargo run --release -p trove-client --example put_latency -- [ENDPOINTS] [COUNT]`
//! (defaults: `127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003` and 2000).

use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoints = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(2000);
    let client = trove_client::Client::connect(endpoints.split(','))?;
    let value = bytes::Bytes::from(vec![b'x'; 256]);
    // Warm up connections and leader discovery.
    for i in 0..20 {
        client
            .put_record(&format!("warm/{i}"), value.clone(), None)
            .await?;
    }
    let mut lat_us = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        client
            .put_record(&format!("lat/{}", i % 64), value.clone(), None)
            .await?;
        lat_us.push(t.elapsed().as_micros() as u64);
    }
    let total = start.elapsed();
    lat_us.sort_unstable();
    let pct = |p: f64| lat_us[((lat_us.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    println!(
        "record put 256 B, 1 client: {count} ops in {:.2}s = {:.0} ops/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
