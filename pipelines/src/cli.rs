//! The `wattflow` command line: argument parsing, progress display and summaries around the
//! pipelines of this crate. Logic lives in the library; this module only talks to people.

use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use wattflow::generate::{Generator, GeneratorConfig};
use wattflow::model::MeterId;
use wattflow::source::file::DEFAULT_METER;

use crate::graph::Progress;
use crate::replay::{Replay, ReplaySummary};

/// Household electricity monitoring: one dataflow for history and live readings.
#[derive(Debug, Parser)]
#[command(name = "wattflow", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay history files through the graph into Parquet batch views.
    Replay(ReplayArgs),
    /// Write a synthetic household history in the UCI text format.
    Generate(GenerateArgs),
    /// Publish simulated smart-meter readings (or a history file) to a Kafka topic.
    Simulate(SimulateArgs),
    /// Consume readings from Kafka into Cassandra speed views (and optionally Parquet).
    Live(LiveArgs),
}

/// Arguments of `wattflow simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to publish to (created with `--partitions` if missing).
    #[arg(long, default_value = "readings")]
    pub topic: String,
    /// Households, each publishing one reading per second.
    #[arg(long, default_value_t = 10)]
    pub households: u32,
    /// Random seed of the household model.
    #[arg(long, default_value_t = wattflow::generate::DEFAULT_SEED)]
    pub seed: u64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Total readings per second (default: one per household per second, in real time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Replay this UCI-format history file instead (one message per minute row).
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// With `--from-file`: X times real time (default: as fast as possible).
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

/// Arguments of `wattflow live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to consume.
    #[arg(long, default_value = "readings")]
    pub topic: String,
    /// Consumer group (offsets are committed under it).
    #[arg(long, default_value = "wattflow-live")]
    pub group: String,
    /// Where to start when the group has no committed offset: `earliest`, `latest`, or a
    /// timestamp `YYYY-MM-DDThh:mm:ss` (naive, as the data).
    #[arg(long, default_value = "earliest")]
    pub start: String,
    /// Cassandra contact point.
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// Cassandra keyspace (created if missing).
    #[arg(long, default_value = "wattflow")]
    pub keyspace: String,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Allowed lateness, e.g. `10m`.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub lateness: Duration,
    /// Time-to-live of minute rows in Cassandra, e.g. `30d` (default: kept).
    #[arg(long, value_parser = parse_duration)]
    pub minute_ttl: Option<Duration>,
    /// How long a changed minute row may wait to gather further changes before it is written.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub minute_delay: Duration,
    /// The same for hour rows.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub hour_delay: Duration,
    /// The same for day rows.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub day_delay: Duration,
    /// While the input catches up on a backlog, every changed row waits at least this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub backlog_delay: Duration,
    /// Most Cassandra requests in flight at once.
    #[arg(long, default_value_t = wattflow::sink::cassandra::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Rows per Cassandra request (an unlogged batch when more than 1).
    #[arg(long, default_value_t = wattflow::sink::cassandra::DEFAULT_BATCH_ROWS)]
    pub batch_rows: usize,
    /// Also write sealed windows as Parquet batch views here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Finish once every partition has been idle (and read to its end) this long.
    #[arg(long, value_parser = parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Dead-letter topic (default `<topic>.rejected`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
}

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

/// Arguments of `wattflow generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of households (more than one adds a leading `Meter` column).
    #[arg(long, default_value_t = 1)]
    pub households: u32,
    /// Number of days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Output file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Random seed: the same seed gives the same file, byte for byte.
    #[arg(long, default_value_t = wattflow::generate::DEFAULT_SEED)]
    pub seed: u64,
    /// First day, `YYYY-MM-DD` (naive local time).
    #[arg(long, default_value = "2006-12-16")]
    pub start: String,
}

/// Parses `500ms`, `90s`, `10m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay(args) => replay(args),
        Command::Generate(args) => generate(args).map(|_| ()),
        Command::Simulate(args) => simulate(args),
        Command::Live(args) => live(args),
    }
}

