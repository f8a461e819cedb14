//! Tumbling event-time windows over readings: [`WindowAggregate::window_aggregate`].
//!
//! # The graph
//!
//! ```text
//!  readings (time = source watermark ≤ ts)
//!     │ exchange by hash(meter, day of ts)   every window of a reading nests in its day,
//!     ▼                                      so one exchange serves all granularities
//!  WindowAggregate ──> (WindowKey, Aggregate) updates: −old, +new at the reading's time
//!     └───────────────> duplicates and other refusals (dead letters)
//! ```
//!
//! # Time, frontier and sealing
//!
//! Timestamps are event-time watermarks in ms: a source emits each reading at a time no later
//! than the reading's own `ts` (its watermark when the reading arrived) and refuses readings
//! already behind its watermark. So when this operator's input frontier has passed `t`, every
//! reading with `ts < t` has arrived, and a window `[start, end)` is **sealed** once the frontier
//! reaches `end`: nothing can change it any more.
//!
//! # State and when it is released
//!
//! Readings are insert-only, so an aggregate is a semigroup (count, sum, min, max merge without
//! negation) and the operator keeps one [`Aggregate`] per *open* window, never the readings
//! themselves (differential's general `reduce` would keep every input of a group; min and max
//! are not invertible). Per open minute it also keeps which instants it has seen, to drop
//! duplicates (a redelivered reading must not count twice). Incoming updates are stashed by
//! time; once the frontier passes a time, its readings are folded in time order and each window
//! they touched emits `−old, +new` at that time. Sealed windows are then dropped, so memory is
//! bounded by the open windows (lateness plus batching lag), not by the history.
//!
//! Downstream, a sink knows a window is final when *its* input frontier reaches the window's
//! end: every update of a window carries a time `≤ ts < end`.
//!
//! # Eager folding
//!
//! A live source's frontier moves only when event time does (once a second for per-second
//! meters), so waiting for it to pass a time would delay every reading by up to that step.
//! With [`WindowConfig::eager`], readings at the frontier's own time `t` are folded as soon as
//! they arrive: no reading at a time before `t` can come any more, so folds still happen in time
//! order, and a window touched again at `t` later simply emits another `−old, +new` pair at `t`
//! (the pairs consolidate). The accumulated output at every *complete* time is the same as
//! without eagerness; only more, earlier updates flow.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use differential_dataflow::collection::vec::Collection as VecCollection;
use differential_dataflow::AsCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Stream, StreamVec};
use wattflow::hash::FxMap;
use wattflow::model::{Aggregate, Granularity, MeterId, Reading, RejectReason, WindowKey};
use wattflow::time::{format_iso, Calendar};

/// Timestamps of the graph: event-time watermarks, ms since the epoch.
pub type Time = u64;

/// Readings as a differential collection.
pub type Readings<'scope> = VecCollection<'scope, Time, Reading>;

/// Window aggregates as a differential collection: `(window, aggregate)` with `−old, +new` updates.
pub type WindowUpdates<'scope> = VecCollection<'scope, Time, (WindowKey, Aggregate)>;

/// The raw update stream behind [`WindowUpdates`].
pub type UpdateStream<'scope> = StreamVec<'scope, Time, ((WindowKey, Aggregate), Time, isize)>;

/// Readings stashed for one time, with capabilities for both outputs at that time.
type Stashed = (Capability<Time>, Capability<Time>, Vec<(Reading, isize)>);

/// Readings the operator refused, with the reason.
pub type Refusals<'scope> = StreamVec<'scope, Time, (Reading, RejectReason)>;

/// Counters of the window operator, shared by every worker (read them from any thread).
#[derive(Debug, Default)]
pub struct WindowStats {
    /// Windows sealed and released, by [`Granularity`] index (minute, hour, day).
    pub sealed: [AtomicU64; 3],
    /// Windows open right now, by granularity index, summed over the workers.
    pub open: [AtomicI64; 3],
}

