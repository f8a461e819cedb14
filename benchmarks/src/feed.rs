//! What the live workloads share: a producer of simulated meters in real time, and reading the
//! pipeline's Prometheus metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use wattflow::generate::{Generator, GeneratorConfig};
use wattflow::simulate::ReadingProducer;

/// The value of one series (`name` or `name{labels}`, written as the exporter writes it) in
/// Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.rsplit_once(' ').map(|(s, _)| s) == Some(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metrics page at `addr`, if it answers.
pub fn scrape(addr: &str) -> Option<String> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A free local TCP port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Publishes households `1..=households` (the generator's meters, no missing minutes) to
/// `topic`, one reading each a second, in real time, for `seconds`; `each_second(s, ts)` runs
/// at the start of second `s`, before its readings (whose timestamp is `ts`, ms). Returns the readings produced (all
/// acknowledged) and the timestamp of the first second, ms.
pub fn produce_in_real_time(
    brokers: &str,
    topic: &str,
    households: u32,
    seconds: u32,
    mut each_second: impl FnMut(u32, i64) -> Result<()>,
) -> Result<(u64, i64)> {
    let generator = generator(households);
    let mut producer = ReadingProducer::new(brokers, topic)?;
    let first = wattflow::time::now_unix_ms() / 1000 * 1000 + 1000;
    let t0 = Instant::now();
    let mut produced = 0u64;
    for second in 0..seconds {
        let at = t0 + Duration::from_secs(u64::from(second));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let ts = first + i64::from(second) * 1000;
        each_second(second, ts)?;
        for h in 1..=households {
            ensure!(
                producer.send(&generator.reading(h, ts, 1)),
                "producer refused"
            );
            produced += 1;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok((produced, first))
}

/// The generator [`produce_in_real_time`] draws from (its meter ids name the households).
pub fn generator(households: u32) -> Generator {
    Generator::new(GeneratorConfig {
        households,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    })
}
