//! The `faults` workload: the live pipeline at a steady rate while a fault is injected between
//! it and its servers (see issue 9 and `scripts/services.sh`, which runs Toxiproxy with a proxy
//! `cassandra` on 127.0.0.1:19042 and a proxy `kafka` on 127.0.0.1:19092 to the broker's
//! `PROXIED` listener).
//!
//! Each scenario, on a fresh topic and keyspace:
//! 1. `wattflow run` (Kafka → Cassandra, no history) starts, configured by a `pipeline.toml`
//!    that reaches both servers only through their proxies (the harness's producer writes to
//!    the broker directly, so a cut between the pipeline and Kafka does not stop production);
//! 2. the harness produces `--households` meters at one reading a second each, in real time,
//!    for `--seconds`; at `--fault-at` seconds the fault starts;
//! 3. the harness scrapes the pipeline's metrics every 100 ms: **recovery** is the time from
//!    the fault's end until the newest message read is within 2 s of real time again and the
//!    speed views are back to their steady backlog (`wattflow_cassandra_rows_unwritten` at
//!    most three rows a household: the hour and day rows that wait their delay); the peak of
//!    that gauge is reported too;
//! 4. once production ends the pipeline finishes (`--exit-when-idle`, longer than any cut);
//!    every meter's day rows are read back from Cassandra: readings **lost** (fewer samples
//!    than produced) and **counted twice** (more) must both be 0. Peak RSS is the pipeline
//!    process's.
//!
//! Scenarios:
//! - `cassandra-down`: the Cassandra proxy disabled (every connection cut, none accepted) for
//!   `--fault-seconds`;
//! - `cassandra-slow`: every Cassandra answer 500 ms late for `--fault-seconds`, connections
//!   reset for its first 5 s;
//! - `kafka-cut`: the Kafka proxy disabled for `--cut-seconds`;
//! - `kafka-crash`: the broker killed with SIGKILL (`scripts/services.sh crash kafka`) and
//!   started again at once; the fault ends when it answers again;
//! - `bad-messages`: for `--fault-seconds`, 100 pathological messages a second (control
//!   characters, invalid UTF-8, JSON 10,000 deep, 2 MB, not JSON) among the readings: each
//!   must be refused and dead-lettered (the `refused` column) while the readings flow;
//! - `disk-full`: the pipeline also writes the batch views, to a small tmpfs the harness
//!   mounts (it needs root); at `--fault-at` a filler file leaves it 256 KiB free, and it
//!   stays full until the run has ended. The batch views' files are written when their
//!   partition (a month, a year) or the input ends, so the run must fail at its end with an
//!   error saying the disk is full, with no partial file visible and nothing committed that
//!   the views do not hold. The harness then frees the space (the fault's end) and runs the
//!   pipeline again on the same consumer group: it resumes from the commits, and its Parquet
//!   day view must hold every reading once, as must Cassandra's. Recovery is the rerun's time
//!   less its idle wait.
//!
//! With `--check` the harness fails unless every scenario lost and doubled nothing, recovered,
//! refused exactly the bad messages it was sent, paused consumption whenever the speed
//! views' budget was used up, and stayed under `--max-rss-mib` (default: the documented
//! budget of [`rss_budget_mib`]; not for `disk-full`, whose pipeline also keeps the batch
//! views' open windows); `disk-full` must also fail its first run saying the disk is full,
//! with no partial file visible.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use wattflow::model::Granularity;
use wattflow::simulate::{delete_topics, ensure_topic, ReadingProducer};
use wattflow::sink::cassandra::{connect, read_view, CassandraSinkConfig, DEFAULT_MAX_QUEUED_ROWS};

use crate::feed::{free_port, generator, metric, produce_in_real_time, scrape};
use crate::machine::{now_utc, Machine};
use crate::measure::{self, Deadline};
use wattflow_pipelines::toxiproxy::{
    Toxiproxy, CASSANDRA_PROXY, CASSANDRA_PROXY_NAME, KAFKA_PROXY, KAFKA_PROXY_NAME,
};