/// Which windows to compute, and when.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// Granularities whose windows are emitted. Duplicates are detected whatever this holds.
    pub granularities: Vec<Granularity>,
    /// Fold readings of the *current* time (the input frontier's own time) as they arrive,
    /// instead of waiting for the frontier to pass it (see "Eager folding" in the module
    /// docs). For live sources, whose frontier moves only when event time does; off by default.
    pub eager: bool,
    /// Where to count sealed and open windows (`None`: not counted).
    pub stats: Option<Arc<WindowStats>>,
    /// The calendar hour and day windows follow (default: the data's naive local time).
    pub calendar: Calendar,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            granularities: Granularity::ALL.to_vec(),
            eager: false,
            stats: None,
            calendar: Calendar::Naive,
        }
    }
}

impl WindowConfig {
    /// The default granularities, folding eagerly: what a live pipeline wants.
    pub fn eager() -> WindowConfig {
        WindowConfig {
            eager: true,
            ..WindowConfig::default()
        }
    }
}

/// What [`WindowAggregate::window_aggregate`] produces.
pub struct Windows<'scope> {
    /// Every change of every window, as differential updates.
    pub updates: WindowUpdates<'scope>,
    /// Readings refused here (duplicates of an already counted `(meter, ts)`, retractions).
    pub refused: Refusals<'scope>,
}

/// Tumbling event-time window aggregation of readings.
pub trait WindowAggregate<'scope> {
    /// Aggregates readings into minute, hour and day windows (see the module docs for the
    /// semantics), exchanging readings between workers by meter and day.
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use wattflow::model::{Granularity, MeterId, Origin, Reading};
    /// use wattflow_operators::{WindowAggregate, WindowConfig};
    ///
    /// let captured = timely::example(|scope| {
    ///     let reading = |ts, p| Reading {
    ///         meter: MeterId::new("h1").unwrap(), ts, interval_s: 60,
    ///         values: [p, 0, 230_000, 1_000, 0, 0, 0], origin: Origin::default(),
    ///     };
    ///     let (_input, readings) = scope.new_collection_from(vec![
    ///         reading(0, 1_000), reading(60_000, 3_000), reading(60_000, 3_000),
    ///     ]);
    ///     readings.window_aggregate(&WindowConfig::default()).updates.inner.capture()
    /// });
    /// let updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// let hour = updates.iter().find(|((k, _), _, _)| k.granularity == Granularity::Hour).unwrap();
    /// assert_eq!(hour.0 .1.samples, 2); // the duplicate did not count
    /// assert_eq!(hour.0 .1.measures[0].max, 3_000);
    /// ```
    fn window_aggregate(self, config: &WindowConfig) -> Windows<'scope>;
}

impl<'scope> WindowAggregate<'scope> for Readings<'scope> {
    fn window_aggregate(self, config: &WindowConfig) -> Windows<'scope> {
        let (updates, refused) = window_aggregate_core(self.inner, config.clone());
        Windows {
            updates: updates.as_collection(),
            refused,
        }
    }
}

