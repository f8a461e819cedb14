//! Tests of the speed views: unit tests and, with `WATTFLOW_CASSANDRA`, against a real node.

use std::time::Duration;

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::value::{CqlTimestamp, CqlValue};

use crate::model::{Granularity, Measure};
use crate::time;
use crate::time::DAY_MS;

use super::*;
use crate::model::{MeterId, Origin, Reading};
use std::sync::atomic::AtomicU32;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::progress::Antichain;

type Update = ((WindowKey, Aggregate), Time, isize);

fn ms(y: i64, m: u32, d: u32, h: u32, mi: u32) -> i64 {
    time::naive_to_ms(y, m, d, h, mi, 0).unwrap()
}

fn reading(meter: &str, ts: i64, p: i32, q: i32) -> Reading {
    Reading {
        meter: MeterId::new(meter).unwrap(),
        ts,
        interval_s: 60,
        values: [p, q, 234_840, 18_400, 1_000, 2_000, 17_000],
        origin: Origin::default(),
    }
}

fn key(meter: &str, granularity: Granularity, ts: i64) -> WindowKey {
    WindowKey {
        meter: MeterId::new(meter).unwrap(),
        granularity,
        start: granularity.window_start(ts),
    }
}

#[test]
fn buckets_bound_partitions_by_day_month_and_year() {
    let t = ms(2008, 2, 29, 23, 59);
    assert_eq!(bucket_of(Granularity::Minute, t), (t / 86_400_000) as i32);
    assert_eq!(bucket_of(Granularity::Minute, 0), 0);
    assert_eq!(bucket_of(Granularity::Minute, 86_400_000), 1);
    assert_eq!(bucket_of(Granularity::Hour, t), 200_802);
    assert_eq!(
        bucket_of(Granularity::Hour, ms(2006, 12, 31, 23, 0)),
        200_612
    );
    assert_eq!(bucket_of(Granularity::Day, t), 2008);
    assert_eq!(bucket_of(Granularity::Minute, -1), -1);
    assert_eq!(bucket_of(Granularity::Minute, i64::MAX), i32::MAX);
}

#[test]
fn buckets_between_visits_every_partition_of_a_range() {
    let from = ms(2006, 12, 30, 12, 0);
    let to = ms(2007, 1, 2, 0, 0);
    let days: Vec<i32> = (0..3).map(|i| (from / DAY_MS) as i32 + i).collect();
    assert_eq!(buckets_between(Granularity::Minute, from, to), days);
    assert_eq!(
        buckets_between(Granularity::Hour, from, to),
        vec![200_612, 200_701]
    );
    assert_eq!(
        buckets_between(Granularity::Day, from, ms(2009, 1, 1, 0, 0)),
        vec![2006, 2007, 2008]
    );
    assert!(buckets_between(Granularity::Hour, to, from).is_empty());
    assert!(buckets_between(Granularity::Minute, 0, i64::MAX).len() > MAX_READ_BUCKETS);
}

#[test]
fn tables_are_named_by_granularity() {
    assert_eq!(table_of(Granularity::Minute), "minute_view");
    assert_eq!(table_of(Granularity::Hour), "hour_view");
    assert_eq!(table_of(Granularity::Day), "day_view");
}

#[test]
fn cql_text_has_the_contract_columns() {
    assert_eq!(
        keyspace_cql("ks", DEFAULT_REPLICATION),
        "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = \
         {'class': 'SimpleStrategy', 'replication_factor': 1}"
    );
    let table = table_cql("ks", Granularity::Hour);
    assert!(table.starts_with(
        "CREATE TABLE IF NOT EXISTS ks.hour_view (meter text, bucket int, \
         window_start timestamp, samples bigint, covered_seconds bigint, \
         global_active_power_sum double, global_active_power_min double, "
    ));
    assert!(table.ends_with(
        "active_energy_wh double, unmetered_wh double, power_factor_avg double, \
         PRIMARY KEY ((meter, bucket), window_start))"
    ));
    assert_eq!(table.matches(" double").count(), 7 * 4 + 3);

    let with = upsert_cql("ks", Granularity::Minute, true, true);
    assert!(with.starts_with("INSERT INTO ks.minute_view (meter, bucket, window_start, "));
    assert!(with.ends_with("USING TIMESTAMP ? AND TTL ?"));
    assert!(with.contains("power_factor_avg"));
    assert_eq!(with.matches('?').count(), 5 + 31 + 2);
    let without = upsert_cql("ks", Granularity::Day, false, false);
    assert!(!without.contains("power_factor_avg"));
    assert!(without.ends_with(") USING TIMESTAMP ?"));
    assert_eq!(without.matches('?').count(), 5 + 30 + 1);
    assert_eq!(
        select_cql("ks", Granularity::Day),
        "SELECT * FROM ks.day_view WHERE meter = ? AND bucket = ? \
         AND window_start >= ? AND window_start < ?"
    );
}

