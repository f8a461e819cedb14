//! Simulated live sensors inside the process: the smart meters and smart plugs of
//! [`wattflow simulate`](crate::simulate), read straight into the graph instead of through
//! Kafka. `wattflow demo` follows its history with them, and a program that embeds wattflow can
//! use them to try the speed layer without a broker.
//!
//! # What it emits
//! Every household `1..=households` of the seeded [`Generator`] sends one reading per
//! [`SensorSourceConfig::interval_s`] (1 s by default) with all seven measures, exactly
//! [`Generator::reading`] of that interval. A reading is emitted once its interval is over by
//! the [`Calendar`]'s clock ([`Calendar::now_ms`]: the machine's local time for naive views, UTC
//! in a zone), so the views follow the wall clock.
//!
//! # Where each meter starts: the hand-over
//! With a [`Handover`] the source reads nothing until the history is read (its `ends` stream's
//! frontier is empty), and meanwhile its capability follows that frontier, exactly like the
//! Kafka source (see [`crate::source::handover`]): history windows seal as the history advances.
//! Then each meter starts at its switch time `T` (the end of its history, or the fixed
//! instant), so nothing is counted twice and nothing is missing at the switch; a meter without
//! history starts at [`SensorSourceConfig::start_ms`] or at the clock. A meter whose `T` is
//! behind the graph's frontier (its history ended long before the others') starts at the
//! frontier instead: the windows behind it are sealed.
//!
//! # Time, catching up and flow control
//! A worker simulates the households `h` with `(h − 1) mod peers == worker`, emits its readings
//! at its capability and then moves the capability to the oldest reading still to come, so a
//! window is sealed as soon as the clock has passed its end. When a meter starts in the past
//! (the history ended before now), the readings up to the clock are produced as fast as the
//! graph takes them, [`SensorSourceConfig::catch_up_step_ms`] of event time per batch, with at
//! most [`SensorSourceConfig::batches_in_flight`] batches ahead of the `flow` probe; then one
//! batch per interval. Readings are in order and never late, so nothing is refused here.
//!
//! # The end
//! The source ends when every meter reaches [`SensorSourceConfig::until_ms`] (when set) or when
//! `stop` is raised: it drops its capabilities and the graph finishes, sealing what is open.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use differential_dataflow::collection::vec::Collection as VecCollection;
use differential_dataflow::AsCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::{ProbeHandle, Scope};

use crate::generate::{Generator, GeneratorConfig, Household, DEFAULT_SEED};
use crate::model::{Origin, Reading};
use crate::source::handover::{Handover, SwitchTimes};
use crate::source::progress::InFlight;
use crate::source::SourceOperator;
use crate::time::Calendar;
use crate::Time;

/// Default [`SensorSourceConfig::interval_s`]: one reading a second, like the live simulator.
pub const DEFAULT_SENSOR_INTERVAL_S: u32 = 1;
/// Default [`SensorSourceConfig::catch_up_step_ms`]: ten minutes of event time per batch.
pub const DEFAULT_CATCH_UP_STEP_MS: i64 = 10 * 60 * 1000;
/// Default [`SensorSourceConfig::batches_in_flight`].
pub const DEFAULT_SENSOR_BATCHES_IN_FLIGHT: usize = 4;
/// How long a worker waits while the history is read, or while its batches are in flight,
/// before it looks again.
const WAIT: Duration = Duration::from_millis(20);
/// Slack after an interval's end before the worker wakes to emit its readings (timers are
/// not exact; waking early would find nothing due).
const WAKE_SLACK_MS: i64 = 3;

/// Which sensors to simulate and how. Build with [`SensorSourceConfig::new`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SensorSourceConfig {
    /// Households `1..=households` (`household-1`, ...), as in the generated history.
    pub households: u32,
    /// Seed of the household model (the history's seed gives the same households).
    pub seed: u64,
    /// Seconds covered by one reading.
    pub interval_s: u32,
    /// The clock ([`Calendar::now_ms`]) and the time basis of the readings.
    pub calendar: Calendar,
    /// Where meters without history start, ms (`None`: at the clock when the source starts).
    pub start_ms: Option<i64>,
    /// Event time at which every meter stops, ms, exclusive (`None`: until `stop`).
    pub until_ms: Option<i64>,
    /// Event time produced per batch while catching up with the clock, ms.
    pub catch_up_step_ms: i64,
    /// Batches a worker may have ahead of the flow-control probe.
    pub batches_in_flight: usize,
}