/// Spreads `(meter, day)` over workers with a stable hash (identical in every process).
pub fn meter_day_hash(meter: &MeterId, ts: i64) -> u64 {
    let day = ts.div_euclid(Granularity::Day.len_ms()) as u64;
    splitmix(meter.stable_hash() ^ splitmix(day))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Instants already counted in one minute window: a bitmap of whole seconds, plus a list for
/// readings that do not start on a whole second.
#[derive(Default)]
struct Seen {
    seconds: u64,
    odd_ms: Vec<u16>,
}

impl Seen {
    /// Records `offset_ms` (0..60000) and tells whether it was new.
    #[inline]
    fn insert(&mut self, offset_ms: i64) -> bool {
        if offset_ms % 1000 == 0 {
            let bit = 1u64 << (offset_ms / 1000);
            let new = self.seconds & bit == 0;
            self.seconds |= bit;
            new
        } else {
            let o = offset_ms as u16;
            match self.odd_ms.binary_search(&o) {
                Ok(_) => false,
                Err(i) => {
                    self.odd_ms.insert(i, o);
                    true
                }
            }
        }
    }
}

struct Open {
    key: (MeterId, i64),
    /// End of the window (exclusive): `start + length`, or the next local midnight in a zone.
    end: i64,
    agg: Aggregate,
    /// Set while the window is in the dirty list of the time being processed.
    dirty: bool,
    seen: Seen,
}

/// Open windows of one granularity.
///
/// Windows live in a deque in creation order (which is end order for in-order data) and a
/// small index maps a key to its slot, so the 200-byte aggregates never move inside a hash
/// table. Sealing pops from the front while the front window has ended; a window created out
/// of order waits behind later ones until they are sealed too, which only delays the release
/// of its state (no reading can reach a sealed window: sources refuse readings behind their
/// watermark), never its correctness.
struct Level {
    granularity: Granularity,
    emit: bool,
    /// Slot number of `windows[0]`.
    base: u64,
    windows: VecDeque<Open>,
    index: FxMap<(MeterId, i64), u64>,
    /// Slots changed at the time being processed, with their value before it.
    dirty: Vec<(u64, Option<Aggregate>)>,
    /// Run-length pre-aggregation: consecutive readings of one window are folded locally and
    /// merged into the window once per run (a day of minute data is one run of 1,440).
    run: Option<((MeterId, i64), i64, Aggregate)>,
    calendar: Calendar,
    /// The last window computed, `[start, end)`: consecutive readings share it.
    last: (i64, i64),
}

impl Level {
    fn new(granularity: Granularity, emit: bool, calendar: Calendar) -> Level {
        Level {
            granularity,
            emit,
            base: 0,
            windows: VecDeque::new(),
            index: FxMap::default(),
            dirty: Vec::new(),
            run: None,
            calendar,
            last: (0, 0),
        }
    }

    /// The window `[start, end)` of this granularity holding `ts`.
    #[inline]
    fn window(&mut self, ts: i64) -> (i64, i64) {
        if !(self.last.0 <= ts && ts < self.last.1) {
            self.last = self.calendar.window(self.granularity, ts);
        }
        self.last
    }

    /// The slot of `key`'s window (ending at `end`), created if needed.
    #[inline]
    fn slot(&mut self, key: (MeterId, i64), end: i64) -> u64 {
        let next = self.base + self.windows.len() as u64;
        let slot = *self.index.entry(key).or_insert(next);
        if slot == next {
            self.windows.push_back(Open {
                key,
                end,
                agg: Aggregate::EMPTY,
                dirty: false,
                seen: Seen::default(),
            });
        }
        slot
    }

    #[inline]
    fn open_mut(&mut self, slot: u64) -> &mut Open {
        &mut self.windows[(slot - self.base) as usize]
    }

    #[inline]
    fn mark_dirty(&mut self, slot: u64) {
        let i = (slot - self.base) as usize;
        let open = &mut self.windows[i];
        if !open.dirty {
            open.dirty = true;
            let before = (!open.agg.is_empty()).then_some(open.agg);
            self.dirty.push((slot, before));
        }
    }

    /// Adds `reading` to its window unless that instant was already counted; tells which.
    #[inline]
    fn add_unique(&mut self, key: (MeterId, i64), end: i64, reading: &Reading) -> bool {
        let slot = self.slot(key, end);
        if !self.open_mut(slot).seen.insert(reading.ts - key.1) {
            return false;
        }
        self.mark_dirty(slot);
        self.open_mut(slot).agg.add(reading);
        true
    }

    #[inline]
    fn fold_run(&mut self, key: (MeterId, i64), end: i64, reading: &Reading) {
        match &mut self.run {
            Some((k, _, agg)) if *k == key => agg.add(reading),
            _ => {
                self.flush_run();
                self.run = Some((key, end, Aggregate::of(reading)));
            }
        }
    }

    fn flush_run(&mut self) {
        if let Some((key, end, agg)) = self.run.take() {
            let slot = self.slot(key, end);
            self.mark_dirty(slot);
            self.open_mut(slot).agg.merge(&agg);
        }
    }

    /// Emits `−old, +new` for every window changed at this time.
    fn emit(&mut self, mut give: impl FnMut((WindowKey, Aggregate), isize)) {
        for (slot, old) in std::mem::take(&mut self.dirty) {
            let granularity = self.granularity;
            let emit = self.emit;
            let open = self.open_mut(slot);
            open.dirty = false;
            if !emit {
                continue;
            }
            let wk = WindowKey {
                meter: open.key.0,
                granularity,
                start: open.key.1,
            };
            if let Some(old) = old {
                give((wk, old), -1);
            }
            give((wk, open.agg), 1);
        }
    }

    /// Drops the windows at the front that end at or before `frontier` (`None`: the input is
    /// complete, drop everything); returns how many.
    fn seal(&mut self, frontier: Option<Time>) -> u64 {
        let before = self.base;
        while let Some(front) = self.windows.front() {
            if let Some(f) = frontier {
                if front.end > f.min(i64::MAX as Time) as i64 {
                    break;
                }
            }
            self.index.remove(&front.key);
            self.windows.pop_front();
            self.base += 1;
        }
        self.base - before
    }

    /// Windows currently held.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.windows.len()
    }
}

