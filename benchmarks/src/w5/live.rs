//! W5's live and dashboard figures: how soon a reading reaches the dashboard, and how long
//! the dashboard takes to draw the largest answers.
//!
//! - **Demo, reading → drawn** ([`demo_latency`]): `wattflow demo` (simulated sensors in the
//!   one graph, memory speed views) with the dashboard open in Debian's Chromium
//!   (`pipelines/tests/browser/bench_live.mjs`): after every live update the page draws, the
//!   time it was drawn minus the end of the newest reading it shows, both taken in the page.
//! - **Kafka → SSE** ([`kafka_latency`]): households produced to a topic in real time (the
//!   harness's producer), `wattflow live` into Cassandra, `wattflow serve --cassandra`, and an
//!   SSE client of `/api/v1/live`: for every reading the feed shows for the first time (the
//!   newest second of a minute window), the arrival time minus the time it was produced.
//! - **Drawing** ([`render_timings`]): `bench_render.mjs` loads a year of hourly windows and a
//!   day of minute windows of the whole-file views into the page and reports the fetch, the
//!   draw (all five charts), the charts painted, the insights shown, a redraw (what each live
//!   update costs) and one hover.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use crate::feed::{free_port, produce_in_real_time};

/// Percentiles of one latency figure.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was measured.
    pub what: String,
    /// Samples.
    pub samples: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Every sample, in the order they were taken, ms.
    pub latencies_ms: Vec<f64>,
}

impl Latency {
    fn of(what: &str, raw: Vec<f64>) -> Latency {
        let mut ms = raw.clone();
        ms.sort_by(f64::total_cmp);
        Latency {
            what: what.to_owned(),
            samples: ms.len(),
            p50_ms: super::percentile(&ms, 0.5),
            p99_ms: super::percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            latencies_ms: raw,
        }
    }
}

/// Medians of the drawing figures for one answer.
#[derive(Debug, Clone, Serialize)]
pub struct Render {
    /// `year_of_hours` or `day_of_minutes`.
    pub what: String,
    /// Rows drawn.
    pub rows: u64,
    /// Fetching the answer (HTTP and JSON parsing), ms.
    pub fetch_ms: f64,
    /// Drawing the five charts, ms.
    pub draw_ms: f64,
    /// From the request to the charts painted, ms.
    pub total_ms: f64,
    /// From the request to the insights shown (they load after the charts), ms.
    pub insights_ms: f64,
    /// Redrawing the five charts (each live update does), ms.
    pub redraw_ms: f64,
    /// One hover (the tooltip and the cursor), ms.
    pub hover_ms: f64,
}

/// A child process killed if the harness stops early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The folder of the browser scripts, with `playwright-core` installed (`npm ci` when missing).
pub fn browser_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("pipelines/tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        eprintln!("npm ci in {}", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .context("running npm (Node.js is needed for the dashboard figures)")?;
        ensure!(status.success(), "npm ci failed: {status}");
    }
    Ok(dir)
}

fn chromium() -> String {
    std::env::var("WATTFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn node(dir: &Path, script: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .env("WATTFLOW_CHROMIUM", chromium())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running node {script}"))?;
    ensure!(out.status.success(), "{script} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("{}");
    let v: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("{script} said {last:?}"))?;
    let errors = v["errors"].as_array().map_or(0, Vec::len);
    ensure!(errors == 0, "{script}: page errors {}", v["errors"]);
    Ok(v)
}

