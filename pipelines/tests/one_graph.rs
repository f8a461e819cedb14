//! The one graph: history files, then a Kafka topic, through the same operators into both views,
//! against the REAL Kafka and the REAL Cassandra (see `common::servers`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::servers::*;
use wattflow::simulate::{simulate, SimulatorConfig};
use wattflow_pipelines::{Pipeline, RunSummary};

/// Writes the header and body rows `[from, to)` of the UCI file `src` to `dst`; returns the
/// number of rows with values (not `?`) written.
fn slice(src: &Path, from: usize, to: usize, dst: &Path) -> u64 {
    let mut lines = BufReader::new(std::fs::File::open(src).unwrap()).split(b'\n');
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    let header = lines.next().unwrap().unwrap();
    out.write_all(&header).unwrap();
    out.write_all(b"\n").unwrap();
    let mut valid = 0;
    for line in lines.skip(from).take(to - from) {
        let line = line.unwrap();
        if !line.starts_with(b"?") && !String::from_utf8_lossy(&line).contains(";?;") {
            valid += 1;
        }
        out.write_all(&line).unwrap();
        out.write_all(b"\n").unwrap();
    }
    valid
}

/// Publishes a UCI file to a fresh topic of 4 partitions; returns the messages produced.
fn publish(env: &Env, topic: &str, file: &Path) -> u64 {
    let mut sim = SimulatorConfig::new(&env.kafka, topic);
    sim.from_file = Some(file.to_path_buf());
    sim.partitions = 4;
    let produced = simulate(&sim, &AtomicBool::new(false)).expect("simulate --from-file");
    assert_eq!(produced.failed, 0);
    produced.produced
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

struct Split {
    _dir: tempfile::TempDir,
    head: PathBuf,
    tail: PathBuf,
    head_readings: u64,
    tail_readings: u64,
}

/// Days 1–15 and 16–30 of the 30-day slice as two files.
fn split_thirty_days(file: &Path) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let (head, tail) = (
        dir.path().join("days-01-15.txt"),
        dir.path().join("days-16-30.txt"),
    );
    let head_readings = slice(file, 0, 15 * 1440, &head);
    let tail_readings = slice(file, 15 * 1440, 30 * 1440, &tail);
    Split {
        _dir: dir,
        head,
        tail,
        head_readings,
        tail_readings,
    }
}

#[test]
fn history_then_a_topic_starting_at_the_switch_equals_a_replay_of_all_thirty_days() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = common::servers::SERVERS.read().unwrap();
    let split = split_thirty_days(&file);
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
    let _shared = common::servers::SERVERS.read().unwrap();
    let split = split_thirty_days(&file);
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
