//! The output disk full while the Parquet views are written: a clear error, no partial file
//! visible, and a rerun after space is freed that completes exactly; for a replay, and for a run
//! that reads a Kafka topic, where the rerun resumes from the committed offsets, so nothing
//! the views do not hold may have been committed.
//!
//! The test mounts a small tmpfs (it needs root, as CI has; without it the test fails under
//! `CI=true` and is skipped otherwise) and fills most of it with a filler file.

mod common;

use std::path::Path;
use std::process::Command;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{committed, env, kafka_config, publish_file, unique, Env, SERVERS};
use common::{assert_same_parquet_files, data_file, read_view, snapshot};
use wattflow_pipelines::{Pipeline, Replay, RunSummary};

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir));
        }
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "cannot mount a tmpfs at {} (CI=true: not skipping)",
            dir.display()
        );
        eprintln!("cannot mount a tmpfs (not root?): skipping");
        None
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Every Parquet file under `dir` reads to its end, every JSON file parses, and no temporary
/// file is left.
fn assert_no_partial_files(dir: &Path) {
    for (name, bytes) in snapshot(dir) {
        assert!(
            !name.contains(".tmp"),
            "temporary file left visible: {name}"
        );
        if name.ends_with(".parquet") {
            let file = std::fs::File::open(dir.join(&name)).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap_or_else(|e| panic!("{name} is not a complete Parquet file: {e}"))
                    .build()
                    .unwrap();
            for batch in reader {
                batch.unwrap_or_else(|e| panic!("{name} does not read to its end: {e}"));
            }
        }
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name} is not complete JSON: {e}"));
        }
    }
}

#[test]
fn a_full_disk_fails_clearly_leaves_no_partial_file_and_a_rerun_after_freeing_space_is_exact() {
    let Some(input) = data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    Replay::new(&reference).input(&input).run().unwrap();

    let mnt = dir.path().join("small-disk");
    let Some(_fs) = Tmpfs::mount(&mnt, "4m") else {
        return;
    };
    // Leave about 600 KiB free: less than the views need (about 1.6 MB).
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 3500 * 1024]).unwrap();
    let out = mnt.join("views");
    let err = Replay::new(&out)
        .input(&input)
        .run()
        .expect_err("the views do not fit");
    let message = err.to_string();
    eprintln!("replay on a full disk: {message}");
    assert!(
        message.contains("No space left") || message.contains("space"),
        "the error says the disk is full: {message}"
    );
    assert_no_partial_files(&out);

    std::fs::remove_file(&filler).unwrap();
    let summary = Replay::new(&out)
        .input(&input)
        .run()
        .expect("rerun after freeing space");
    assert!(summary.readings > 0);
    assert_no_partial_files(&out);
    for g in ["minute", "hour", "day"] {
        let (got, want) = (read_view(&out, g), read_view(&reference, g));
        assert!(!want.is_empty());
        assert_eq!(got.len(), want.len(), "{g}: rows after the rerun");
        assert!(
            got == want,
            "{g}: the rerun's view equals an undisturbed run's"
        );
    }
}

/// The topic `topic`, from the offsets of `group`, into Parquet views under `out`; the run
/// ends once the topic has been idle for `idle`.
fn topic_to_parquet(
    env: &Env,
    topic: &str,
    group: &str,
    out: &Path,
    idle: Duration,
) -> Result<RunSummary, wattflow_pipelines::PipelineError> {
    let mut kafka = kafka_config(env, topic);
    kafka.group_id = group.to_owned();
    kafka.exit_when_idle = Some(idle);
    Pipeline::new()
        .kafka(kafka)
        .parquet(out)
        .workers(2)
        .run(Arc::new(AtomicBool::new(false)))
}

#[test]
fn a_full_disk_stops_a_topic_run_clearly_commits_nothing_the_views_lack_and_a_rerun_is_exact() {
    let Some(env) = env() else { return };
    let Some(input) = data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let topic = unique("diskfull");
    let produced = publish_file(&env, &topic, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let quick = Duration::from_secs(4);
    topic_to_parquet(
        &env,
        &topic,
        &format!("{topic}-reference"),
        &reference,
        quick,
    )
    .expect("an undisturbed run");

    let mnt = dir.path().join("small-disk");
    let Some(_fs) = Tmpfs::mount(&mnt, "4m") else {
        return;
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 3500 * 1024]).unwrap();
    let out = mnt.join("views");
    let group = format!("{topic}-group");
    // The run would only end by itself after 90 s of an idle topic: a file that cannot be
    // written must stop it at once, not leave it running with its commits stalled.
    let began = Instant::now();
    let err = topic_to_parquet(&env, &topic, &group, &out, Duration::from_secs(90))
        .expect_err("the views do not fit");
    let took = began.elapsed();
    let message = err.to_string();
    eprintln!("topic run on a full disk, stopped after {took:?}: {message}");
    assert!(
        took < Duration::from_secs(45),
        "a failed batch view file must stop the run at once, not after {took:?}"
    );
    assert!(
        message.contains("No space left"),
        "the error says the disk is full: {message}"
    );
    assert_no_partial_files(&out);
    let after_failure = committed(&env.kafka, &topic, &group);
    assert!(
        after_failure < produced as i64,
        "committed {after_failure} of {produced} offsets although the views could not be written"
    );

    std::fs::remove_file(&filler).unwrap();
    let summary =
        topic_to_parquet(&env, &topic, &group, &out, quick).expect("rerun after freeing space");
    let reread = summary.kafka.as_ref().map_or(0, |k| k.readings);
    assert!(reread > 0, "the rerun read again what the views lacked");
    assert_no_partial_files(&out);
    assert_same_parquet_files(&out, &reference);
}
