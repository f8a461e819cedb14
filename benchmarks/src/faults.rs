//! The `faults` workload: the live pipeline at a steady rate while Toxiproxy injects a fault
//! between it and Cassandra (see issue 9 and `scripts/services.sh`, which runs Toxiproxy with a
//! proxy `cassandra` on 127.0.0.1:19042).
//!
//! Each scenario, on a fresh topic and keyspace:
//! 1. `wattflow live`-like `wattflow run` (Kafka → Cassandra, no history) starts, configured by a
//!    `pipeline.toml` that reaches Cassandra only through the proxy (`address_map`);
//! 2. the harness produces `--households` meters at one reading a second each, in real time,
//!    for `--seconds`; at `--fault-at` seconds the fault starts, and it ends `--fault-seconds`
//!    later;
//! 3. the harness scrapes the pipeline's metrics every 100 ms: **recovery** is the time from
//!    the fault's end until the newest message read is within 2 s of real time again and the
//!    speed views are back to their steady backlog (`wattflow_cassandra_rows_unwritten` at
//!    most three rows a household: the hour and day rows that wait their delay); the peak of
//!    that gauge is reported too;
//! 4. once production ends the pipeline finishes (`--exit-when-idle`); every meter's day rows
//!    are read back from Cassandra: readings **lost** (fewer samples than produced) and
//!    **counted twice** (more) must both be 0. Peak RSS is the pipeline process's.
//!
//! Scenarios: `cassandra-down` (the proxy disabled: every connection cut, none accepted) and
//! `cassandra-slow` (every answer 500 ms late, connections reset for the fault's first 5 s).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde::Serialize;
use wattflow::generate::{Generator, GeneratorConfig};
use wattflow::model::Granularity;
use wattflow::simulate::{delete_topics, ensure_topic, ReadingProducer};
use wattflow::sink::cassandra::{connect, read_view, CassandraSinkConfig};

use crate::machine::{now_utc, Machine};
use crate::measure;
use crate::w4::{free_port, metric, scrape};

/// Where the proxy listens (see `scripts/services.sh`).
const PROXY: &str = "127.0.0.1:19042";

/// Arguments of `wattflow-bench faults`.
#[derive(Debug, Args)]
pub struct FaultsArgs {
    /// Scenarios, comma-separated: cassandra-down, cassandra-slow.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cassandra-down,cassandra-slow"
    )]
    pub scenarios: Vec<String>,
    /// Households, one reading a second each (10,000: 10,000 readings/s).
    #[arg(long, default_value_t = 10_000)]
    pub households: u32,
    /// Seconds of production.
    #[arg(long, default_value_t = 120)]
    pub seconds: u32,
    /// When the fault starts, seconds after production starts.
    #[arg(long, default_value_t = 20)]
    pub fault_at: u32,
    /// How long the fault lasts, seconds.
    #[arg(long, default_value_t = 60)]
    pub fault_seconds: u32,
    /// Kafka brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The Cassandra node, as it announces itself (the proxy stands in for it).
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// Toxiproxy's API.
    #[arg(long, default_value = "127.0.0.1:8474")]
    pub toxiproxy: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Timely workers of the pipeline.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Where results go (`faults.md`, `faults.json`).
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// The `wattflow` binary (default: the workspace's release build).
    #[arg(long)]
    pub wattflow: Option<PathBuf>,
    /// Build the release binary first even when it exists.
    #[arg(long)]
    pub build: bool,
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
struct FaultRun {
    scenario: String,
    produced: u64,
    /// Readings missing from the Cassandra day rows.
    lost: u64,
    /// Readings counted more than once there.
    doubled: u64,
    /// From the fault's end until the pipeline read within 2 s of real time; `None`: never.
    recovery_s: Option<f64>,
    /// Times consumption paused for the speed views' memory budget.
    pauses: u64,
    /// Most speed-view rows queued or in flight at once.
    peak_unwritten_rows: u64,
    /// Cassandra writes retried.
    retries: u64,
    peak_rss_mib: f64,
    wall_s: f64,
}

/// Toxiproxy's HTTP API, for the proxy `cassandra`.
struct Toxiproxy(String);