#[test]
fn values_follow_the_statement_and_skip_a_missing_power_factor() {
    let r = reading("h1", ms(2007, 1, 1, 10, 5), 4_216, 418);
    let k = key("h1", Granularity::Minute, r.ts);
    let (has_pf, v) = upsert_values(&k, &Aggregate::of(&r), 42, Some(600));
    assert!(has_pf);
    assert_eq!(v.len(), 5 + 31 + 2);
    assert_eq!(v[0], CqlValue::Text("h1".into()));
    assert_eq!(v[1], CqlValue::Int(bucket_of(Granularity::Minute, k.start)));
    assert_eq!(v[2], CqlValue::Timestamp(CqlTimestamp(k.start)));
    assert_eq!(v[3], CqlValue::BigInt(1));
    assert_eq!(v[4], CqlValue::BigInt(60));
    assert_eq!(v[5], CqlValue::Double(4.216)); // global_active_power_sum
    assert_eq!(v[v.len() - 2], CqlValue::BigInt(42));
    assert_eq!(v[v.len() - 1], CqlValue::Int(600));

    let zero = reading("h1", r.ts, 0, 0);
    let (has_pf, v) = upsert_values(&k, &Aggregate::of(&zero), 43, None);
    assert!(!has_pf);
    assert_eq!(v.len(), 5 + 30 + 1);
    assert_eq!(v[v.len() - 1], CqlValue::BigInt(43));
}

#[test]
fn write_timestamps_strictly_increase_across_threads() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..5_000).map(|_| next_write_timestamp()).collect()))
        .collect();
    let mut all: Vec<i64> = Vec::new();
    for h in handles {
        let ts: Vec<i64> = h.join().unwrap();
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        all.extend(ts);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "every timestamp is unique in the process");
    // Read the clock independently of the code under test.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (all[0] - now_us).abs() < 60_000_000,
        "wall-clock microseconds"
    );
}

