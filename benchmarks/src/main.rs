//! `wattflow-bench`: runs wattflow and its peers on the workloads of
//! `../shared/docs/BENCHMARKS.md`, side by side in one run of the harness, and writes a markdown
//! table (medians of several runs) and the raw per-run numbers as JSON.
//!
//! ```text
//! cargo run --release -p wattflow-benchmarks --bin wattflow-bench -- w1 \
//!     [--runs 5] [--data ../shared/data/household_power_consumption.txt.gz] \
//!     [--workers 1,2] [--peers duckdb,polars] [--out bench-out/]
//! scripts/services.sh up    # W2 needs the local Kafka and Cassandra
//! cargo run --release -p wattflow-benchmarks --bin wattflow-bench -- w2 \
//!     [--runs 3] [--households 100000 --seconds 30] [--rate 10000 --freshness-seconds 60]
//! cargo run --release -p wattflow-benchmarks --bin wattflow-bench -- w4 \
//!     [--runs 3] [--households 1000 --live-seconds 30]
//! cargo run --release -p wattflow-benchmarks --bin wattflow-bench -- w5 \
//!     [--requests 200] [--views DIR] [--check]
//! cargo run --release -p wattflow-benchmarks --bin wattflow-bench -- faults \
//!     [--scenarios cassandra-down,cassandra-slow,kafka-cut,kafka-crash,bad-messages] [--check]
//! ```
//!
//! Modules: [`w1`] (the history-replay workload), [`w2`] (the live stream), [`w4`] (history
//! then live in one graph), [`measure`] (one child process: wall time and
//! peak RSS through `wait4`), [`check`] (reading back the Parquet views), [`peers`] (DuckDB and
//! Polars in a Python venv), [`report`] (medians and the table), [`machine`] (what it ran on).

mod check;
mod faults;
mod feed;
mod harness;
mod machine;
mod measure;
mod peers;
mod report;
mod w1;
mod w2;
mod w4;
mod w5;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks wattflow against its peers, side by side.
#[derive(Debug, Parser)]
#[command(name = "wattflow-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

/// The workloads.
#[derive(Debug, Subcommand)]
enum Workload {
    /// W1, history replay: the whole UCI file into minute/hour/day Parquet views,
    /// wattflow against DuckDB and Polars.
    W1(w1::W1Args),
    /// W2, the live stream: simulated households through Kafka into the Cassandra views;
    /// sustained readings/s and freshness (needs Kafka and Cassandra: `scripts/services.sh up`).
    W2(w2::W2Args),
    /// W4, history then live in one graph: the whole UCI file, then a live topic fed in real
    /// time; time from the history's end to live, and exact totals (needs Kafka and Cassandra).
    W4(w4::W4Args),
    /// W5, serving: a year of hours and a day of minutes of one meter over HTTP, against
    /// DuckDB over the same Parquet files; p50/p99 latency.
    W5(w5::W5Args),
    /// Faults: the live pipeline at a steady rate while Toxiproxy cuts or slows Cassandra;
    /// readings lost and counted twice (must be 0), recovery time, peak RSS (needs
    /// `scripts/services.sh up`).
    Faults(faults::FaultsArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().workload {
        Workload::W1(args) => w1::run(args),
        Workload::W2(args) => w2::run(args),
        Workload::W4(args) => w4::run(args),
        Workload::W5(args) => w5::run(args),
        Workload::Faults(args) => faults::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
