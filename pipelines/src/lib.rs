//! wattflow's pipelines, assembled from the library's public API, and the entry point for
//! embedding them: [`Replay`] runs the history (batch) path.
//!
//! Crates depend one way: `wattflow` (model, formats, sources, sinks) ← `wattflow-operators`
//! (aggregation, no I/O) ← `wattflow-pipelines` (graphs and the `wattflow` CLI).
#![deny(missing_docs)]

pub mod cli;
pub mod live;
pub mod replay;

pub use live::{Live, LiveError, LiveSummary};
pub use replay::{Progress, Replay, ReplayError, ReplaySummary};
pub use wattflow;
pub use wattflow_operators as operators;
