//! Against a real broker: run only when `WATTFLOW_KAFKA` names one (e.g. `127.0.0.1:9092`,
//! after `scripts/services.sh up kafka`); otherwise each test prints a skip note.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::dataflow::operators::core::{Inspect, Probe};

use super::offsets::PartitionState;
use super::worker::Worker;
use super::*;
use crate::error::Halt;
use crate::generate::{Generator, GeneratorConfig};
use crate::model::{Granularity, MeterId, Origin, RejectReason};
use crate::simulate::{ensure_topic, simulate, ReadingProducer, SimulatorConfig};
use crate::sink::dead_letter::{
    dead_letter_sink, DeadLetterConfig, DeadLetterStats, KafkaDeadLetters, DEAD_LETTER_RECORD_BYTES,
};
use crate::time::naive_to_ms;
use crate::time::DAY_MS;

fn broker(test: &str) -> Option<String> {
    match std::env::var("WATTFLOW_KAFKA") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_owned()),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: CI=true but WATTFLOW_KAFKA is not set (scripts/services.sh up)"
            );
            eprintln!(
                "{test}: skipped (set WATTFLOW_KAFKA=host:port to run against a real broker)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Deletes the topics a test made when it ends, passed or failed.
struct Topics {
    brokers: String,
    names: Vec<String>,
}

impl Drop for Topics {
    fn drop(&mut self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let _ = crate::simulate::delete_topics(&self.brokers, &names);
    }
}

/// A fresh topic of `partitions` and its one-partition dead-letter topic, both deleted when
/// the returned guard drops.
fn scratch_topics(brokers: &str, partitions: i32) -> (String, String, Topics) {
    let topic = unique("wattflow-test");
    let dead = format!("{topic}{DEAD_LETTER_SUFFIX}");
    let guard = Topics {
        brokers: brokers.to_owned(),
        names: vec![topic.clone(), dead.clone()],
    };
    ensure_topic(brokers, &topic, partitions).unwrap();
    ensure_topic(brokers, &dead, 1).unwrap();
    (topic, dead, guard)
}

/// What `group` has committed for partitions `0..partitions` of `topic`.
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> TopicPartitionList {
    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut ask = TopicPartitionList::new();
    for p in 0..partitions {
        ask.add_partition(topic, p);
    }
    retry_transient(Duration::from_secs(30), |left| {
        checker.committed_offsets(ask.clone(), left)
    })
    .unwrap()
}

struct Run {
    readings: Vec<(Reading, Time, isize)>,
    rejected: Vec<Rejection>,
    stats: Arc<KafkaStats>,
    letters: Arc<DeadLetterStats>,
    errors: Vec<String>,
}

/// Runs the source alone on `workers` workers until it exits for idleness.
fn run(config: &KafkaSourceConfig, workers: usize) -> Run {
    run_until(config, workers, Arc::new(AtomicBool::new(false)))
}

/// Runs the source with its dead-letter sink on `workers` workers until it exits for idleness
/// or `stop` rises.
fn run_until(config: &KafkaSourceConfig, workers: usize, stop: Arc<AtomicBool>) -> Run {
    let dead = Arc::new(DeadLetterConfig {
        kafka: config.dead_letter_topic.as_ref().map(|t| KafkaDeadLetters {
            brokers: config.brokers.clone(),
            source_topic: config.topic.clone(),
            topic: t.clone(),
            properties: config.properties.clone(),
        }),
        deadline: Duration::from_secs(5),
        ..DeadLetterConfig::new()
    });
    let letters = Arc::new(DeadLetterStats::default());
    let errors = crate::error::RunErrors::new();
    let (d, l, e) = (Arc::clone(&dead), Arc::clone(&letters), errors.clone());
    let config = Arc::new(config.clone());
    let stats = Arc::new(KafkaStats::default());
    let readings = Arc::new(Mutex::new(Vec::new()));
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let (c, s, r, j) = (
        Arc::clone(&config),
        Arc::clone(&stats),
        Arc::clone(&readings),
        Arc::clone(&rejected),
    );
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (c, s, r, j) = (c.clone(), s.clone(), r.clone(), j.clone());
        let (d, l, e) = (d.clone(), l.clone(), e.clone());
        let s2 = Arc::clone(&s);
        let stop = Arc::clone(&stop);
        worker.dataflow::<Time, _, _>(move |scope| {
            let durable = ProbeHandle::new();
            let streams = kafka_source(
                scope,
                c,
                s,
                durable.clone(),
                durable.clone(),
                None,
                Arc::clone(&stop),
                None,
            )
            .expect("source starts");
            streams
                .readings
                .inner
                .inspect(move |x: &(Reading, Time, isize)| r.lock().unwrap().push(*x))
                .probe_with(&durable);
            let rejected = streams
                .rejected
                .inspect(move |x: &Rejection| j.lock().unwrap().push(x.clone()));
            let halt = Halt {
                errors: e,
                stop,
                hold_commits: Arc::clone(&s2.hold_commits),
            };
            dead_letter_sink(rejected, d, l, halt).probe_with(&durable);
        });
    })
    .expect("timely starts");
    for result in guards.join() {
        result.expect("worker ran");
    }
    let readings = std::mem::take(&mut *readings.lock().unwrap());
    let rejected = std::mem::take(&mut *rejected.lock().unwrap());
    let errors = errors.take().iter().map(ToString::to_string).collect();
    Run {
        readings,
        rejected,
        stats,
        letters,
        errors,
    }
}