/// A fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The Cassandra proxy disabled for `--fault-seconds`.
    CassandraDown,
    /// Cassandra 500 ms slow for `--fault-seconds`, resetting connections for its first 5 s.
    CassandraSlow,
    /// The Kafka proxy disabled for `--cut-seconds`.
    KafkaCut,
    /// The broker killed with SIGKILL and started again.
    KafkaCrash,
    /// 100 pathological messages a second among the readings for `--fault-seconds`.
    BadMessages,
    /// The batch views' disk full from `--fault-at` until the run ends; then a rerun.
    DiskFull,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::CassandraDown => "cassandra-down",
            Scenario::CassandraSlow => "cassandra-slow",
            Scenario::KafkaCut => "kafka-cut",
            Scenario::KafkaCrash => "kafka-crash",
            Scenario::BadMessages => "bad-messages",
            Scenario::DiskFull => "disk-full",
        }
    }
}

/// Arguments of `wattflow-bench faults`.
#[derive(Debug, Args)]
pub struct FaultsArgs {
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cassandra-down,cassandra-slow,kafka-cut,kafka-crash,bad-messages,disk-full"
    )]
    pub scenarios: Vec<Scenario>,
    /// Households, one reading a second each (10,000: 10,000 readings/s).
    #[arg(long, default_value_t = 10_000)]
    pub households: u32,
    /// Seconds of production.
    #[arg(long, default_value_t = 120)]
    pub seconds: u32,
    /// When the fault starts, seconds after production starts.
    #[arg(long, default_value_t = 20)]
    pub fault_at: u32,
    /// How long the Cassandra faults and the bad messages last, seconds.
    #[arg(long, default_value_t = 60)]
    pub fault_seconds: u32,
    /// How long `kafka-cut` cuts the pipeline from the broker, seconds.
    #[arg(long, default_value_t = 30)]
    pub cut_seconds: u32,
    /// The pipeline's `[cassandra] max_queued_rows` (the speed views' memory budget; default:
    /// the pipeline's default).
    #[arg(long)]
    pub max_queued_rows: Option<usize>,
    /// Fail unless every scenario lost and doubled nothing, recovered, refused every bad
    /// message, paused when the budget was used up, and stayed under `--max-rss-mib`.
    #[arg(long)]
    pub check: bool,
    /// Peak RSS `--check` allows, MiB (default: the documented budget, see
    /// `pipeline.example.toml`: 160 MiB plus 400 bytes per row of `max_queued_rows`).
    #[arg(long)]
    pub max_rss_mib: Option<f64>,
    /// Kafka brokers, reached directly by the producer.
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
    /// `--out`, `--work`, `--wattflow`, `--build`.
    #[command(flatten)]
    pub harness: crate::harness::Harness,
}

