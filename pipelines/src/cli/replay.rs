//! `wattflow replay`: history files into the Parquet batch views, the history preset of the
//! one graph, with a progress bar and a summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use wattflow::model::MeterId;
use wattflow::source::file::DEFAULT_METER;

use super::generate::{generate, GenerateArgs};
use super::parse_duration;
use crate::graph::Progress;
use crate::replay::{Replay, ReplaySummary};

/// Arguments of `wattflow replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Input file: UCI text (as published, or gzip'd), comma CSV with a header, or Parquet.
    /// Repeat for several files. Without any, a synthetic 30-day history is generated and
    /// replayed (the embedded demo).
    #[arg(long = "input", short = 'i', value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Output folder for the views (`minute/`, `hour/`, `day/`, `rejected.csv`).
    #[arg(long, short = 'o', default_value = "wattflow-views")]
    pub out: PathBuf,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Meter id for inputs without a `Meter` column.
    #[arg(long, default_value = DEFAULT_METER)]
    pub meter: String,
    /// Allowed lateness of out-of-order rows, e.g. `10m`, `90s`, `1h`.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub lateness: Duration,
    /// zstd level of the Parquet views (negative levels are faster and larger).
    #[arg(long, default_value_t = wattflow::sink::parquet::DEFAULT_ZSTD_LEVEL, allow_hyphen_values = true)]
    pub zstd_level: i32,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub(crate) fn replay(args: ReplayArgs) -> Result<()> {
    let meter = MeterId::new(&args.meter)?;
    let mut inputs = args.inputs.clone();
    let demo_dir;
    if inputs.is_empty() {
        demo_dir = tempfile::tempdir().context("creating a temporary folder for the demo")?;
        let path = demo_dir.path().join("synthetic_household.txt");
        eprintln!(
            "no --input given: replaying the embedded demo, a synthetic 30-day household history"
        );
        generate(GenerateArgs {
            households: 1,
            days: 30,
            out: path.clone(),
            seed: wattflow::generate::DEFAULT_SEED,
            start: "2006-12-16".into(),
        })?;
        inputs.push(path);
    }
    let mut job = Replay::new(&args.out)
        .workers(args.workers)
        .meter(meter)
        .lateness(args.lateness)
        .zstd_level(args.zstd_level);
    for input in &inputs {
        job = job.input(input);
    }
    let progress = job.progress();
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| progress_bar(&progress));
    let result = job.run();
    if let Some((bar, ticker)) = bar {
        bar.finish_and_clear();
        ticker.join().ok();
    }
    let summary = result?;
    print_summary(&summary);
    Ok(())
}

pub(crate) fn progress_bar(progress: &Arc<Progress>) -> (ProgressBar, std::thread::JoinHandle<()>) {
    let total = progress.source.total_bytes.load(Ordering::Relaxed);
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .expect("valid template"),
    );
    let (b, p) = (bar.clone(), Arc::clone(progress));
    let ticker = std::thread::spawn(move || {
        while !b.is_finished() {
            let s = &p.source;
            let total = s.total_bytes.load(Ordering::Relaxed);
            if total > 0 && b.length() != Some(total) {
                b.set_length(total);
            }
            b.set_position(s.bytes.load(Ordering::Relaxed));
            let rows = s.rows.load(Ordering::Relaxed);
            let secs = b.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!(
                "{rows} rows, {:.0} rows/s, {} missing, {} rejected",
                rows as f64 / secs,
                s.missing.load(Ordering::Relaxed),
                p.dead_letters.file_records.load(Ordering::Relaxed)
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (bar, ticker)
}

fn print_summary(s: &ReplaySummary) {
    println!("replay finished in {:.2} s", s.elapsed.as_secs_f64());
    println!(
        "  rows read      {:>12}   ({:.0} rows/s, {})",
        s.rows,
        s.rows_per_second(),
        HumanBytes(s.bytes)
    );
    println!("  readings       {:>12}", s.readings);
    println!("  missing        {:>12}", s.missing);
    println!(
        "  rejected       {:>12}   ({})",
        s.rejected,
        s.rejected_file.display()
    );
    for (g, written) in &s.windows_written {
        let manifest = s.views.iter().find(|(v, _)| v == g).map(|(_, m)| m);
        println!(
            "  {:<6} windows {:>11}   written this run; view holds {} rows in {} file(s), sealed through {}",
            g.name(),
            written,
            manifest.map_or(0, |m| m.rows),
            manifest.map_or(0, |m| m.partitions.len()),
            manifest.map_or("-", |m| m.sealed_through.as_str()),
        );
    }
}