fn test_config(brokers: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        group_id: group.to_owned(),
        lateness_ms: 60_000,
        idle_timeout: Duration::from_millis(500),
        exit_when_idle: Some(Duration::from_millis(1500)),
        ..KafkaSourceConfig::new(brokers, topic, group)
    }
}

/// Reads every message of partition 0 of `topic` (until `want` came or 30 s passed).
fn read_all(brokers: &str, topic: &str, want: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or(&[]).to_vec()),
            Some(Err(e)) => eprintln!("read_all {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// A worker without broker: no consumer, no dead-letter producer.
fn bare_worker(partitions: &[i32], index: usize, stats: &Arc<KafkaStats>) -> Worker {
    let config = KafkaSourceConfig {
        dead_letter_topic: None,
        lateness_ms: 60_000,
        ..KafkaSourceConfig::new("unused:9092", "t", DEFAULT_GROUP_ID)
    };
    let now = Instant::now();
    let lateness_ms = config.lateness_ms;
    Worker::new(
        Arc::new(config),
        Arc::clone(stats),
        ProbeHandle::new(),
        index,
        partitions
            .iter()
            .map(|&p| PartitionState::new(p, Offset::Beginning, lateness_ms, i64::MIN, None, now))
            .collect(),
    )
}

fn message(ts: i64) -> Vec<u8> {
    let mut r = Generator::new(GeneratorConfig::default()).reading(1, ts, 1);
    r.ts = ts;
    crate::format::json::render_message(&r).into_bytes()
}

fn feed(w: &mut Worker, partition: i32, offset: i64, ts: i64) {
    w.now = Instant::now();
    w.handle(partition, offset, None, Some(&message(ts)), ts);
}

#[test]
fn transient_broker_errors_are_retried_within_the_budget_and_others_are_not() {
    let not_coordinator = || RdKafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator);
    // Fails twice while the coordinator loads, then answers.
    let mut calls = 0;
    let answer = retry_transient(Duration::from_secs(5), |left| {
        assert!(left <= Duration::from_secs(5));
        calls += 1;
        if calls < 3 {
            Err(not_coordinator())
        } else {
            Ok(calls)
        }
    });
    assert_eq!(answer.unwrap(), 3);

    // A permanent error is returned at once.
    let mut calls = 0;
    let answer: KafkaResult<()> = retry_transient(Duration::from_secs(5), |_| {
        calls += 1;
        Err(RdKafkaError::MetadataFetch(
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ))
    });
    assert!(answer.is_err());
    assert_eq!(calls, 1);

    // A transient error that outlasts the budget is returned once the budget is spent.
    let start = Instant::now();
    let mut calls = 0;
    let answer: KafkaResult<()> = retry_transient(Duration::from_millis(300), |_| {
        calls += 1;
        Err(not_coordinator())
    });
    assert!(matches!(
        answer.unwrap_err().rdkafka_error_code(),
        Some(RDKafkaErrorCode::NotCoordinator)
    ));
    assert!(calls >= 2, "retried {calls} times");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn lateness_is_judged_per_partition_and_against_the_capability() {
    let stats = Arc::new(KafkaStats::default());
    let mut w = bare_worker(&[0, 2], 0, &stats);
    let t = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
    feed(&mut w, 0, 0, t);
    feed(&mut w, 0, 1, t + 120_000);
    feed(&mut w, 0, 2, t + 90_000); // within the lateness: counts
    feed(&mut w, 0, 3, t + 30_000); // behind max - lateness: too late
    feed(&mut w, 2, 0, t); // partition 2 has its own watermark
    assert_eq!(w.readings.len(), 4);
    assert_eq!(w.rejected.len(), 1);
    assert!(matches!(w.rejected[0].reason, RejectReason::TooLate { .. }));
    assert_eq!(
        w.rejected[0].origin,
        Origin::kafka(0, 3),
        "partition 0, offset 3"
    );
    // The capability follows the partition furthest behind.
    assert_eq!(w.target(), (t - 60_000) as Time);
    w.cap = w.target();
    // Behind the capability is too late even on a partition whose own watermark allows it.
    feed(&mut w, 2, 1, t - 61_000);
    assert_eq!(w.rejected.len(), 2);
    // Emitted at the capability, never after the reading's own time.
    feed(&mut w, 2, 2, t - 60_000);
    let (r, time, _) = w.readings.last().copied().unwrap();
    assert_eq!(time, w.cap);
    assert!(time as i64 <= r.ts);
    // From the future: refused before it can move a watermark.
    w.handle(2, 3, None, Some(&message(t + 3_600_000)), t);
    assert!(matches!(
        w.rejected.last().map(|j| &j.reason),
        Some(RejectReason::FromTheFuture { .. })
    ));
    assert_eq!(w.partitions[1].lateness.max_ts(), Some(t));
    // Bad payloads are refused with their position.
    w.handle(0, 4, None, Some(b"{}"), t);
    w.handle(0, 5, None, None, t);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 5);
    assert_eq!(stats.messages.load(Ordering::Relaxed), 10);
    assert_eq!(w.partitions[0].next_offset, Some(6));
}