fn generate(args: GenerateArgs) -> Result<wattflow::generate::GenerateSummary> {
    let start_ms = wattflow::time::parse_iso(&args.start)
        .with_context(|| format!("--start {:?} is not a date like 2006-12-16", args.start))?;
    if args.households == 0 || args.days == 0 {
        bail!("--households and --days must be at least 1");
    }
    let generator = Generator::new(GeneratorConfig {
        households: args.households,
        days: args.days,
        start_ms,
        seed: args.seed,
        ..GeneratorConfig::default()
    });
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let file = std::fs::File::create(&args.out).with_context(|| args.out.display().to_string())?;
    let summary = generator
        .write_uci(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| args.out.display().to_string())?;
    eprintln!(
        "wrote {} rows ({} missing) for {} household(s) over {} day(s) to {} ({})",
        summary.rows,
        summary.missing,
        args.households,
        args.days,
        args.out.display(),
        HumanBytes(summary.bytes)
    );
    Ok(summary)
}

fn replay(args: ReplayArgs) -> Result<()> {
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

/// A flag set by Ctrl-C / SIGTERM, so long-running commands stop cleanly.
fn stop_flag() -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)) {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
    stop
}

fn simulate(args: SimulateArgs) -> Result<()> {
    use wattflow::simulate::{simulate, SimulatorConfig};
    let config = SimulatorConfig {
        brokers: args.brokers,
        topic: args.topic,
        households: args.households,
        seed: args.seed,
        duration: args.duration.map(Duration::from_secs_f64),
        rate: args.rate,
        from_file: args.from_file,
        speedup: args.speedup,
        partitions: args.partitions,
    };
    let summary = simulate(&config, &stop_flag())?;
    eprintln!("{summary:?}");
    Ok(())
}

fn live(args: LiveArgs) -> Result<()> {
    use wattflow::sink::cassandra::CassandraSinkConfig;
    use wattflow::source::kafka::{KafkaSourceConfig, StartFrom};
    let start = match args.start.as_str() {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        other => StartFrom::Timestamp(
            wattflow::time::parse_iso(other)
                .with_context(|| format!("--start {other:?}: earliest, latest or a timestamp"))?,
        ),
    };
    let mut kafka = KafkaSourceConfig::new(&args.brokers, &args.topic, &args.group);
    kafka.start = start;
    kafka.lateness_ms = args.lateness.as_millis() as i64;
    kafka.exit_when_idle = args.exit_when_idle;
    if let Some(dlq) = args.dead_letter_topic {
        kafka.dead_letter_topic = Some(dlq);
    }
    let mut cassandra = CassandraSinkConfig::new(&args.cassandra);
    cassandra.keyspace = args.keyspace;
    cassandra.minute_ttl = args.minute_ttl;
    cassandra.minute_delay = args.minute_delay;
    cassandra.hour_delay = args.hour_delay;
    cassandra.day_delay = args.day_delay;
    cassandra.max_in_flight = args.max_in_flight;
    cassandra.batch_rows = args.batch_rows;
    cassandra.backlog_delay = args.backlog_delay;
    let mut job = crate::live::Live::new(kafka, cassandra).workers(args.workers);
    if let Some(out) = args.out {
        job = job.parquet(out);
    }
    let s = job.run(stop_flag())?;
    println!(
        "live finished after {:.1} s: {} messages, {} readings, {} rejected, {} duplicates, {} rows written, {} changes merged",
        s.elapsed.as_secs_f64(),
        s.messages,
        s.readings,
        s.rejected,
        s.duplicates,
        s.rows_written,
        s.changes_merged,
    );
    if let Some(at) = s.last_message_after {
        println!("last message read {:.3} s after start", at.as_secs_f64());
    }
    if let Some(at) = s.last_write_after {
        println!("last row written {:.3} s after start", at.as_secs_f64());
    }
    Ok(())
}

fn progress_bar(progress: &Arc<Progress>) -> (ProgressBar, std::thread::JoinHandle<()>) {
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
                p.rejected.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use wattflow::source::file::DEFAULT_LATENESS_MS;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn default_lateness_matches_the_library() {
        let cli = Cli::parse_from(["wattflow", "replay", "--input", "x"]);
        let Command::Replay(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.lateness.as_millis() as i64, DEFAULT_LATENESS_MS);
    }
}
