//! The hand-over from history to live, by event time and per meter.
//!
//! When one graph replays history files and then follows a Kafka topic, every reading must be
//! counted exactly once whatever offset the consumer starts from: the topic may also hold the
//! days the history covers (they must not count twice), or start right where the history ends
//! (nothing may be missing). The rule (DESIGN.md, "History → live in one graph"):
//!
//! - the **switch time** `T(meter)` is the end (`ts + interval`) of that meter's last history
//!   reading ([`SwitchAt::Auto`]), or one instant for every meter ([`SwitchAt::At`]);
//! - a live reading of a meter that starts before its `T` is *covered by history*: counted
//!   ([`crate::source::kafka::KafkaStats::covered`]), logged, not aggregated again and not a
//!   dead letter; from `T` on it counts;
//! - with [`SwitchAt::At`], history readings at or after `T` are left to the live source
//!   (counted in [`crate::source::file::SourceStats::after_switch`]) and do not move the
//!   history's watermark, so the live readings from `T` on are not judged late.
//!
//! # How the switch times reach the live source
//! Every file-source worker tracks the largest reading end per meter of what it emitted and,
//! when its inputs are exhausted, sends them on its `ends` stream, which the graph broadcasts to
//! every Kafka-source worker ([`SwitchTimes::absorb`] keeps the largest per meter). The Kafka
//! source does not poll while that stream's frontier is not empty (history is still being
//! read), and its capability follows that frontier meanwhile: the combined frontier is then the
//! history's, so history windows seal as the history advances and do not wait for Kafka, and the
//! windows around the switch stay open until the live readings that complete them arrive.
//!
//! One event-time watermark serves the whole graph, so a meter whose history ends long before
//! the others' (by more than the allowed lateness) finds its live readings between its own `T`
//! and the history's end refused as too late: give every meter history up to about the same
//! instant, or set [`SwitchAt::At`].

use timely::dataflow::StreamVec;

use crate::hash::FxMap;
use crate::model::MeterId;
use crate::Time;

/// The history side of a hand-over to a live source (Kafka, or the in-process sensors).
pub struct Handover<'scope> {
    /// Per meter, the end of its history, as every file-source worker sent it, broadcast to
    /// every worker of the live source. The live source reads nothing until this stream's
    /// frontier is empty (the history is read); meanwhile its capability follows that frontier.
    pub ends: StreamVec<'scope, Time, (MeterId, i64)>,
    /// Where the switch is.
    pub rule: SwitchAt,
}

/// Where the hand-over from history to live happens.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SwitchAt {
    /// Per meter, at the end of its last history reading.
    #[default]
    Auto,
    /// At this instant (ms, the event-time basis of the readings) for every meter.
    At(i64),
}

impl SwitchAt {
    /// The instant history readings stop counting, if one is fixed.
    pub fn fixed(self) -> Option<i64> {
        match self {
            SwitchAt::Auto => None,
            SwitchAt::At(t) => Some(t),
        }
    }
}

/// The switch time of every meter that has history: live readings before it are covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchTimes {
    /// Applies to every meter when set ([`SwitchAt::At`]), whatever `per_meter` holds.
    fixed: Option<i64>,
    per_meter: FxMap<MeterId, i64>,
}

impl SwitchTimes {
    /// Switch times under `rule`, before any history end is known.
    pub fn new(rule: SwitchAt) -> SwitchTimes {
        SwitchTimes {
            fixed: rule.fixed(),
            per_meter: FxMap::default(),
        }
    }

    /// Takes in one meter's history end (the largest wins, as several workers report ends).
    pub fn absorb(&mut self, meter: MeterId, end: i64) {
        let e = self.per_meter.entry(meter).or_insert(end);
        *e = (*e).max(end);
    }

    /// `T(meter)`: live readings of `meter` starting before it are covered by history.
    #[inline]
    pub fn of(&self, meter: &MeterId) -> Option<i64> {
        self.fixed.or_else(|| self.per_meter.get(meter).copied())
    }

    /// Whether a live reading of `meter` starting at `ts` is covered by history.
    #[inline]
    pub fn covers(&self, meter: &MeterId, ts: i64) -> bool {
        self.of(meter).is_some_and(|t| ts < t)
    }

    /// Meters with a history end.
    pub fn meters(&self) -> usize {
        self.per_meter.len()
    }

    /// The latest switch time of any meter (the fixed one if set).
    pub fn latest(&self) -> Option<i64> {
        self.fixed
            .or_else(|| self.per_meter.values().max().copied())
    }
}

/// The largest reading end per meter seen by one file-source worker, with a one-entry cache
/// (history files hold long runs of one meter).
#[derive(Debug, Default)]
pub struct HistoryEnds {
    ends: FxMap<MeterId, i64>,
    last: Option<(MeterId, i64)>,
}

impl HistoryEnds {
    /// Notes a reading of `meter` ending at `end`.
    #[inline]
    pub fn note(&mut self, meter: MeterId, end: i64) {
        match &mut self.last {
            Some((m, e)) if *m == meter => *e = (*e).max(end),
            _ => {
                self.flush_last();
                self.last = Some((meter, end));
            }
        }
    }

    fn flush_last(&mut self) {
        if let Some((m, e)) = self.last.take() {
            let v = self.ends.entry(m).or_insert(e);
            *v = (*v).max(e);
        }
    }

    /// Every meter's largest end, in meter order.
    pub fn drain(&mut self) -> Vec<(MeterId, i64)> {
        self.flush_last();
        let mut out: Vec<_> = self.ends.drain().collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> MeterId {
        MeterId::new(id).unwrap()
    }

    #[test]
    fn auto_switch_is_per_meter_and_the_largest_end_wins() {
        let mut t = SwitchTimes::new(SwitchAt::Auto);
        t.absorb(m("a"), 100);
        t.absorb(m("a"), 60);
        t.absorb(m("b"), 30);
        assert_eq!(t.of(&m("a")), Some(100));
        assert!(t.covers(&m("a"), 99));
        assert!(!t.covers(&m("a"), 100));
        assert!(t.covers(&m("b"), 29));
        assert!(!t.covers(&m("b"), 30));
        assert!(
            !t.covers(&m("c"), i64::MIN),
            "a meter without history is never covered"
        );
        assert_eq!(t.latest(), Some(100));
    }

    #[test]
    fn a_fixed_switch_applies_to_every_meter() {
        let mut t = SwitchTimes::new(SwitchAt::At(50));
        t.absorb(m("a"), 100);
        assert!(t.covers(&m("a"), 49));
        assert!(!t.covers(&m("a"), 50));
        assert!(t.covers(&m("zzz"), 0));
    }

    #[test]
    fn history_ends_keep_the_largest_end_of_each_meter() {
        let mut e = HistoryEnds::default();
        e.note(m("a"), 10);
        e.note(m("a"), 20);
        e.note(m("b"), 5);
        e.note(m("a"), 15);
        assert_eq!(e.drain(), vec![(m("a"), 20), (m("b"), 5)]);
        assert!(e.drain().is_empty());
    }
}