#[test]
fn consumer_trouble_makes_every_end_unknown_so_no_partition_idles_past_its_backlog() {
    // Two partitions caught up, the second 10 minutes behind the first, when the broker goes
    // away. The operator's rule after the idle timeout: a partition at its end is idle, and
    // the capability follows the target.
    let stats = Arc::new(KafkaStats::default());
    let mut w = bare_worker(&[0, 1], 0, &stats);
    let t = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
    feed(&mut w, 0, 0, t + 600_000);
    feed(&mut w, 1, 0, t);
    for p in &mut w.partitions {
        p.eof = true;
    }
    // librdkafka reports the cut: neither end is known any more, so neither partition may
    // idle; both idle would move the capability to partition 0's watermark, past the backlog
    // partition 1 may be accumulating at the broker meanwhile.
    stats.consumer_errors.fetch_add(1, Ordering::Relaxed);
    w.note_consumer_errors();
    assert!(w
        .partitions
        .iter()
        .all(|p| !p.eof && !p.idle && p.end_unknown));
    for p in &mut w.partitions {
        p.idle = p.eof;
    }
    w.cap = w.target();
    assert_eq!(w.cap, (t - 60_000) as Time);
    // Partition 1's backlog arrives once the broker is back: on time, not too late.
    feed(&mut w, 1, 1, t + 1_000);
    assert!(w.rejected.is_empty(), "refused: {:?}", w.rejected.len());
    // Errors already seen change nothing; an end-of-partition event makes an end known again.
    w.partitions[0].eof = true;
    w.partitions[0].end_unknown = false;
    w.note_consumer_errors();
    assert!(w.partitions[0].eof);
}

