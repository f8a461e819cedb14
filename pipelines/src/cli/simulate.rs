//! `wattflow simulate`: simulated smart meters (or a history file) published to Kafka.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::stop_flag;

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

pub(crate) fn simulate(args: SimulateArgs) -> Result<()> {
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
