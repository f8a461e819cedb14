//! Oracle tests for `WindowAggregate::window_aggregate`, in the spirit of differential-dataflow's
//! `tests/reduce_oracle.rs`: random readings are fed the way a source feeds them (each at a
//! watermark `<= ts`, with out-of-order rows within the lateness and exact re-deliveries), the
//! operator's output updates are captured, and their accumulation at every time is compared
//! with a from-scratch recomputation that merges `Aggregate::of` per window after dropping
//! duplicates. One worker, two workers and the reference must all agree, and the `refused`
//! stream must hold exactly the duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::operators::Probe;
use wattflow::model::{
    Aggregate, Granularity, MeterId, Origin, Reading, RejectReason, WindowKey, MEASURES,
};
use wattflow_operators::{Time, WindowAggregate, WindowConfig};

/// Lateness the simulated source allows, in ms.
const LATENESS_MS: i64 = 10 * 60 * 1000;
/// A day-aligned start (2007-03-28T00:00:00).
const START_MS: i64 = 13_600 * 86_400_000;

type Update = ((WindowKey, Aggregate), Time, isize);
type Refusal = (Reading, RejectReason);

/// SplitMix64: a tiny seeded PRNG, so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Parameters of one random scenario.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    seed: u64,
    readings: usize,
    meters: usize,
    /// Largest step of the source's clock between two readings, in seconds.
    max_step_s: u64,
    /// Percent of readings that come out of order.
    late_pct: u64,
    /// Percent of re-deliveries of a recent reading.
    dup_pct: u64,
    /// Largest number of readings between two advances of the input time.
    max_batch: u64,
}