/// `wattflow demo` for `seconds` with the dashboard open: reading → drawn (module docs).
pub fn demo_latency(wattflow: &Path, root: &Path, work: &Path, seconds: u32) -> Result<Latency> {
    let browser = browser_dir(root)?;
    let dir = work.join("w5-demo");
    let port = free_port()?;
    let mut demo = Guard(
        Command::new(wattflow)
            .args(["demo", "--households", "3", "--days", "7", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wattflow demo")?,
    );
    let mut lines = BufReader::new(demo.0.stdout.take().context("the demo's output")?).lines();
    let url = loop {
        let line = lines
            .next()
            .context("the demo ended before it served the dashboard")??;
        if let Some(u) = line.strip_prefix("dashboard: ") {
            break u.trim().to_owned();
        }
    };
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let v = node(&browser, "bench_live.mjs", &[&url, &seconds.to_string()])?;
    let ms: Vec<f64> = v["latencies_ms"]
        .as_array()
        .context("no latencies")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    ensure!(
        ms.len() as u32 >= seconds / 2,
        "only {} live updates drawn in {seconds} s",
        ms.len()
    );
    // Stop it as a person would, and check it stops cleanly.
    let pid = demo.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status()?;
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = demo.0.try_wait()? {
            break s;
        }
        ensure!(
            Instant::now() < until,
            "the demo did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        status.success(),
        "the demo exited with {status} after SIGINT"
    );
    Ok(Latency::of("demo: reading → drawn on the dashboard", ms))
}

/// The dashboard drawing a year of hours and a day of minutes of `meter` from the views
/// served at `url` (module docs).
pub fn render_timings(root: &Path, url: &str, meter: &str, repeats: usize) -> Result<Vec<Render>> {
    let browser = browser_dir(root)?;
    let v = node(
        &browser,
        "bench_render.mjs",
        &[url, meter, "2007-01-01", "2007-06-01", &repeats.to_string()],
    )?;
    let mut out = Vec::new();
    for what in ["year_of_hours", "day_of_minutes"] {
        let runs = v[what].as_array().context("no runs")?;
        let med = |key: &str| {
            let mut xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
            xs.sort_by(f64::total_cmp);
            super::percentile(&xs, 0.5)
        };
        out.push(Render {
            what: what.into(),
            rows: runs.first().and_then(|r| r["rows"].as_u64()).unwrap_or(0),
            fetch_ms: med("fetch_ms"),
            draw_ms: med("draw_ms"),
            total_ms: med("total_ms"),
            insights_ms: med("insights_ms"),
            redraw_ms: med("redraw_ms"),
            hover_ms: med("hover_ms"),
        });
    }
    Ok(out)
}

/// Where the Kafka → SSE figure runs.
#[derive(Debug, Clone)]
pub struct KafkaSetup {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Cassandra contact point.
    pub cassandra: String,
    /// Households produced.
    pub households: u32,
    /// Seconds of production.
    pub seconds: u32,
}

/// Reads Server-Sent Events from a chunked HTTP/1.1 response, calling `each(event, data)` as
/// they arrive, until `stop`.
fn read_events(
    addr: &str,
    target: &str,
    stop: &AtomicBool,
    mut each: impl FnMut(&str, &str),
) -> Result<()> {
    let mut conn = request(
        addr,
        target,
        "Accept: text/event-stream",
        Duration::from_millis(200),
    )?;
    let mut raw: Vec<u8> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut in_body = false;
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
        if !in_body {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            ensure!(head.contains(" 200 "), "the live feed answered {head}");
            raw.drain(..end + 4);
            in_body = true;
        }
        // De-chunk what is complete.
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol])?.trim(), 16)?;
            if raw.len() < eol + 2 + size + 2 {
                break;
            }
            body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
            raw.drain(..eol + 2 + size + 2);
            if size == 0 {
                return Ok(());
            }
        }
        // Hand over the complete events.
        while let Some(end) = body.windows(2).position(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(&body[..end]).to_string();
            body.drain(..end + 2);
            let (mut event, mut data) = ("message", String::new());
            for line in text.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = if e.trim() == "windows" {
                        "windows"
                    } else {
                        "other"
                    };
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            each(event, &data);
        }
    }
    Ok(())
}

