//! The one graph: history files, then a Kafka topic, through the same operators into both views,
//! against the REAL Kafka and the REAL Cassandra (see `common::servers`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::servers::*;
use wattflow_pipelines::{Pipeline, RunSummary};

/// Publishes a UCI file to a fresh topic of 4 partitions; returns the messages produced.
fn publish(env: &Env, topic: &str, file: &Path) -> u64 {
    publish_file(env, topic, file, 4)
}

/// History `history`, then `topic`, into Parquet under `out` and Cassandra `keyspace`.
fn run(env: &Env, history: &Path, topic: &str, keyspace: &str, out: &Path) -> RunSummary {
    Pipeline::new()
        .input(history)
        .kafka(kafka_config(env, topic))
        .parquet(out)
        .cassandra(cassandra_config(env, keyspace))
        .workers(2)
        .run(Arc::new(AtomicBool::new(false)))
        .expect("one-graph run")
}

/// The batch view under `out` equals `reference` (a pure replay) for every window that ends at
/// or before the view's sealed high-water mark, and holds no other window.
fn assert_batch_equals_replay_to_its_mark(out: &Path, reference: &Path) {
    for g in ["minute", "hour", "day"] {
        let manifest = common::manifest(out, g);
        let mark = manifest["sealed_through_ms"].as_i64().unwrap();
        let len = match g {
            "minute" => 60_000,
            "hour" => 3_600_000,
            _ => 86_400_000,
        };
        let got = common::by_window(common::read_view(out, g));
        let want: BTreeMap<_, _> = common::by_window(common::read_view(reference, g))
            .into_iter()
            .filter(|((_, start), _)| start + len <= mark)
            .collect();
        assert!(!want.is_empty(), "{g}: nothing sealed");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{g}: the batch view's windows differ from the replay's up to {mark}"
        );
        for (key, w) in &want {
            let r = &got[key];
            assert_eq!(r.samples, w.samples, "{g} {key:?}");
            assert_eq!(r.dec, w.dec, "{g} {key:?}");
            assert_eq!(r.avg, w.avg, "{g} {key:?}");
            assert_eq!(r.active_energy_wh, w.active_energy_wh, "{g} {key:?}");
            assert_eq!(r.power_factor_avg, w.power_factor_avg, "{g} {key:?}");
        }
    }
}

#[test]
fn history_then_a_topic_starting_at_the_switch_equals_a_replay_of_all_thirty_days() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = common::servers::SERVERS
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let split = common::split_thirty_days(&file);
    let topic = unique("handover");
    let keyspace = unique("wf_handover");
    let produced = publish(&env, &topic, &split.tail);
    assert_eq!(produced, split.tail_readings);

    let out = tempfile::tempdir().unwrap();
    let summary = run(&env, &split.head, &topic, &keyspace, out.path());
    let history = summary.history.as_ref().unwrap();
    let kafka = summary.kafka.as_ref().unwrap();
    assert_eq!(history.readings, split.head_readings, "{summary:?}");
    assert_eq!(kafka.readings, split.tail_readings, "no gap: {summary:?}");
    assert_eq!(kafka.covered_by_history, 0, "{summary:?}");
    assert_eq!(kafka.rejected + kafka.duplicates, 0, "{summary:?}");

    let reference = parquet_views(&file);
    assert_batch_equals_replay_to_its_mark(out.path(), reference.path());
    assert_speed_equals_batch(&env, &keyspace, reference.path(), "household-1");
}

#[test]
fn a_topic_that_also_holds_the_history_counts_every_reading_once() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = common::servers::SERVERS
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let split = common::split_thirty_days(&file);
    let topic = unique("overlap");
    let keyspace = unique("wf_overlap");
    let produced = publish(&env, &topic, &file);
    assert_eq!(produced, split.head_readings + split.tail_readings);

    let out = tempfile::tempdir().unwrap();
    let summary = run(&env, &split.head, &topic, &keyspace, out.path());
    let kafka = summary.kafka.as_ref().unwrap();
    assert_eq!(
        kafka.covered_by_history, split.head_readings,
        "the first 15 days are covered by history: {summary:?}"
    );
    assert_eq!(kafka.readings, split.tail_readings, "{summary:?}");
    assert_eq!(kafka.rejected + kafka.duplicates, 0, "{summary:?}");

    let reference = parquet_views(&file);
    assert_batch_equals_replay_to_its_mark(out.path(), reference.path());
    assert_speed_equals_batch(&env, &keyspace, reference.path(), "household-1");
}

/// The letters of a dead-letter topic (one partition), as JSON.
fn dead_letters(env: &Env, topic: &str, want: usize) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .set("group.id", unique("dlq-reader"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(300)) {
            out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    // Anything more would be a letter too many.
    if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_secs(2)) {
        out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
    }
    out
}

