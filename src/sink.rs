//! Sinks: where window aggregates and refused records go.

#[cfg(feature = "parquet")]
pub mod parquet;
pub mod rejected;