/// Kafka → Cassandra → `/api/v1/live`: produced → seen on the feed (module docs).
pub fn kafka_latency(wattflow: &Path, work: &Path, setup: &KafkaSetup) -> Result<Latency> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let topic = format!("w5-live-{stamp}");
    let keyspace = format!("w5_live_{stamp}");
    wattflow::simulate::ensure_topic(&setup.brokers, &topic, 4)?;
    let live = Guard(
        Command::new(wattflow)
            .args(["live", "--brokers", &setup.brokers, "--topic", &topic])
            .args(["--group", &format!("{topic}-group"), "--start", "earliest"])
            .args(["--cassandra", &setup.cassandra, "--keyspace", &keyspace])
            // `WATTFLOW_BENCH_LOG=info` shows the pipeline's progress (how far behind real
            // time it reads, rows waiting) when a figure needs explaining.
            .env(
                "RUST_LOG",
                std::env::var("WATTFLOW_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wattflow live")?,
    );
    let empty = work.join("w5-no-batch-views");
    std::fs::create_dir_all(&empty)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    // When each second's readings were handed to the producer, by the readings' ts.
    let produced: Arc<Mutex<BTreeMap<i64, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let produced = Arc::clone(&produced);
        let setup = setup.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            // Each second's readings are handed to the producer right after the callback.
            produce_in_real_time(
                &setup.brokers,
                &topic,
                setup.households,
                setup.seconds,
                |_, ts| {
                    produced
                        .lock()
                        .unwrap()
                        .insert(ts, wattflow::time::now_unix_ms());
                    Ok(())
                },
            )
        })
    };
    // `serve` only reads: it starts once the pipeline has made the keyspace.
    let give_up = Instant::now() + Duration::from_secs(120);
    let serve = loop {
        let mut child = Command::new(wattflow)
            .args(["serve", "--views"])
            .arg(&empty)
            .args(["--cassandra", &setup.cassandra, "--keyspace", &keyspace])
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting wattflow serve")?;
        let waited = Instant::now();
        let up = loop {
            if child.try_wait()?.is_some() {
                break false;
            }
            if http_get(&addr, "/health").is_ok() {
                break true;
            }
            if waited.elapsed() > Duration::from_secs(30) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if up {
            break Guard(child);
        }
        let _ = child.kill();
        let _ = child.wait();
        ensure!(
            Instant::now() < give_up,
            "wattflow serve did not start within 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The feed of household-1, once the views know it.
    let meter = "household-1";
    loop {
        ensure!(
            Instant::now() < give_up,
            "{meter} not in the speed views after 120 s"
        );
        let known = http_get(&addr, "/api/v1/meters")
            .map(|b| String::from_utf8_lossy(&b).contains(meter))
            .unwrap_or(false);
        if known {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let reader = {
        let (latencies, produced, stop) = (
            Arc::clone(&latencies),
            Arc::clone(&produced),
            Arc::clone(&stop),
        );
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut newest = i64::MIN;
            // The first minute event is the window as it stood when the feed began, not an
            // update: it only sets where the updates start.
            let mut first = true;
            read_events(
                &addr,
                &format!("/api/v1/live?meter={meter}"),
                &stop,
                |event, data| {
                    let arrived = wattflow::time::now_unix_ms();
                    if event != "windows" {
                        return;
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                        return;
                    };
                    if v["granularity"] != "minute" {
                        return;
                    }
                    for row in v["rows"].as_array().into_iter().flatten() {
                        let (Some(start), Some(covered)) = (
                            row["window_start_ms"].as_i64(),
                            row["covered_seconds"].as_i64(),
                        ) else {
                            continue;
                        };
                        // The newest reading of the window: readings are one a second, in
                        // order, from the first second produced on, so a window's `covered`
                        // seconds begin at its start or, in the first minute, at that second
                        // (counting them from the window's start put the first minute's
                        // readings up to a minute early: the "stalls" of constant lag).
                        let Some(first_ts) = produced.lock().unwrap().keys().next().copied() else {
                            continue;
                        };
                        let ts = start.max(first_ts) + (covered - 1) * 1000;
                        if ts <= newest {
                            continue;
                        }
                        newest = ts;
                        if first {
                            continue;
                        }
                        if let Some(at) = produced.lock().unwrap().get(&ts) {
                            latencies.lock().unwrap().push((arrived - at) as f64);
                        }
                    }
                    first = false;
                },
            )
        })
    };
    let produced_count = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the feed reader panicked"))??;
    drop(serve);
    drop(live);
    let dead = format!("{topic}.rejected");
    let _ = wattflow::simulate::delete_topics(&setup.brokers, &[&topic, &dead]);
    let mut config = wattflow::sink::cassandra::CassandraSinkConfig::new(&setup.cassandra);
    config.keyspace = keyspace.clone();
    if let Ok(views) = wattflow::sink::cassandra::connect_existing(&config) {
        let _ = views.execute(&format!("DROP KEYSPACE IF EXISTS {keyspace}"));
    }
    let ms = latencies.lock().unwrap().clone();
    ensure!(
        ms.len() as u32 >= setup.seconds / 2,
        "only {} readings seen on the feed out of {} produced",
        ms.len(),
        produced_count.0
    );
    Ok(Latency::of("Kafka → Cassandra → live feed (SSE)", ms))
}

/// A connection that has sent `GET target` with one more header line.
fn request(addr: &str, target: &str, header: &str, timeout: Duration) -> Result<TcpStream> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {target} HTTP/1.1\r\nHost: bench\r\n{header}\r\n\r\n"
    )?;
    Ok(conn)
}

fn http_get(addr: &str, target: &str) -> Result<Vec<u8>> {
    let mut conn = request(addr, target, "Connection: close", Duration::from_secs(10))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    Ok(raw)
}
