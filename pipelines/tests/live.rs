//! The speed layer against the REAL Kafka and the REAL Cassandra started by
//! `scripts/services.sh up` (the test script exports `WATTFLOW_KAFKA` and `WATTFLOW_CASSANDRA`).
//! Without them the tests are skipped with a note, except under `CI=true`, where they fail.
//!
//! Every test uses its own topic and keyspace, so they can run in parallel; the test that
//! restarts the servers takes a lock the others share.

mod common;

use common::servers::*;

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, TopicPartitionList};
use wattflow::format::json::render_message;
use wattflow::model::{Granularity, Reading};
use wattflow::simulate::{ensure_topic, ReadingProducer};
use wattflow::sink::cassandra::read_view;
use wattflow_pipelines::toxiproxy::CASSANDRA_PROXY_NAME;
use wattflow_pipelines::Live;

fn run_live(env: &Env, topic: &str, keyspace: &str) -> wattflow_pipelines::LiveSummary {
    Live::new(kafka_config(env, topic), cassandra_config(env, keyspace))
        .workers(2)
        .run(Arc::new(AtomicBool::new(false)))
        .expect("live run")
}

#[test]
fn known_readings_become_exactly_the_expected_rows() {
    let Some(env) = env() else { return };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("known");
    let keyspace = unique("wf_known");
    ensure_topic(&env.kafka, &topic, 3).expect("topic");
    // Two meters, one reading a second over 2.5 minutes crossing an hour, plus redeliveries.
    let start = wattflow::time::naive_to_ms(2024, 3, 1, 9, 58, 30).unwrap();
    let mut readings = Vec::new();
    for s in 0..150i64 {
        for (m, base) in [("house-a", 1_000), ("house-b", 3_000)] {
            let p = base + (s as i32 * 37) % 900;
            readings.push(reading(
                m,
                start + s * 1000,
                1,
                [p, 120, 231_000 + s as i32, 4_500, 2, 5, 9],
            ));
        }
    }
    let mut producer = ReadingProducer::new(&env.kafka, &topic).unwrap();
    for r in &readings {
        assert!(producer.send(r));
    }
    for r in readings.iter().take(10) {
        assert!(producer.send(r), "redelivered duplicate");
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let summary = run_live(&env, &topic, &keyspace);
    assert_eq!(summary.readings, readings.len() as u64 + 10);
    assert_eq!(summary.duplicates, 10, "{summary:?}");
    assert_eq!(summary.rejected, 0);

    let v = views(&env, &keyspace);
    let meters = vec!["house-a".to_string(), "house-b".to_string()];
    for g in Granularity::ALL {
        let want = expected(&readings, g);
        let got = cassandra_rows(&v, g, &meters, start - 86_400_000, start + 86_400_000);
        assert_rows_match(g, &got, &want);
    }
    drop_keyspace(&v, &keyspace);
}

#[test]
fn bad_messages_are_dead_lettered_with_their_reason() {
    let Some(env) = env() else { return };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("bad");
    let keyspace = unique("wf_bad");
    ensure_topic(&env.kafka, &topic, 1).expect("topic");
    ensure_topic(&env.kafka, &format!("{topic}.rejected"), 1).expect("dlq topic");
    let start = wattflow::time::naive_to_ms(2024, 3, 1, 12, 0, 0).unwrap();
    let good: Vec<Reading> = (0..20)
        .map(|s| {
            reading(
                "house-c",
                start + s * 1000,
                1,
                [1_500, 100, 230_000, 6_600, 0, 0, 20],
            )
        })
        .collect();
    let future = wattflow::time::naive_to_ms(2099, 1, 1, 0, 0, 0).unwrap();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"this is not json".to_vec()),
        // Pathological shapes: raw control characters, invalid UTF-8, JSON nested past any
        // parser's depth, and a message over the source's size limit.
        (
            "control characters",
            b"{\"meter\":\"house-c\x01\x07\x1b[31m\",\"ts\":1709294400000}\r\n\x00".to_vec(),
        ),
        (
            "invalid utf-8",
            b"{\"meter\":\"\xff\xfe\xc3\x28\"}".to_vec(),
        ),
        ("deeply nested", {
            let mut v = vec![b'['; 10_000];
            v.extend(vec![b']'; 10_000]);
            v
        }),
        ("too long", {
            let mut v = render_message(&good[0]).into_bytes();
            v.pop();
            v.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(200_000)).bytes());
            v
        }),
        (
            "missing field",
            br#"{"meter":"house-c","ts":1709294400000,"interval_s":1}"#.to_vec(),
        ),
        (
            "mistyped",
            render_message(&good[0])
                .replace("\"voltage\":230.000", "\"voltage\":\"high\"")
                .into_bytes(),
        ),
        (
            "absurd",
            render_message(&reading(
                "house-c",
                start + 500_000,
                1,
                [9_000_000, 0, 230_000, 1, 0, 0, 0],
            ))
            .into_bytes(),
        ),
        (
            "future",
            render_message(&reading("house-c", future, 1, [1, 0, 230_000, 1, 0, 0, 0]))
                .into_bytes(),
        ),
    ];
    let mut producer = ReadingProducer::new(&env.kafka, &topic).unwrap();
    for (i, r) in good.iter().enumerate() {
        assert!(producer.send(r));
        if let Some((_, payload)) = bad.get(i) {
            assert!(producer.send_raw(b"house-c", payload));
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let summary = run_live(&env, &topic, &keyspace);
    assert_eq!(summary.readings, good.len() as u64, "{summary:?}");
    assert_eq!(summary.rejected, bad.len() as u64, "{summary:?}");

    // The dead-letter topic holds each bad message with a reason.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .set("group.id", unique("dlq-reader"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&format!("{topic}.rejected"), 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < bad.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            dead.push(v);
        }
    }
    assert_eq!(dead.len(), bad.len(), "dead letters: {dead:?}");
    for (what, payload) in &bad {
        let text = String::from_utf8_lossy(payload);
        let letter = dead
            .iter()
            .find(|d| d["record"].as_str() == Some(&*text))
            .unwrap_or_else(|| panic!("{what} not dead-lettered"));
        let reason = letter["reason"].as_str().unwrap().to_lowercase();
        assert!(!reason.is_empty(), "{what}: empty reason");
        let hint = match *what {
            "not json" => "json",
            "missing field" => "global_active_power",
            "mistyped" => "voltage",
            "absurd" => "global_active_power",
            "future" => "future",
            "control characters" | "invalid utf-8" | "deeply nested" => "undecodable",
            "too long" => "longer than the limit",
            _ => unreachable!(),
        };
        assert!(
            reason.contains(hint),
            "{what}: reason {reason:?} should mention {hint}"
        );
    }
    let v = views(&env, &keyspace);
    let rows = cassandra_rows(
        &v,
        Granularity::Minute,
        &["house-c".into()],
        start,
        start + 3_600_000,
    );
    assert_eq!(
        rows.values().map(|r| r.samples).sum::<i64>(),
        good.len() as i64
    );
    drop_keyspace(&v, &keyspace);
}

