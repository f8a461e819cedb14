//! W4, history then live in one graph: the whole UCI file as history, then a live topic fed in
//! real time, through one `wattflow run` into the Parquet and Cassandra views (see
//! `../shared/docs/BENCHMARKS.md`).
//!
//! Each run, on a fresh topic, keyspace and output folder:
//! 1. `wattflow run --input <UCI file> --topic T --cassandra .. --out .. --metrics-listen ..`
//!    starts; at the same moment the harness starts producing `--households` meters at one
//!    reading a second each, in real time, for `--live-seconds` (their timestamps are the wall
//!    clock, far after the history's end: every one of them counts);
//! 2. the harness scrapes the pipeline's metrics every 50 ms: the history ends when
//!    `wattflow_kafka_following` turns 1; the pipeline is **live** once the newest message it
//!    read is within 2 s of real time (`wattflow_kafka_behind_real_time_seconds`) and its
//!    watermark is within 2 s of real time (`wattflow_watermark_lag_seconds`, the run uses
//!    `--lateness 1s`). Reported: time from the history's end to live;
//! 3. once production ends the pipeline finishes (`--exit-when-idle`), and the totals are
//!    checked: the readings in the day view equal the history's valid rows plus the readings
//!    produced, nothing lost and nothing counted twice at the switch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use serde::Serialize;
use wattflow::simulate::{delete_topics, ensure_topic};

use crate::feed::{free_port, metric, produce_in_real_time, scrape};
use crate::machine::{now_utc, Machine};
use crate::measure;
use crate::report::median;

/// Arguments of `wattflow-bench w4`.
#[derive(Debug, Args)]
pub struct W4Args {
    /// Runs (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The history: the UCI file (gzip'd or not).
    #[arg(
        long,
        default_value = "../shared/data/household_power_consumption.txt.gz"
    )]
    pub data: PathBuf,
    /// Live households, one reading a second each.
    #[arg(long, default_value_t = 1000)]
    pub households: u32,
    /// Seconds of live production.
    #[arg(long, default_value_t = 30)]
    pub live_seconds: u32,
    /// Kafka brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Cassandra contact point.
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// Partitions of the live topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Timely workers of the pipeline.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// `--out`, `--work`, `--wattflow`, `--build`.
    #[command(flatten)]
    pub harness: crate::harness::Harness,
}

/// One W4 run.
#[derive(Debug, Clone, Serialize)]
struct W4Run {
    /// From the pipeline's start to the end of its history phase, s.
    history_s: f64,
    /// From the end of the history to live (see the module docs), s; `None`: never.
    to_live_s: Option<f64>,
    /// Readings produced live.
    produced: u64,
    /// Valid history rows the pipeline read.
    history_readings: u64,
    /// Live readings the pipeline aggregated.
    live_readings: u64,
    /// Live readings counted as covered by history (must be 0: they are all after the switch).
    covered: u64,
    /// Σ samples of the day view.
    day_view_samples: u64,
    /// Whether the totals agree.
    exact: bool,
    /// Pipeline wall time, s, and peak RSS, MiB.
    wall_s: f64,
    peak_rss_mib: f64,
}

fn unix_ms() -> i64 {
    wattflow::time::now_unix_ms()
}

