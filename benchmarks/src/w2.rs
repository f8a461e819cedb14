//! W2, the live stream: simulated households → Kafka → `wattflow live` → Cassandra, with the
//! broker and the database on this machine (see `../shared/docs/BENCHMARKS.md`).
//!
//! Each run has two phases, each on a fresh topic and keyspace:
//!
//! 1. **Throughput.** `--households` meters × `--seconds` readings (one a second each, event time
//!    ending now) are produced into the topic first; then `wattflow live` (a child process,
//!    measured through `wait4`) reads them from the start and brings the Cassandra views up to
//!    date. Sustained rate = readings ÷ the time from the pipeline's start to its last
//!    acknowledged upsert (start-up included; the idle wait before it exits is not). The day
//!    rows of a sample of households are read back: each must count exactly the readings
//!    produced for it, or the run fails.
//! 2. **Freshness.** `wattflow live` runs while the harness produces `--rate` households at one
//!    reading a second each, spread evenly over each second, in real time for
//!    `--freshness-seconds`. For `--probes` households the harness notes when each reading was
//!    handed to the producer, and a poller reads their current minute rows back every few ms:
//!    freshness of a reading = the first poll that sees the row count it − its production.
//!    (The poll period, reported, bounds the error.) The first 5 s are a warm-up and not counted.
//!
//! Also reported: the pipeline's CPU seconds per million readings and peak RSS, and the CPU the
//! Kafka and Cassandra JVMs used meanwhile (from their pid files under `.services/run`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Throughput phase: households (one reading a second each).
    #[arg(long, default_value_t = 100_000)]
    pub households: u32,
    /// Throughput phase: seconds of readings per household.
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
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
    /// Skip a phase: `throughput` or `freshness`.
    #[arg(long)]
    pub skip: Vec<String>,
    /// Where the table (`w2.md`) and the raw runs (`w2.json`) go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// The `wattflow` binary. Default: the workspace's release build, built when missing.
    #[arg(long)]
    pub wattflow: Option<PathBuf>,
    /// Build the release binary first even when it exists.
    #[arg(long)]
    pub build: bool,
}

/// One throughput run.
#[derive(Debug, Clone, Serialize)]
struct ThroughputRun {
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

/// One freshness run.
#[derive(Debug, Clone, Serialize)]
struct FreshnessRun {
    readings: u64,
    achieved_rate: f64,
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
    rate: u32,
    freshness_seconds: u32,
    partitions: i32,
    workers: usize,
    throughput: &'a [ThroughputRun],
    freshness: &'a [FreshnessRun],
}

/// CPU seconds a service JVM has used so far (from `.services/run/<name>.pid`), if it runs.
fn service_cpu(root: &Path, name: &str) -> Option<f64> {
    let pid = std::fs::read_to_string(root.join(".services/run").join(format!("{name}.pid"))).ok()?;
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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), unix_ms() % 100_000_000)
}

fn generator(households: u32) -> Generator {
    Generator::new(GeneratorConfig {
        households,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    })
}

/// The `wattflow live` child for `topic` into `keyspace`.
fn live_command(
    bin: &Path,
    args: &W2Args,
    topic: &str,
    keyspace: &str,
    idle: &str,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["live", "--brokers", &args.brokers, "--topic", topic])
        .args(["--group", &format!("{topic}-group"), "--start", "earliest"])
        .args(["--cassandra", &args.cassandra, "--keyspace", keyspace])
        .args(["--workers", &args.workers.to_string()])
        .args(["--exit-when-idle", idle])
        .env("RUST_LOG", "warn");
    cmd
}

/// `(readings, rows written, changes merged, last write after s)` from the live summary.
fn parse_live(stdout: &str) -> Result<(u64, u64, u64, Option<f64>)> {
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
        digits.parse().with_context(|| format!("{word} in {line:?}"))
    };
    let last = stdout
        .lines()
        .find_map(|l| l.strip_prefix("last row written "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok());
    Ok((
        number_before(" readings")?,
        number_before(" rows written")?,
        number_before(" changes merged")?,
        last,
    ))
}