#[test]
fn idle_partitions_stop_holding_the_capability() {
    let stats = Arc::new(KafkaStats::default());
    let mut w = bare_worker(&[0, 2], 0, &stats);
    let t = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
    // Nothing read yet: held at the start.
    assert_eq!(w.target(), 0);
    feed(&mut w, 0, 0, t);
    assert_eq!(w.target(), 0, "partition 2 may still bring older readings");
    w.partitions[1].idle = true;
    assert_eq!(w.target(), (t - 60_000) as Time);
    // All idle: the largest watermark of this and the other workers.
    w.partitions[0].idle = true;
    assert_eq!(w.target(), (t - 60_000) as Time);
    stats.publish(1, t + 10_000);
    stats.publish(0, 5);
    assert_eq!(w.target(), (t + 10_000) as Time);
    // A worker without partitions follows the others.
    let lonely = bare_worker(&[], 2, &stats);
    assert_eq!(lonely.target(), (t + 10_000) as Time);
    assert_eq!(stats.watermark(), 5);
    assert_eq!(stats.worker_watermarks(), vec![(0, 5), (1, t + 10_000)]);
}

#[test]
fn an_unwritable_dead_letter_topic_stops_without_committing_and_a_restart_delivers() {
    let Some(brokers) =
        broker("an_unwritable_dead_letter_topic_stops_without_committing_and_a_restart_delivers")
    else {
        return;
    };
    let (topic, dead, _cleanup) = scratch_topics(&brokers, 1);

    let start = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
    let generator = Generator::new(GeneratorConfig::default());
    let mut producer = ReadingProducer::new(&brokers, &topic).unwrap();
    for s in 0..60 {
        assert!(producer.send(&generator.reading(1, start + s * 1000, 1)));
    }
    // Two refusals, one of them larger than a dead letter keeps.
    let huge = vec![b'x'; DEAD_LETTER_RECORD_BYTES + 1000];
    assert!(producer.send_raw(b"household-1", b"not json either"));
    assert!(producer.send_raw(b"household-1", &huge));
    producer.flush(Duration::from_secs(30)).unwrap();

    // First run: the dead-letter topic cannot be written (its name is invalid).
    let group = unique("group");
    let mut config = test_config(&brokers, &topic, &group);
    config.dead_letter_topic = Some("not a valid topic name!".to_owned());
    config
        .properties
        .push(("message.timeout.ms".to_owned(), "3000".to_owned()));
    let started = Instant::now();
    let first = run(&config, 1);
    assert_eq!(first.readings.len(), 60, "valid readings still flow");
    assert_eq!(first.rejected.len(), 2, "refusals still on the stream");
    assert_eq!(first.letters.letters.load(Ordering::Relaxed), 0);
    assert!(first.letters.letter_failures.load(Ordering::Relaxed) >= 1);
    // Not a silent stall: the run stops with an error naming the topic.
    assert!(
        first
            .errors
            .iter()
            .any(|e| e.contains("not a valid topic name!")),
        "{:?}",
        first.errors
    );
    assert!(first.stats.hold_commits.load(Ordering::SeqCst));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped within the deadline"
    );
    let committed = committed(&brokers, &group, &topic, 1);
    let offset = committed.find_partition(&topic, 0).map(|e| e.offset());
    assert!(
        matches!(offset, Some(Offset::Invalid))
            || matches!(offset, Some(Offset::Offset(o)) if o <= 60),
        "nothing committed past an undelivered refusal: {offset:?}"
    );

    // Restarted in the same group with a working dead-letter topic: everything is read
    // again and both refusals are delivered, the large one cut to its first bytes.
    config.dead_letter_topic = Some(dead.clone());
    let second = run(&config, 1);
    assert_eq!(second.readings.len(), 60);
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(second.letters.letters.load(Ordering::Relaxed), 2);
    assert_eq!(second.letters.pending.load(Ordering::Relaxed), 0);
    assert!(second.stats.committed_offsets.load(Ordering::Relaxed) >= 1);
    let letters = read_all(&brokers, &dead, 2);
    assert_eq!(letters.len(), 2);
    let large: Vec<serde_json::Value> = letters
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .filter(|v: &serde_json::Value| v["record_bytes"].is_u64())
        .collect();
    assert_eq!(large.len(), 1);
    assert_eq!(large[0]["record_bytes"], huge.len());
    assert_eq!(
        large[0]["record"].as_str().map(str::len),
        Some(DEAD_LETTER_RECORD_BYTES)
    );
    assert_eq!(large[0]["offset"], 61);
}