/// The arrival-ordered schedule: `(reading, time)`, times non-decreasing, every `time <= ts`.
fn schedule(s: &Scenario) -> Vec<(Reading, Time)> {
    let mut rng = Rng(s.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let meters: Vec<MeterId> = ["h-a", "h-b", "meter/3", "x.4", "h_5"]
        .iter()
        .take(s.meters)
        .map(|m| MeterId::new(m).unwrap())
        .collect();
    let mut clock = START_MS + rng.below(86_400) as i64 * 1000;
    let mut max_ts = i64::MIN;
    let mut time: Time = 0;
    let mut until_advance = 1 + rng.below(s.max_batch);
    let mut recent: Vec<Reading> = Vec::new();
    let mut out = Vec::new();
    let mut position = 0u64;
    let mut used: BTreeSet<(MeterId, i64)> = BTreeSet::new();
    while out.len() < s.readings {
        position += 1;
        let redelivery = !recent.is_empty() && rng.chance(s.dup_pct);
        let reading = if redelivery {
            // A re-delivery: same meter, ts and values, another position (a new offset).
            let mut r = recent[rng.below(recent.len() as u64) as usize];
            r.origin.position = position;
            r
        } else {
            clock += rng.below(s.max_step_s * 1000 + 1) as i64 / 1000 * 1000;
            let mut ts = clock;
            if rng.chance(10) {
                ts += 1 + rng.below(999) as i64; // not on a whole second
            }
            if rng.chance(s.late_pct) {
                // Out of order; sometimes beyond the lateness (the source would refuse it).
                ts -= rng.below(LATENESS_MS as u64 * 5 / 4) as i64;
            }
            let p = if rng.chance(5) {
                0
            } else {
                rng.below(9_000) as i32
            };
            let q = if p == 0 { 0 } else { rng.below(800) as i32 };
            let values: [i32; MEASURES] = [
                p,
                q,
                225_000 + rng.below(20_000) as i32,
                rng.below(40_000) as i32,
                rng.below(5_000) as i32,
                rng.below(5_000) as i32,
                rng.below(20_000) as i32,
            ];
            Reading {
                meter: meters[rng.below(meters.len() as u64) as usize],
                ts,
                interval_s: [60, 60, 1, 30][rng.below(4) as usize],
                values,
                origin: Origin {
                    source: rng.below(2) as u32,
                    position,
                },
            }
        };
        // The source refuses what is behind its watermark; only the rest is fed.
        if reading.ts < time as i64 {
            continue;
        }
        // Fresh readings never collide with another one's (meter, ts): only re-deliveries do,
        // so which copy counts cannot change the result.
        let is_new = used.insert((reading.meter, reading.ts));
        if !is_new && !redelivery {
            continue;
        }
        out.push((reading, time));
        recent.push(reading);
        if recent.len() > 40 {
            recent.remove(0);
        }
        max_ts = max_ts.max(reading.ts);
        until_advance -= 1;
        if until_advance == 0 {
            until_advance = 1 + rng.below(s.max_batch);
            let watermark = (max_ts - LATENESS_MS).max(0) as Time;
            time = time.max(watermark);
        }
    }
    out
}

/// What the operator produced on every worker: all window updates and all refusals with their time.
struct Output {
    updates: Vec<Update>,
    refused: Vec<(Refusal, Time)>,
}

fn drain<C: IntoIterator>(recv: Receiver<Event<Time, C>>) -> Vec<(Time, C::Item)> {
    let mut out = Vec::new();
    for event in recv.try_iter() {
        if let Event::Messages(stamp, data) = event {
            let time = *stamp.expect_singleton();
            out.extend(data.into_iter().map(|d| (time, d)));
        }
    }
    out
}

/// Runs the operator on `workers` workers, each feeding its share of the schedule (entry `i`
/// goes to worker `i % workers`) and advancing its input at the scheduled times.
fn run(schedule: &[(Reading, Time)], workers: usize, config: &WindowConfig) -> Output {
    let schedule: Arc<Vec<(Reading, Time)>> = Arc::new(schedule.to_vec());
    let config = config.clone();
    let (send_u, recv_u) = channel::<Event<Time, Vec<Update>>>();
    let (send_r, recv_r) = channel::<Event<Time, Vec<Refusal>>>();
    let send_u = Arc::new(Mutex::new(send_u));
    let send_r = Arc::new(Mutex::new(send_r));
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let send_u = send_u.lock().unwrap().clone();
        let send_r = send_r.lock().unwrap().clone();
        let config = config.clone();
        let eager = config.eager;
        let (mut input, probe) = worker.dataflow::<Time, _, _>(move |scope| {
            let (input, readings) = scope.new_collection::<Reading, isize>();
            let windows = readings.window_aggregate(&config);
            let (probe, updates) = windows.updates.inner.probe();
            updates.capture_into(send_u);
            windows.refused.capture_into(send_r);
            (input, probe)
        });
        let (index, peers) = (worker.index(), worker.peers());
        for (i, (reading, time)) in schedule.iter().enumerate() {
            if *time > *input.time() {
                input.advance_to(*time);
                input.flush();
                // Let the operator work through each time, as it would live.
                worker.step_while(|| probe.less_than(input.time()));
            }
            if i % peers == index {
                input.insert(*reading);
                if eager {
                    // Let the operator fold the open time several times over.
                    input.flush();
                    worker.step();
                }
            }
        }
        input.close();
        worker.step_while(|| !probe.done());
    })
    .expect("timely starts");
    for result in guards.join() {
        result.expect("worker finished");
    }
    Output {
        updates: drain(recv_u).into_iter().map(|(_, u)| u).collect(),
        refused: drain(recv_r).into_iter().map(|(t, r)| (r, t)).collect(),
    }
}

/// Consolidates updates: Σ diff per `(time, key, aggregate)`, zeros dropped.
fn consolidate(updates: &[Update]) -> BTreeMap<(Time, WindowKey, Aggregate), isize> {
    let mut map = BTreeMap::new();
    for ((key, agg), time, diff) in updates {
        *map.entry((*time, *key, *agg)).or_insert(0) += diff;
    }
    map.retain(|_, d| *d != 0);
    map
}

