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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde::Serialize;
use wattflow::model::Granularity;
use wattflow::simulate::{delete_topics, ensure_topic};
use wattflow::sink::cassandra::{connect, read_view, CassandraSinkConfig};

use crate::feed::{free_port, generator, metric, produce_in_real_time, scrape};
use crate::machine::{now_utc, Machine};
use crate::measure;
use wattflow_pipelines::toxiproxy::{Toxiproxy, CASSANDRA_PROXY, CASSANDRA_PROXY_NAME};

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
    #[arg(long, default_value = wattflow_pipelines::toxiproxy::DEFAULT_API)]
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

/// Starts `scenario`'s fault.
fn begin(proxy: &Toxiproxy, scenario: &str) -> Result<()> {
    match scenario {
        "cassandra-down" => proxy.enable(false)?,
        "cassandra-slow" => {
            proxy.add("slow", "latency", r#"{"latency":500,"jitter":100}"#)?;
            proxy.add("reset", "reset_peer", r#"{"timeout":0}"#)?;
        }
        other => bail!("unknown scenario {other:?} (cassandra-down, cassandra-slow)"),
    }
    Ok(())
}

/// Called every second of the fault with the seconds since it began.
fn during(proxy: &Toxiproxy, scenario: &str, elapsed_s: u32) -> Result<()> {
    if scenario == "cassandra-slow" && elapsed_s == 5 {
        proxy.remove("reset")?;
    }
    Ok(())
}

impl FaultRun {
    /// The scenario's row of the table.
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} MiB |",
            self.scenario,
            self.produced,
            self.lost,
            self.doubled,
            self.recovery_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s")),
            self.pauses,
            self.peak_unwritten_rows,
            self.retries,
            self.peak_rss_mib
        )
    }
}

fn one_scenario(args: &FaultsArgs, bin: &Path, work: &Path, scenario: &str) -> Result<FaultRun> {
    let proxy = Toxiproxy::new(&args.toxiproxy, CASSANDRA_PROXY_NAME);
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
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{tag}\"\n\n[cassandra]\ncontact_points = [\"{CASSANDRA_PROXY}\"]\n\
             keyspace = \"{tag}\"\naddress_map = {{ \"{}\" = \"{CASSANDRA_PROXY}\" }}\n",
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

    // Let the pipeline connect (through the proxy) before the first reading.
    thread::sleep(Duration::from_secs(3));
    let fault_end_s = args.fault_at + args.fault_seconds;
    let mark_end = || -> Result<()> {
        proxy.reset()?;
        *fault_end.lock().expect("fault end") = Some(Instant::now());
        Ok(())
    };
    let (produced, first) = produce_in_real_time(
        &args.brokers,
        &tag,
        args.households,
        args.seconds,
        |second| {
            if second == args.fault_at {
                begin(&proxy, scenario)?;
            } else if second > args.fault_at && second < fault_end_s {
                during(&proxy, scenario, second - args.fault_at)?;
            } else if second == fault_end_s {
                mark_end()?;
            }
            Ok(())
        },
    )?;
    if fault_end_s >= args.seconds {
        mark_end()?;
    }
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
    let generator = generator(args.households);
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
        eprintln!("  {}", r.row());
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
        table.push_str(&r.row());
        table.push('\n');
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
