//! The whole UCI file (gzip'd, read directly by `Replay`) against an independent computation:
//! every hour and day row's samples and exact sum/min/max of all seven measures, plus the
//! whole-file figures of the data README. Best run with `--release`.

mod common;

use std::io::{BufRead, BufReader};

use common::{assert_view_matches, by_window, data_file, manifest, read_view, Oracle};
use wattflow_pipelines::Replay;

/// Whole-file figures from `shared/data/README.md`.
const ROWS: u64 = 2_075_259;
const READINGS: u64 = 2_049_280;
const MISSING: u64 = 25_979;
const GAP_SUM_THOUSANDTHS: i64 = 2_237_024_862;
const HOURS: usize = 34_168;
const DAYS: usize = 1_433;

#[test]
fn whole_file_matches_an_independent_computation() {
    let Some(data) = data_file("household_power_consumption.txt.gz") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views");

    // The replay runs on its own threads while this thread computes the oracle.
    let replay = {
        let (data, out) = (data.clone(), out.clone());
        std::thread::spawn(move || Replay::new(&out).input(&data).run())
    };

    let started = std::time::Instant::now();
    let mut oracle = Oracle::default();
    let file = std::fs::File::open(&data).unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(file));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("Date;Time;Global_active_power;"),
        "header {line:?}"
    );
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        oracle.add_line(&line);
    }

    eprintln!(
        "oracle computed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The oracle itself reproduces the README's figures.
    assert_eq!(oracle.rows, ROWS, "rows in the file");
    assert_eq!(oracle.missing, MISSING, "missing rows");
    assert_eq!(oracle.readings, READINGS, "rows with values");
    assert_eq!(
        oracle.not_increasing, 0,
        "readings are in time order, no repeats"
    );
    let gap: i64 = oracle.days.values().map(|a| a.sum[0]).sum();
    assert_eq!(gap, GAP_SUM_THOUSANDTHS, "Σ global_active_power");
    assert_eq!(oracle.hours.len(), HOURS, "hours with a reading");
    assert_eq!(oracle.days.len(), DAYS, "days with a reading");

    let summary = replay.join().unwrap().expect("replay runs");
    eprintln!(
        "replay took {:.1} s; joined after {:.1} s",
        summary.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(summary.rows, ROWS);
    assert_eq!(summary.missing, MISSING);
    assert_eq!(summary.readings, READINGS);
    assert_eq!(summary.rejected, 0);

    let hours = by_window(read_view(&out, "hour"));
    let days = by_window(read_view(&out, "day"));
    assert_eq!(hours.len(), HOURS);
    assert_eq!(days.len(), DAYS);
    assert_view_matches("hour", &hours, "household-1", &oracle.hours, 60);
    assert_view_matches("day", &days, "household-1", &oracle.days, 60);
    let view_gap: i128 = days.values().map(|r| r.dec[0][0]).sum();
    assert_eq!(view_gap, GAP_SUM_THOUSANDTHS as i128);
    assert_eq!(
        hours.values().map(|r| r.samples as u64).sum::<u64>(),
        READINGS
    );

    // The minute view is only counted through its manifest (reading 2 M rows back adds
    // nothing the hour and day checks do not already cover).
    for (granularity, rows) in [
        ("minute", READINGS as usize),
        ("hour", HOURS),
        ("day", DAYS),
    ] {
        let m = manifest(&out, granularity);
        assert_eq!(m["rows"].as_u64(), Some(rows as u64), "{granularity} rows");
        assert_eq!(
            m["samples"].as_u64(),
            Some(READINGS),
            "{granularity} samples"
        );
    }
    let rejected = std::fs::read_to_string(out.join("rejected.csv")).unwrap();
    assert_eq!(rejected, "file,line,reason,record\n");
}