/// The documented peak-RSS budget of a Kafka → Cassandra pipeline process, MiB, for a speed
/// view budget of `max_queued_rows` rows (see `max_queued_rows` in `pipeline.example.toml`).
pub fn rss_budget_mib(max_queued_rows: usize) -> f64 {
    160.0 + max_queued_rows as f64 * 400.0 / (1024.0 * 1024.0)
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
struct FaultRun {
    scenario: Scenario,
    produced: u64,
    /// Readings missing from the Cassandra day rows.
    lost: u64,
    /// Readings counted more than once there.
    doubled: u64,
    /// Bad messages sent among the readings, and those the pipeline refused.
    bad_sent: u64,
    refused: u64,
    /// How long the fault lasted.
    fault_s: f64,
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
    /// `disk-full`: what the run on the full disk ended with (`None`: it did not fail), and
    /// the partial or unreadable files it left visible.
    disk_full_error: Option<String>,
    partial_files: Vec<String>,
    /// The pipeline's own summary (`--summary-json`; of the rerun for `disk-full`).
    pipeline: serde_json::Value,
}

impl FaultRun {
    /// The scenario's row of the table.
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {:.1} s | {} | {} | {} | {} | {:.0} MiB |",
            self.scenario.name(),
            self.produced,
            self.lost,
            self.doubled,
            if self.bad_sent > 0 {
                format!("{} of {}", self.refused, self.bad_sent)
            } else {
                "—".to_owned()
            },
            self.fault_s,
            self.recovery_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s")),
            self.pauses,
            self.peak_unwritten_rows,
            self.retries,
            self.peak_rss_mib
        )
    }

    /// What `--check` finds wrong with the run (empty: nothing).
    fn problems(&self, budget_rows: usize, max_rss_mib: f64) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost > 0 || self.doubled > 0 {
            out.push(format!(
                "{} lost, {} counted twice",
                self.lost, self.doubled
            ));
        }
        if self.recovery_s.is_none() {
            out.push("never recovered".into());
        }
        if self.refused != self.bad_sent {
            out.push(format!(
                "refused {} of {} bad messages",
                self.refused, self.bad_sent
            ));
        }
        if self.peak_unwritten_rows >= budget_rows as u64 && self.pauses == 0 {
            out.push(format!(
                "the budget of {budget_rows} rows was used up but consumption never paused"
            ));
        }
        if self.scenario == Scenario::DiskFull {
            match &self.disk_full_error {
                None => out.push("the run on a full disk did not fail".into()),
                Some(e) if !e.contains("No space left") => {
                    out.push(format!(
                        "the run on a full disk failed without saying so: {e}"
                    ));
                }
                Some(_) => {}
            }
            if !self.partial_files.is_empty() {
                out.push(format!("partial files visible: {:?}", self.partial_files));
            }
        }
        // `disk-full` also keeps the batch views' open windows (`src/sink/parquet.rs`,
        // "Memory"), which the speed views' budget does not cover.
        if self.peak_rss_mib > max_rss_mib && self.scenario != Scenario::DiskFull {
            out.push(format!(
                "peak RSS {:.0} MiB over the budget of {max_rss_mib:.0} MiB",
                self.peak_rss_mib
            ));
        }
        out
    }
}

/// The messages `bad-messages` sends, each shape once per cycle; the large one (900 KB, under
/// the broker's default 1 MB limit) once a second.
fn bad_shapes() -> Vec<Vec<u8>> {
    vec![
        b"{\"meter\":\"household-1\x01\x07\x1b[31m\",\"ts\":1}\r\n\x00".to_vec(),
        b"{\"meter\":\"\xff\xfe\xc3\x28\",\"ts\":1}".to_vec(),
        {
            let mut v = vec![b'['; 10_000];
            v.extend(vec![b']'; 10_000]);
            v
        },
        b"this is not json".to_vec(),
    ]
}

/// A fault in progress.
struct Injector<'a> {
    scenario: Scenario,
    cassandra: &'a Toxiproxy,
    kafka: &'a Toxiproxy,
    services: PathBuf,
    /// `kafka-crash`: the crash and restart, running.
    restart: Option<JoinHandle<Result<()>>>,
    /// `bad-messages`: their producer, the shapes and how many were sent.
    bad: Option<(ReadingProducer, Vec<Vec<u8>>, Vec<u8>)>,
    bad_sent: u64,
    /// `disk-full`: the mounted tmpfs.
    disk: Option<&'a Path>,
}