/// Checks the accumulated output against a from-scratch recomputation at every time.
fn check_against_reference(schedule: &[(Reading, Time)], config: &WindowConfig, out: &Output) {
    let times: BTreeSet<Time> = schedule.iter().map(|(_, t)| *t).collect();
    // The first arrival of each (meter, ts) counts; later ones are duplicates.
    let mut first: BTreeMap<(MeterId, i64), (Reading, Time)> = BTreeMap::new();
    let mut expected_refused: BTreeMap<(MeterId, i64, [i32; MEASURES], u32, Time), usize> =
        BTreeMap::new();
    for (r, t) in schedule {
        match first.get(&(r.meter, r.ts)) {
            None => {
                first.insert((r.meter, r.ts), (*r, *t));
            }
            Some((kept, _)) => {
                assert_eq!(
                    kept.values, r.values,
                    "test generator: duplicates are exact"
                );
                *expected_refused
                    .entry((r.meter, r.ts, r.values, r.interval_s, *t))
                    .or_insert(0) += 1;
            }
        }
    }
    let mut by_time: BTreeMap<Time, Vec<Reading>> = BTreeMap::new();
    for (r, t) in first.values() {
        by_time.entry(*t).or_default().push(*r);
    }

    let consolidated = consolidate(&out.updates);
    for (time, key, _) in consolidated.keys() {
        assert!(
            times.contains(time),
            "update at {time}, which is no input time ({key:?})"
        );
        assert!(
            config.granularities.contains(&key.granularity),
            "update for a granularity that was not asked for: {key:?}"
        );
        assert!(
            (*time as i64) < key.end(),
            "update at {time} for a window that was already sealed: {key:?}"
        );
    }
    let mut updates_by_time: BTreeMap<Time, Vec<(WindowKey, Aggregate, isize)>> = BTreeMap::new();
    for ((time, key, agg), diff) in &consolidated {
        updates_by_time
            .entry(*time)
            .or_default()
            .push((*key, *agg, *diff));
    }

    let mut reference: BTreeMap<WindowKey, Aggregate> = BTreeMap::new();
    let mut accumulated: BTreeMap<(WindowKey, Aggregate), isize> = BTreeMap::new();
    for time in &times {
        for r in by_time.get(time).into_iter().flatten() {
            for g in &config.granularities {
                reference
                    .entry(WindowKey::of(r, *g))
                    .or_insert(Aggregate::EMPTY)
                    .merge(&Aggregate::of(r));
            }
        }
        for (key, agg, diff) in updates_by_time.remove(time).unwrap_or_default() {
            *accumulated.entry((key, agg)).or_insert(0) += diff;
        }
        accumulated.retain(|_, d| *d != 0);
        let expected: BTreeMap<(WindowKey, Aggregate), isize> =
            reference.iter().map(|(k, a)| ((*k, *a), 1)).collect();
        if accumulated != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, d)| accumulated.get(k) != Some(d))
                .take(3)
                .collect();
            let extra: Vec<_> = accumulated
                .iter()
                .filter(|(k, d)| expected.get(k) != Some(d))
                .take(3)
                .collect();
            panic!(
                "accumulated output differs from the reference at time {time}: \
                 {} windows expected, {} entries accumulated; first expected-not-found {missing:?}; \
                 first found-not-expected {extra:?}",
                expected.len(),
                accumulated.len()
            );
        }
    }
    assert!(updates_by_time.is_empty());

    // The refused stream holds exactly the duplicates, at the time they were fed.
    let mut refused: BTreeMap<(MeterId, i64, [i32; MEASURES], u32, Time), usize> = BTreeMap::new();
    for ((r, reason), time) in &out.refused {
        match reason {
            RejectReason::Duplicate { meter, ts } => {
                assert_eq!(meter, r.meter.as_str());
                assert!(!ts.is_empty());
            }
            other => panic!("refused for another reason than a duplicate: {other:?} ({r:?})"),
        }
        *refused
            .entry((r.meter, r.ts, r.values, r.interval_s, *time))
            .or_insert(0) += 1;
    }
    assert_eq!(
        refused, expected_refused,
        "refused readings are not exactly the duplicates"
    );
}

fn check_scenario(s: Scenario, config: &WindowConfig) {
    let schedule = schedule(&s);
    let fed = schedule.len();
    let distinct: BTreeSet<(MeterId, i64)> =
        schedule.iter().map(|(r, _)| (r.meter, r.ts)).collect();
    let times: BTreeSet<Time> = schedule.iter().map(|(_, t)| *t).collect();
    // The scenario must really exercise duplicates, many times and out-of-order rows.
    assert!(fed - distinct.len() >= 5, "{s:?}: too few duplicates");
    assert!(times.len() >= 20, "{s:?}: too few times");
    let out_of_order = schedule
        .windows(2)
        .filter(|w| w[1].0.ts < w[0].0.ts)
        .count();
    assert!(out_of_order >= 5, "{s:?}: too few out-of-order readings");

    let one = run(&schedule, 1, config);
    check_against_reference(&schedule, config, &one);
    let two = run(&schedule, 2, config);
    check_against_reference(&schedule, config, &two);
    assert_eq!(
        consolidate(&one.updates),
        consolidate(&two.updates),
        "{s:?}: 1 worker and 2 workers emit different updates"
    );
}