#[test]
fn thirty_days_through_kafka_equal_the_parquet_views() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("uci30");
    let keyspace = unique("wf_uci30");
    let produced = publish_file(&env, &topic, &file, 4);

    let summary = run_live(&env, &topic, &keyspace);
    assert_eq!(summary.readings, produced, "{summary:?}");
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
}

#[test]
fn the_whole_uci_file_through_kafka_equals_the_parquet_views_of_replay() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("household_power_consumption.txt.gz") else {
        return;
    };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("whole");
    let keyspace = unique("wf_whole");
    let produced = publish_file(&env, &topic, &file, 4);
    assert!(produced > 2_000_000, "{produced} messages");

    let summary = run_live(&env, &topic, &keyspace);
    assert_eq!(summary.readings, produced, "{summary:?}");
    assert_eq!(summary.rejected, 0, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
    wattflow::simulate::delete_topics(&env.kafka, &[&topic]).ok();
}

#[test]
fn a_pipeline_killed_mid_stream_and_restarted_gives_the_same_rows() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("restart");
    let keyspace = unique("wf_restart");
    let published = publish_file(&env, &topic, &file, 2);
    let group = format!("{topic}-group");

    // First run: the CLI, killed without warning once it has written something and
    // committed offsets for it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_wattflow"))
        .args([
            "live",
            "--brokers",
            &env.kafka,
            "--topic",
            &topic,
            "--group",
        ])
        .arg(format!("{topic}-group"))
        .args([
            "--cassandra",
            &env.cassandra,
            "--keyspace",
            &keyspace,
            "--workers",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wattflow live");
    let v = views(&env, &keyspace);
    let deadline = Instant::now() + Duration::from_secs(120);
    let day = wattflow::time::naive_to_ms(2006, 12, 16, 0, 0, 0).unwrap();
    loop {
        let written = read_view(
            &v,
            Granularity::Hour,
            "household-1",
            day,
            day + 40 * 86_400_000,
        )
        .map(|r| r.len())
        .unwrap_or(0);
        if written > 24 && committed(&env.kafka, &topic, &group) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first run wrote nothing in 120 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "wattflow live exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resume_at = committed(&env.kafka, &topic, &group);

    // Second run from the committed offsets, to the end: a resume, not a full re-read.
    let summary = run_live(&env, &topic, &keyspace);
    assert!(
        summary.messages + resume_at as u64 >= published && summary.messages < published,
        "the restart read {} of {published} messages from committed offsets totalling \
         {resume_at}: {summary:?}",
        summary.messages
    );
    assert_eq!(
        summary.rejected, 0,
        "nothing is refused on a restart: {summary:?}"
    );
    let cassandra = summary.run.cassandra.clone().unwrap_or_default();
    assert_eq!(cassandra.write_errors, 0, "{summary:?}");
    // Neither run refused a reading (the killed one could only have said so here).
    assert_eq!(
        messages_in(&env.kafka, &format!("{topic}.rejected")),
        0,
        "dead letters"
    );
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
}

#[test]
fn cassandra_down_for_30_s_pauses_consumption_and_a_kafka_restart_meanwhile_loses_nothing() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _exclusive = SERVERS.write().unwrap_or_else(|e| e.into_inner());
    let topic = unique("outage");
    let keyspace = unique("wf_outage");
    let published = publish_file(&env, &topic, &file, 2);
    drop(views(&env, &keyspace)); // schema first, so the outage hits the writes

    let (kafka, cassandra) = (
        kafka_config(&env, &topic),
        cassandra_config(&env, &keyspace),
    );
    let mut kafka = kafka;
    kafka.exit_when_idle = Some(Duration::from_secs(20));
    // A small memory budget (the 30 days are 43,200 minute rows) and one row in flight at a
    // time: the topic takes far longer to write than the test's first seconds, the outage
    // fills the budget, so consumption must pause, and the Kafka restart below comes while
    // most of the topic is still unread.
    let mut cassandra = cassandra;
    cassandra.max_queued_rows = 2_000;
    cassandra.max_in_flight = 1;
    cassandra.batch_rows = 1;
    let live = std::thread::spawn(move || {
        Live::new(kafka, cassandra)
            .workers(2)
            .run(Arc::new(AtomicBool::new(false)))
    });
    std::thread::sleep(Duration::from_secs(2));
    services(&["down", "cassandra"]);
    std::thread::sleep(Duration::from_secs(30));
    assert!(!live.is_finished(), "the run must wait for Cassandra");
    services(&["restart", "kafka"]);
    services(&["up", "cassandra"]);
    let summary = live.join().unwrap().expect("live run survives the outages");
    let kafka = summary.run.kafka.clone().unwrap_or_default();
    let cassandra = summary.run.cassandra.clone().unwrap_or_default();
    assert!(kafka.pauses > 0, "consumption never paused: {summary:?}");
    assert!(cassandra.retries > 0, "no write was retried: {summary:?}");
    assert_eq!(cassandra.write_errors, 0, "{summary:?}");
    assert_eq!(summary.messages, published, "{summary:?}");
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
}

#[test]
fn cassandra_answering_slowly_and_resetting_connections_loses_nothing() {
    let Some((env, proxy, file, _exclusive)) = fault_test(CASSANDRA_PROXY_NAME) else {
        return;
    };
    let topic = unique("slow");
    let keyspace = unique("wf_slow");
    let published = publish_file(&env, &topic, &file, 2);
    let mut kafka = kafka_config(&env, &topic);
    kafka.exit_when_idle = Some(Duration::from_secs(10));
    let mut cassandra = proxied_cassandra_config(&env, &keyspace);
    cassandra.request_timeout = Duration::from_secs(2);
    cassandra.max_queued_rows = 4_000;
    cassandra.max_in_flight = 2;
    let live = std::thread::spawn(move || {
        Live::new(kafka, cassandra)
            .workers(2)
            .run(Arc::new(AtomicBool::new(false)))
    });
    std::thread::sleep(Duration::from_secs(3));
    // Every answer 500 ms late, then, for 8 s, every connection reset as it speaks (long
    // enough that writes are in flight while it lasts, even on a loaded machine).
    proxy
        .add("slow", "latency", r#"{"latency":500,"jitter":100}"#)
        .expect("latency toxic");
    std::thread::sleep(Duration::from_secs(8));
    proxy
        .add("reset", "reset_peer", r#"{"timeout":0}"#)
        .expect("reset toxic");
    std::thread::sleep(Duration::from_secs(8));
    proxy.remove("reset").expect("remove reset");
    std::thread::sleep(Duration::from_secs(8));
    proxy.remove("slow").expect("remove latency");
    let summary = live
        .join()
        .unwrap()
        .expect("the run survives a slow, resetting Cassandra");
    proxy.reset().expect("toxiproxy reset");
    let cassandra = summary.run.cassandra.clone().unwrap_or_default();
    assert!(cassandra.retries > 0, "no write was retried: {summary:?}");
    assert_eq!(cassandra.write_errors, 0, "{summary:?}");
    assert_eq!(summary.messages, published, "{summary:?}");
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
}
