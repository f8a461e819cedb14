//! Crash recovery: `wattflow run` killed with SIGKILL at seeded moments, in the history phase
//! and in the live phase, then started again with the same command, ends with the views of an
//! uninterrupted run; no partial or temporary file is ever visible.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::servers::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A small seeded generator of kill delays (xorshift), so a failure can be replayed.
struct Seeded(u64);

impl Seeded {
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo).mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

fn wattflow(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wattflow"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Runs `args` and kills it with SIGKILL after `after` (if it is still running); returns
/// whether it was killed.
fn run_and_kill(args: &[&str], after: Duration) -> bool {
    let mut child = wattflow(args).spawn().expect("start wattflow");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL

    // A run that ended just before the kill was not killed (a zombie takes the signal).
    child.wait().unwrap().signal() == Some(9)
}

/// What a reader of the views sees right now: every visible `*.parquet` file must decode
/// whole, and no temporary may look like a data file.
fn assert_only_whole_files_visible(out: &Path) {
    for file in common::parquet_files(out) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", file.display()))
            .build()
            .unwrap();
        for batch in reader {
            batch.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "{}", file.display());
    }
}

/// No temporary file anywhere under `out`.
fn assert_no_debris(out: &Path) {
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                assert!(!name.ends_with(".tmp"), "debris left: {}", p.display());
            }
        }
    }
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn killed_during_the_history_and_restarted_it_ends_with_the_views_of_an_uninterrupted_run() {
    let Some(file) = common::data_file("household_power_consumption.txt.gz") else {
        return;
    };
    let file = file.to_str().unwrap().to_owned();
    let reference = tempfile::tempdir().unwrap();
    let status = wattflow(&["run", "--input", &file, "--out"])
        .arg(reference.path())
        .args(["--workers", "2"])
        .status()
        .unwrap();
    assert!(status.success());

    let out = tempfile::tempdir().unwrap();
    let out_s = out.path().to_str().unwrap().to_owned();
    let summary_file = out.path().join("..").join(format!(
        "summary-{}.json",
        out.path().file_name().unwrap().to_string_lossy()
    ));
    let summary_s = summary_file.to_str().unwrap().to_owned();
    let args = [
        "run",
        "--input",
        &file,
        "--out",
        &out_s,
        "--workers",
        "2",
        "--summary-json",
        &summary_s,
    ];
    let mut seed = Seeded(0x5eed_0001);
    let mut kills = 0;
    let mut last_killed = false;
    for round in 0..3 {
        let after = seed.between(Duration::from_millis(300), Duration::from_millis(2500));
        last_killed = run_and_kill(&args, after);
        if last_killed {
            kills += 1;
        }
        eprintln!("round {round}: killed after {after:?}: {last_killed}");
        assert_only_whole_files_visible(out.path());
    }
    assert!(kills >= 2, "the runs ended before they could be killed");
    // A round that ran to its end leaves a complete run, which the next one starts afresh:
    // kill one more (from scratch the replay takes some 2.5 s), so the last run resumes.
    if !last_killed {
        assert!(
            run_and_kill(&args, Duration::from_millis(1500)),
            "a fresh run ended within 1.5 s"
        );
        assert_only_whole_files_visible(out.path());
    }
    let status = wattflow(&args).status().unwrap();
    assert!(status.success());
    assert_no_debris(out.path());
    common::assert_same_parquet_files(out.path(), reference.path());
    let s = summary(&summary_file);
    // The last run resumed: it skipped what the killed runs had made durable.
    assert!(
        s["resumed_from_ms"].is_i64() && s["history"]["already_durable"].as_u64() > Some(0),
        "the last run did not resume: {s}"
    );
    for g in ["minute", "hour", "day"] {
        let (a, b) = (
            common::manifest(out.path(), g),
            common::manifest(reference.path(), g),
        );
        assert_eq!(a["rows"], b["rows"], "{g} manifest");
        assert_eq!(
            a["sealed_through_ms"], b["sealed_through_ms"],
            "{g} manifest"
        );
    }
    let _ = std::fs::remove_file(summary_file);
}

#[test]
fn killed_in_both_phases_of_history_then_kafka_it_ends_with_the_views_of_an_uninterrupted_run() {
    let Some(env) = env() else { return };
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let _shared = SERVERS.read().unwrap();
    let split = common::split_thirty_days(&file);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("kill");
    let keyspace = unique("wf_kill");
    assert_eq!(
        publish_file(&env, &topic, &split.tail, 4),
        split.tail_readings
    );

    let out = dir.path().join("views");
    let group = format!("{topic}-group");
    let args = [
        "run",
        "--input",
        split.head.to_str().unwrap(),
        "--brokers",
        &env.kafka,
        "--topic",
        &topic,
        "--group",
        &group,
        "--cassandra",
        &env.cassandra,
        "--keyspace",
        &keyspace,
        "--out",
        out.to_str().unwrap(),
        "--workers",
        "2",
        "--exit-when-idle",
        "3s",
    ];
    let mut seed = Seeded(0x5eed_0002);
    let mut kills = 0;
    for round in 0..3 {
        let after = seed.between(Duration::from_millis(500), Duration::from_millis(6000));
        if run_and_kill(&args, after) {
            kills += 1;
        }
        eprintln!("round {round}: killed after {after:?}");
        assert_only_whole_files_visible(&out);
    }
    assert!(kills >= 2, "the runs ended before they could be killed");
    let status = wattflow(&args).status().unwrap();
    assert!(status.success());
    assert_no_debris(&out);

    let reference = parquet_views(&file);
    for g in ["minute", "hour", "day"] {
        let got = common::by_window(common::read_view(&out, g));
        let want = common::by_window(common::read_view(reference.path(), g));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{g}: windows differ"
        );
        for (k, w) in &want {
            let r = &got[k];
            assert_eq!(
                (r.samples, r.dec, r.avg),
                (w.samples, w.dec, w.avg),
                "{g} {k:?}"
            );
        }
    }
    assert_speed_equals_batch(&env, &keyspace, reference.path(), "household-1");
}