#[test]
fn commits_keep_every_open_day_readable() {
    let stats = Arc::new(KafkaStats::default());
    let mut w = bare_worker(&[1], 1, &stats);
    let day2 = naive_to_ms(2024, 3, 11, 0, 0, 0).unwrap();
    for (offset, ts) in [(7, day2 - 30_000), (8, day2 - 10_000), (9, day2 + 5_000)] {
        feed(&mut w, 1, offset, ts);
    }
    w.handle(1, 10, None, Some(b"junk"), day2);
    // Nothing final yet: read again from the first reading of the first open day.
    w.cap = (day2 - 20_000) as Time;
    let floor1 = Granularity::Day.window_start(day2 - 1);
    assert_eq!(w.plan_commit(false), (floor1, vec![(0, 1, 7, 11)]));
    w.partitions[0].committed = Some((7, floor1));
    assert_eq!(w.plan_commit(false), (floor1, vec![]));
    assert_eq!(w.plan_commit(true), (floor1, vec![(0, 1, 7, 11)]));
    // 10 March is final: from the first reading of 11 March, which becomes the floor.
    w.cap = (day2 + 1_000) as Time;
    assert_eq!(w.plan_commit(false), (day2, vec![(0, 1, 9, 11)]));
    assert_eq!(w.partitions[0].days.len(), 1);
    // Everything final: from the next offset.
    w.cap = (day2 + DAY_MS) as Time;
    assert_eq!(w.plan_commit(false), (day2 + DAY_MS, vec![(0, 1, 11, 11)]));
    // A refusal whose dead letter is not durable yet (its time is not behind the frontier)
    // holds the commit at its offset.
    w.handle(1, 11, None, Some(b"junk again"), day2);
    w.handle(1, 12, None, Some(b"more junk"), day2);
    assert_eq!(w.partitions[0].refused.front(), Some(&(w.cap, 11)));
    w.stats
        .commit_limit
        .store(w.cap as i64, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(w.plan_commit(false), (day2 + DAY_MS, vec![(0, 1, 11, 13)]));
    assert_eq!(parse_floor("wattflow:floor=-5"), Some(-5));
    assert_eq!(parse_floor("other"), None);
    assert_eq!(parse_metadata(&metadata(7, 42)), Some((7, Some(42))));
    assert_eq!(parse_metadata("wattflow:floor=9"), Some((9, None)));
}

#[test]
fn unreachable_brokers_fail_fast_and_clearly() {
    // No broker needed: nothing listens on port 1.
    let config = Arc::new(KafkaSourceConfig::new(
        "127.0.0.1:1",
        "readings",
        DEFAULT_GROUP_ID,
    ));
    let stats = Arc::new(KafkaStats::default());
    let started = Instant::now();
    let result = open_worker(&config, &stats, ProbeHandle::new(), 0, 1);
    assert!(matches!(result, Err(KafkaError::Unreachable { .. })));
    assert!(started.elapsed() < METADATA_TIMEOUT + Duration::from_secs(5));
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("127.0.0.1:1"), "{message}");
}

#[test]
fn missing_topic_is_a_clear_error() {
    let Some(brokers) = broker("missing_topic_is_a_clear_error") else {
        return;
    };
    let config = Arc::new(KafkaSourceConfig::new(
        brokers,
        unique("no-such-topic"),
        "g",
    ));
    let stats = Arc::new(KafkaStats::default());
    let result = open_worker(&config, &stats, ProbeHandle::new(), 0, 1);
    assert!(
        matches!(result, Err(KafkaError::MissingTopic { .. })),
        "{:?}",
        result.err()
    );
}

