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
use wattflow::simulate::{ensure_topic, ReadingProducer};
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
    /// Where the table (`w2.md`) and the raw runs (`w2.json`) go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// The `wattflow` binary. Default: the workspace's release build, built when missing.
    #[arg(long)]
    pub wattflow: Option<PathBuf>,
    /// Extra arguments for every `wattflow live` (space-separated), e.g. `--max-in-flight 16`.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub live_args: String,
    /// Build the release binary first even when it exists.
    #[arg(long)]
    pub build: bool,
}

/// One catch-up run.
#[derive(Debug, Clone, Serialize)]
struct CatchUpRun {
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

fn generator(households: u32) -> Generator {
    Generator::new(GeneratorConfig {
        households,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    })
}

/// The `wattflow live` child for `topic` into `keyspace`.
fn live_command(bin: &Path, args: &W2Args, topic: &str, keyspace: &str, idle: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["live", "--brokers", &args.brokers, "--topic", topic])
        .args(["--group", &format!("{topic}-group"), "--start", "earliest"])
        .args(["--cassandra", &args.cassandra, "--keyspace", keyspace])
        .args(["--workers", &args.workers.to_string()])
        .args(["--exit-when-idle", idle])
        .args(args.live_args.split_whitespace())
        .env("RUST_LOG", "warn");
    cmd
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
        .find(|l| l.starts_with("live finished"))
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

fn catch_up_run(bin: &Path, args: &W2Args, root: &Path) -> Result<CatchUpRun> {
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
        "  produced {sent} readings in {produce_s:.1} s; running wattflow live on {} partitions",
        args.partitions
    );

    let services = ServiceCpu::start(root);
    let m = measure::run(&mut live_command(bin, args, &topic, &keyspace, "1s"))?;
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let out = parse_live(&m.stdout)?;
    let readings = out.readings;
    ensure!(
        readings == sent,
        "the pipeline read {readings} readings, {sent} were produced"
    );
    let active_s = out.last_write_s.context("the pipeline wrote no row")?;