impl Injector<'_> {
    fn begin(&mut self, brokers: &str, topic: &str) -> Result<()> {
        match self.scenario {
            Scenario::CassandraDown => self.cassandra.enable(false)?,
            Scenario::CassandraSlow => {
                self.cassandra
                    .add("slow", "latency", r#"{"latency":500,"jitter":100}"#)?;
                self.cassandra
                    .add("reset", "reset_peer", r#"{"timeout":0}"#)?;
            }
            Scenario::KafkaCut => self.kafka.enable(false)?,
            Scenario::KafkaCrash => {
                let services = self.services.clone();
                self.restart = Some(thread::spawn(move || {
                    for verb in ["crash", "up"] {
                        let status = Command::new(&services).args([verb, "kafka"]).status()?;
                        ensure!(status.success(), "scripts/services.sh {verb} kafka failed");
                    }
                    Ok(())
                }));
            }
            Scenario::BadMessages => {
                let mut large = b"{\"meter\":\"household-1\",\"pad\":\"".to_vec();
                large.extend(std::iter::repeat_n(b'x', 900_000));
                large.extend(b"\"}");
                self.bad = Some((ReadingProducer::new(brokers, topic)?, bad_shapes(), large));
                self.tick(0)?;
            }
            Scenario::DiskFull => {
                let disk = self.disk.context("disk-full without its tmpfs")?;
                let leave = 256 * 1024;
                let free = free_bytes(disk)?;
                std::fs::write(
                    disk.join(FILLER),
                    vec![0u8; free.saturating_sub(leave) as usize],
                )
                .context("filling the tmpfs")?;
            }
        }
        Ok(())
    }

    /// Called at the start of every second of the fault (`elapsed` since it began); returns
    /// whether a fault that ends by itself (`kafka-crash`) has ended.
    fn tick(&mut self, elapsed: u32) -> Result<bool> {
        if self.scenario == Scenario::CassandraSlow && elapsed == 5 {
            self.cassandra.remove("reset")?;
        }
        if let Some((producer, shapes, large)) = &mut self.bad {
            ensure!(producer.send_raw(b"household-1", large), "producer refused");
            for i in 0..99 {
                let shape = &shapes[i % shapes.len()];
                ensure!(producer.send_raw(b"household-1", shape), "producer refused");
            }
            self.bad_sent += 100;
        }
        Ok(self.restart.as_ref().is_some_and(|r| r.is_finished()))
    }

    /// Ends the fault: the proxies as they were, the broker back, the bad messages delivered,
    /// the disk's space freed.
    fn end(&mut self) -> Result<()> {
        self.cassandra.reset()?;
        if let Some(disk) = self.disk {
            let filler = disk.join(FILLER);
            if filler.exists() {
                std::fs::remove_file(filler)?;
            }
        }
        if let Some(restart) = self.restart.take() {
            restart.join().expect("restart thread")?;
        }
        if let Some((producer, _, _)) = self.bad.take() {
            producer.flush(Duration::from_secs(60))?;
            ensure!(
                producer.counts().failed.load(Ordering::Relaxed) == 0,
                "bad messages were not all written"
            );
        }
        Ok(())
    }

    /// Whether the fault is over after `elapsed` seconds (those that end by themselves say so
    /// through [`Injector::tick`]).
    fn lasts(&self, args: &FaultsArgs) -> Option<u32> {
        match self.scenario {
            Scenario::KafkaCut => Some(args.cut_seconds),
            // Ended by the harness once the run has ended.
            Scenario::KafkaCrash | Scenario::DiskFull => None,
            _ => Some(args.fault_seconds),
        }
    }
}

fn one_scenario(
    args: &FaultsArgs,
    bin: &Path,
    work: &Path,
    root: &Path,
    scenario: Scenario,
) -> Result<FaultRun> {
    let cassandra_proxy = Toxiproxy::new(&args.toxiproxy, CASSANDRA_PROXY_NAME);
    let kafka_proxy = Toxiproxy::new(&args.toxiproxy, KAFKA_PROXY_NAME);
    cassandra_proxy.reset()?;
    let tag = format!(
        "faults_{}_{}",
        std::process::id(),
        wattflow::time::now_unix_ms() % 100_000_000
    );
    ensure_topic(&args.brokers, &tag, args.partitions)?;
    let budget_rows = args.max_queued_rows.unwrap_or(DEFAULT_MAX_QUEUED_ROWS);
    // `disk-full`: the batch views on a tmpfs of their own (unmounted on drop).
    let disk = match scenario {
        Scenario::DiskFull => Some(Tmpfs::mount(&work.join(format!("{tag}-disk")), "64m")?),
        _ => None,
    };
    let views_dir = disk.as_ref().map(|d| d.0.join("views"));
    let config = work.join(format!("{tag}.toml"));
    let mut toml = format!(
        "[kafka]\nbrokers = \"{KAFKA_PROXY}\"\ntopic = \"{tag}\"\n\n[cassandra]\ncontact_points = [\"{CASSANDRA_PROXY}\"]\n\
         keyspace = \"{tag}\"\naddress_map = {{ \"{}\" = \"{CASSANDRA_PROXY}\" }}\nmax_queued_rows = {budget_rows}\n",
        args.cassandra
    );
    if let Some(views) = &views_dir {
        toml.push_str(&format!("\n[parquet]\nout = \"{}\"\n", views.display()));
    }
    std::fs::write(&config, toml)?;
    // Longer than any cut, so only the end of production ends the run.
    let idle = match scenario {
        Scenario::KafkaCut => args.cut_seconds + 15,
        Scenario::KafkaCrash => 40,
        _ => 10,
    };
    let summary_file = work.join(format!("{tag}.json"));
    let addr = format!("127.0.0.1:{}", free_port()?);
    let pipeline = |addr: &str| {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--workers", &args.workers.to_string()])
            .args(["--exit-when-idle", &format!("{idle}s"), "--lateness", "1s"])
            .args(["--metrics-listen", addr])
            .arg("--summary-json")
            .arg(&summary_file)
            .env("RUST_LOG", "error");
        cmd
    };
    let mut cmd = pipeline(&addr);
    let child = thread::spawn(move || measure::run_to_exit(&mut cmd, Deadline::default()));

    // Recovery: the first moment after the fault's end at which the pipeline has read a
    // reading from Kafka since that end (a gauge alone can be stale: a source that reads
    // nothing may report no lag), reads within 2 s of real time and holds no more unwritten
    // rows than its steady working set.
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
            // Kafka readings read when the fault's end was first seen.
            let mut read_at_end: Option<f64> = None;
            while !done.load(Ordering::Relaxed) {
                let ended = *fault_end.lock().expect("fault end");
                if let Some(text) = scrape(&addr) {
                    let read = metric(&text, "wattflow_readings_total{source=\"kafka\"}");
                    if ended.is_some() && read_at_end.is_none() {
                        read_at_end = read;
                    }
                    let read_since_end = matches!((read, read_at_end), (Some(r), Some(e)) if r > e);
                    let unwritten = metric(&text, "wattflow_cassandra_rows_unwritten");
                    let mut peak = peak_unwritten.lock().expect("peak");
                    *peak = peak.max(unwritten.unwrap_or(0.0));
                    let behind = metric(&text, "wattflow_kafka_behind_real_time_seconds");
                    let caught_up = read_since_end
                        && behind.is_some_and(|b| b <= 2.0)
                        && unwritten.is_some_and(|u| u <= steady);
                    let mut r = recovered.lock().expect("recovered");
                    if ended.is_some() && r.is_none() && caught_up {
                        *r = Some(Instant::now());
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Let the pipeline connect (through the proxies) before the first reading.
    thread::sleep(Duration::from_secs(3));
    let mut injector = Injector {
        scenario,
        cassandra: &cassandra_proxy,
        kafka: &kafka_proxy,
        services: root.join("scripts/services.sh"),
        restart: None,
        bad: None,
        bad_sent: 0,
        disk: disk.as_ref().map(|d| d.0.as_path()),
    };
    let mut began: Option<Instant> = None;
    let mut ended = false;
    let finish = |injector: &mut Injector<'_>| -> Result<()> {
        injector.end()?;
        *fault_end.lock().expect("fault end") = Some(Instant::now());
        Ok(())
    };
    let lasts = injector.lasts(args);
    let (produced, first) = produce_in_real_time(
        &args.brokers,
        &tag,
        args.households,
        args.seconds,
        |second, _| {
            if second == args.fault_at {
                began = Some(Instant::now());
                injector.begin(&args.brokers, &tag)?;
            } else if second > args.fault_at && !ended {
                let elapsed = second - args.fault_at;
                let over = match lasts {
                    Some(len) => elapsed >= len,
                    None => injector.tick(elapsed)?,
                };
                if over {
                    finish(&mut injector)?;
                    ended = true;
                } else if lasts.is_some() {
                    injector.tick(elapsed)?;
                }
            }
            Ok(())
        },
    )?;
    if !ended && scenario != Scenario::DiskFull {
        finish(&mut injector)?;
    }
    let (measured, failure) = child.join().expect("pipeline thread")?;
    done.store(true, Ordering::Relaxed);
    scraper.join().ok();
    let (mut peak_rss_mib, mut wall_s) = (measured.max_rss_mib(), measured.wall.as_secs_f64());
    let (mut disk_full_error, mut partial_files) = (None, Vec::new());
    if let Some(views) = &views_dir {
        // The run on the full disk has ended (it should have failed): free the space, run
        // again, and time it.
        disk_full_error = failure.as_deref().map(strip_ansi).map(|f| {
            f.lines()
                .find(|l| l.contains("No space left") || l.contains("space"))
                .unwrap_or(&f)
                .trim()
                .to_owned()
        });
        partial_files = partial_or_unreadable(views);
        finish(&mut injector)?;
        let mut again = pipeline(&format!("127.0.0.1:{}", free_port()?));
        let (rerun, failure) = measure::run_to_exit(&mut again, Deadline::default())?;
        if let Some(failure) = failure {
            anyhow::bail!("disk-full: the rerun after freeing the space failed: {failure}");
        }
        let waited = Duration::from_secs(u64::from(idle));
        *recovered.lock().expect("recovered") = fault_end
            .lock()
            .expect("fault end")
            .map(|e| e + rerun.wall.saturating_sub(waited));
        peak_rss_mib = peak_rss_mib.max(rerun.max_rss_mib());
        wall_s += rerun.wall.as_secs_f64();
    } else if let Some(failure) = failure {
        anyhow::bail!("{}: {failure}", scenario.name());
    }
    let fault_s = match (began, *fault_end.lock().expect("fault end")) {
        (Some(b), Some(e)) => e.saturating_duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
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
    if let Some(views) = &views_dir {
        // And the batch views' day rows: every meter once, with every reading.
        let days = parquet_day_samples(views)?;
        for h in 1..=args.households {
            let got = days.get(generator.meter(h).as_str()).copied().unwrap_or(0);
            lost += want.saturating_sub(got);
            doubled += got.saturating_sub(want);
        }
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
        scenario,
        produced,
        lost,
        doubled,
        bad_sent: injector.bad_sent,
        refused: summary["kafka"]["rejected"].as_u64().unwrap_or(0),
        fault_s,
        recovery_s: match (end, back) {
            (Some(e), Some(b)) => Some(b.saturating_duration_since(e).as_secs_f64()),
            _ => None,
        },
        pauses: summary["kafka"]["pauses"].as_u64().unwrap_or(0),
        peak_unwritten_rows,
        retries: summary["cassandra"]["retries"].as_u64().unwrap_or(0),
        peak_rss_mib,
        wall_s,
        disk_full_error,
        partial_files,
        pipeline: summary,
    })
}

/// Runs the scenarios and writes `faults.md` and `faults.json` under `--out`.
pub fn run(args: FaultsArgs) -> Result<()> {
    let root = crate::w1::workspace_root();
    let bin = args.harness.binary(&root)?;
    let work = args.harness.work_dir(&root)?;
    let machine = Machine::probe(&root);
    let budget_rows = args.max_queued_rows.unwrap_or(DEFAULT_MAX_QUEUED_ROWS);
    let max_rss = args.max_rss_mib.unwrap_or(rss_budget_mib(budget_rows));
    let mut runs = Vec::new();
    for &scenario in &args.scenarios {
        let r = one_scenario(&args, &bin, &work, &root, scenario)?;
        eprintln!("  {}", r.row());
        runs.push(r);
    }
    let mut table = format!(
        "### faults at {} readings/s ({} UTC)\n\n{} CPUs ({}), {} MiB, load {}, wattflow {}\n\n\
         {} households at one reading a second for {} s; the fault from {} s (Cassandra faults and bad \
         messages {} s, Kafka cut {} s); `wattflow run` (Kafka → Cassandra, both through Toxiproxy), \
         {} worker(s), `max_queued_rows` {} (RSS budget {:.0} MiB).\n\n\
         | scenario | produced | lost | counted twice | bad messages refused | fault | recovery after the fault | pauses | peak unwritten rows | retries | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
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
        args.cut_seconds,
        args.workers,
        budget_rows,
        max_rss
    );
    for r in &runs {
        table.push_str(&r.row());
        table.push('\n');
    }
    std::fs::create_dir_all(&args.harness.out)?;
    std::fs::write(args.harness.out.join("faults.md"), &table)?;
    std::fs::write(
        args.harness.out.join("faults.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    println!("{table}");
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| r.lost > 0 || r.doubled > 0)
        .map(|r| r.scenario.name().to_owned())
        .collect();
    ensure!(bad.is_empty(), "readings lost or counted twice in {bad:?}");
    if args.check {
        let problems: Vec<String> = runs
            .iter()
            .flat_map(|r| {
                r.problems(budget_rows, max_rss)
                    .into_iter()
                    .map(|p| format!("{}: {p}", r.scenario.name()))
            })
            .collect();
        ensure!(
            problems.is_empty(),
            "faults check failed: {}",
            problems.join("; ")
        );
    }
    Ok(())
}

/// The filler file `disk-full` writes to its tmpfs.
const FILLER: &str = "filler";

/// A tmpfs mounted for `disk-full`, unmounted (and its mount point removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "disk-full mounts a tmpfs at {} and needs root for it",
            dir.display()
        );
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Bytes free for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path and a zeroed plain C struct for statvfs to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    ensure!(
        rc == 0,
        "statvfs {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let free = u64::from(stat.f_bavail) * u64::from(stat.f_frsize);
    Ok(free)
}

/// Files under `dir` a reader must never see: temporary files, and Parquet files that do not
/// read to their end.
fn partial_or_unreadable(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in files_under(dir) {
        let name = file.display().to_string();
        let name_only = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let temporary = name_only.is_some_and(|n| n.contains(".tmp"));
        let unreadable = || name.ends_with(".parquet") && read_parquet(&file, |_| Ok(())).is_err();
        if temporary || unreadable() {
            out.push(name);
        }
    }
    out
}

/// Samples per meter in the Parquet day view under `views`.
fn parquet_day_samples(views: &Path) -> Result<std::collections::HashMap<String, u64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let mut out = std::collections::HashMap::new();
    for file in files_under(&views.join("day")) {
        if file.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        read_parquet(&file, |batch| {
            let meter = batch.column_by_name("meter").context("no column meter")?;
            let samples = batch
                .column_by_name("samples")
                .context("no column samples")?;
            let (meter, samples) = (
                meter.as_string::<i32>(),
                samples.as_primitive::<Int64Type>(),
            );
            for i in 0..batch.num_rows() {
                *out.entry(meter.value(i).to_owned()).or_insert(0) +=
                    u64::try_from(samples.value(i)).unwrap_or(0);
            }
            Ok(())
        })
        .with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(out)
}

/// Every batch of the Parquet file at `path`, in order.
fn read_parquet(
    path: &Path,
    mut each: impl FnMut(&arrow_array::RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path)?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    for batch in reader {
        each(&batch?)?;
    }
    Ok(())
}

/// Every file under `dir`, recursively (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// `text` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
