//! W2, the live stream: simulated households → Kafka → `wattflow live` → Cassandra, with the
//! broker and the database on this machine (see `../shared/docs/BENCHMARKS.md`).
//!
//! Each run has three phases, each on a fresh topic and keyspace, each pipeline a child process
//! measured through `wait4` and `/proc` (CPU, peak RSS):
//!
//! 1. **Sustained.** The harness produces `--households` meters at one reading a second each, in
//!    real time for `--seconds`, while `wattflow live` runs. Sustained rate = readings ÷ the time
//!    from the first production to the pipeline reading the last message: it equals the
//!    production rate exactly when the pipeline keeps pace. Also reported: how long after the
//!    production ended the last message was read (ingest lag) and the last row was written
//!    (views complete: this includes the hour and day rows held for their delays, written at the
//!    latest when the input ends after the pipeline's 10 s idle timeout), and the freshness of
//!    the probe households (below) at that rate.
//! 2. **Freshness.** The same at `--rate` readings a second for `--freshness-seconds`.
//!    For `--probes` households the harness notes when each reading was handed to the
//!    producer, and a poller reads their current minute rows back: freshness of a reading = the
//!    first poll that sees the row count it − its production (the poll period, reported, bounds
//!    the error). The first 5 s are a warm-up and not counted.
//! 3. **Catch-up.** `--households` × `--catch-up-seconds` readings are produced first; then the
//!    pipeline drains them and completes the views: readings ÷ the time from its start to its
//!    last acknowledged upsert. The day rows of 50 households are read back and must count
//!    exactly the readings produced for them.
//!
//! Producers send each household's reading at `(h - 1) / rate` into each second, in 1 ms ticks.
//! Also reported: the CPU the Kafka and Cassandra JVMs used meanwhile (from their pid files under
//! `.services/run`).
//!
//! # Peers
//! `--peers pathway,spark` (the default) runs the same phases, on their own topics and
//! keyspaces, with `peers/pathway_w2.py` (Pathway's Kafka connector, windows as group-bys,
//! Cassandra through the DataStax Python driver) and `peers/spark_w2.py` (Spark Structured
//! Streaming with its Kafka source and the Spark Cassandra Connector), both writing wattflow's
//! view tables and printing wattflow's summary lines. They run in `<work>/venv-w2`, made from
//! `peers/requirements-w2.txt`. A peer is told to stop (`SIGTERM`; it prints what it did) once
//! `--peer-deadline` seconds have passed after the production ended (catch-up: after its start);
//! its figures then cover what it did by then, and probe readings it never showed count as
//! never fresh. A peer signals that it is ready to read with a file (`--ready-file`).

use std::collections::BTreeMap;
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
use wattflow::sink::cassandra::{connect, read_view, CassandraSinkConfig, CassandraViews};

use crate::machine::{now_utc, Machine};
use crate::measure::{self, Measured};
use crate::report::median;

/// Arguments of `wattflow-bench w2`.
#[derive(Debug, Args)]
pub struct W2Args {
    /// Runs of each phase; the table reports medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Kafka bootstrap server.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Cassandra contact point.
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// Sustained and catch-up phases: households (one reading a second each).
    #[arg(long, default_value_t = 100_000)]
    pub households: u32,
    /// Sustained phase: how long to produce, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Catch-up phase: seconds of readings per household, produced before the pipeline starts.
    #[arg(long, default_value_t = 30)]
    pub catch_up_seconds: u32,
    /// Freshness phase: households, i.e. readings per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Freshness phase: how long to produce, in seconds.
    #[arg(long, default_value_t = 60)]
    pub freshness_seconds: u32,
    /// Freshness phase: households whose minute rows are polled.
    #[arg(long, default_value_t = 16)]
    pub probes: u32,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Timely workers of the pipeline.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Skip a phase: `sustained`, `freshness` or `catch-up` (repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Extra arguments for every `wattflow live` (space-separated), e.g. `--max-in-flight 16`.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub live_args: String,
    /// Peers to run beside wattflow (`pathway`, `spark`), or `none`.
    #[arg(long, value_delimiter = ',', default_value = "pathway,spark")]
    pub peers: Vec<String>,
    /// Seconds a peer may take after the production ended (catch-up: after its start) before
    /// it is told to stop.
    #[arg(long, default_value_t = 60)]
    pub peer_deadline: u64,
    /// Run the peers in the sustained phase too. Off by default: neither keeps pace with the
    /// freshness phase's 10,000 readings/s here, and Pathway's memory grows by gigabytes a
    /// minute when it falls behind, which at 100,000/s endangers the services beside it.
    #[arg(long)]
    pub peers_sustained: bool,
    /// The Python that creates the peers' venv.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// `--out`, `--work`, `--wattflow`, `--build`.
    #[command(flatten)]
    pub harness: crate::harness::Harness,
}

/// A system under test in W2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// `wattflow live`.
    Wattflow,
    /// `peers/pathway_w2.py`.
    Pathway,
    /// `peers/spark_w2.py`.
    Spark,
}