#[test]
fn config_defaults_validate_and_round_trip() {
    let c = CassandraSinkConfig::default();
    assert_eq!(c.contact_points, vec!["127.0.0.1:9042".to_owned()]);
    assert_eq!((c.max_in_flight, c.batch_rows), (16, 16));
    assert_eq!(
        (c.minute_delay, c.hour_delay, c.day_delay, c.backlog_delay),
        (
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(30)
        )
    );
    c.validate().unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"retry_initial\":100"), "{json}");
    let back: CassandraSinkConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    let partial: CassandraSinkConfig =
        serde_json::from_str(r#"{"keyspace": "views", "minute_ttl": 86400000}"#).unwrap();
    assert_eq!(partial.minute_ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(partial.retry_max, DEFAULT_RETRY_MAX);
    assert!(serde_json::from_str::<CassandraSinkConfig>(r#"{"keyspcae": "x"}"#).is_err());

    for bad in [
        CassandraSinkConfig {
            keyspace: "drop table;".into(),
            ..c.clone()
        },
        CassandraSinkConfig {
            keyspace: "1abc".into(),
            ..c.clone()
        },
        CassandraSinkConfig {
            replication: "{'class': 'X'}; DROP KEYSPACE y".into(),
            ..c.clone()
        },
        CassandraSinkConfig {
            minute_ttl: Some(Duration::from_millis(1500)),
            ..c.clone()
        },
        CassandraSinkConfig {
            batch_rows: 0,
            ..c.clone()
        },
        CassandraSinkConfig {
            batch_rows: MAX_BATCH_ROWS + 1,
            ..c.clone()
        },
        CassandraSinkConfig {
            max_in_flight: 0,
            ..c.clone()
        },
        CassandraSinkConfig {
            retry_max: Duration::from_millis(10),
            ..c.clone()
        },
        CassandraSinkConfig {
            contact_points: vec![],
            ..c.clone()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(CassandraError::Config(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn retryable_errors_are_told_apart_from_hopeless_ones() {
    let db = |e: DbError| {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, String::new()))
    };
    assert!(is_retryable(&ExecutionError::RequestTimeout(
        Duration::from_secs(1)
    )));
    assert!(is_retryable(&db(DbError::Overloaded)));
    assert!(is_retryable(&db(DbError::IsBootstrapping)));
    assert!(is_retryable(&ExecutionError::EmptyPlan));
    assert!(!is_retryable(&db(DbError::Invalid)));
    assert!(!is_retryable(&db(DbError::SyntaxError)));
    assert!(!is_retryable(&db(DbError::Unauthorized)));
}

#[test]
fn backoff_jitter_stays_within_twenty_percent() {
    let base = Duration::from_millis(1000);
    for attempt in 0..50 {
        let d = jittered(base, 1_700_000_000_000_000 + attempt as i64 * 7, attempt);
        assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
    }
}

#[test]
fn an_unreachable_cluster_fails_fast_with_its_address() {
    // A closed local port: refused at once. (Nothing listens on port 1.)
    let config = CassandraSinkConfig {
        connect_timeout: Duration::from_secs(3),
        ..CassandraSinkConfig::new("127.0.0.1:1")
    };
    let started = Instant::now();
    match connect(&config) {
        Err(e @ CassandraError::Unreachable { .. }) => {
            let CassandraError::Unreachable {
                address, source, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(address, "127.0.0.1:1");
            // The driver's error is kept whole, as the error's source, not flattened to text.
            let cause = source
                .as_ref()
                .expect("refused at once: the driver said why");
            assert!(e.to_string().ends_with(&cause.to_string()), "{e}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---- against a real Cassandra: only when WATTFLOW_CASSANDRA names a node ----------------

/// Real-Cassandra tests share the node; the restart test takes it for itself.
static NODE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_node() -> std::sync::RwLockReadGuard<'static, ()> {
    NODE.read().unwrap_or_else(|e| e.into_inner())
}

fn real_cassandra(test: &str) -> Option<CassandraSinkConfig> {
    match std::env::var("WATTFLOW_CASSANDRA") {
        Ok(addr) if !addr.is_empty() => {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            Some(CassandraSinkConfig {
                keyspace: format!("wattflow_test_{}_{n}", std::process::id()),
                connect_timeout: Duration::from_secs(30),
                // Short, so the durability frontier passes quickly, but not zero.
                hour_delay: Duration::from_millis(200),
                day_delay: Duration::from_millis(300),
                ..CassandraSinkConfig::new(addr)
            })
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: CI=true but WATTFLOW_CASSANDRA is not set (scripts/services.sh up)"
            );
            eprintln!("skipping {test}: set WATTFLOW_CASSANDRA=127.0.0.1:9042 to run it");
            None
        }
    }
}

/// Drops the test keyspace when the test ends, passed or not.
struct DropKeyspace(Arc<CassandraViews>);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let ks = self.0.config().keyspace.clone();
        if let Err(e) = self.0.execute(&format!("DROP KEYSPACE IF EXISTS {ks}")) {
            eprintln!("could not drop {ks}: {e}");
        }
    }
}

/// Runs `batches` (time, updates) through a two-worker graph into the sink and waits until
/// its durability frontier has passed the last time.
fn run_graph(
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
    batches: Vec<(Time, Vec<Update>)>,
) -> Duration {
    let (took, passed) = run_graph_with(views, stats, batches, None, None);
    assert!(passed);
    took
}

/// [`run_graph`] with a [`Halt`] for the sink, waiting at most `patience` (then returning
/// whether the durability frontier passed the last time).
fn run_graph_with(
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
    batches: Vec<(Time, Vec<Update>)>,
    halt: Option<Halt>,
    patience: Option<Duration>,
) -> (Duration, bool) {
    let end = batches.iter().map(|(t, _)| *t).max().unwrap_or(0) + 1;
    let batches = Arc::new(batches);
    let started = Instant::now();
    let passed = Arc::new(AtomicBool::new(true));
    let passed_by_workers = Arc::clone(&passed);
    timely::execute(timely::Config::process(2), move |worker| {
        let mut input = InputHandle::<Time, _>::new();
        let probe = ProbeHandle::new();
        let (views, stats, halt) = (Arc::clone(&views), Arc::clone(&stats), halt.clone());
        worker.dataflow::<Time, _, _>(|scope| {
            let updates: UpdateStream = scope.input_from(&mut input);
            cassandra_sink_paced(updates, views, stats, Arc::new(|| false), halt)
                .probe_with(&probe);
        });
        if worker.index() == 0 {
            for (time, updates) in batches.iter() {
                input.advance_to(*time);
                for u in updates {
                    input.send(*u);
                }
            }
        }
        input.advance_to(end);
        let begun = Instant::now();
        while probe.less_than(&end) {
            if patience.is_some_and(|p| begun.elapsed() > p) {
                passed_by_workers.store(false, Ordering::SeqCst);
                // Drop the dataflow: the held time is given up with the worker.
                worker.drop_dataflow(0);
                return;
            }
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
    })
    .expect("timely runs");
    (started.elapsed(), passed.load(Ordering::SeqCst))
}

fn at(sched: &mut Scheduler, time: Time) {
    let seq = sched.seq;
    sched.open.entry(time).or_insert((None, 0)).1 = seq;
}

#[test]
fn scheduler_merges_waiting_changes_and_sends_the_oldest_due_first() {
    let config = CassandraSinkConfig {
        hour_delay: Duration::from_secs(5),
        ..CassandraSinkConfig::default()
    };
    let mut s = Scheduler::new(&config);
    let now = Instant::now();
    let t0 = ms(2007, 1, 1, 10, 0);
    let a1 = Aggregate::of(&reading("h1", t0, 1_000, 100));
    let mut a2 = a1;
    a2.add(&reading("h1", t0 + 1_000, 2_000, 100));
    let (m, h) = (
        key("h1", Granularity::Minute, t0),
        key("h1", Granularity::Hour, t0),
    );
    assert!(!s.change(h, a1, now));
    at(&mut s, 5);
    assert!(!s.change(m, a1, now));
    assert!(
        s.change(m, a2, now),
        "a waiting minute row takes the newer value"
    );
    assert!(s.change(h, a2, now), "so does a waiting hour row");
    assert!(
        s.change(h, a1, now),
        "an older value, come late, is merged..."
    );
    assert_eq!(s.queues[1].items[0].agg, a2, "...but the newer one is kept");
    at(&mut s, 6);
    assert_eq!(s.positions.len(), 2);

    // The minute row is due at once; the hour row waits for its delay.
    let first = s.next_due(now, Some(7)).expect("minute row due");
    assert_eq!((first.key, first.agg, first.first_seq), (m, a2, 2));
    assert!(s.next_due(now, Some(7)).is_none());
    assert_eq!(s.next_wake(), Some(now + Duration::from_secs(5)));
    s.in_flight.insert(first.first_seq);

    // Times 5 and 6 complete; neither is durable while the hour row waits.
    s.complete(&Antichain::from_elem(7).borrow());
    assert_eq!(s.completed.len(), 2);
    s.release();
    assert_eq!(s.completed.len(), 2);

    // A change while the minute row is in flight queues it again, behind.
    let mut a3 = a2;
    a3.add(&reading("h1", t0 + 2_000, 500, 0));
    assert!(!s.change(m, a3, now));
    at(&mut s, 8);

    // Later, the hour row (oldest change, seq 1) goes before the re-queued minute row.
    let later = now + Duration::from_secs(5);
    let second = s.next_due(later, Some(9)).expect("hour row due");
    assert_eq!((second.key, second.agg, second.first_seq), (h, a2, 1));
    s.in_flight.insert(second.first_seq);
    let third = s.next_due(later, Some(9)).expect("minute row due again");
    assert_eq!((third.key, third.agg), (m, a3));
    s.in_flight.insert(third.first_seq);

    // Acknowledgements release the times whose changes are all written, in order.
    s.in_flight.remove(&2);
    s.release();
    assert_eq!(
        s.completed.len(),
        2,
        "the hour row (seq 1) is still in flight"
    );
    s.in_flight.remove(&1);
    s.release();
    assert!(s.completed.is_empty(), "times 5 and 6 are durable");
    s.complete(&Antichain::from_elem(9).borrow());
    s.release();
    assert_eq!(s.completed.len(), 1, "time 8 waits for its minute row");
    s.in_flight.remove(&third.first_seq);
    s.release();
    assert!(s.completed.is_empty() && s.is_idle());
}

#[test]
fn sealed_windows_and_the_end_of_input_make_rows_due_at_once() {
    let mut s = Scheduler::new(&CassandraSinkConfig::default());
    let now = Instant::now();
    let t0 = ms(2007, 1, 1, 10, 0);
    let a = Aggregate::of(&reading("h1", t0, 1_000, 100));
    let (h, d) = (
        key("h1", Granularity::Hour, t0),
        key("h1", Granularity::Day, t0),
    );
    s.change(h, a, now);
    s.change(d, a, now);
    assert!(s.next_due(now, Some(t0 as Time)).is_none());
    let hour_end = (t0 + 3_600_000) as Time;
    assert_eq!(s.next_due(now, Some(hour_end)).map(|w| w.key), Some(h));
    assert!(s.next_due(now, Some(hour_end)).is_none());
    assert_eq!(s.next_due(now, None).map(|w| w.key), Some(d));
}

#[test]
fn schema_creation_is_idempotent() {
    let Some(config) = real_cassandra("schema_creation_is_idempotent") else {
        return;
    };
    let _node = shared_node();
    let started = Instant::now();
    let first = Arc::new(connect(&config).expect("first connect"));
    let first_took = started.elapsed();
    let _cleanup = DropKeyspace(Arc::clone(&first));
    let started = Instant::now();
    let second = connect(&config).expect("second connect: schema exists already");
    eprintln!(
        "connect + schema: first {first_took:?}, again {:?}",
        started.elapsed()
    );
    health_check(&second).expect("health check");
    let rows = read_view(&second, Granularity::Day, "nobody", 0, ms(1971, 1, 1, 0, 0));
    assert_eq!(rows.expect("read back"), vec![]);
}

#[test]
fn a_reader_changes_nothing_and_finds_meters_in_the_hour_view_before_the_day_view() {
    let Some(config) = real_cassandra("a_reader_changes_nothing") else {
        return;
    };
    let _node = shared_node();
    // Nothing made the keyspace yet: a reader says so instead of creating it.
    let err = connect_existing(&config).expect_err("no keyspace yet");
    assert!(
        matches!(err, CassandraError::Prepare { .. }),
        "a missing view must be named: {err}"
    );
    let writer = Arc::new(connect(&config).expect("connect"));
    let _cleanup = DropKeyspace(Arc::clone(&writer));
    let reader = connect_existing(&config).expect("the views exist now");
    assert_eq!(list_meters(&reader).unwrap(), Vec::<String>::new());
    for (table, meter, bucket, start) in [
        ("hour_view", "early", 202612, "2026-12-07 10:00:00"),
        ("day_view", "settled", 2026, "2026-12-07 00:00:00"),
    ] {
        writer
            .execute(&format!(
                "INSERT INTO {}.{table} (meter, bucket, window_start, samples, covered_seconds) \
                 VALUES ('{meter}', {bucket}, '{start}+0000', 1, 1)",
                config.keyspace
            ))
            .unwrap();
    }
    assert_eq!(list_meters(&reader).unwrap(), ["early", "settled"]);
}

#[test]
fn graph_writes_exactly_the_final_values() {
    let Some(config) = real_cassandra("graph_writes_exactly_the_final_values") else {
        return;
    };
    let _node = shared_node();
    let views = Arc::new(connect(&config).expect("connect"));
    let _cleanup = DropKeyspace(Arc::clone(&views));
    let stats = CassandraStats::new();

    // Minute windows on both sides of midnight (two buckets), their hour and day.
    let t0 = ms(2006, 12, 31, 23, 59);
    let t1 = ms(2007, 1, 1, 0, 0);
    let a1 = Aggregate::of(&reading("h1", t0, 1_000, 100));
    let mut a2 = a1;
    a2.add(&reading("h1", t0 + 30_000, 3_000, 0));
    let mut a3 = a2;
    a3.add(&reading("h1", t0 + 45_000, 2_500, 50));
    let no_pf = Aggregate::of(&reading("h1", t1, 0, 0));
    let other = Aggregate::of(&reading("h2", t1, 7_777, 1));
    let m0 = key("h1", Granularity::Minute, t0);
    let m1 = key("h1", Granularity::Minute, t1);
    let h0 = key("h1", Granularity::Hour, t0);
    let d0 = key("h1", Granularity::Day, t0);
    let o1 = key("h2", Granularity::Minute, t1);
    let batches = vec![
        (
            10,
            vec![((m0, a1), 10, 1), ((h0, a1), 10, 1), ((d0, a1), 10, 1)],
        ),
        (
            // −old, +new at one time, twice over for m0 (collapses to a3).
            11,
            vec![
                ((m0, a1), 11, -1),
                ((m0, a2), 11, 1),
                ((m0, a2), 11, -1),
                ((m0, a3), 11, 1),
                ((h0, a1), 11, -1),
                ((h0, a2), 11, 1),
                ((m1, no_pf), 11, 1),
                ((o1, other), 11, 1),
            ],
        ),
        // A later, newer value of the hour.
        (12, vec![((h0, a2), 12, -1), ((h0, a3), 12, 1)]),
    ];
    // Older than every write of the graph: the stale write below must lose. (Not "the last
    // timestamp handed out less a second": the process's other tests hand out timestamps too,
    // so that could be newer than this graph's writes on a slow machine.)
    let before_graph = next_write_timestamp();
    let took = run_graph(Arc::clone(&views), Arc::clone(&stats), batches);
    let (written, errors, retries, in_flight) = stats.snapshot();
    eprintln!("graph took {took:?}: {written} rows, {errors} errors, {retries} retries");
    // Five windows; the changes of m0 and h0 may be merged before they are written, and the
    // hour and day rows wait for their delay (or the end), merging theirs.
    assert!((5..=8).contains(&written), "{written} rows written");
    assert_eq!((errors, in_flight), (0, 0));

    let check = |row: &CassandraRow, k: &WindowKey, agg: &Aggregate| {
        let f = agg.finish();
        assert_eq!(row.meter, k.meter.as_str());
        assert_eq!(row.window_start, k.start);
        assert_eq!(row.samples, f.samples as i64);
        assert_eq!(row.covered_seconds, f.covered_s as i64);
        for (m, fm) in Measure::ALL.iter().zip(f.measures.iter()) {
            let get = |stat: &str| row.values[&format!("{}_{stat}", m.name())];
            assert_eq!(get("sum"), fm.sum as f64 / 1000.0);
            assert_eq!(get("min"), fm.min as f64 / 1000.0);
            assert_eq!(get("max"), fm.max as f64 / 1000.0);
            assert_eq!(get("avg"), fm.avg);
        }
        assert_eq!(row.values["active_energy_wh"], f.active_energy_wh);
        assert_eq!(row.values["unmetered_wh"], f.unmetered_wh);
        assert_eq!(
            row.values.get("power_factor_avg").copied(),
            f.power_factor_avg
        );
    };

    let day_start = ms(2006, 12, 31, 0, 0);
    let minutes = read_view(
        &views,
        Granularity::Minute,
        "h1",
        day_start,
        day_start + 2 * DAY_MS,
    )
    .expect("read minutes");
    assert_eq!(minutes.len(), 2, "{minutes:?}");
    check(&minutes[0], &m0, &a3);
    check(&minutes[1], &m1, &no_pf);
    assert!(!minutes[1].values.contains_key("power_factor_avg"));
    // Half-open range: the window starting at `to` is not included.
    let only_first =
        read_view(&views, Granularity::Minute, "h1", m0.start, m1.start).expect("read");
    assert_eq!(only_first.len(), 1);

    let hours =
        read_view(&views, Granularity::Hour, "h1", day_start, t1 + DAY_MS).expect("read hours");
    assert_eq!(hours.len(), 1);
    check(&hours[0], &h0, &a3);
    let days = read_view(&views, Granularity::Day, "h1", 0, t1 + DAY_MS).expect("read days");
    assert_eq!(days.len(), 1);
    check(&days[0], &d0, &a1);
    let h2 = read_view(&views, Granularity::Minute, "h2", t1, t1 + 60_000).expect("read h2");
    assert_eq!(h2.len(), 1);
    check(&h2[0], &o1, &other);

    // A stale write with an older timestamp loses to what is there.
    let stale_ts = before_graph;
    let (_, values) = upsert_values(&h0, &a1, stale_ts, None);
    let shared = Arc::clone(&views.shared);
    views
        .run(async move {
            shared
                .session
                .execute_unpaged(&shared.view(Granularity::Hour).with_pf, values)
                .await
        })
        .expect("runtime")
        .expect("stale upsert");
    let hours = read_view(&views, Granularity::Hour, "h1", h0.start, h0.end()).expect("read");
    check(&hours[0], &h0, &a3);
}

#[test]
fn rows_cassandra_refuses_for_good_are_never_durable() {
    let Some(config) = real_cassandra("rows_cassandra_refuses_for_good_are_never_durable") else {
        return;
    };
    let _node = shared_node();
    let views = Arc::new(connect(&config).expect("connect"));
    let _cleanup = DropKeyspace(Arc::clone(&views));
    // The hour view goes away under the running sink: its upserts can never succeed.
    let ks = &config.keyspace;
    views
        .execute(&format!("DROP TABLE {ks}.hour_view"))
        .expect("drop");
    let t0 = ms(2007, 1, 1, 0, 0);
    let updates = |time: Time| -> Vec<Update> {
        (0..20)
            .flat_map(|i| {
                let a = Aggregate::of(&reading("h1", t0 + i * 60_000, 1_000, 10));
                [
                    (
                        (key("h1", Granularity::Minute, t0 + i * 60_000), a),
                        time,
                        1,
                    ),
                    ((key(&format!("m{i}"), Granularity::Hour, t0), a), time, 1),
                ]
            })
            .collect()
    };

    // Without a halt the refused rows' time stays held: the frontier never passes it.
    let stats = CassandraStats::new();
    let (_, passed) = run_graph_with(
        Arc::clone(&views),
        Arc::clone(&stats),
        vec![(5, updates(5))],
        None,
        Some(Duration::from_secs(5)),
    );
    assert!(!passed, "a refused row must never be counted as durable");
    let (written, errors, _, _) = stats.snapshot();
    // Every batch mixed both views: refused whole, then split; the minutes went through.
    assert_eq!((written, errors), (20, 20));
    assert!(stats.split_batches.load(Ordering::Relaxed) >= 1);
    let minutes = read_view(&views, Granularity::Minute, "h1", t0, t0 + DAY_MS).expect("read");
    assert_eq!(minutes.len(), 20);

    // With a halt the run is stopped loudly, commits held, and the graph can finish.
    let halt = Halt::default();
    let stats = CassandraStats::new();
    let (_, passed) = run_graph_with(
        Arc::clone(&views),
        Arc::clone(&stats),
        vec![(7, updates(7))],
        Some(halt.clone()),
        Some(Duration::from_secs(60)),
    );
    assert!(passed, "the halted sink lets its times go");
    assert!(halt.held() && halt.stop.load(Ordering::SeqCst));
    let errors = halt.errors.take();
    assert!(!errors.is_empty());
    for e in &errors {
        match e {
            crate::error::RunError::Cassandra(CassandraError::Refused {
                granularity,
                window_start,
                ..
            }) => {
                assert_eq!(granularity, "hour");
                assert!(
                    window_start.starts_with("2007-01-01T00:00"),
                    "{window_start}"
                );
            }
            other => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn many_windows_throughput() {
    let Some(config) = real_cassandra("many_windows_throughput") else {
        return;
    };
    let _node = shared_node();
    let views = Arc::new(connect(&config).expect("connect"));
    let _cleanup = DropKeyspace(Arc::clone(&views));
    let stats = CassandraStats::new();
    // Two days of minutes for 5 meters, in 48 hourly epochs: 14,400 upserts.
    let start = ms(2007, 3, 1, 0, 0);
    let mut batches = Vec::new();
    for hour in 0..48i64 {
        let time = (start + hour * 3_600_000) as Time;
        let mut updates = Vec::new();
        for meter in ["m1", "m2", "m3", "m4", "m5"] {
            for minute in 0..60 {
                let ts = start + hour * 3_600_000 + minute * 60_000;
                let agg = Aggregate::of(&reading(meter, ts, 1_000 + minute as i32, 10));
                updates.push(((key(meter, Granularity::Minute, ts), agg), time, 1));
            }
        }
        batches.push((time, updates));
    }
    let took = run_graph(Arc::clone(&views), Arc::clone(&stats), batches);
    let (written, errors, retries, _) = stats.snapshot();
    eprintln!(
        "{written} upserts in {took:?}: {:.0} rows/s ({retries} retries)",
        written as f64 / took.as_secs_f64()
    );
    assert_eq!((written, errors), (14_400, 0));
    let rows =
        read_view(&views, Granularity::Minute, "m3", start, start + 2 * DAY_MS).expect("read");
    assert_eq!(rows.len(), 2 * 1440);
    assert!(rows
        .windows(2)
        .all(|w| w[0].window_start < w[1].window_start));
}

#[test]
fn writes_survive_a_cassandra_restart() {
    let Some(config) = real_cassandra("writes_survive_a_cassandra_restart") else {
        return;
    };
    // It stops and starts the node through scripts/services.sh, which only stops a node it
    // started: a node run some other way is left alone (and the test is skipped).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let ours = std::process::Command::new(script)
        .args(["status", "cassandra"])
        .status()
        .is_ok_and(|s| s.success());
    if !ours {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the Cassandra node was not started by scripts/services.sh"
        );
        eprintln!("skipping the restart test: the node was not started by scripts/services.sh");
        return;
    }
    let _node = NODE.write().unwrap_or_else(|e| e.into_inner());
    let services = |what: &str| {
        let status = std::process::Command::new(script)
            .args([what, "cassandra"])
            .status()
            .expect("run services.sh");
        assert!(status.success(), "services.sh {what} cassandra failed");
    };
    let config = CassandraSinkConfig {
        retry_max: Duration::from_secs(2),
        ..config
    };
    let views = Arc::new(connect(&config).expect("connect"));
    let _cleanup = DropKeyspace(Arc::clone(&views));
    let stats = CassandraStats::new();
    let start = ms(2007, 6, 1, 0, 0);
    let batch = move |hour: i64| {
        let time = (start + hour * 3_600_000) as Time;
        let updates: Vec<Update> = (0..60)
            .map(|minute| {
                let ts = start + hour * 3_600_000 + minute * 60_000;
                let agg = Aggregate::of(&reading("r1", ts, 500 + minute as i32, 5));
                ((key("r1", Granularity::Minute, ts), agg), time, 1)
            })
            .collect();
        (time, updates)
    };
    // One hour written while Cassandra is up.
    run_graph(Arc::clone(&views), Arc::clone(&stats), vec![batch(0)]);
    assert_eq!(stats.snapshot().0, 60);

    services("down");
    let writer = {
        let (views, stats) = (Arc::clone(&views), Arc::clone(&stats));
        std::thread::spawn(move || run_graph(views, stats, (1..4).map(batch).collect()))
    };
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        !writer.is_finished(),
        "the durability frontier must wait for Cassandra"
    );
    let retries_while_down = stats.snapshot().2;
    services("up");
    let took = writer.join().expect("writer thread");
    let (written, errors, retries, _) = stats.snapshot();
    eprintln!(
        "restart: graph finished after {took:?}; {written} rows, {retries} retries \
         ({retries_while_down} while down), {errors} errors"
    );
    assert!(retries_while_down > 0);
    assert_eq!((written, errors), (4 * 60, 0));
    let rows = read_view(&views, Granularity::Minute, "r1", start, start + DAY_MS)
        .expect("read after restart");
    assert_eq!(rows.len(), 4 * 60);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.window_start, start + i as i64 * 60_000);
        assert_eq!(
            row.values["global_active_power_sum"],
            (500 + (i % 60) as i32) as f64 / 1000.0
        );
    }
}