impl SensorSourceConfig {
    /// `households` sensors from the default seed, one reading a second, naive time.
    pub fn new(households: u32) -> SensorSourceConfig {
        SensorSourceConfig {
            households,
            seed: DEFAULT_SEED,
            interval_s: DEFAULT_SENSOR_INTERVAL_S,
            calendar: Calendar::Naive,
            start_ms: None,
            until_ms: None,
            catch_up_step_ms: DEFAULT_CATCH_UP_STEP_MS,
            batches_in_flight: DEFAULT_SENSOR_BATCHES_IN_FLIGHT,
        }
    }

    /// The seed of the household model.
    pub fn seed(mut self, seed: u64) -> SensorSourceConfig {
        self.seed = seed;
        self
    }

    /// Seconds per reading (at least 1).
    pub fn interval_s(mut self, interval_s: u32) -> SensorSourceConfig {
        self.interval_s = interval_s.max(1);
        self
    }

    /// Where meters without history start.
    pub fn start_ms(mut self, start_ms: i64) -> SensorSourceConfig {
        self.start_ms = Some(start_ms);
        self
    }

    /// Where every meter stops (exclusive).
    pub fn until_ms(mut self, until_ms: i64) -> SensorSourceConfig {
        self.until_ms = Some(until_ms);
        self
    }

    /// The clock and the time basis.
    pub fn calendar(mut self, calendar: Calendar) -> SensorSourceConfig {
        self.calendar = calendar;
        self
    }
}

/// Counters of the sensor source, shared by every worker (read them from any thread).
#[derive(Debug)]
pub struct SensorStats {
    /// Readings emitted.
    pub readings: AtomicU64,
    /// End of the newest interval emitted, ms (`i64::MIN` before the first).
    pub newest_ms: AtomicI64,
    /// How far the slowest meter is behind the clock, ms (0 once caught up).
    pub behind_ms: AtomicI64,
    /// Set once the history is read and the sensors run.
    pub following: AtomicBool,
}

impl Default for SensorStats {
    fn default() -> Self {
        SensorStats {
            readings: AtomicU64::new(0),
            newest_ms: AtomicI64::new(i64::MIN),
            behind_ms: AtomicI64::new(0),
            following: AtomicBool::new(false),
        }
    }
}

impl SensorStats {
    /// End of the newest interval emitted, if any.
    pub fn newest(&self) -> Option<i64> {
        let n = self.newest_ms.load(Ordering::Relaxed);
        (n != i64::MIN).then_some(n)
    }
}

/// One simulated meter of a worker: its readings and the start of the next one.
struct Meter {
    household: u32,
    readings: Household,
    next_ts: i64,
}