impl Engine {
    const PEERS: [Engine; 2] = [Engine::Pathway, Engine::Spark];

    fn name(self) -> &'static str {
        match self {
            Engine::Wattflow => "wattflow",
            Engine::Pathway => "pathway",
            Engine::Spark => "spark",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Engine::Wattflow => "wattflow",
            Engine::Pathway => "Pathway",
            Engine::Spark => "Spark Structured Streaming",
        }
    }

    fn parse_peer(text: &str) -> Result<Engine> {
        Engine::PEERS
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(text.trim()))
            .with_context(|| format!("unknown W2 peer {text:?} (known: pathway, spark)"))
    }
}

/// How to start one engine's pipeline.
struct Pipeline {
    engine: Engine,
    /// The `wattflow` binary, or the venv's Python for a peer.
    program: PathBuf,
}

impl Pipeline {
    /// The pipeline reading `topic` into `keyspace`, finishing once idle for `idle`; a peer
    /// creates `ready` once it reads.
    fn command(
        &self,
        args: &W2Args,
        topic: &str,
        keyspace: &str,
        idle: Duration,
        ready: &Path,
    ) -> Command {
        let group = format!("{topic}-group");
        match self.engine {
            Engine::Wattflow => {
                let mut cmd = Command::new(&self.program);
                cmd.args(["live", "--brokers", &args.brokers, "--topic", topic])
                    .args(["--group", &group, "--start", "earliest"])
                    .args(["--cassandra", &args.cassandra, "--keyspace", keyspace])
                    .args(["--workers", &args.workers.to_string()])
                    .args(["--exit-when-idle", &format!("{}ms", idle.as_millis())])
                    .args(args.live_args.split_whitespace())
                    .env("RUST_LOG", "warn");
                cmd
            }
            peer => {
                let script = crate::peers::scripts_dir().join(format!("{}_w2.py", peer.name()));
                let mut cmd = Command::new(&self.program);
                cmd.arg(script)
                    .args([
                        "--brokers",
                        &args.brokers,
                        "--topic",
                        topic,
                        "--group",
                        &group,
                    ])
                    .args(["--cassandra", &args.cassandra, "--keyspace", keyspace])
                    .args(["--threads", &args.workers.to_string()])
                    // A peer's output comes in batches: a second of silence is not the end.
                    .args([
                        "--exit-when-idle",
                        &idle.max(Duration::from_secs(10)).as_secs_f64().to_string(),
                    ])
                    .arg("--ready-file")
                    .arg(ready)
                    .env("PATHWAY_THREADS", args.workers.to_string());
                cmd
            }
        }
    }

