//! Kafka faults against the REAL broker started by `scripts/services.sh up`: the connection to
//! it cut through Toxiproxy, the broker killed with SIGKILL mid-stream, and a dead-letter topic
//! the broker refuses to write. Each test ends with views checked row by row.
//!
//! Both tests take the servers' lock exclusively: one kills the broker, the other changes a
//! topic's limits, and neither may disturb a test of another binary (cargo runs test binaries
//! one after another, so the lock only has to cover this one).

mod common;

use common::servers::*;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::TopicReplication;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use wattflow::format::json::render_message;
use wattflow::model::{Granularity, Reading};
use wattflow::simulate::{simulate, ReadingProducer, SimulatorConfig};
use wattflow_pipelines::toxiproxy::{KAFKA_PROXY, KAFKA_PROXY_NAME};
use wattflow_pipelines::Live;

#[test]
fn kafka_cut_for_30_s_then_the_broker_killed_mid_stream_lose_nothing() {
    let Some((env, proxy, file, _exclusive)) = fault_test(KAFKA_PROXY_NAME) else {
        return;
    };
    let topic = unique("kafkafault");
    let keyspace = unique("wf_kafkafault");
    let group = format!("{topic}-group");
    wattflow::simulate::ensure_topic(&env.kafka, &topic, 2).expect("topic");
    drop(views(&env, &keyspace)); // the schema, before the clock starts

    // The pipeline reaches the broker only through the proxy; it ends once its partitions
    // have been idle for 45 s, longer than the cut, so only the end of the input ends it.
    let mut kafka = kafka_config(&env, &topic);
    kafka.brokers = KAFKA_PROXY.to_owned();
    kafka.exit_when_idle = Some(Duration::from_secs(45));
    if let Ok(debug) = std::env::var("WATTFLOW_TEST_KAFKA_DEBUG") {
        kafka.properties.push(("debug".into(), debug));
    }
    let cassandra = cassandra_config(&env, &keyspace);
    let live = std::thread::spawn(move || {
        Live::new(kafka, cassandra)
            .workers(2)
            .run(Arc::new(AtomicBool::new(false)))
    });

    // The 30 days produced straight to the broker over about 70 s, so readings keep arriving
    // through both faults. The producer is idempotent and retries through the broker's crash.
    let producer = {
        let mut sim = SimulatorConfig::new(&env.kafka, &topic);
        sim.from_file = Some(file.clone());
        sim.partitions = 2;
        sim.speedup = Some(37_000.0);
        std::thread::spawn(move || simulate(&sim, &AtomicBool::new(false)))
    };

    std::thread::sleep(Duration::from_secs(8));
    let before_cut = committed(&env.kafka, &topic, &group);
    proxy.enable(false).expect("cut the proxy");
    std::thread::sleep(Duration::from_secs(30));
    assert!(!live.is_finished(), "the run must wait for the broker");
    proxy.enable(true).expect("restore the proxy");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !producer.is_finished(),
        "the producer must still be running when the broker is killed"
    );
    services(&["crash", "kafka"]);
    std::thread::sleep(Duration::from_secs(3));
    services(&["up", "kafka"]);

    let produced = producer.join().unwrap().expect("produce the 30 days");
    assert_eq!(
        produced.failed, 0,
        "the producer lost messages: {produced:?}"
    );
    // Bounded: a source that never sees its partitions idle again would wait forever.
    let deadline = Instant::now() + Duration::from_secs(150);
    while !live.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the run did not end within 150 s of the end of production: a partition never \
             counted as idle again after the faults?"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let summary = live
        .join()
        .unwrap()
        .expect("the run survives the cut and the crash");
    proxy.reset().expect("toxiproxy reset");

    assert!(
        before_cut < messages_in(&env.kafka, &topic),
        "the cut must come mid-stream"
    );
    assert_eq!(
        summary.messages, produced.produced,
        "every message read exactly once: {summary:?}"
    );
    assert_eq!(summary.rejected, 0, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
    // The last commit is the first offset of the day still open (a restart reads it again),
    // so within the last day's 1,440 minutes of the end.
    let total = messages_in(&env.kafka, &topic);
    let done = committed(&env.kafka, &topic, &group);
    assert!(
        done < total && done >= total - 1_440,
        "committed {done} of {total}: commits must have advanced to the last open day"
    );
    let batch = parquet_views(&file);
    assert_speed_equals_batch(&env, &keyspace, batch.path(), "household-1");
}

/// Runs `future` on a one-thread runtime (the admin client's calls are async).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn admin(env: &Env) -> AdminClient<DefaultClientContext> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .create()
        .expect("admin client")
}

/// Sets `max.message.bytes` of `topic`.
fn set_max_message_bytes(env: &Env, topic: &str, bytes: usize) {
    let value = bytes.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &value);
    let results =
        block_on(admin(env).alter_configs([&change], &AdminOptions::new())).expect("alter configs");
    for r in results {
        r.expect("topic config altered");
    }
}