#[test]
fn matches_reference_on_random_readings() {
    let base = Scenario {
        seed: 0,
        readings: 1_500,
        meters: 3,
        max_step_s: 240,
        late_pct: 20,
        dup_pct: 8,
        max_batch: 12,
    };
    for seed in 0..4 {
        check_scenario(Scenario { seed, ..base }, &WindowConfig::default());
    }
}

#[test]
fn eager_folding_matches_reference_too() {
    let base = Scenario {
        seed: 40,
        readings: 1_500,
        meters: 3,
        max_step_s: 60,
        late_pct: 20,
        dup_pct: 8,
        max_batch: 30,
    };
    for seed in 40..43 {
        check_scenario(Scenario { seed, ..base }, &WindowConfig::eager());
    }
}

#[test]
fn eager_folding_emits_before_the_time_completes() {
    let meter = MeterId::new("eager").unwrap();
    let reading = move |ts: i64| Reading {
        meter,
        ts,
        interval_s: 1,
        values: [1_000, 0, 230_000, 4_000, 0, 0, 0],
        origin: Default::default(),
    };
    for eager in [false, true] {
        let config = WindowConfig {
            eager,
            ..WindowConfig::default()
        };
        let config = config.clone();
        let seen = timely::execute_directly(move |worker| {
            let (send, recv) = channel::<Event<Time, Vec<Update>>>();
            let mut input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, readings) = scope.new_collection::<Reading, isize>();
                readings
                    .window_aggregate(&config)
                    .updates
                    .inner
                    .capture_into(send);
                input
            });
            input.advance_to(5_000);
            input.insert(reading(5_000));
            input.flush();
            for _ in 0..10 {
                worker.step();
            }
            let count = |recv: &Receiver<Event<Time, Vec<Update>>>| {
                recv.try_iter()
                    .map(|e| match e {
                        Event::Messages(_, data) => data.len(),
                        Event::Progress(_) => 0,
                    })
                    .sum::<usize>()
            };
            let first = count(&recv);
            input.insert(reading(6_000));
            input.flush();
            for _ in 0..10 {
                worker.step();
            }
            let second = count(&recv);
            (first, second)
        });
        if eager {
            // −old is absent for a new window: +new for minute, hour and day each time, and a
            // −old for the three windows the second reading changes.
            assert_eq!(seen, (3, 6), "eager: updates flow while time 5000 is open");
        } else {
            assert_eq!(
                seen,
                (0, 0),
                "lazy: nothing before the frontier passes 5000"
            );
        }
    }
}

#[test]
fn matches_reference_with_dense_minutes_and_many_meters() {
    // Steps of at most 20 s: many readings share a minute (the per-minute duplicate filter and
    // run-length folding are busy), five meters interleaved, large batches per time.
    let s = Scenario {
        seed: 17,
        readings: 2_500,
        meters: 5,
        max_step_s: 20,
        late_pct: 30,
        dup_pct: 10,
        max_batch: 60,
    };
    check_scenario(s, &WindowConfig::default());
    check_scenario(Scenario { seed: 18, ..s }, &WindowConfig::default());
}

#[test]
fn matches_reference_with_one_reading_per_time() {
    // Every reading at its own advance: the finest epochs, as a live source would produce.
    let s = Scenario {
        seed: 99,
        readings: 800,
        meters: 2,
        max_step_s: 600,
        late_pct: 25,
        dup_pct: 10,
        max_batch: 1,
    };
    check_scenario(s, &WindowConfig::default());
}

#[test]
fn only_the_configured_granularities_are_emitted_but_duplicates_are_still_refused() {
    let s = Scenario {
        seed: 5,
        readings: 1_200,
        meters: 3,
        max_step_s: 90,
        late_pct: 20,
        dup_pct: 10,
        max_batch: 10,
    };
    for granularities in [vec![Granularity::Hour], vec![Granularity::Day]] {
        check_scenario(
            s,
            &WindowConfig {
                granularities,
                ..WindowConfig::default()
            },
        );
    }
}