/// The per-worker state of the operator.
struct WindowState {
    /// Minute level first: it also holds the duplicate filter.
    levels: Vec<Level>,
}

impl WindowState {
    fn new(config: &WindowConfig) -> WindowState {
        let levels = Granularity::ALL
            .into_iter()
            .map(|g| {
                Level::new(
                    g,
                    config.granularities.contains(&g),
                    config.calendar.clone(),
                )
            })
            .collect();
        WindowState { levels }
    }

    /// Folds the readings of one time, in order. Returns the refused ones.
    fn fold(
        &mut self,
        readings: &mut [(Reading, isize)],
        refused: &mut Vec<(Reading, RejectReason)>,
    ) {
        // Time order keeps runs long and makes the duplicate that is refused the later one.
        readings.sort_by_key(|(r, _)| (r.ts, r.meter, r.origin));
        let (minute, coarser) = self.levels.split_at_mut(1);
        let minute = &mut minute[0];
        for (reading, diff) in readings.iter() {
            if *diff <= 0 {
                refused.push((
                    *reading,
                    RejectReason::Undecodable(format!(
                        "retraction of a reading (diff {diff}): readings are insert-only"
                    )),
                ));
                continue;
            }
            let (start, end) = minute.window(reading.ts);
            if !minute.add_unique((reading.meter, start), end, reading) {
                refused.push((*reading, duplicate(reading)));
                continue;
            }
            for level in coarser.iter_mut() {
                let (start, end) = level.window(reading.ts);
                level.fold_run((reading.meter, start), end, reading);
            }
            for _ in 1..*diff {
                refused.push((*reading, duplicate(reading)));
            }
        }
        for level in coarser.iter_mut() {
            level.flush_run();
        }
    }
}

fn duplicate(r: &Reading) -> RejectReason {
    RejectReason::Duplicate {
        meter: r.meter.to_string(),
        ts: format_iso(r.ts),
    }
}