    // Every household of a sample must count all its readings in its day row.
    let views = connect(&CassandraSinkConfig {
        keyspace: keyspace.clone(),
        ..CassandraSinkConfig::new(&args.cassandra)
    })?;
    let step = (args.households / 50).max(1);
    let mut checked = 0;
    for h in (1..=args.households).step_by(step as usize) {
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
    let cpu_s = (m.user + m.sys).as_secs_f64();
    Ok(CatchUpRun {
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

fn drop_keyspace(views: &CassandraViews, keyspace: &str) {
    if let Err(e) = views.execute(&format!("DROP KEYSPACE IF EXISTS {keyspace}")) {
        eprintln!("  could not drop keyspace {keyspace}: {e}");
    }
}

/// One probe household's readings: `(ts, handed to the producer, readings of its minute so far)`.
type ProbeLog = Vec<(i64, Instant, i64)>;

fn stream_run(
    bin: &Path,
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
    let child = {
        let mut cmd = live_command(bin, args, &topic, &keyspace, "10s");
        thread::spawn(move || measure::run(&mut cmd))
    };
    // The pipeline creates the keyspace; wait for it before producing.
    let config = CassandraSinkConfig {
        keyspace: keyspace.clone(),
        ..CassandraSinkConfig::new(&args.cassandra)
    };
    thread::sleep(Duration::from_secs(3));
    let views = Arc::new(connect(&config)?);

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
            let give_up = Duration::from_secs(180);
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
    let start_rel = t0.duration_since(child_started).as_secs_f64();
    let end_rel = start_rel + produced_s;
    done.store(true, Ordering::Relaxed);
    let (mut fresh, poll_period_ms) = poller.join().expect("poller panicked")?;
    let m: Measured = child.join().expect("pipeline thread panicked")?;
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let out = parse_live(&m.stdout)?;
    let readings = out.readings;
    let last_message_s = out.last_message_s.context("the pipeline read nothing")?;
    let last_write_s = out.last_write_s.context("the pipeline wrote nothing")?;
    ensure!(
        readings == sent,
        "the pipeline read {readings} readings, {sent} were produced"
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
    ensure!(
        fresh.len() == expected,
        "only {} of {expected} probe readings became visible",
        fresh.len()
    );
    drop_keyspace(&views, &keyspace);
    fresh.sort_by(f64::total_cmp);
    let pct = |p: f64| fresh[((fresh.len() - 1) as f64 * p).round() as usize];
    ensure!(!fresh.is_empty(), "no freshness sample");
    let cpu_s = (m.user + m.sys).as_secs_f64();
    Ok(StreamRun {
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
    let bin = crate::w1::locate_wattflow(args.wattflow.as_deref(), args.build, &root)?;
    for phase in &args.skip {
        if !["sustained", "freshness", "catch-up"].contains(&phase.as_str()) {
            bail!("--skip {phase:?}: sustained, freshness or catch-up");
        }
    }
    let skip = |p: &str| args.skip.iter().any(|s| s == p);
    let machine = Machine::probe(&root);
    std::fs::create_dir_all(&args.out)?;
    let (mut sustained, mut freshness, mut catch_up) = (Vec::new(), Vec::new(), Vec::new());
    let show = |r: &StreamRun| {
        eprintln!(
            "  sustained {:.0} readings/s (produced {:.0}/s); ingest lag {:.2} s; views complete \
             {:.1} s after production; freshness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
             {:.1} CPU-s/M, {:.0} MiB",
            r.sustained_rate,
            r.produced_rate,
            r.ingest_lag_s,
            r.views_complete_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
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
            eprintln!(
                "W2 {phase} run {run}/{}: {rate} readings/s for {seconds} s",
                args.runs
            );
            let r = stream_run(&bin, &args, &root, rate, seconds)?;
            show(&r);
            runs.push(r);
        }
        if !skip("catch-up") {
            eprintln!(
                "W2 catch-up run {run}/{}: {} households × {} s produced first",
                args.runs, args.households, args.catch_up_seconds
            );
            let r = catch_up_run(&bin, &args, &root)?;
            eprintln!(
                "  {:.0} readings/s ({} readings in {:.2} s), {} rows, {:.1} CPU-s/M, {:.0} MiB",
                r.readings_per_s,
                r.readings,
                r.active_s,
                r.rows_written,
                r.cpu_s_per_million,
                r.peak_rss_mib
            );
            catch_up.push(r);
        }
    }
    let report = RawReport {
        workload: "w2",
        machine: &machine,
        wattflow_binary: bin.display().to_string(),
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
        args.out.join("w2.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let table = markdown(&args, &machine, &sustained, &freshness, &catch_up);
    std::fs::write(args.out.join("w2.md"), &table)?;
    println!("{table}");
    Ok(())
}

fn med<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn stream_rows(what: &str, seconds: u32, runs: &[StreamRun]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    format!(
        "| {what} | {} | {seconds} | {:.0} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
        runs[0].target_rate,
        med(runs, |r| r.produced_rate),
        med(runs, |r| r.sustained_rate),
        med(runs, |r| r.ingest_lag_s),
        med(runs, |r| r.views_complete_s),
        med(runs, |r| r.p50_ms),
        med(runs, |r| r.p99_ms),
        med(runs, |r| r.max_ms),
        med(runs, |r| r.poll_period_ms),
        med(runs, |r| r.cpu_s_per_million),
        med(runs, |r| r.peak_rss_mib),
        med(runs, |r| r.kafka_cpu_s),
        med(runs, |r| r.cassandra_cpu_s),
    )
}

fn markdown(
    args: &W2Args,
    machine: &Machine,
    sustained: &[StreamRun],
    freshness: &[StreamRun],
    catch_up: &[CatchUpRun],
) -> String {
    let mut md = format!(
        "## W2: live stream (medians of {} runs, {} worker(s), {} partitions, {})\n\n",
        args.runs,
        args.workers,
        args.partitions,
        now_utc()
    );
    md.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB, load at start {}; wattflow {}; Kafka, Cassandra, the \
         producer and the pipeline all on it.\n\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.load_average,
        machine.wattflow_commit
    ));
    if !sustained.is_empty() || !freshness.is_empty() {
        md.push_str(
            "Real time: households produce one reading a second each while the pipeline runs; \
             freshness = reading produced → its minute row visible.\n\n\
             | phase | target readings/s | s | produced/s | sustained readings/s | ingest lag s | \
             views complete s after | p50 ms | p99 ms | max ms | poll period ms | pipeline \
             CPU-s per M readings | pipeline peak RSS MiB | Kafka CPU-s | Cassandra CPU-s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        md.push_str(&stream_rows("sustained", args.seconds, sustained));
        md.push_str(&stream_rows("freshness", args.freshness_seconds, freshness));
        md.push('\n');
    }
    if !catch_up.is_empty() {
        md.push_str(&format!(
            "Catch-up: {} households × {} s = {} readings produced first, then drained until \
             the views are complete.\n\n\
             | readings/s | active s | rows written | changes merged | pipeline CPU-s per M readings | pipeline peak RSS MiB | Kafka CPU-s | Cassandra CPU-s |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n| {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
            args.households,
            args.catch_up_seconds,
            catch_up[0].readings,
            med(catch_up, |r| r.readings_per_s),
            med(catch_up, |r| r.active_s),
            med(catch_up, |r| r.rows_written as f64),
            med(catch_up, |r| r.changes_merged as f64),
            med(catch_up, |r| r.cpu_s_per_million),
            med(catch_up, |r| r.peak_rss_mib),
            med(catch_up, |r| r.kafka_cpu_s),
            med(catch_up, |r| r.cassandra_cpu_s),
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