fn throughput_run(bin: &Path, args: &W2Args, root: &Path) -> Result<ThroughputRun> {
    let topic = unique("w2_tp");
    let keyspace = unique("w2_tp");
    ensure_topic(&args.brokers, &topic, args.partitions).context("creating the topic")?;
    let gen = generator(args.households);
    let end_ts = unix_ms() / 1000 * 1000;
    let start_ts = end_ts - i64::from(args.seconds) * 1000;
    let produced_at = Instant::now();
    let mut producer = ReadingProducer::new(&args.brokers, &topic)?;
    let mut houses: Vec<_> = (1..=args.households)
        .map(|h| gen.readings(h, start_ts, 1, u64::from(args.seconds)))
        .collect();
    let mut sent = 0u64;
    for _ in 0..args.seconds {
        for house in houses.iter_mut() {
            if let Some(r) = house.next() {
                ensure!(producer.send(&r), "the producer refused a reading");
                sent += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let produce_s = produced_at.elapsed().as_secs_f64();
    eprintln!(
        "  produced {sent} readings in {produce_s:.1} s; running wattflow live on {} partitions",
        args.partitions
    );

    let services = ServiceCpu::start(root);
    let m = measure::run(&mut live_command(bin, args, &topic, &keyspace, "1s"))?;
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let (readings, rows_written, changes_merged, last) = parse_live(&m.stdout)?;
    ensure!(
        readings == sent,
        "the pipeline read {readings} readings, {sent} were produced"
    );
    let active_s = last.context("the pipeline wrote no row")?;

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
            samples == i64::from(args.seconds),
            "{meter}: day rows count {samples} readings, {} were produced",
            args.seconds
        );
        checked += 1;
    }
    drop_keyspace(&views, &keyspace);
    let cpu_s = (m.user + m.sys).as_secs_f64();
    Ok(ThroughputRun {
        readings,
        produce_s,
        active_s,
        wall_s: m.wall.as_secs_f64(),
        readings_per_s: readings as f64 / active_s,
        rows_written,
        changes_merged,
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

fn freshness_run(bin: &Path, args: &W2Args, root: &Path) -> Result<FreshnessRun> {
    let topic = unique("w2_fr");
    let keyspace = unique("w2_fr");
    ensure_topic(&args.brokers, &topic, args.partitions).context("creating the topic")?;
    let services = ServiceCpu::start(root);
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

    let gen = generator(args.rate);
    let probe_every = (args.rate / args.probes.max(1)).max(1);
    let probes: Vec<u32> = (1..=args.rate).step_by(probe_every as usize).collect();
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
            let give_up = Duration::from_secs(60);
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
    let t0 = Instant::now();
    let first_ts = unix_ms() / 1000 * 1000;
    let mut sent = 0u64;
    let mut probe_counts: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    let spacing = Duration::from_secs(1).div_f64(f64::from(args.rate.max(1)));
    for second in 0..args.freshness_seconds {
        let ts = first_ts + i64::from(second) * 1000;
        let round = t0 + Duration::from_secs(u64::from(second));
        for h in 1..=args.rate {
            let at = round + spacing.mul_f64(f64::from(h - 1));
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            let r = gen.reading(h, ts, 1);
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
        }
    }
    let achieved_rate = sent as f64 / t0.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    done.store(true, Ordering::Relaxed);
    let (mut fresh, poll_period_ms) = poller.join().expect("poller panicked")?;
    let m: Measured = child.join().expect("pipeline thread panicked")?;
    let (kafka_cpu_s, cassandra_cpu_s) = services.used();
    let (readings, rows_written, _, _) = parse_live(&m.stdout)?;
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
    Ok(FreshnessRun {
        readings,
        achieved_rate,
        samples: fresh.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: *fresh.last().unwrap_or(&0.0),
        poll_period_ms,
        rows_written,
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
        if phase != "throughput" && phase != "freshness" {
            bail!("--skip {phase:?}: throughput or freshness");
        }
    }
    let skip = |p: &str| args.skip.iter().any(|s| s == p);
    let machine = Machine::probe(&root);
    std::fs::create_dir_all(&args.out)?;
    let mut throughput = Vec::new();
    let mut freshness = Vec::new();
    for run in 1..=args.runs {
        if !skip("throughput") {
            eprintln!(
                "W2 throughput run {run}/{}: {} households × {} s",
                args.runs, args.households, args.seconds
            );
            let r = throughput_run(&bin, &args, &root)?;
            eprintln!(
                "  {:.0} readings/s ({} readings in {:.2} s), {} rows, {:.1} CPU-s/M, {:.0} MiB",
                r.readings_per_s,
                r.readings,
                r.active_s,
                r.rows_written,
                r.cpu_s_per_million,
                r.peak_rss_mib
            );
            throughput.push(r);
        }
        if !skip("freshness") {
            eprintln!(
                "W2 freshness run {run}/{}: {} readings/s for {} s",
                args.runs, args.rate, args.freshness_seconds
            );
            let r = freshness_run(&bin, &args, &root)?;
            eprintln!(
                "  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} readings ({:.0}/s achieved)",
                r.p50_ms, r.p99_ms, r.max_ms, r.samples, r.achieved_rate
            );
            freshness.push(r);
        }
    }
    let report = RawReport {
        workload: "w2",
        machine: &machine,
        wattflow_binary: bin.display().to_string(),
        households: args.households,
        seconds: args.seconds,
        rate: args.rate,
        freshness_seconds: args.freshness_seconds,
        partitions: args.partitions,
        workers: args.workers,
        throughput: &throughput,
        freshness: &freshness,
    };
    std::fs::write(
        args.out.join("w2.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let table = markdown(&args, &machine, &throughput, &freshness);
    std::fs::write(args.out.join("w2.md"), &table)?;
    println!("{table}");
    Ok(())
}

fn med<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn markdown(
    args: &W2Args,
    machine: &Machine,
    throughput: &[ThroughputRun],
    freshness: &[FreshnessRun],
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
    if !throughput.is_empty() {
        md.push_str(&format!(
            "Throughput: {} households × {} s = {} readings, pre-produced, drained end to end.\n\n\
             | readings/s | active s | rows written | changes merged | pipeline CPU-s per M readings | pipeline peak RSS MiB | Kafka CPU-s | Cassandra CPU-s |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n| {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |\n\n",
            args.households,
            args.seconds,
            throughput[0].readings,
            med(throughput, |r| r.readings_per_s),
            med(throughput, |r| r.active_s),
            med(throughput, |r| r.rows_written as f64),
            med(throughput, |r| r.changes_merged as f64),
            med(throughput, |r| r.cpu_s_per_million),
            med(throughput, |r| r.peak_rss_mib),
            med(throughput, |r| r.kafka_cpu_s),
            med(throughput, |r| r.cassandra_cpu_s),
        ));
    }
    if !freshness.is_empty() {
        md.push_str(&format!(
            "Freshness: {} readings/s produced in real time for {} s; {} probe households polled.\n\n\
             | achieved readings/s | p50 ms | p99 ms | max ms | poll period ms | pipeline CPU-s per M readings | pipeline peak RSS MiB | Kafka CPU-s | Cassandra CPU-s |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
            args.rate,
            args.freshness_seconds,
            args.probes,
            med(freshness, |r| r.achieved_rate),
            med(freshness, |r| r.p50_ms),
            med(freshness, |r| r.p99_ms),
            med(freshness, |r| r.max_ms),
            med(freshness, |r| r.poll_period_ms),
            med(freshness, |r| r.cpu_s_per_million),
            med(freshness, |r| r.peak_rss_mib),
            med(freshness, |r| r.kafka_cpu_s),
            med(freshness, |r| r.cassandra_cpu_s),
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
                   last row written 9.876 s after start\n";
        assert_eq!(
            parse_live(out).unwrap(),
            (2_999_990, 123_456, 777, Some(9.876))
        );
        assert!(parse_live("nothing").is_err());
    }
}
