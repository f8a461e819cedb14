//! wattflow's pipelines, assembled from the library's public API, and the entry point for
//! embedding them: [`Pipeline`] is the one graph (history and Kafka in, Parquet and Cassandra
//! out); [`Replay`] and [`Live`] are its history-only and Kafka-only presets, and [`Demo`] runs
//! it with simulated sensors and in-memory speed views behind the dashboard.
//!
//! Crates depend one way: `wattflow` (model, formats, sources, sinks) ← `wattflow-operators`
//! (aggregation, no I/O) ← `wattflow-pipelines` (graphs and the `wattflow` CLI).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod graph;
pub mod live;
pub mod metrics;
pub mod plot;
pub mod recovery;
pub mod replay;
pub mod serve;
pub mod toxiproxy;

pub use demo::{Demo, DemoError, RunningDemo};
pub use graph::{Cluster, ClusterError, Pipeline, PipelineError, Progress, RunSummary};
pub use live::{Live, LiveError, LiveSummary};
pub use replay::{Replay, ReplayError, ReplaySummary};
pub use wattflow;
pub use wattflow_operators as operators;