/// The timely operator behind [`WindowAggregate::window_aggregate`], on raw streams.
pub fn window_aggregate_core<'scope>(
    readings: Stream<'scope, Time, Vec<(Reading, Time, isize)>>,
    config: WindowConfig,
) -> (UpdateStream<'scope>, Refusals<'scope>) {
    let mut builder = OperatorBuilder::new("WindowAggregate".to_owned(), readings.scope());
    let calendar = config.calendar.clone();
    let mut input = builder.new_input(
        readings,
        Exchange::new(move |(r, _, _): &(Reading, Time, isize)| match &calendar {
            Calendar::Naive => meter_day_hash(&r.meter, r.ts),
            // Every window of a reading nests in its local day.
            zoned => meter_day_hash(&r.meter, zoned.day_start(r.ts)),
        }),
    );
    let (updates_out, updates) = builder.new_output();
    let (refused_out, refused) = builder.new_output();
    let mut updates_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<_>>>::from(updates_out);
    let mut refused_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<_>>>::from(refused_out);

    builder.build(move |_initial_capabilities| {
        let mut state = WindowState::new(&config);
        // Readings by time, with capabilities for both outputs at that time.
        let mut stash: BTreeMap<Time, Stashed> = BTreeMap::new();
        let mut refused_buf = Vec::new();
        // This worker's share of `stats.open`, as last added.
        let mut reported_open = [0i64; 3];
        move |frontiers| {
            input.for_each_stamp(|cap, data| {
                for container in data {
                    for (reading, time, diff) in container.drain(..) {
                        let entry = stash.entry(time).or_insert_with(|| {
                            (cap.delayed(&time, 0), cap.delayed(&time, 1), Vec::new())
                        });
                        entry.2.push((reading, diff));
                    }
                }
            });

            let frontier = frontiers[0].frontier();
            let mut updates_handle = updates_out.activate();
            let mut refused_handle = refused_out.activate();
            while let Some(entry) = stash.first_entry() {
                // Complete times always; the frontier's own time too when eager (no earlier
                // time can arrive any more, so folding it now keeps time order).
                let ready = if config.eager {
                    !frontier.less_than(entry.key())
                } else {
                    !frontier.less_equal(entry.key())
                };
                if !ready {
                    break;
                }
                let (time, (cap_updates, cap_refused, mut readings)) = entry.remove_entry();
                state.fold(&mut readings, &mut refused_buf);
                let mut session = updates_handle.session(&cap_updates);
                for level in state.levels.iter_mut() {
                    level.emit(|update, diff| session.give((update, time, diff)));
                }
                drop(session);
                if !refused_buf.is_empty() {
                    refused_handle
                        .session(&cap_refused)
                        .give_iterator(refused_buf.drain(..));
                }
            }
            let sealed_up_to = frontier.first().copied();
            for (g, level) in state.levels.iter_mut().enumerate() {
                let sealed = level.seal(sealed_up_to);
                if let Some(stats) = &config.stats {
                    if sealed > 0 {
                        stats.sealed[g].fetch_add(sealed, Ordering::Relaxed);
                    }
                    let open = level.windows.len() as i64;
                    stats.open[g].fetch_add(open - reported_open[g], Ordering::Relaxed);
                    reported_open[g] = open;
                }
            }
        }
    });

    (updates, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattflow::model::Origin;

    fn reading(meter: &str, ts: i64, p: i32) -> Reading {
        Reading {
            meter: MeterId::new(meter).unwrap(),
            ts,
            interval_s: 60,
            values: [p, 10, 230_000, 1_000, 0, 0, 0],
            origin: Origin::default(),
        }
    }

    #[test]
    fn seen_detects_repeats_of_whole_and_odd_instants() {
        let mut s = Seen::default();
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.insert(59_000));
        assert!(s.insert(1_500));
        assert!(!s.insert(1_500));
        assert!(s.insert(1_499));
    }

    #[test]
    fn fold_counts_each_instant_once_and_seals_in_order() {
        let mut st = WindowState::new(&WindowConfig::default());
        let mut refused = Vec::new();
        let mut batch = vec![
            (reading("a", 60_000, 5), 1),
            (reading("a", 0, 1), 1),
            (reading("a", 0, 1), 1),
            (reading("b", 0, 7), 2),
        ];
        st.fold(&mut batch, &mut refused);
        assert_eq!(refused.len(), 2);
        let mut out = Vec::new();
        for l in st.levels.iter_mut() {
            l.emit(|u, d| out.push((u, d)));
        }
        let hour_a = out
            .iter()
            .find(|((k, _), _)| k.granularity == Granularity::Hour && k.meter.as_str() == "a")
            .unwrap();
        assert_eq!(hour_a.0 .1.samples, 2);
        assert_eq!(hour_a.0 .1.measures[0].sum, 6);
        // Minute windows end at 60 s and 120 s: sealing at 60 s drops only the first ones.
        assert_eq!(st.levels[0].seal(Some(60_000)), 2);
        assert_eq!(st.levels[0].open_count(), 1);
        st.levels[0].seal(None);
        assert_eq!(st.levels[0].open_count(), 0);
        assert_eq!(st.levels[1].open_count(), 2);
    }

    #[test]
    fn meter_day_hash_is_stable_and_day_grained() {
        let m = MeterId::new("x").unwrap();
        assert_eq!(meter_day_hash(&m, 0), meter_day_hash(&m, 86_399_999));
        assert_ne!(meter_day_hash(&m, 0), meter_day_hash(&m, 86_400_000));
    }
}
