//! Sinks: where window aggregates and refused records go.

#[cfg(feature = "cassandra")]
pub mod cassandra;
pub mod dead_letter;
#[cfg(feature = "parquet")]
pub mod memory;
#[cfg(feature = "parquet")]
pub mod parquet;