    /// Waits until the pipeline reads (peers: their ready file; wattflow: 3 s, enough for it to
    /// create the keyspace and assign the partitions).
    fn wait_ready(&self, ready: &Path, child: &thread::JoinHandle<Result<Measured>>) -> Result<()> {
        if self.engine == Engine::Wattflow {
            thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        let give_up = Instant::now() + Duration::from_secs(600);
        while !ready.exists() {
            ensure!(
                !child.is_finished(),
                "{} ended before it was ready",
                self.engine.label()
            );
            ensure!(
                Instant::now() < give_up,
                "{} not ready after 600 s",
                self.engine.label()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// One catch-up run.
#[derive(Debug, Clone, Serialize)]
struct CatchUpRun {
    engine: Engine,
    /// Whether the pipeline finished by itself (not stopped at the peer deadline).
    finished: bool,
    readings: u64,
    produce_s: f64,
    /// From the pipeline's start to its last acknowledged upsert.
    active_s: f64,
    wall_s: f64,
    readings_per_s: f64,
    rows_written: u64,
    changes_merged: u64,
    cpu_s: f64,
    cpu_s_per_million: f64,
    peak_rss_mib: f64,
    kafka_cpu_s: f64,
    cassandra_cpu_s: f64,
    households_checked: usize,
}

/// One real-time run (the sustained and the freshness phases).
#[derive(Debug, Clone, Serialize)]
struct StreamRun {
    engine: Engine,
    /// Whether the pipeline finished by itself (not stopped at the peer deadline).
    finished: bool,
    /// Probe readings never seen in Cassandra (counted as never fresh in the percentiles).
    unseen: usize,
    target_rate: u32,
    readings: u64,
    /// Readings ÷ (first production → last message read by the pipeline).
    sustained_rate: f64,
    /// Readings ÷ production time: what the producer achieved.
    produced_rate: f64,
    /// Last message read − end of production.
    ingest_lag_s: f64,
    /// Last row written − end of production (hour and day rows held for their delays count).
    views_complete_s: f64,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    poll_period_ms: f64,
    rows_written: u64,
    cpu_s: f64,
    cpu_s_per_million: f64,
    peak_rss_mib: f64,
    kafka_cpu_s: f64,
    cassandra_cpu_s: f64,
}

#[derive(Debug, Serialize)]
struct RawReport<'a> {
    workload: &'static str,
    machine: &'a Machine,
    wattflow_binary: String,
    peers: Vec<Engine>,
    peer_versions: BTreeMap<String, String>,
    households: u32,
    seconds: u32,
    catch_up_seconds: u32,
    rate: u32,
    freshness_seconds: u32,
    partitions: i32,
    workers: usize,
    sustained: &'a [StreamRun],
    freshness: &'a [StreamRun],
    catch_up: &'a [CatchUpRun],
}

/// CPU seconds a service JVM has used so far (from `.services/run/<name>.pid`), if it runs.
fn service_cpu(root: &Path, name: &str) -> Option<f64> {
    let pid =
        std::fs::read_to_string(root.join(".services/run").join(format!("{name}.pid"))).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    // Fields after the parenthesised command: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// CPU of both services between two calls.
struct ServiceCpu {
    root: PathBuf,
    kafka: f64,
    cassandra: f64,
}

impl ServiceCpu {
    fn start(root: &Path) -> ServiceCpu {
        ServiceCpu {
            root: root.to_path_buf(),
            kafka: service_cpu(root, "kafka").unwrap_or(0.0),
            cassandra: service_cpu(root, "cassandra").unwrap_or(0.0),
        }
    }

    fn used(&self) -> (f64, f64) {
        (
            service_cpu(&self.root, "kafka").unwrap_or(0.0) - self.kafka,
            service_cpu(&self.root, "cassandra").unwrap_or(0.0) - self.cassandra,
        )
    }
}

use wattflow::time::now_unix_ms as unix_ms;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        unix_ms() % 100_000_000
    )
}

/// Where a peer reading `topic` says it is ready.
fn ready_file(topic: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wattflow-w2-{topic}.ready"))
}

fn generator(households: u32) -> Generator {
    Generator::new(GeneratorConfig {
        households,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    })
}

/// What `wattflow live` printed at the end.
#[derive(Debug, PartialEq)]
struct LiveOutput {
    readings: u64,
    rows_written: u64,
    changes_merged: u64,
    last_message_s: Option<f64>,
    last_write_s: Option<f64>,
}

/// Reads the summary `wattflow live` prints.
fn parse_live(stdout: &str) -> Result<LiveOutput> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("live finished") || l.starts_with("live stopped"))
        .with_context(|| format!("no summary in {stdout:?}"))?;
    let number_before = |word: &str| -> Result<u64> {
        let at = line
            .find(word)
            .with_context(|| format!("no {word:?} in {line:?}"))?;
        let digits: String = line[..at]
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .to_string();
        digits
            .parse()
            .with_context(|| format!("{word} in {line:?}"))
    };
    let seconds_after = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
    };
    Ok(LiveOutput {
        readings: number_before(" readings")?,
        rows_written: number_before(" rows written")?,
        changes_merged: number_before(" changes merged")?,
        last_message_s: seconds_after("last message read "),
        last_write_s: seconds_after("last row written "),
    })
}

