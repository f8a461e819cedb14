//! # wattflow
//!
//! The core of wattflow, a dataflow framework for household electricity monitoring with a
//! Lambda architecture in which the batch layer and the speed layer are one incremental
//! differential-dataflow graph.
//!
//! This crate holds what every layer shares:
//! - [`model`]: readings, window keys and exact, mergeable aggregates;
//! - [`format`](mod@format): record formats (UCI text, CSV, Parquet, JSON);
//! - [`source`]: transports that bring readings into a timely graph (file replay; Kafka with the
//!   `kafka` feature);
//! - [`sink`]: the batch views (Parquet), the dead-letter file, and the speed views (Cassandra,
//!   with the `cassandra` feature);
//! - [`serve`]: the serving layer's query over both views (batch rows up to the sealed
//!   high-water mark, speed rows after it) and how fresh its answer is;
//! - [`generate`]: a seeded synthetic household history;
//! - [`time`]: the naive calendar arithmetic of the data.
//!
//! The aggregation operators live in `wattflow-operators` (no I/O), and the pipelines and the
//! `wattflow` CLI in `wattflow-pipelines`, which is also the embedding entry point.
#![deny(missing_docs)]

pub mod error;
pub mod format;
pub mod generate;
pub mod hash;
pub mod metrics;
pub mod model;
#[cfg(feature = "parquet")]
pub mod serve;
#[cfg(feature = "kafka")]
pub mod simulate;
pub mod sink;
pub mod source;
pub mod time;

pub use model::{
    Aggregate, Granularity, Measure, MeterId, Origin, Reading, RejectReason, WindowKey,
};

/// Timestamps of every wattflow graph: event-time watermarks in ms since the epoch.
pub type Time = u64;