impl Toxiproxy {
    fn call(&self, method: &str, path: &str, body: &str) -> Result<u16> {
        let mut s =
            TcpStream::connect(&self.0).with_context(|| format!("toxiproxy at {}", self.0))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.0,
            body.len()
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("toxiproxy answered {reply:?}"))
    }

    fn expect(&self, method: &str, path: &str, body: &str, ok: &[u16]) -> Result<()> {
        let status = self.call(method, path, body)?;
        ensure!(ok.contains(&status), "toxiproxy {method} {path}: {status}");
        Ok(())
    }

    fn toxic(&self, name: &str, kind: &str, attributes: &str) -> Result<()> {
        let body = format!(
            r#"{{"name":"{name}","type":"{kind}","stream":"downstream","attributes":{attributes}}}"#
        );
        self.expect("POST", "/proxies/cassandra/toxics", &body, &[200])
    }

    fn begin(&self, scenario: &str) -> Result<()> {
        match scenario {
            "cassandra-down" => {
                self.expect("POST", "/proxies/cassandra", r#"{"enabled":false}"#, &[200])
            }
            "cassandra-slow" => {
                self.toxic("slow", "latency", r#"{"latency":500,"jitter":100}"#)?;
                self.toxic("reset", "reset_peer", r#"{"timeout":0}"#)
            }
            other => bail!("unknown scenario {other:?} (cassandra-down, cassandra-slow)"),
        }
    }

    /// Called every second of the fault with the seconds since it began.
    fn during(&self, scenario: &str, elapsed_s: u32) -> Result<()> {
        if scenario == "cassandra-slow" && elapsed_s == 5 {
            self.expect("DELETE", "/proxies/cassandra/toxics/reset", "", &[204, 404])?;
        }
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        self.expect("POST", "/reset", "", &[204])
    }
}

fn one_scenario(args: &FaultsArgs, bin: &Path, work: &Path, scenario: &str) -> Result<FaultRun> {
    let proxy = Toxiproxy(args.toxiproxy.clone());
    proxy.reset()?;
    let tag = format!(
        "faults_{}_{}",
        std::process::id(),
        wattflow::time::now_unix_ms() % 100_000_000
    );
    ensure_topic(&args.brokers, &tag, args.partitions)?;
    let config = work.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{tag}\"\n\n[cassandra]\ncontact_points = [\"{PROXY}\"]\n\
             keyspace = \"{tag}\"\naddress_map = {{ \"{}\" = \"{PROXY}\" }}\n",
            args.brokers, args.cassandra
        ),
    )?;
    let summary_file = work.join(format!("{tag}.json"));
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--workers", &args.workers.to_string()])
        .args(["--exit-when-idle", "10s", "--lateness", "1s"])
        .args(["--metrics-listen", &addr])
        .arg("--summary-json")
        .arg(&summary_file)
        .env("RUST_LOG", "error");
    let child = thread::spawn(move || measure::run(&mut cmd));

    // Recovery: the first moment after the fault's end at which the pipeline reads within 2 s
    // of real time.
    let done = Arc::new(AtomicBool::new(false));
    let fault_end: Arc<Mutex<Option<Instant>>> = Arc::default();
    let recovered: Arc<Mutex<Option<Instant>>> = Arc::default();
    let peak_unwritten: Arc<Mutex<f64>> = Arc::default();
    let steady = 3.0 * f64::from(args.households);
    let scraper = {
        let (done, fault_end, recovered, peak_unwritten) = (
            Arc::clone(&done),
            Arc::clone(&fault_end),
            Arc::clone(&recovered),
            Arc::clone(&peak_unwritten),
        );
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let ended = *fault_end.lock().expect("fault end");
                if let Some(text) = scrape(&addr) {
                    let unwritten = metric(&text, "wattflow_cassandra_rows_unwritten");
                    let mut peak = peak_unwritten.lock().expect("peak");
                    *peak = peak.max(unwritten.unwrap_or(0.0));
                    let behind = metric(&text, "wattflow_kafka_behind_real_time_seconds");
                    let caught_up =
                        behind.is_some_and(|b| b <= 2.0) && unwritten.is_some_and(|u| u <= steady);
                    let mut r = recovered.lock().expect("recovered");
                    if ended.is_some() && r.is_none() && caught_up {
                        *r = Some(Instant::now());
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let generator = Generator::new(GeneratorConfig {
        households: args.households,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    });
    let mut producer = ReadingProducer::new(&args.brokers, &tag)?;
    // Let the pipeline connect (through the proxy) before the first reading.
    thread::sleep(Duration::from_secs(3));
    let first = wattflow::time::now_unix_ms() / 1000 * 1000 + 1000;
    let t0 = Instant::now();
    let mut produced = 0u64;
    let fault_end_s = args.fault_at + args.fault_seconds;
    for second in 0..args.seconds {
        let at = t0 + Duration::from_secs(u64::from(second));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if second == args.fault_at {
            proxy.begin(scenario)?;
        } else if second > args.fault_at && second < fault_end_s {
            proxy.during(scenario, second - args.fault_at)?;
        } else if second == fault_end_s {
            proxy.reset()?;
            *fault_end.lock().expect("fault end") = Some(Instant::now());
        }
        let ts = first + i64::from(second) * 1000;
        for h in 1..=args.households {
            ensure!(
                producer.send(&generator.reading(h, ts, 1)),
                "producer refused"
            );
            produced += 1;
        }
    }
    if fault_end_s >= args.seconds {
        proxy.reset()?;
        *fault_end.lock().expect("fault end") = Some(Instant::now());
    }
    producer.flush(Duration::from_secs(60))?;
    let measured = child.join().expect("pipeline thread")?;
    done.store(true, Ordering::Relaxed);
    scraper.join().ok();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_file).context("the pipeline's summary")?,
    )?;

    // Every meter's day rows, read back directly (not through the proxy).
    let views = connect(&CassandraSinkConfig {
        keyspace: tag.clone(),
        ..CassandraSinkConfig::new(&args.cassandra)
    })?;
    let (mut lost, mut doubled) = (0u64, 0u64);
    let want = u64::from(args.seconds);
    for h in 1..=args.households {
        let meter = generator.meter(h);
        let got: u64 = read_view(
            &views,
            Granularity::Day,
            meter.as_str(),
            first - 2 * 86_400_000,
            first + 2 * 86_400_000,
        )?
        .iter()
        .map(|r| r.samples as u64)
        .sum();
        lost += want.saturating_sub(got);
        doubled += got.saturating_sub(want);
    }
    let _ = views.execute(&format!("DROP KEYSPACE IF EXISTS {tag}"));
    let _ = delete_topics(&args.brokers, &[&tag, &format!("{tag}.rejected")]);
    let _ = std::fs::remove_file(&summary_file);
    let _ = std::fs::remove_file(&config);
    let peak_unwritten_rows = *peak_unwritten.lock().expect("peak") as u64;
    let (end, back) = (
        *fault_end.lock().expect("fault end"),
        *recovered.lock().expect("recovered"),
    );
    Ok(FaultRun {
        scenario: scenario.to_owned(),
        produced,
        lost,
        doubled,
        recovery_s: match (end, back) {
            (Some(e), Some(b)) => Some(b.saturating_duration_since(e).as_secs_f64()),
            _ => None,
        },
        pauses: summary["kafka"]["pauses"].as_u64().unwrap_or(0),
        peak_unwritten_rows,
        retries: summary["cassandra"]["retries"].as_u64().unwrap_or(0),
        peak_rss_mib: measured.max_rss_mib(),
        wall_s: measured.wall.as_secs_f64(),
    })
}

/// Runs the scenarios and writes `faults.md` and `faults.json` under `--out`.
pub fn run(args: FaultsArgs) -> Result<()> {
    let root = crate::w1::workspace_root();
    let bin = crate::w1::locate_wattflow(args.wattflow.as_deref(), args.build, &root)?;
    let work = crate::w1::target_dir(&root).join("wattflow-bench");
    std::fs::create_dir_all(&work)?;
    let machine = Machine::probe(&root);
    let mut runs = Vec::new();
    for scenario in &args.scenarios {
        let r = one_scenario(&args, &bin, &work, scenario)?;
        eprintln!(
            "  {}: {} produced, {} lost, {} doubled, recovery {}, {} pauses, {} retries, {:.0} MiB",
            r.scenario,
            r.produced,
            r.lost,
            r.doubled,
            r.recovery_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s")),
            r.pauses,
            r.retries,
            r.peak_rss_mib
        );
        runs.push(r);
    }
    let mut table = format!(
        "### faults — Cassandra faults at {} readings/s ({} UTC)\n\n{} CPUs ({}), {} MiB, load {}, wattflow {}\n\n\
         {} households at one reading a second for {} s; the fault from {} s for {} s; \
         `wattflow run` (Kafka → Cassandra through Toxiproxy), {} worker(s).\n\n\
         | scenario | produced | lost | counted twice | recovery after the fault | pauses | peak unwritten rows | retries | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.households,
        now_utc(),
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.load_average,
        machine.wattflow_commit,
        args.households,
        args.seconds,
        args.fault_at,
        args.fault_seconds,
        args.workers
    );
    for r in &runs {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} MiB |\n",
            r.scenario,
            r.produced,
            r.lost,
            r.doubled,
            r.recovery_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s")),
            r.pauses,
            r.peak_unwritten_rows,
            r.retries,
            r.peak_rss_mib
        ));
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("faults.md"), &table)?;
    std::fs::write(
        args.out.join("faults.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    println!("{table}");
    let bad: Vec<&str> = runs
        .iter()
        .filter(|r| r.lost > 0 || r.doubled > 0)
        .map(|r| r.scenario.as_str())
        .collect();
    ensure!(bad.is_empty(), "readings lost or counted twice in {bad:?}");
    Ok(())
}
