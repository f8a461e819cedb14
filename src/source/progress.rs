//! Event-time progress that every source keeps the same way: the lateness watermark of one
//! ordered input, and the flow control that stops a source from running ahead of the graph.
//!
//! The Kafka source keeps one [`LatenessWatermark`] per partition; the file source applies the
//! same rule to each input's file order ([`crate::source::order`]), so "too late" means the
//! same thing in history and live:
//!
//! - An input's watermark is the largest event time it delivered minus the allowed lateness. It
//!   never moves back. A reading before `max(watermark, floor)` is too late, where `floor` is
//!   what else the source has promised (its capability, a restart floor): a reading emitted
//!   behind the capability would break the promise "nothing older comes".
//! - A source emits every batch at a timely time and remembers it in an [`InFlight`] window. A
//!   time stays in flight until a probe placed downstream (after the aggregation, or after the
//!   sinks for strict back-pressure) has passed it. With `limit` times in flight the source
//!   reads nothing more, so the readings waiting in the graph stay bounded by about `limit`
//!   batches whatever the speed of the sources and sinks.
//! - A live source is also told by its speed-layer sinks when their memory budget is used up
//!   ([`crate::source::kafka::Backpressure`]): it stops reading and pauses its partitions, so a
//!   store that is down bounds memory instead of filling it.

use std::collections::VecDeque;

use timely::dataflow::ProbeHandle;

use crate::Time;

/// The watermark of one ordered input; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatenessWatermark {
    lateness_ms: i64,
    /// Largest event time admitted (`i64::MIN` before the first).
    max_ts: i64,
    /// Where the watermark starts (a restart floor), and the least it can be.
    floor: i64,
}

impl LatenessWatermark {
    /// An input that allows `lateness_ms` of disorder and starts at `floor` (`i64::MIN`: none).
    pub fn new(lateness_ms: i64, floor: i64) -> LatenessWatermark {
        LatenessWatermark {
            lateness_ms: lateness_ms.max(0),
            max_ts: i64::MIN,
            floor,
        }
    }

    /// The oldest event time still admitted: `max(floor, largest event time - lateness)`.
    pub fn watermark(&self) -> i64 {
        self.max_ts.saturating_sub(self.lateness_ms).max(self.floor)
    }

    /// The largest event time admitted, if any.
    pub fn max_ts(&self) -> Option<i64> {
        (self.max_ts != i64::MIN).then_some(self.max_ts)
    }

    /// Admits a reading at `ts` unless it is behind the watermark or behind `bar` (what the
    /// source has promised otherwise, e.g. its capability). A refusal returns the bar it missed
    /// and leaves the watermark as it was.
    pub fn admit(&mut self, ts: i64, bar: i64) -> Result<(), i64> {
        let bar = self.watermark().max(bar);
        if ts < bar {
            return Err(bar);
        }
        self.max_ts = self.max_ts.max(ts);
        Ok(())
    }
}

/// The batch times a source emitted that a downstream probe has not passed yet; see the module
/// docs.
#[derive(Debug)]
pub struct InFlight {
    times: VecDeque<Time>,
    limit: usize,
}

impl InFlight {
    /// At most `limit` (at least 1) batch times ahead of the probe.
    pub fn new(limit: usize) -> InFlight {
        InFlight {
            times: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Forgets the times the probe has passed, and those not before `now` (the source's own
    /// capability holds the probe there, so they could never leave), and says whether the
    /// source must wait before it reads more.
    pub fn blocked(&mut self, now: Time, probe: &ProbeHandle<Time>) -> bool {
        self.times.retain(|t| *t < now && probe.less_equal(t));
        self.times.len() >= self.limit
    }

    /// Records that a batch was emitted at `time` (once per time).
    pub fn sent(&mut self, time: Time) {
        if self.times.back() != Some(&time) {
            self.times.push_back(time);
        }
    }

    /// Batch times still ahead of the probe, as of the last [`InFlight::blocked`].
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_trails_the_largest_time_and_never_moves_back() {
        let mut w = LatenessWatermark::new(1_000, i64::MIN);
        assert_eq!(w.watermark(), i64::MIN);
        assert_eq!(w.max_ts(), None);
        assert_eq!(w.admit(10_000, i64::MIN), Ok(()));
        assert_eq!(w.watermark(), 9_000);
        // Within the lateness: admitted, the watermark stays.
        assert_eq!(w.admit(9_500, i64::MIN), Ok(()));
        assert_eq!(w.watermark(), 9_000);
        // Exactly at the watermark is admitted, one ms before is not.
        assert_eq!(w.admit(9_000, i64::MIN), Ok(()));
        assert_eq!(w.admit(8_999, i64::MIN), Err(9_000));
        assert_eq!(w.max_ts(), Some(10_000));
        assert_eq!(w.admit(20_000, i64::MIN), Ok(()));
        assert_eq!(w.watermark(), 19_000);
    }

    #[test]
    fn a_floor_or_a_bar_refuses_what_the_lateness_alone_would_admit() {
        let mut w = LatenessWatermark::new(60_000, 5_000);
        assert_eq!(w.watermark(), 5_000);
        assert_eq!(w.admit(4_999, i64::MIN), Err(5_000));
        assert_eq!(w.admit(7_000, i64::MIN), Ok(()));
        // A source's capability at 6,500 refuses 6,000 though the lateness would allow it.
        assert_eq!(w.admit(6_000, 6_500), Err(6_500));
        assert_eq!(w.admit(6_500, 6_500), Ok(()));
        // Negative lateness is none.
        let mut strict = LatenessWatermark::new(-5, i64::MIN);
        strict.admit(100, i64::MIN).unwrap();
        assert_eq!(strict.admit(99, i64::MIN), Err(100));
    }

    #[test]
    fn in_flight_times_block_until_the_probe_passes_them() {
        use timely::dataflow::operators::{Input, Probe};
        timely::execute_directly(|worker| {
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u8>>();
                (input, stream.probe().0)
            });
            let mut flight = InFlight::new(2);
            assert!(!flight.blocked(0, &probe));
            flight.sent(0);
            flight.sent(0);
            input.advance_to(1);
            flight.sent(1);
            assert_eq!(flight.len(), 2);
            // The probe has not passed 0 or 1 yet: two in flight, the limit.
            assert!(flight.blocked(2, &probe));
            input.advance_to(2);
            while probe.less_than(&2) {
                worker.step();
            }
            assert!(!flight.blocked(2, &probe));
            assert!(flight.is_empty());
        });
    }
}