fn one_run(args: &W4Args, bin: &Path, input: &Path, work: &Path, run: usize) -> Result<W4Run> {
    let tag = format!(
        "w4_{}_{}_{run}",
        std::process::id(),
        unix_ms() % 100_000_000
    );
    ensure_topic(&args.brokers, &tag, args.partitions)?;
    let views = work.join("views").join(&tag);
    std::fs::create_dir_all(&views)?;
    let summary_file = work.join(format!("{tag}.json"));
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--input")
        .arg(input)
        .args(["--brokers", &args.brokers, "--topic", &tag])
        .args(["--cassandra", &args.cassandra, "--keyspace", &tag])
        .arg("--out")
        .arg(&views)
        .args(["--workers", &args.workers.to_string()])
        .args(["--exit-when-idle", "5s", "--lateness", "1s"])
        .args(["--metrics-listen", &addr])
        .arg("--summary-json")
        .arg(&summary_file)
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let child = thread::spawn(move || measure::run(&mut cmd));

    // The scraper: history end, then live.
    let done = Arc::new(AtomicBool::new(false));
    let marks: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let scraper = {
        let (done, marks, addr) = (Arc::clone(&done), Arc::clone(&marks), addr.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(text) = scrape(&addr) {
                    let now = Instant::now();
                    let mut m = marks.lock().expect("marks");
                    let following = metric(&text, "wattflow_kafka_following") == Some(1.0);
                    if following && m.0.is_none() {
                        m.0 = Some(now);
                    }
                    let behind = metric(&text, "wattflow_kafka_behind_real_time_seconds");
                    let lag = metric(&text, "wattflow_watermark_lag_seconds");
                    let read =
                        metric(&text, "wattflow_readings_total{source=\"kafka\"}").unwrap_or(0.0);
                    let live = matches!((behind, lag), (Some(b), Some(l)) if b <= 2.0 && l <= 2.0);
                    if m.0.is_some() && m.1.is_none() && live && read > 0.0 {
                        m.1 = Some(now);
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // The producer: every household once a second, in real time.
    let (produced, _) = produce_in_real_time(
        &args.brokers,
        &tag,
        args.households,
        args.live_seconds,
        |_, _| Ok(()),
    )?;
    let measured = child.join().expect("pipeline thread")?;
    done.store(true, Ordering::Relaxed);
    scraper.join().ok();
    let (history_end, live_at) = *marks.lock().expect("marks");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_file).context("the pipeline's summary")?,
    )?;
    let history_readings = summary["history"]["readings"].as_u64().unwrap_or(0);
    let live_readings = summary["kafka"]["readings"].as_u64().unwrap_or(0);
    let covered = summary["kafka"]["covered_by_history"].as_u64().unwrap_or(0);
    let held = crate::check::views(&views)?;
    let day_view_samples = held.day_samples;
    let exact = day_view_samples == history_readings + produced && live_readings == produced;
    let _ = delete_topics(&args.brokers, &[&tag, &format!("{tag}.rejected")]);
    let _ = std::fs::remove_dir_all(&views);
    let _ = std::fs::remove_file(&summary_file);
    Ok(W4Run {
        history_s: history_end.map_or(f64::NAN, |h| h.duration_since(started).as_secs_f64()),
        to_live_s: match (history_end, live_at) {
            (Some(h), Some(l)) => Some(l.duration_since(h).as_secs_f64()),
            _ => None,
        },
        produced,
        history_readings,
        live_readings,
        covered,
        day_view_samples,
        exact,
        wall_s: measured.wall.as_secs_f64(),
        peak_rss_mib: measured.max_rss_mib(),
    })
}

/// Runs W4 and writes `w4.md` and `w4.json` under `--out`.
pub fn run(args: W4Args) -> Result<()> {
    let root = crate::w1::workspace_root();
    let bin = args.harness.binary(&root)?;
    let work = args.harness.work_dir(&root)?;
    let data = if args.data.is_absolute() {
        args.data.clone()
    } else {
        root.join(&args.data)
    };
    let input = crate::w1::unpack(&data, &work)?;
    let machine = Machine::probe(&root);
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = one_run(&args, &bin, &input, &work, i)?;
        eprintln!(
            "  run {}: history {:.2} s, live {} after it; {} + {} readings, day view {} ({}); {:.0} MiB",
            i + 1,
            r.history_s,
            r.to_live_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s")),
            r.history_readings,
            r.live_readings,
            r.day_view_samples,
            if r.exact { "exact" } else { "NOT EXACT" },
            r.peak_rss_mib
        );
        runs.push(r);
    }
    let med = |f: &dyn Fn(&W4Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let to_live = med(&|r| r.to_live_s.unwrap_or(f64::INFINITY));
    let machine_line = format!(
        "{} CPUs ({}), {} MiB, load {}, {}, wattflow {}",
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.load_average,
        machine.rustc,
        machine.wattflow_commit
    );
    let table = format!(
        "### W4 — history, then live, one graph ({} UTC)\n\n{}\n\n\
         Whole UCI file as history, then {} households at one reading a second for {} s, fed in \
         real time from the pipeline's start; `wattflow run` with Kafka, Cassandra and Parquet, \
         {} worker(s); medians of {} runs.\n\n\
         | | median |\n|---|---:|\n\
         | history phase (start → following the topic) | {:.2} s |\n\
         | history end → live (newest read and watermark within 2 s of real time) | {} |\n\
         | pipeline wall time | {:.1} s |\n\
         | peak RSS | {:.0} MiB |\n\
         | runs with exact totals (day view = history rows + readings produced) | {} of {} |\n\
         | live readings covered by history (must be 0) | {} |\n",
        now_utc(),
        machine_line,
        args.households,
        args.live_seconds,
        args.workers,
        runs.len(),
        med(&|r| r.history_s),
        if to_live.is_finite() {
            format!("{to_live:.2} s")
        } else {
            "never".into()
        },
        med(&|r| r.wall_s),
        med(&|r| r.peak_rss_mib),
        runs.iter().filter(|r| r.exact).count(),
        runs.len(),
        runs.iter().map(|r| r.covered).sum::<u64>(),
    );
    std::fs::create_dir_all(&args.harness.out)?;
    std::fs::write(args.harness.out.join("w4.md"), &table)?;
    std::fs::write(
        args.harness.out.join("w4.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    println!("{table}");
    ensure!(
        runs.iter().all(|r| r.exact),
        "a run's totals were not exact"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_are_read_by_name_and_labels() {
        let text = "# TYPE x gauge\nx 1.5\ny_total{source=\"a\"} 3\ny_total{source=\"b\"} 4\n";
        assert_eq!(super::metric(text, "x"), Some(1.5));
        assert_eq!(super::metric(text, "y_total{source=\"b\"}"), Some(4.0));
        assert_eq!(super::metric(text, "y_total"), None);
    }
}
