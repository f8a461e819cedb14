//! wattflow's aggregation operators, as differential-dataflow extension traits.
//!
//! This crate does no I/O: it turns a collection of [`Reading`](wattflow::model::Reading)s into
//! window aggregates, and is shared unchanged by the history (batch) path and the live (speed)
//! path, which is what makes their views agree bit for bit.
#![deny(missing_docs)]

pub mod window;

pub use window::{
    meter_day_hash, window_aggregate_core, Readings, Refusals, Time, UpdateStream, WindowAggregate,
    WindowConfig, WindowStats, WindowUpdates, Windows,
};
