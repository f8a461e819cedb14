//! Transports that bring readings into a timely graph.
//!
//! A source emits every reading at a timestamp no later than the reading's own event time:
//! its watermark (largest event time seen minus the allowed lateness) when the reading
//! arrived. Readings already behind the watermark are refused as too late, so downstream
//! operators may treat the frontier as "no reading older than this will come".

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;

use crate::model::{Origin, RejectReason};

/// A refused record, on its way to the dead-letter output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Where the record came from.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: RejectReason,
    /// The record as it was (text line, rendered row), shortened when very long.
    pub record: String,
}
