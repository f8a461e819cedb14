//! The `wattflow` command line: argument parsing, progress display and summaries around the
//! pipelines of this crate, one file per sub-command. Logic lives in the library; this module
//! only talks to people.

mod demo;
mod generate;
mod live;
mod plot;
mod replay;
mod report;
mod run;
mod serve;
mod simulate;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use demo::DemoArgs;
pub use generate::GenerateArgs;
pub use live::LiveArgs;
pub use plot::PlotArgs;
pub use replay::ReplayArgs;
pub use report::ReportArgs;
pub use run::RunArgs;
pub use serve::ServeArgs;
pub use simulate::SimulateArgs;

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
    /// The whole product on this machine, nothing else needed: synthetic history, then live
    /// simulated sensors, through one graph into Parquet and in-memory views, with the dashboard.
    Demo(DemoArgs),
    /// History files, then a Kafka topic, through one graph into Parquet and Cassandra views.
    Run(RunArgs),
    /// Replay history files through the graph into Parquet batch views.
    Replay(ReplayArgs),
    /// Write a synthetic household history in the UCI text format.
    Generate(GenerateArgs),
    /// Publish simulated smart-meter readings (or a history file) to a Kafka topic.
    Simulate(SimulateArgs),
    /// Consume readings from Kafka into Cassandra speed views (and optionally Parquet).
    Live(LiveArgs),
    /// Serve the views over HTTP: one query merging the batch and speed views.
    Serve(ServeArgs),
    /// Where the energy goes, what it costs and what could be saved, from the views.
    Report(ReportArgs),
    /// Draw a PNG chart of the views.
    Plot(PlotArgs),
}

/// Parses a duration: `humantime` text (`500ms`, `90s`, `10m`, `1h`, `2d`, `1h 30m`) or a plain
/// number of seconds. Values too large for a duration are refused, never wrapped.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?}: too many seconds"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration like 90s, 10m or 1h ({e})"))
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
        Command::Demo(args) => demo::demo(args),
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::replay(args),
        Command::Generate(args) => generate::generate(args).map(|_| ()),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Live(args) => live::live(args),
        Command::Serve(args) => serve::serve(args),
        Command::Report(args) => report::report(args),
        Command::Plot(args) => plot::plot(args),
    }
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
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        // Absurd values are refused, not wrapped.
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("584942417356y").is_err());
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