#[test]
fn readings_arrive_once_refusals_are_dead_lettered_and_offsets_committed() {
    let Some(brokers) =
        broker("readings_arrive_once_refusals_are_dead_lettered_and_offsets_committed")
    else {
        return;
    };
    let (topic, dead, _cleanup) = scratch_topics(&brokers, 3);

    // Three households, one reading a second across midnight.
    let day2 = naive_to_ms(2024, 3, 11, 0, 0, 0).unwrap();
    let start = day2 - 5 * 60_000;
    let generator = Generator::new(GeneratorConfig::default());
    let mut expected = Vec::new();
    for s in 0..600 {
        for h in 1..=3 {
            expected.push(generator.reading(h, start + s * 1000, 1));
        }
    }
    let mut producer = ReadingProducer::new(&brokers, &topic).unwrap();
    for r in &expected {
        assert!(producer.send(r));
    }
    // Five bad messages, after the good ones.
    let mut no_voltage: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&crate::format::json::render_message(&expected[0])).unwrap();
    no_voltage.remove("voltage");
    let mut absurd = expected[1];
    absurd.values[crate::model::Measure::Voltage.index()] = 9_000_000;
    let mut future = expected[2];
    future.ts = wall_clock_ms() + DAY_MS;
    let mut late = expected[0];
    late.ts = start - 12 * 3_600_000;
    let absurd = crate::format::json::render_message(&absurd);
    let future = crate::format::json::render_message(&future);
    let late = crate::format::json::render_message(&late);
    let no_voltage = serde_json::Value::Object(no_voltage).to_string();
    let bad: [(&str, &str); 5] = [
        ("household-1", "this is not json"),
        ("household-1", &no_voltage),
        ("household-2", &absurd),
        ("household-3", &future),
        ("household-1", &late),
    ];
    for (key, payload) in bad {
        assert!(producer.send_raw(key.as_bytes(), payload.as_bytes()));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.counts().delivered.load(Ordering::Relaxed), 1805);

    // First run, two workers over three partitions.
    let group = unique("group");
    let config = test_config(&brokers, &topic, &group);
    let first = run(&config, 2);
    let got: Vec<(MeterId, i64)> = first
        .readings
        .iter()
        .map(|(r, _, _)| (r.meter, r.ts))
        .collect();
    let distinct: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(got.len(), expected.len(), "every reading exactly once");
    assert_eq!(
        distinct,
        expected
            .iter()
            .map(|r| (r.meter, r.ts))
            .collect::<BTreeSet<_>>()
    );
    for (r, t, d) in &first.readings {
        assert_eq!(*d, 1);
        assert!(*t as i64 <= r.ts, "emitted at {t}, after its ts {}", r.ts);
        let want = generator.reading(r.meter.as_str()[10..].parse().unwrap(), r.ts, r.interval_s);
        assert_eq!(r.values, want.values);
    }
    let stats = &first.stats;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 1805);
    assert_eq!(stats.readings.load(Ordering::Relaxed), 1800);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 5);
    assert_eq!(first.letters.letters.load(Ordering::Relaxed), 5);
    let mut kinds: Vec<&str> = first
        .rejected
        .iter()
        .map(|j| match &j.reason {
            RejectReason::Undecodable(_) => "undecodable",
            RejectReason::Absurd { .. } => "absurd",
            RejectReason::FromTheFuture { .. } => "future",
            RejectReason::TooLate { .. } => "late",
            _ => "other",
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["absurd", "future", "late", "undecodable", "undecodable"]
    );

    // The dead-letter topic holds the same five, with reasons and positions.
    let letters = read_all(&brokers, &dead, 5);
    assert_eq!(letters.len(), 5);
    for letter in &letters {
        let v: serde_json::Value = serde_json::from_slice(letter).unwrap();
        assert_eq!(v["topic"], topic.as_str());
        assert!(v["reason"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(v["partition"].as_i64().is_some() && v["offset"].as_i64().is_some());
        assert!(v["record"].as_str().is_some());
    }
    assert!(letters
        .iter()
        .any(|l| String::from_utf8_lossy(l).contains("this is not json")));

    // Committed: per partition, the first offset of the day still open (11 March), with
    // its start as the restart floor.
    let mut first_open: BTreeMap<i32, i64> = BTreeMap::new();
    for (r, _, _) in &first.readings {
        if r.ts >= day2 {
            let e = first_open
                .entry(r.origin.kafka_partition().unwrap())
                .or_insert(i64::MAX);
            *e = (*e).min(r.origin.position as i64);
        }
    }
    let committed = committed(&brokers, &group, &topic, 3);
    for (&p, &offset) in &first_open {
        let e = committed.find_partition(&topic, p).unwrap();
        assert_eq!(e.offset(), Offset::Offset(offset), "partition {p}");
        assert_eq!(parse_floor(e.metadata()), Some(day2), "partition {p}");
    }
    assert!(first.stats.committed_offsets.load(Ordering::Relaxed) >= first_open.len() as u64);

    // A restart in the same group reads again exactly the readings of the open day.
    let second = run(&config, 1);
    let again: BTreeSet<(MeterId, i64)> = second
        .readings
        .iter()
        .map(|(r, _, _)| (r.meter, r.ts))
        .collect();
    assert_eq!(second.readings.len(), again.len());
    assert_eq!(
        again,
        expected
            .iter()
            .filter(|r| r.ts >= day2)
            .map(|r| (r.meter, r.ts))
            .collect::<BTreeSet<_>>()
    );
    // The four refusals read again are refused again (their letters are idempotent copies);
    // the late reading, below the restart floor and read before, is skipped as durable.
    assert_eq!(second.rejected.len(), 4, "{:?}", second.rejected);
    assert!(second
        .rejected
        .iter()
        .all(|r| !matches!(r.reason, RejectReason::TooLate { .. })));
    assert_eq!(second.stats.already_durable.load(Ordering::Relaxed), 1);
}

#[test]
fn simulator_live_and_from_file_reach_the_source() {
    let Some(brokers) = broker("simulator_live_and_from_file_reach_the_source") else {
        return;
    };
    // Live: three households for about two seconds.
    let live_topic = unique("wattflow-sim-live");
    let file_topic = unique("wattflow-sim-file");
    let _cleanup = Topics {
        brokers: brokers.clone(),
        names: vec![live_topic.clone(), file_topic.clone()],
    };
    let stop = AtomicBool::new(false);
    let summary = simulate(
        &SimulatorConfig {
            households: 3,
            duration: Some(Duration::from_millis(2_500)),
            partitions: 2,
            ..SimulatorConfig::new(&brokers, &live_topic)
        },
        &stop,
    )
    .unwrap();
    assert!(
        summary.sent >= 6 && summary.sent.is_multiple_of(3),
        "{summary:?}"
    );
    assert_eq!(summary.produced, summary.sent);
    assert_eq!(summary.failed, 0);
    // No exit on idleness: the stop flag ends it, after everything was read.
    let stop_later = Arc::new(AtomicBool::new(false));
    let raise = Arc::clone(&stop_later);
    let raiser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        raise.store(true, Ordering::Relaxed);
    });
    let group = unique("g");
    let config = KafkaSourceConfig {
        exit_when_idle: None,
        ..test_config(&brokers, &live_topic, &group)
    };
    let live = run_until(&config, 2, stop_later);
    raiser.join().unwrap();
    assert_eq!(live.readings.len() as u64, summary.sent);
    assert!(live.rejected.is_empty(), "{:?}", live.rejected);
    // Its last commit went through.
    assert!(live.stats.committed_offsets.load(Ordering::Relaxed) >= 1);

    // From a file: one synthetic day of UCI minutes, as fast as possible.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.txt");
    let written = Generator::new(GeneratorConfig {
        days: 1,
        ..GeneratorConfig::default()
    })
    .write_uci(std::fs::File::create(&path).unwrap())
    .unwrap();
    let summary = simulate(
        &SimulatorConfig {
            from_file: Some(path),
            ..SimulatorConfig::new(&brokers, &file_topic)
        },
        &stop,
    )
    .unwrap();
    assert_eq!(summary.missing, written.missing);
    assert_eq!(summary.sent, written.rows - written.missing);
    assert_eq!(summary.produced, summary.sent);
    let replayed = run(&test_config(&brokers, &file_topic, &unique("g")), 2);
    assert_eq!(replayed.readings.len() as u64, summary.sent);
    assert!(replayed.readings.iter().all(|(r, _, _)| r.interval_s == 60));
    assert!(replayed.rejected.is_empty(), "{:?}", replayed.rejected);
}
