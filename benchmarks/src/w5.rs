//! W5, serving: `GET /api/v1/views/hour` for a year of one meter and `minute` for one day,
//! against the whole-file views, side by side with DuckDB answering the same query over the
//! same Parquet files (Python package, warm connection).
//!
//! 1. The views: `--views DIR`, or the whole UCI file replayed into `<work>/w5-views` once
//!    (reused while its manifest is there).
//! 2. `wattflow serve --views DIR --listen 127.0.0.1:0`-like: the release binary on a free
//!    port, batch views alone.
//! 3. Per query, one untimed request, then `--requests` requests one after the other on one
//!    keep-alive connection (no gzip: the client asks for none); each latency is from writing
//!    the request to having read the whole body. The answer's row count is checked against
//!    DuckDB's.
//! 4. `peers/duckdb_w5.py`: the same queries, `fetchall` into Python, after a warm-up.
//!
//! Reports p50, p99 and max per system and query, and the ratios the issue sets: wattflow's
//! p99 under 50 ms, and its p50 no slower than DuckDB's.
//!
//! Then the live and dashboard figures ([`live`]): how soon the demo's dashboard draws a new
//! reading (target: p99 within 1 s), how long the dashboard takes to draw a year of hours and a
//! day of minutes (fluid: a redraw within 50 ms, a hover within a 16 ms frame), and, with
//! `--kafka-seconds` and the servers up, a reading entering Kafka → its window on the live feed.

mod live;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::peers;
use crate::w1::{unpack, workspace_root};

/// Arguments of `wattflow-bench w5`.
#[derive(Debug, Args)]
pub struct W5Args {
    /// Requests per query and system.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// The views to serve (default: the whole UCI file replayed into `<work>/w5-views`).
    #[arg(long)]
    pub views: Option<PathBuf>,
    /// The UCI file replayed when `--views` is not given.
    #[arg(
        long,
        default_value = "../shared/data/household_power_consumption.txt.gz"
    )]
    pub data: PathBuf,
    /// The meter.
    #[arg(long, default_value = "household-1")]
    pub meter: String,
    /// Peers (`duckdb`) or `none`.
    #[arg(long, value_delimiter = ',', default_value = "duckdb")]
    pub peers: Vec<String>,
    /// The Python that creates the peers' venv.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Fail unless the targets are met (p99 < 50 ms, p50 no slower than DuckDB's; the demo's
    /// dashboard draws a reading within 1 s at p99; a redraw within 50 ms, a hover within 16 ms).
    #[arg(long)]
    pub check: bool,
    /// Seconds of the demo with its dashboard open in Chromium, for the reading → drawn
    /// figure (0: skip).
    #[arg(long, default_value_t = 60)]
    pub live_seconds: u32,
    /// Times the dashboard draws each large answer (0: skip the drawing figures).
    #[arg(long, default_value_t = 5)]
    pub render_repeats: usize,
    /// Seconds of real-time production for the Kafka → live feed figure (0: skip; needs
    /// `scripts/services.sh up`).
    #[arg(long, default_value_t = 0)]
    pub kafka_seconds: u32,
    /// Households produced for the Kafka figure.
    #[arg(long, default_value_t = 100)]
    pub households: u32,
    /// Kafka bootstrap brokers (Kafka figure).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Cassandra contact point (Kafka figure).
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// `--out`, `--work`, `--wattflow`, `--build`.
    #[command(flatten)]
    pub harness: crate::harness::Harness,
}

/// The queries: (granularity, from, to).
const QUERIES: [(&str, &str, &str); 2] = [
    ("hour", "2007-01-01", "2008-01-01"),
    ("minute", "2007-06-01", "2007-06-02"),
];

#[derive(Debug, Clone, Serialize)]
struct Result1 {
    system: &'static str,
    query: String,
    rows: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    latencies_ms: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarize(system: &'static str, query: String, rows: usize, mut lat: Vec<f64>) -> Result1 {
    let raw = lat.clone();
    lat.sort_by(f64::total_cmp);
    Result1 {
        system,
        query,
        rows,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        latencies_ms: raw,
    }
}

/// A keep-alive HTTP/1.1 connection that reads `Content-Length` or chunked bodies.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    fn get(&mut self, target: &str) -> Result<(u16, Vec<u8>)> {
        write!(
            self.reader.get_mut(),
            "GET {target} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: identity\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let n = length.context("no Content-Length")?;
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, body))
    }
}

struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(addr: &str, child: &mut Child) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            bail!("wattflow serve exited: {status}");
        }
        if let Ok(mut c) = Client::connect(addr) {
            if let Ok((200, _)) = c.get("/health") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("wattflow serve did not answer on {addr} within 30 s")
}

/// Runs W5.
pub fn run(args: W5Args) -> Result<()> {
    let root = workspace_root();
    let work = args.harness.work_dir(&root)?;
    let wattflow = args.harness.binary(&root)?;
    let views = match &args.views {
        Some(v) => v.clone(),
        None => replayed_views(&wattflow, &args, &root, &work)?,
    };
    ensure!(
        views.join("hour").join("_manifest.json").is_file(),
        "{} holds no views",
        views.display()
    );
    let mut results = Vec::new();
    // wattflow.
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = ServerChild(
        Command::new(&wattflow)
            .args(["serve", "--views"])
            .arg(&views)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wattflow serve")?,
    );
    wait_ready(&addr, &mut child.0)?;
    let mut client = Client::connect(&addr)?;
    for (g, from, to) in QUERIES {
        let target = format!("/api/v1/views/{g}?meter={}&from={from}&to={to}", args.meter);
        let (status, body) = client.get(&target)?;
        ensure!(
            status == 200,
            "{target}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let rows = v["rows"].as_array().map_or(0, Vec::len);
        let mut lat = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let t0 = Instant::now();
            let (status, body) = client.get(&target)?;
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            ensure!(status == 200 && !body.is_empty(), "{target}: {status}");
        }
        results.push(summarize("wattflow", format!("{g},{from},{to}"), rows, lat));
    }
    drop(client);
    let renders = if args.render_repeats > 0 {
        live::render_timings(
            &root,
            &format!("http://{addr}/"),
            &args.meter,
            args.render_repeats,
        )?
    } else {
        Vec::new()
    };
    drop(child);
    let mut latencies = Vec::new();
    if args.live_seconds > 0 {
        latencies.push(live::demo_latency(
            &wattflow,
            &root,
            &work,
            args.live_seconds,
        )?);
    }
    if args.kafka_seconds > 0 {
        let setup = live::KafkaSetup {
            brokers: args.brokers.clone(),
            cassandra: args.cassandra.clone(),
            households: args.households,
            seconds: args.kafka_seconds,
        };
        latencies.push(live::kafka_latency(&wattflow, &work, &setup)?);
    }
    // DuckDB.
    if args.peers.iter().any(|p| p.eq_ignore_ascii_case("duckdb")) {
        let env = peers::ensure_venv(&work, &args.python)?;
        let mut cmd = Command::new(&env.python);
        cmd.arg(peers::scripts_dir().join("duckdb_w5.py"))
            .arg("--views")
            .arg(&views)
            .args([
                "--meter",
                &args.meter,
                "--requests",
                &args.requests.to_string(),
            ]);
        for (g, from, to) in QUERIES {
            cmd.args(["--query", &format!("{g},{from},{to}")]);
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .context("running duckdb_w5.py")?;
        ensure!(out.status.success(), "duckdb_w5.py failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("{}"),
        )?;
        for q in report["queries"]
            .as_array()
            .context("no queries in DuckDB's report")?
        {
            let lat: Vec<f64> = q["latencies_ms"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default();
            results.push(summarize(
                "duckdb",
                q["query"].as_str().unwrap_or("").to_owned(),
                q["rows"].as_u64().unwrap_or(0) as usize,
                lat,
            ));
        }
    }
    let mut table = render(&results, &views, args.requests);
    table.push_str(&render_live(&latencies, &renders));
    std::fs::create_dir_all(&args.harness.out)?;
    std::fs::write(args.harness.out.join("w5.md"), &table)?;
    let report = serde_json::json!({
        "queries": results,
        "live": latencies,
        "dashboard": renders,
    });
    std::fs::write(
        args.harness.out.join("w5.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    print!("{table}");
    let mut failures = check(&results);
    failures.extend(check_live(&latencies, &renders));
    if !failures.is_empty() {
        eprintln!("W5 targets missed: {}", failures.join("; "));
        if args.check {
            bail!("W5 targets missed");
        }
    }
    Ok(())
}

/// The whole UCI file's views, replayed once into `<work>/w5-views`.
fn replayed_views(wattflow: &Path, args: &W5Args, root: &Path, work: &Path) -> Result<PathBuf> {
    let views = work.join("w5-views");
    if views.join("hour").join("_manifest.json").is_file() {
        return Ok(views);
    }
    let data = if args.data.exists() {
        args.data.clone()
    } else {
        root.join(&args.data)
    };
    let input = unpack(&data, work)?;
    eprintln!("replaying {} into {}", input.display(), views.display());
    let status = Command::new(wattflow)
        .args(["replay", "--quiet", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&views)
        .status()?;
    ensure!(status.success(), "wattflow replay failed: {status}");
    Ok(views)
}

fn check(results: &[Result1]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.system == "wattflow") {
        if r.p99_ms >= 50.0 {
            out.push(format!(
                "{}: p99 {:.1} ms is not under 50 ms",
                r.query, r.p99_ms
            ));
        }
        if let Some(d) = results
            .iter()
            .find(|d| d.system == "duckdb" && d.query == r.query)
        {
            if r.p50_ms > d.p50_ms {
                out.push(format!(
                    "{}: p50 {:.1} ms is slower than DuckDB's {:.1} ms",
                    r.query, r.p50_ms, d.p50_ms
                ));
            }
            if r.rows != d.rows {
                out.push(format!("{}: {} rows, DuckDB {}", r.query, r.rows, d.rows));
            }
        }
    }
    out
}

fn check_live(latencies: &[live::Latency], renders: &[live::Render]) -> Vec<String> {
    let mut out = Vec::new();
    for l in latencies.iter().filter(|l| l.what.starts_with("demo")) {
        if l.p99_ms >= 1000.0 {
            out.push(format!(
                "{}: p99 {:.0} ms is not within 1 s",
                l.what, l.p99_ms
            ));
        }
    }
    for r in renders {
        if r.redraw_ms >= 50.0 {
            out.push(format!("{}: a redraw takes {:.1} ms", r.what, r.redraw_ms));
        }
        if r.hover_ms >= 16.0 {
            out.push(format!("{}: a hover takes {:.1} ms", r.what, r.hover_ms));
        }
    }
    out
}

fn render_live(latencies: &[live::Latency], renders: &[live::Render]) -> String {
    let mut s = String::new();
    if !latencies.is_empty() {
        s.push_str("\n| live | samples | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n");
        for l in latencies {
            s.push_str(&format!(
                "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |\n",
                l.what, l.samples, l.p50_ms, l.p99_ms, l.max_ms
            ));
        }
    }
    if !renders.is_empty() {
        s.push_str(
            "\n| dashboard (Chromium, medians) | rows | fetch | draw | request → charts painted | → insights shown | redraw | hover |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in renders {
            s.push_str(&format!(
                "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.1} ms | {:.2} ms |\n",
                r.what.replace('_', " "),
                r.rows,
                r.fetch_ms,
                r.draw_ms,
                r.total_ms,
                r.insights_ms,
                r.redraw_ms,
                r.hover_ms
            ));
        }
    }
    s
}

fn render(results: &[Result1], views: &Path, requests: usize) -> String {
    let mut s = format!(
        "W5, serving: {requests} requests per query, one after the other, over {}\n\n\
         | query | system | rows | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|\n",
        views.display()
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            r.query, r.system, r.rows, r.p50_ms, r.p99_ms, r.max_ms
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.99), 198.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_targets_are_checked() {
        let w = summarize("wattflow", "hour".into(), 10, vec![5.0; 200]);
        let d = summarize("duckdb", "hour".into(), 10, vec![4.0; 200]);
        assert_eq!(check(std::slice::from_ref(&w)), Vec::<String>::new());
        assert_eq!(check(&[w.clone(), d]).len(), 1);
        let slow = summarize("wattflow", "hour".into(), 10, vec![60.0; 200]);
        assert_eq!(check(&[slow]).len(), 1);
    }
}