#[test]
fn late_duplicate_covered_and_future_readings_are_handled_in_the_live_phase() {
    use wattflow::model::{Granularity, Reading};
    use wattflow::simulate::{ensure_topic, ReadingProducer};
    let Some(env) = env() else { return };
    let _shared = common::servers::SERVERS
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let day = wattflow::time::naive_to_ms(2024, 3, 1, 0, 0, 0).unwrap();
    let at = |h: i64, m: i64, s: i64| day + ((h * 60 + m) * 60 + s) * 1000;
    let values = |i: i64| {
        [
            1_000 + (i * 37 % 500) as i32,
            100,
            230_000 + i as i32,
            4_500,
            0,
            1_000,
            2_000,
        ]
    };
    // History: 09:00-11:59, one reading a minute, so the switch is at 12:00.
    let history_file = dir.path().join("history.txt");
    let mut text = String::from("Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3\n");
    let mut history = Vec::new();
    for i in 0..180 {
        let r = reading("household-1", at(9, 0, 0) + i * 60_000, 60, values(i));
        let t = r.ts.rem_euclid(86_400_000) / 1000;
        let v: Vec<String> = r
            .values
            .iter()
            .map(|&x| format!("{}.{:03}", x / 1000, x % 1000))
            .collect();
        text.push_str(&format!(
            "1/3/2024;{:02}:{:02}:{:02};{}\n",
            t / 3600,
            t / 60 % 60,
            t % 60,
            v.join(";")
        ));
        history.push(r);
    }
    std::fs::write(&history_file, text).unwrap();

    let topic = unique("cases");
    let keyspace = unique("wf_cases");
    ensure_topic(&env.kafka, &topic, 1).unwrap();
    ensure_topic(&env.kafka, &format!("{topic}.rejected"), 1).unwrap();
    let mut producer = ReadingProducer::new(&env.kafka, &topic).unwrap();
    let live: Vec<Reading> = (0..30)
        .map(|i| reading("household-1", at(12, i, 0), 60, values(200 + i)))
        .collect();
    for r in &live {
        assert!(producer.send(r));
    }
    // Late within the lateness (10 min behind 12:29): corrects its window.
    let late = reading("household-1", at(12, 25, 30), 60, values(999));
    assert!(producer.send(&late));
    // Beyond it (19 min behind): dead-lettered as too late.
    assert!(producer.send(&reading("household-1", at(12, 10, 30), 60, values(5))));
    // The same reading twice: counted once, the copy dead-lettered.
    assert!(producer.send(&live[20]));
    // A reading history already holds: covered, neither counted again nor a dead letter.
    assert!(producer.send(&history[150]));
    // From the future.
    let future = wattflow::time::now_unix_ms() + 2 * 86_400_000;
    assert!(producer.send(&reading("household-1", future, 60, values(1))));
    producer.flush(std::time::Duration::from_secs(30)).unwrap();

    let out = dir.path().join("views");
    let summary = run(&env, &history_file, &topic, &keyspace, &out);
    let k = summary.kafka.clone().unwrap();
    assert_eq!(k.covered_by_history, 1, "{summary:?}");
    assert_eq!(k.readings, 30 + 1 + 1, "{summary:?}"); // the copy reaches the window operator
    assert_eq!(k.duplicates, 1, "{summary:?}");
    assert_eq!(k.rejected, 2, "too late and from the future: {summary:?}");

    let letters = dead_letters(&env, &format!("{topic}.rejected"), 3);
    let mut kinds: Vec<&str> = letters
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["duplicate", "from_the_future", "too_late"],
        "{letters:?}"
    );
    for l in &letters {
        assert!(l["reason"].as_str().unwrap().len() > 5);
        assert_eq!(l["topic"], topic.as_str());
    }

    let mut counted = history.clone();
    counted.extend(live.iter().copied());
    counted.push(late);
    let v = views(&env, &keyspace);
    for g in Granularity::ALL {
        let want = expected(&counted, g);
        let got = cassandra_rows(&v, g, &["household-1".into()], day, day + 86_400_000);
        assert_rows_match(g, &got, &want);
        // The batch view holds the same windows with the same values.
        let batch = common::by_window(common::read_view(&out, g.name()));
        assert_eq!(batch.len(), want.len(), "{g}");
        for ((meter, start), e) in &want {
            let row = &batch[&(meter.clone(), *start)];
            assert_eq!(row.samples, e.samples, "{g} {start}");
            for i in 0..7 {
                assert_eq!(
                    row.dec[i],
                    [e.sum[i] as i128, e.min[i] as i128, e.max[i] as i128]
                );
            }
        }
    }
    let minute = expected(&counted, Granularity::Minute);
    assert_eq!(
        minute[&("household-1".to_string(), at(12, 25, 0))].samples,
        2
    );
    drop_keyspace(&v, &keyspace);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_processes_of_one_worker_write_the_views_of_one_process() {
    use std::process::{Command, Stdio};
    use wattflow::model::Granularity;
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = common::servers::SERVERS
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let split = common::split_thirty_days(&file);
    let topic = unique("cluster");
    assert_eq!(publish(&env, &topic, &split.tail), split.tail_readings);
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let command = |out: &Path, keyspace: &str, extra: &[String]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wattflow"));
        cmd.arg("run")
            .arg("--input")
            .arg(&split.head)
            .args(["--brokers", &env.kafka, "--topic", &topic])
            .args(["--group", &format!("{keyspace}-group")])
            .args(["--cassandra", &env.cassandra, "--keyspace", keyspace])
            .arg("--out")
            .arg(out)
            .args(["--workers", "1", "--exit-when-idle", "3s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (ks_one, ks_two) = (unique("wf_one"), unique("wf_two"));
    let single = command(&one, &ks_one, &[]).output().unwrap();
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    let children: Vec<_> = (0..2)
        .map(|i| {
            let extra = [
                "--processes".to_string(),
                "2".to_string(),
                "--process".to_string(),
                i.to_string(),
                "--hostfile".to_string(),
                hostfile.display().to_string(),
            ];
            command(&two, &ks_two, &extra).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    common::assert_same_parquet_files(&two, &one);
    for g in ["minute", "hour", "day"] {
        let (a, b) = (common::manifest(&two, g), common::manifest(&one, g));
        assert_eq!(
            a["rows"], b["rows"],
            "one manifest per granularity, with every file"
        );
        assert_eq!(a["partitions"], b["partitions"], "{g}");
    }
    let (v1, v2) = (views(&env, &ks_one), views(&env, &ks_two));
    let day = wattflow::time::naive_to_ms(2006, 12, 1, 0, 0, 0).unwrap();
    for g in Granularity::ALL {
        let a = cassandra_rows(&v1, g, &["household-1".into()], day, day + 60 * 86_400_000);
        let b = cassandra_rows(&v2, g, &["household-1".into()], day, day + 60 * 86_400_000);
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len(), "{g}");
        for (k, r) in &a {
            assert_eq!(r.samples, b[k].samples, "{g} {k:?}");
            assert_eq!(r.values, b[k].values, "{g} {k:?}");
        }
    }
    drop_keyspace(&v1, &ks_one);
    drop_keyspace(&v2, &ks_two);
}

#[test]
fn a_process_whose_partitions_are_all_idle_does_not_hold_the_frontier_back() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::process::{Command, Stdio};
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = common::servers::SERVERS
        .read()
        .unwrap_or_else(|e| e.into_inner());
    // Every message in partition 0: process 1 (worker 1, partition 1) reads nothing at all.
    let topic = unique("idle");
    wattflow::simulate::ensure_topic(&env.kafka, &topic, 2).unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .create()
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let format = wattflow::format::text::TextFormat::from_header(
        text.lines().next().unwrap().as_bytes(),
        wattflow::model::MeterId::new("household-1").unwrap(),
        60,
        wattflow::model::Limits::default(),
    )
    .unwrap();
    let mut dates = wattflow::format::text::DateCache::default();
    for (i, line) in text.lines().skip(1).enumerate() {
        let origin = wattflow::model::Origin {
            source: 0,
            position: i as u64,
        };
        if let wattflow::format::text::Line::Reading(r) =
            format.parse_line(line.as_bytes(), origin, &mut dates)
        {
            let payload = wattflow::format::json::render_message(&r);
            let record = || {
                BaseRecord::<(), str>::to(&topic)
                    .partition(0)
                    .payload(&payload)
            };
            while producer.send(record()).is_err() {
                producer.poll(std::time::Duration::from_millis(10));
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let out = dir.path().join("views");
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_wattflow"))
                .args(["run", "--brokers", &env.kafka, "--topic", &topic])
                .args(["--group", &format!("{topic}-group")])
                .arg("--out")
                .arg(&out)
                .args(["--workers", "1", "--exit-when-idle", "25s"])
                .args(["--processes", "2", "--process", &i.to_string()])
                .arg("--hostfile")
                .arg(&hostfile)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // December 2006 is sealed (the frontier passed 1 January) long before the processes
    // finish: the idle process follows the other's watermark.
    let december = out.join("minute/month=2006-12/part-0.parquet");
    let mut sealed_after = None;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        if december.is_file() {
            sealed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut exited_after = None;
    for mut child in children {
        assert!(child.wait().unwrap().success());
        exited_after.get_or_insert(started.elapsed());
    }
    let sealed_after = sealed_after.expect("December was never written");
    let exited_after = exited_after.unwrap();
    assert!(
        sealed_after + std::time::Duration::from_secs(15) < exited_after,
        "December written after {sealed_after:?}, the processes ended after {exited_after:?}: \
         the frontier waited for the idle process"
    );
    let _ = wattflow::simulate::delete_topics(&env.kafka, &[&topic]);
}