/// Simulated sensors into the graph: see the module docs. Readings come out as a differential
/// collection at times never later than their `ts`.
pub fn sensor_source<'scope>(
    scope: Scope<'scope, Time>,
    config: Arc<SensorSourceConfig>,
    stats: Arc<SensorStats>,
    flow: ProbeHandle<Time>,
    stop: Arc<AtomicBool>,
    handover: Option<Handover<'scope>>,
) -> VecCollection<'scope, Time, Reading> {
    let (index, peers) = (scope.index(), scope.peers());
    let generator = Generator::new(GeneratorConfig {
        households: config.households,
        seed: config.seed,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    });
    let mine: Vec<u32> = (1..=config.households)
        .filter(|h| (*h as usize - 1) % peers == index)
        .collect();
    let SourceOperator {
        mut builder,
        activator,
        mut readings_out,
        readings,
        ..
    } = SourceOperator::new(
        format!("SensorSource({} households)", config.households),
        scope,
    );
    let mut switch = SwitchTimes::new(Default::default());
    let mut ends_input = handover.map(|h| {
        switch = SwitchTimes::new(h.rule);
        builder.new_input(h.ends, Pipeline)
    });
    let interval_ms = config.interval_s.max(1) as i64 * 1000;

    builder.build_reschedule(move |capabilities| {
        let mut caps = Some(capabilities);
        let mut cap: Time = 0;
        let mut history_done = ends_input.is_none();
        let mut meters: Option<Vec<Meter>> = None;
        let mut in_flight = InFlight::new(config.batches_in_flight);
        let mut batch: Vec<(Reading, Time, isize)> = Vec::new();
        move |frontiers| {
            if let Some(input) = ends_input.as_mut() {
                input.for_each(|_, data| {
                    for (meter, end) in data.drain(..) {
                        switch.absorb(meter, end);
                    }
                });
            }
            let Some(current) = caps.as_mut() else {
                return false;
            };
            if stop.load(Ordering::Relaxed) {
                caps = None;
                return false;
            }
            if !history_done {
                match frontiers[0].frontier().first().copied() {
                    Some(t) => {
                        // History still being read: follow its frontier, emit nothing yet.
                        if t > cap {
                            for c in current.iter_mut() {
                                c.downgrade(&t);
                            }
                            cap = t;
                        }
                        activator.activate_after(WAIT);
                        return true;
                    }
                    None => history_done = true,
                }
            }
            let now = config.calendar.now_ms();
            let meters = meters.get_or_insert_with(|| {
                stats.following.store(true, Ordering::SeqCst);
                let floor = cap.min(i64::MAX as Time) as i64;
                let fallback = config.start_ms.unwrap_or(now - now.rem_euclid(interval_ms));
                mine.iter()
                    .map(|&h| {
                        let readings = generator.household(h);
                        let start = switch.of(&readings.meter()).unwrap_or(fallback);
                        // Behind the frontier its windows are sealed: start there, on the grid.
                        let next_ts = if start < floor {
                            start + (floor - start + interval_ms - 1) / interval_ms * interval_ms
                        } else {
                            start
                        };
                        Meter {
                            household: h,
                            readings,
                            next_ts,
                        }
                    })
                    .collect()
            });
            let until = config.until_ms.unwrap_or(i64::MAX);
            let oldest = meters.iter().map(|m| m.next_ts).min();
            let blocked = in_flight.blocked(cap, &flow);
            let mut more_due = false;
            if !blocked {
                if let Some(oldest) = oldest {
                    let limit = oldest
                        .saturating_add(config.catch_up_step_ms.max(interval_ms))
                        .min(until);
                    for m in meters.iter_mut() {
                        while m.next_ts < limit && m.next_ts + interval_ms <= now {
                            // The household model runs on local time (its evening peak is
                            // in the local evening); the reading carries the views' time.
                            let local = config.calendar.to_local(m.next_ts);
                            let mut r = m.readings.reading(&generator, local, config.interval_s);
                            r.ts = m.next_ts;
                            r.origin = Origin::sensor(m.household);
                            batch.push((r, cap, 1));
                            m.next_ts += interval_ms;
                        }
                        more_due |= m.next_ts < until && m.next_ts + interval_ms <= now;
                    }
                }
            }
            if !batch.is_empty() {
                let emitted = batch.len() as u64;
                let newest = batch.iter().map(|(r, _, _)| r.ts + interval_ms).max();
                in_flight.sent(cap);
                readings_out
                    .activate()
                    .session(&current[0])
                    .give_iterator(batch.drain(..));
                stats.readings.fetch_add(emitted, Ordering::Relaxed);
                if let Some(n) = newest {
                    stats.newest_ms.fetch_max(n, Ordering::Relaxed);
                }
            }
            // The capability: the oldest reading still to come (or the clock, for a worker
            // without meters), never backwards.
            let next = match meters.iter().map(|m| m.next_ts).min() {
                Some(t) => t,
                None => (now - now.rem_euclid(interval_ms)).min(until),
            };
            let behind = (now - interval_ms).saturating_sub(next).max(0);
            if index == 0 {
                stats.behind_ms.store(behind, Ordering::Relaxed);
            }
            let next_time = next.max(0) as Time;
            if next_time > cap {
                for c in current.iter_mut() {
                    c.downgrade(&next_time);
                }
                cap = next_time;
            }
            if next >= until {
                caps = None;
                return false;
            }
            if blocked {
                activator.activate_after(Duration::from_millis(1));
            } else if more_due {
                activator.activate();
            } else {
                // The next reading is due when its interval ends.
                let due = next.saturating_add(interval_ms) - now + WAKE_SLACK_MS;
                activator.activate_after(Duration::from_millis(due.clamp(1, 1000) as u64));
            }
            true
        }
    });
    readings.as_collection()
}