#[test]
fn a_dead_letter_topic_the_broker_refuses_stops_the_run_loudly_and_a_rerun_delivers_everything() {
    let Some(env) = env() else { return };
    let _exclusive = SERVERS.write().unwrap_or_else(|e| e.into_inner());
    let topic = unique("dlqfault");
    let dead = format!("{topic}.rejected");
    let keyspace = unique("wf_dlqfault");
    let group = format!("{topic}-group");
    // The readings' topic takes a 2 MB message; the dead-letter topic takes nothing over
    // 100 bytes, so the broker refuses every letter for good.
    let topics = [
        NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "4000000"),
        NewTopic::new(&dead, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100"),
    ];
    for r in block_on(admin(&env).create_topics(&topics, &AdminOptions::new())).expect("topics") {
        r.expect("topic created");
    }

    // 300 readings on 6 May, then the bad messages, then 25 minutes of 7 May: far enough past
    // midnight (the allowed lateness is 10 minutes) that 6 May is final and 7 May is open.
    let start = wattflow::time::naive_to_ms(2024, 5, 6, 23, 55, 0).unwrap();
    let good: Vec<Reading> = (0..1_800)
        .map(|s| {
            reading(
                "house-d",
                start + s * 1000,
                1,
                [1_000 + (s as i32 * 13) % 700, 90, 229_500, 4_400, 1, 0, 17],
            )
        })
        .collect();
    // Good readings flow before and after the bad ones; every bad shape is there, with a
    // 2 MB message, raw control characters, invalid UTF-8 and JSON 100,000 deep.
    let bad: Vec<Vec<u8>> = vec![
        {
            let mut v = render_message(&good[0]).into_bytes();
            v.pop();
            v.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(2_000_000)).bytes());
            v
        },
        b"{\"meter\":\"house-d\x01\x1b[31m\",\"ts\":1}\x00\r\n".to_vec(),
        b"{\"meter\":\"\xff\xfe\xc3\x28\"}".to_vec(),
        {
            let mut v = vec![b'{'; 1];
            v.extend(b"\"a\":[".repeat(100_000));
            v
        },
    ];
    let bad_at = 300;
    {
        let mut producer = ReadingProducer::new(&env.kafka, &topic).unwrap();
        for r in &good[..bad_at] {
            assert!(producer.send(r));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        // The 2 MB message needs a producer that may send it.
        let big: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &env.kafka)
            .set("message.max.bytes", "4000000")
            .create()
            .unwrap();
        for payload in &bad {
            big.send(BaseRecord::to(&topic).key("house-d").payload(payload))
                .map_err(|(e, _)| e)
                .expect("queue a bad message");
        }
        big.flush(Duration::from_secs(30))
            .expect("bad messages written");
        for r in &good[bad_at..] {
            assert!(producer.send(r));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    let total = messages_in(&env.kafka, &topic);
    assert_eq!(total, (good.len() + bad.len()) as i64);

    // First run: the first letter is refused for good, so the run stops with an error that
    // names the topic, and nothing is committed past the first bad message.
    let mut kafka = kafka_config(&env, &topic);
    kafka.exit_when_idle = Some(Duration::from_secs(60));
    let began = Instant::now();
    let error = Live::new(kafka.clone(), cassandra_config(&env, &keyspace))
        .workers(2)
        .run(Arc::new(AtomicBool::new(false)))
        .expect_err("an undeliverable dead letter must stop the run");
    let message = format!("{error:#}");
    assert!(
        message.contains(&dead) && message.contains("dead letters cannot be written"),
        "the error must say the dead-letter topic cannot be written: {message}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(50),
        "the run must stop at the refusal, not idle out: {:?}",
        began.elapsed()
    );
    let after_failure = committed(&env.kafka, &topic, &group);
    assert!(
        after_failure <= bad_at as i64,
        "committed {after_failure}: past the undelivered refusal at offset {bad_at}"
    );
    assert_eq!(messages_in(&env.kafka, &dead), 0);

    // The operator fixes the topic; the rerun delivers every letter and every reading.
    set_max_message_bytes(&env, &dead, 1_048_588);
    kafka.exit_when_idle = Some(Duration::from_secs(6));
    let summary = Live::new(kafka, cassandra_config(&env, &keyspace))
        .workers(2)
        .run(Arc::new(AtomicBool::new(false)))
        .expect("the rerun completes");
    assert_eq!(summary.rejected, bad.len() as u64, "{summary:?}");
    assert_eq!(messages_in(&env.kafka, &dead), bad.len() as i64);
    // Commits advanced past the refusals to the first message of the open day (7 May), which
    // a restart reads again.
    assert_eq!(
        committed(&env.kafka, &topic, &group),
        (bad_at + bad.len()) as i64
    );
    let v = views(&env, &keyspace);
    let meters = vec!["house-d".to_string()];
    for g in Granularity::ALL {
        let want = expected(&good, g);
        let got = cassandra_rows(&v, g, &meters, start - 86_400_000, start + 86_400_000);
        assert_rows_match(g, &got, &want);
    }
    drop_keyspace(&v, &keyspace);
}
