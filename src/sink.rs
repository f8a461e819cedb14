//! Sinks: where window aggregates and refused records go.

#[cfg(feature = "cassandra")]
pub mod cassandra;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod rejected;
