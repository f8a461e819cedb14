//! Transports that bring readings into a timely graph.
//!
//! A source emits every reading at a timestamp no later than the reading's own event time:
//! its watermark (largest event time seen minus the allowed lateness) when the reading
//! arrived. Readings already behind the watermark are refused as too late, so downstream
//! operators may treat the frontier as "no reading older than this will come".

pub mod file;
pub mod handover;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod order;
pub mod progress;
pub mod sensors;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::Activator;

use crate::model::{Origin, Reading, RejectReason};
use crate::Time;

/// A refused record, on its way to the dead-letter output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Where the record came from.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: RejectReason,
    /// The record as it was (text line, rendered row, message), shortened when very long.
    pub record: String,
    /// The size of the original record in bytes, when `record` is shorter (0: `record` is all).
    pub bytes: u64,
    /// The key of a refused Kafka message.
    pub key: Option<Vec<u8>>,
}

impl Rejection {
    /// A refusal of `record` (kept whole) for `reason`.
    pub fn new(origin: Origin, reason: RejectReason, record: String) -> Rejection {
        Rejection {
            origin,
            reason,
            record,
            bytes: 0,
            key: None,
        }
    }
}

/// A source's output of readings, as differential updates.
pub(crate) type ReadingsOutput =
    OutputBuilder<Time, CapacityContainerBuilder<Vec<(Reading, Time, isize)>>>;

/// The skeleton every source operator shares: an operator with no input and two outputs,
/// readings (as differential updates) and refused records, plus an activator to reschedule
/// itself.
pub(crate) struct SourceOperator<'scope> {
    pub(crate) builder: OperatorBuilder<'scope, Time>,
    pub(crate) activator: Activator,
    pub(crate) readings_out: ReadingsOutput,
    pub(crate) readings: StreamVec<'scope, Time, (Reading, Time, isize)>,
    pub(crate) rejected_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<Rejection>>>,
    pub(crate) rejected: StreamVec<'scope, Time, Rejection>,
}

impl<'scope> SourceOperator<'scope> {
    pub(crate) fn new(name: String, scope: Scope<'scope, Time>) -> SourceOperator<'scope> {
        let mut builder = OperatorBuilder::new(name, scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let (readings_out, readings) = builder.new_output();
        let (rejected_out, rejected) = builder.new_output();
        SourceOperator {
            builder,
            activator,
            readings_out: OutputBuilder::from(readings_out),
            readings,
            rejected_out: OutputBuilder::from(rejected_out),
            rejected,
        }
    }
}
