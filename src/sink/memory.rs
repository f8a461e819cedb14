//! Speed views in the process: every change of every window into a [`MemoryViews`], which
//! the serving layer reads as its speed side (`wattflow demo`, and programs that embed
//! wattflow without Cassandra).
//!
//! The sink takes the window operator's `−old, +new` updates as they arrive (in arrival order,
//! `for_each`, like the Cassandra sink) and sets each window to the value of its `+` record;
//! `−` records are ignored, as readings are insert-only and a window is never deleted. A value
//! replaces the stored one only if it has as many samples or more
//! ([`MemoryViews::apply`]), so two changes of a window handed over out of order cannot leave
//! the older one. The store is in memory and is written at once, so the sink holds no time
//! back: it adds nothing to a pipeline's durability frontier.
//!
//! The store belongs to the process: in timely's cluster mode each process holds the windows
//! its own workers aggregate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::StreamVec;

use crate::model::{Aggregate, WindowKey};
use crate::serve::MemoryViews;
use crate::Time;

/// Counters of the memory sink (read them from any thread).
#[derive(Debug, Default)]
pub struct MemorySinkStats {
    /// Window values stored.
    pub rows_written: AtomicU64,
}

/// Stores every change of the window aggregates in `views` (see the module docs).
pub fn memory_sink(
    updates: StreamVec<'_, Time, ((WindowKey, Aggregate), Time, isize)>,
    views: Arc<MemoryViews>,
    stats: Arc<MemorySinkStats>,
) {
    updates.sink(Pipeline, "MemoryViewSink", move |(input, _frontier)| {
        let mut written = 0u64;
        input.for_each(|_, data| {
            for ((key, agg), _, diff) in data.drain(..) {
                if diff > 0 {
                    views.apply(key.granularity, key.meter.as_str(), key.start, &agg);
                    written += 1;
                }
            }
        });
        if written > 0 {
            stats.rows_written.fetch_add(written, Ordering::Relaxed);
        }
    });
}