fn catch_up_run(pipe: &Pipeline, args: &W2Args, root: &Path) -> Result<CatchUpRun> {
    let topic = unique("w2_cu");
    let keyspace = unique("w2_cu");
    ensure_topic(&args.brokers, &topic, args.partitions).context("creating the topic")?;
    let gen = generator(args.households);
    let end_ts = unix_ms() / 1000 * 1000;
    let start_ts = end_ts - i64::from(args.catch_up_seconds) * 1000;
    let produced_at = Instant::now();
    let mut producer = ReadingProducer::new(&args.brokers, &topic)?;
    let mut houses: Vec<_> = (1..=args.households)
        .map(|h| gen.readings(h, start_ts, 1, u64::from(args.catch_up_seconds)))
        .collect();
    let mut sent = 0u64;
    for _ in 0..args.catch_up_seconds {
        for house in houses.iter_mut() {
            if let Some(r) = house.next() {
                ensure!(producer.send(&r), "the producer refused a reading");
                sent += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    drop(houses);
    drop(producer);
    let produce_s = produced_at.elapsed().as_secs_f64();
    eprintln!(
        "  produced {sent} readings in {produce_s:.1} s; running {} on {} partitions",
        pipe.engine.label(),
        args.partitions
    );

    let services = ServiceCpu::start(root);
    let ready = ready_file(&topic);
    let deadline = match pipe.engine {
        Engine::Wattflow => measure::Deadline::default(),
        _ => measure::Deadline::after(Duration::from_secs(args.peer_deadline)),
    };
    let m = measure::run_until(
        &mut pipe.command(args, &topic, &keyspace, Duration::from_secs(1), &ready),
        deadline,
    )?;
    let _ = std::fs::remove_file(&ready);
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let out = parse_live(&m.stdout)?;
    let readings = out.readings;
    let finished = !m.stopped;
    ensure!(
        readings == sent || !finished,
        "{} read {readings} readings, {sent} were produced",
        pipe.engine.label()
    );
    // A peer stopped before its first write did nothing in the whole time it had.
    let active_s = match out.last_write_s.filter(|s| *s > 0.0) {
        Some(s) => s,
        None if !finished => m.wall.as_secs_f64(),
        None => bail!("{} wrote no row", pipe.engine.label()),
    };

    // Every household of a sample must count all its readings in its day row.
    let views = connect(&CassandraSinkConfig {
        keyspace: keyspace.clone(),
        ..CassandraSinkConfig::new(&args.cassandra)
    })?;
    let step = (args.households / 50).max(1);
    let mut checked = 0;
    // A peer stopped at its deadline left views incomplete: nothing to check.
    for h in (1..=args.households)
        .step_by(step as usize)
        .filter(|_| finished)
    {
        let meter = gen.meter(h);
        let rows = read_view(
            &views,
            Granularity::Day,
            meter.as_str(),
            start_ts - 86_400_000,
            end_ts + 86_400_000,
        )?;
        let samples: i64 = rows.iter().map(|r| r.samples).sum();
        ensure!(
            samples == i64::from(args.catch_up_seconds),
            "{meter}: day rows count {samples} readings, {} were produced",
            args.catch_up_seconds
        );
        checked += 1;
    }
    drop_keyspace(&views, &keyspace);
    drop_topic(args, &topic);
    let cpu_s = m.cpu().as_secs_f64();
    Ok(CatchUpRun {
        engine: pipe.engine,
        finished,
        readings,
        produce_s,
        active_s,
        wall_s: m.wall.as_secs_f64(),
        readings_per_s: readings as f64 / active_s,
        rows_written: out.rows_written,
        changes_merged: out.changes_merged,
        cpu_s,
        cpu_s_per_million: cpu_s / readings as f64 * 1e6,
        peak_rss_mib: m.max_rss_mib(),
        kafka_cpu_s,
        cassandra_cpu_s,
        households_checked: checked,
    })
}

/// Deletes a phase's topic and its dead-letter topic (a catch-up topic holds gigabytes).
fn drop_topic(args: &W2Args, topic: &str) {
    let dead = format!("{topic}.rejected");
    if let Err(e) = delete_topics(&args.brokers, &[topic, &dead]) {
        eprintln!("  could not delete topic {topic}: {e}");
    }
}

fn drop_keyspace(views: &CassandraViews, keyspace: &str) {
    if let Err(e) = views.execute(&format!("DROP KEYSPACE IF EXISTS {keyspace}")) {
        eprintln!("  could not drop keyspace {keyspace}: {e}");
    }
}

/// One probe household's readings: `(ts, handed to the producer, readings of its minute so far)`.
type ProbeLog = Vec<(i64, Instant, i64)>;

fn stream_run(
    pipe: &Pipeline,
    args: &W2Args,
    root: &Path,
    rate: u32,
    seconds: u32,
) -> Result<StreamRun> {
    let topic = unique("w2_rt");
    let keyspace = unique("w2_rt");
    ensure_topic(&args.brokers, &topic, args.partitions).context("creating the topic")?;
    let services = ServiceCpu::start(root);
    let child_started = Instant::now();
    let ready = ready_file(&topic);
    let deadline = measure::Deadline::default();
    let child = {
        let mut cmd = pipe.command(args, &topic, &keyspace, Duration::from_secs(10), &ready);
        let deadline = deadline.clone();
        thread::spawn(move || measure::run_until(&mut cmd, deadline))
    };
    // The pipeline creates the keyspace (so does `connect`); wait for it to read before
    // producing.
    let config = CassandraSinkConfig {
        keyspace: keyspace.clone(),
        ..CassandraSinkConfig::new(&args.cassandra)
    };
    pipe.wait_ready(&ready, &child)?;
    let _ = std::fs::remove_file(&ready);
    let views = Arc::new(connect(&config)?);
    let give_up = match pipe.engine {
        Engine::Wattflow => Duration::from_secs(180),
        _ => Duration::from_secs(args.peer_deadline),
    };

    let gen = generator(rate);
    let probe_every = (rate / args.probes.max(1)).max(1);
    let probes: Vec<u32> = (1..=rate).step_by(probe_every as usize).collect();
    let logs: Arc<Vec<Mutex<ProbeLog>>> =
        Arc::new(probes.iter().map(|_| Mutex::new(Vec::new())).collect());
    let done = Arc::new(AtomicBool::new(false));
    let warmup_until = Instant::now() + Duration::from_secs(5);

    // The poller: each probe's newest unseen reading, until production ends and all are seen.
    let poller = {
        let (views, logs, done) = (Arc::clone(&views), Arc::clone(&logs), Arc::clone(&done));
        let meters: Vec<String> = probes
            .iter()
            .map(|h| gen.meter(*h).as_str().to_owned())
            .collect();
        thread::spawn(move || -> Result<(Vec<f64>, f64)> {
            let mut seen = vec![0usize; meters.len()];
            let mut fresh = Vec::new();
            let mut polls = 0u64;
            let started = Instant::now();
            let mut finished_at: Option<Instant> = None;
            loop {
                let mut pending = false;
                for (i, meter) in meters.iter().enumerate() {
                    let log = logs[i].lock().expect("probe log").clone();
                    if seen[i] >= log.len() {
                        continue;
                    }
                    pending = true;
                    let (ts, _, _) = log[seen[i]];
                    let minute = ts - ts.rem_euclid(60_000);
                    let rows = read_view(&views, Granularity::Minute, meter, minute, minute + 1)?;
                    let now = Instant::now();
                    polls += 1;
                    let samples = rows.first().map_or(0, |r| r.samples);
                    while seen[i] < log.len() {
                        let (ts_i, at, count) = log[seen[i]];
                        if ts_i - ts_i.rem_euclid(60_000) != minute || samples < count {
                            break;
                        }
                        if at >= warmup_until {
                            fresh.push(now.duration_since(at).as_secs_f64() * 1000.0);
                        }
                        seen[i] += 1;
                    }
                }
                if done.load(Ordering::Relaxed) {
                    let at = *finished_at.get_or_insert_with(Instant::now);
                    if !pending || at.elapsed() > give_up {
                        break;
                    }
                }
                if !pending {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            let period = started.elapsed().as_secs_f64() * 1000.0 / (polls.max(1) as f64)
                * meters.len() as f64;
            Ok((fresh, period))
        })
    };

    // The producer: every household once a second, spread evenly over the second.
    let mut producer = ReadingProducer::new(&args.brokers, &topic)?;
    let first_ts = unix_ms() / 1000 * 1000 + 1000;
    // One cached sequence per household: the generator's values, cheaper than one by one.
    let mut houses: Vec<_> = (1..=rate)
        .map(|h| gen.readings(h, first_ts, 1, u64::from(seconds)))
        .collect();
    let mut sent = 0u64;
    let mut probe_counts: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    // Household h sends at (h - 1) / rate into each second, in 1 ms ticks.
    let per_ms = f64::from(rate.max(1)) / 1000.0;
    let t0 = Instant::now();
    for second in 0..seconds {
        let ts = first_ts + i64::from(second) * 1000;
        let round = t0 + Duration::from_secs(u64::from(second));
        let mut h = 1u32;
        for tick in 1..=1000u32 {
            let at = round + Duration::from_millis(u64::from(tick - 1));
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            let until = ((f64::from(tick) * per_ms).round() as u32).min(rate);
            while h <= until {
                let r = houses[(h - 1) as usize]
                    .next()
                    .context("the generator ran out")?;
                debug_assert_eq!(r.ts, ts);
                ensure!(producer.send(&r), "the producer refused a reading");
                sent += 1;
                if let Ok(i) = probes.binary_search(&h) {
                    let handed = Instant::now();
                    let minute = ts - ts.rem_euclid(60_000);
                    let entry = probe_counts.entry(h).or_insert((minute, 0));
                    if entry.0 != minute {
                        *entry = (minute, 0);
                    }
                    entry.1 += 1;
                    logs[i]
                        .lock()
                        .expect("probe log")
                        .push((ts, handed, entry.1));
                }
                h += 1;
            }
        }
    }
    let produced_s = t0.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    drop(houses);
    if pipe.engine != Engine::Wattflow {
        deadline.set(Instant::now() + Duration::from_secs(args.peer_deadline));
    }
    let start_rel = t0.duration_since(child_started).as_secs_f64();
    let end_rel = start_rel + produced_s;
    done.store(true, Ordering::Relaxed);
    let (mut fresh, poll_period_ms) = poller.join().expect("poller panicked")?;
    let m: Measured = child.join().expect("pipeline thread panicked")?;
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let out = parse_live(&m.stdout)?;
    let readings = out.readings;
    let finished = !m.stopped;
    // A peer stopped before it showed anything counts as busy until it was stopped.
    let stopped_at = m.wall.as_secs_f64();
    let or_stopped = |v: Option<f64>, what: &str| match v.filter(|s| *s > 0.0) {
        Some(s) => Ok(s),
        None if !finished => Ok(stopped_at),
        None => Err(anyhow::anyhow!("{} {what}", pipe.engine.label())),
    };
    let last_message_s = or_stopped(out.last_message_s, "read nothing")?;
    let last_write_s = or_stopped(out.last_write_s, "wrote nothing")?;
    ensure!(
        readings == sent || !finished,
        "{} read {readings} readings, {sent} were produced",
        pipe.engine.label()
    );
    let expected: usize = logs
        .iter()
        .map(|l| {
            l.lock()
                .expect("probe log")
                .iter()
                .filter(|(_, at, _)| *at >= warmup_until)
                .count()
        })
        .sum();
    let unseen = expected.saturating_sub(fresh.len());
    ensure!(
        unseen == 0 || pipe.engine != Engine::Wattflow,
        "only {} of {expected} probe readings became visible",
        fresh.len()
    );
    fresh.extend(std::iter::repeat_n(f64::INFINITY, unseen));
    drop_keyspace(&views, &keyspace);
    drop_topic(args, &topic);
    fresh.sort_by(f64::total_cmp);
    let pct = |p: f64| fresh[((fresh.len() - 1) as f64 * p).round() as usize];
    ensure!(!fresh.is_empty(), "no freshness sample");
    let cpu_s = m.cpu().as_secs_f64();
    Ok(StreamRun {
        engine: pipe.engine,
        finished,
        unseen,
        target_rate: rate,
        readings,
        sustained_rate: readings as f64 / (last_message_s - start_rel).max(1e-3),
        produced_rate: sent as f64 / produced_s,
        ingest_lag_s: last_message_s - end_rel,
        views_complete_s: last_write_s - end_rel,
        samples: fresh.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: *fresh.last().unwrap_or(&0.0),
        poll_period_ms,
        rows_written: out.rows_written,
        cpu_s,
        cpu_s_per_million: cpu_s / readings as f64 * 1e6,
        peak_rss_mib: m.max_rss_mib(),
        kafka_cpu_s,
        cassandra_cpu_s,
    })
}

/// Runs W2.
pub fn run(args: W2Args) -> Result<()> {
    let root = crate::w1::workspace_root();
    let bin = args.harness.binary(&root)?;
    for phase in &args.skip {
        if !["sustained", "freshness", "catch-up"].contains(&phase.as_str()) {
            bail!("--skip {phase:?}: sustained, freshness or catch-up");
        }
    }
    let peers: Vec<Engine> = if args.peers.iter().any(|p| p == "none") {
        Vec::new()
    } else {
        args.peers
            .iter()
            .map(|p| Engine::parse_peer(p))
            .collect::<Result<_>>()?
    };
    let mut pipelines = vec![Pipeline {
        engine: Engine::Wattflow,
        program: bin.clone(),
    }];
    let mut peer_versions = BTreeMap::new();
    if !peers.is_empty() {
        let work = args.harness.work_dir(&root)?;
        let env = crate::peers::ensure_venv_for(
            &work.canonicalize()?,
            &args.python,
            "requirements-w2.txt",
            "venv-w2",
        )?;
        peer_versions = env.versions.clone();
        peer_versions.insert("python".into(), env.python_version.clone());
        for engine in &peers {
            pipelines.push(Pipeline {
                engine: *engine,
                program: env.python.clone(),
            });
        }
    }
    let skip = |p: &str| args.skip.iter().any(|s| s == p);
    let machine = Machine::probe(&root);
    std::fs::create_dir_all(&args.harness.out)?;
    let (mut sustained, mut freshness, mut catch_up) = (Vec::new(), Vec::new(), Vec::new());
    let show = |r: &StreamRun| {
        eprintln!(
            "  {}: sustained {:.0} readings/s (produced {:.0}/s){}; ingest lag {:.2} s; views \
             complete {:.1} s after production; freshness p50 {} ms, p99 {} ms, max {} ms \
             ({} unseen); {:.1} CPU-s/M, {:.0} MiB",
            r.engine.label(),
            r.sustained_rate,
            r.produced_rate,
            if r.finished {
                ""
            } else {
                " (stopped at the deadline)"
            },
            r.ingest_lag_s,
            r.views_complete_s,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            r.unseen,
            r.cpu_s_per_million,
            r.peak_rss_mib
        );
    };
    for run in 1..=args.runs {
        for (phase, rate, seconds, runs) in [
            ("sustained", args.households, args.seconds, &mut sustained),
            (
                "freshness",
                args.rate,
                args.freshness_seconds,
                &mut freshness,
            ),
        ] {
            if skip(phase) {
                continue;
            }
            for pipe in pipelines.iter().filter(|p| {
                p.engine == Engine::Wattflow || phase != "sustained" || args.peers_sustained
            }) {
                eprintln!(
                    "W2 {phase} run {run}/{}, {}: {rate} readings/s for {seconds} s",
                    args.runs,
                    pipe.engine.label()
                );
                let r = stream_run(pipe, &args, &root, rate, seconds)?;
                show(&r);
                runs.push(r);
            }
        }
        if !skip("catch-up") {
            for pipe in &pipelines {
                eprintln!(
                    "W2 catch-up run {run}/{}, {}: {} households × {} s produced first",
                    args.runs,
                    pipe.engine.label(),
                    args.households,
                    args.catch_up_seconds
                );
                let r = catch_up_run(pipe, &args, &root)?;
                eprintln!(
                    "  {:.0} readings/s ({} readings in {:.2} s{}), {} rows, {:.1} CPU-s/M, {:.0} MiB",
                    r.readings_per_s,
                    r.readings,
                    r.active_s,
                    if r.finished { "" } else { ", stopped at the deadline" },
                    r.rows_written,
                    r.cpu_s_per_million,
                    r.peak_rss_mib
                );
                catch_up.push(r);
            }
        }
    }
    let report = RawReport {
        workload: "w2",
        machine: &machine,
        wattflow_binary: bin.display().to_string(),
        peers: peers.clone(),
        peer_versions: peer_versions.clone(),
        households: args.households,
        seconds: args.seconds,
        catch_up_seconds: args.catch_up_seconds,
        rate: args.rate,
        freshness_seconds: args.freshness_seconds,
        partitions: args.partitions,
        workers: args.workers,
        sustained: &sustained,
        freshness: &freshness,
        catch_up: &catch_up,
    };
    std::fs::write(
        args.harness.out.join("w2.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let engines: Vec<Engine> = pipelines.iter().map(|p| p.engine).collect();
    let table = markdown(
        &args,
        &machine,
        &engines,
        &peer_versions,
        &sustained,
        &freshness,
        &catch_up,
    );
    std::fs::write(args.harness.out.join("w2.md"), &table)?;
    println!("{table}");
    Ok(())
}

/// A latency in ms, or "never" for probe readings that were never seen.
fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "never".to_owned()
    }
}

fn med<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

/// One run of one engine, as the tables group them.
trait EngineRun: Clone {
    fn engine(&self) -> Engine;
    fn finished(&self) -> bool;
}

impl EngineRun for StreamRun {
    fn engine(&self) -> Engine {
        self.engine
    }
    fn finished(&self) -> bool {
        self.finished
    }
}

impl EngineRun for CatchUpRun {
    fn engine(&self) -> Engine {
        self.engine
    }
    fn finished(&self) -> bool {
        self.finished
    }
}

/// One table row per engine of `engines` that has runs in `all`, in that order: `row(label,
/// runs)`, the label being the engine's name and, if any run was stopped at the deadline, how
/// many.
fn per_engine<R: EngineRun>(
    engines: &[Engine],
    all: &[R],
    row: impl Fn(String, &[R]) -> String,
) -> String {
    let mut md = String::new();
    for &engine in engines {
        let runs: Vec<R> = all
            .iter()
            .filter(|r| r.engine() == engine)
            .cloned()
            .collect();
        if runs.is_empty() {
            continue;
        }
        let stopped = runs.iter().filter(|r| !r.finished()).count();
        let label = match stopped {
            0 => engine.label().to_owned(),
            n => format!(
                "{} ({n} of {} stopped at the deadline)",
                engine.label(),
                runs.len()
            ),
        };
        md.push_str(&row(label, &runs));
    }
    md
}

fn stream_rows(what: &str, seconds: u32, engines: &[Engine], all: &[StreamRun]) -> String {
    per_engine(engines, all, |label, runs| {
        format!(
            "| {what} | {label} | {} | {seconds} | {:.0} | {:.0} | {:.2} | {:.1} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
            runs[0].target_rate,
            med(runs, |r| r.produced_rate),
            med(runs, |r| r.sustained_rate),
            med(runs, |r| r.ingest_lag_s),
            med(runs, |r| r.views_complete_s),
            ms(med(runs, |r| r.p50_ms)),
            ms(med(runs, |r| r.p99_ms)),
            ms(med(runs, |r| r.max_ms)),
            med(runs, |r| r.poll_period_ms),
            med(runs, |r| r.cpu_s_per_million),
            med(runs, |r| r.peak_rss_mib),
            med(runs, |r| r.kafka_cpu_s),
            med(runs, |r| r.cassandra_cpu_s),
        )
    })
}

fn markdown(
    args: &W2Args,
    machine: &Machine,
    engines: &[Engine],
    versions: &BTreeMap<String, String>,
    sustained: &[StreamRun],
    freshness: &[StreamRun],
    catch_up: &[CatchUpRun],
) -> String {
    let mut md = format!(
        "## W2: live stream (medians of {} runs, {} worker(s)/thread(s), {} partitions, {})\n\n",
        args.runs,
        args.workers,
        args.partitions,
        now_utc()
    );
    md.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB, load at start {}; wattflow {}; Kafka, Cassandra, the \
         producer and the pipeline all on it.",
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.load_average,
        machine.wattflow_commit
    ));
    if !versions.is_empty() {
        let list: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        md.push_str(&format!(
            " Peers: {}; a peer is stopped {} s after the production ends (catch-up: after \
             its start).",
            list.join(", "),
            args.peer_deadline
        ));
    }
    md.push_str("\n\n");
    if !sustained.is_empty() || !freshness.is_empty() {
        md.push_str(
            "Real time: households produce one reading a second each while the pipeline runs; \
             freshness = reading produced → its minute row visible (never: not visible when \
             the pipeline was stopped).\n\n\
             | phase | engine | target readings/s | s | produced/s | sustained readings/s | \
             ingest lag s | views complete s after | p50 ms | p99 ms | max ms | poll period \
             ms | pipeline CPU-s per M readings | pipeline peak RSS MiB | Kafka CPU-s | \
             Cassandra CPU-s |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        md.push_str(&stream_rows("sustained", args.seconds, engines, sustained));
        md.push_str(&stream_rows(
            "freshness",
            args.freshness_seconds,
            engines,
            freshness,
        ));
        md.push('\n');
    }
    if !catch_up.is_empty() {
        md.push_str(&format!(
            "Catch-up: {} households × {} s = {} readings produced first, then drained until \
             the views are complete (readings/s = readings ÷ the time from the pipeline's start \
             to its last write, start-up included).\n\n\
             | engine | readings/s | active s | rows written | changes merged | pipeline CPU-s \
             per M readings | pipeline peak RSS MiB | Kafka CPU-s | Cassandra CPU-s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            args.households,
            args.catch_up_seconds,
            u64::from(args.households) * u64::from(args.catch_up_seconds),
        ));
        md.push_str(&per_engine(engines, catch_up, |label, runs| {
            format!(
                "| {label} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
                med(runs, |r| r.readings_per_s),
                med(runs, |r| r.active_s),
                med(runs, |r| r.rows_written as f64),
                med(runs, |r| r.changes_merged as f64),
                med(runs, |r| r.cpu_s_per_million),
                med(runs, |r| r.peak_rss_mib),
                med(runs, |r| r.kafka_cpu_s),
                med(runs, |r| r.cassandra_cpu_s),
            )
        }));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Fake(Engine, bool);

    impl EngineRun for Fake {
        fn engine(&self) -> Engine {
            self.0
        }
        fn finished(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn rows_are_per_engine_in_order_and_say_how_many_runs_were_stopped() {
        let runs = [
            Fake(Engine::Spark, true),
            Fake(Engine::Wattflow, true),
            Fake(Engine::Spark, false),
            Fake(Engine::Wattflow, true),
        ];
        let md = per_engine(
            &[Engine::Wattflow, Engine::Pathway, Engine::Spark],
            &runs,
            |label, runs| format!("{label}: {}\n", runs.len()),
        );
        assert_eq!(
            md,
            "wattflow: 2\nSpark Structured Streaming (1 of 2 stopped at the deadline): 2\n"
        );
    }

    #[test]
    fn reads_the_live_summary() {
        let out = "live finished after 12.3 s: 3000000 messages, 2999990 readings, 10 rejected, \
                   0 duplicates, 123456 rows written, 777 changes merged\n\
                   last message read 8.500 s after start\n\
                   last row written 9.876 s after start\n";
        assert_eq!(
            parse_live(out).unwrap(),
            LiveOutput {
                readings: 2_999_990,
                rows_written: 123_456,
                changes_merged: 777,
                last_message_s: Some(8.5),
                last_write_s: Some(9.876),
            }
        );
        assert!(parse_live("nothing").is_err());
        // What the peers print, finished or stopped at the deadline.
        let peer = "live stopped: 41000 readings, 9000 rows written, 0 changes merged\n\
                    last message read 61.500 s after start\n\
                    last row written 62.000 s after start\n";
        assert_eq!(
            parse_live(peer).unwrap(),
            LiveOutput {
                readings: 41_000,
                rows_written: 9_000,
                changes_merged: 0,
                last_message_s: Some(61.5),
                last_write_s: Some(62.0),
            }
        );
    }
}
