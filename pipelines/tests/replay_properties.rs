//! Properties of `Replay` as a whole: idempotent re-runs, worker-count independence, dead
//! letters for every kind of bad row, the same views from every input format, clean errors
//! for missing inputs, and the `wattflow` binary end to end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use common::{
    assert_view_matches, by_window, data_file, parse_csv, parse_uci_line, read_view, snapshot,
    Oracle, UciLine, ViewRow,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use wattflow::generate::{Generator, GeneratorConfig};
use wattflow_pipelines::{Replay, ReplayError};

const UCI_HEADER: &str = "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3";

/// Writes a synthetic history with `households` meters over `days` days; returns its path.
fn generated(dir: &Path, households: u32, days: u32) -> PathBuf {
    let path = dir.join(format!("generated_{households}x{days}.txt"));
    let generator = Generator::new(GeneratorConfig {
        households,
        days,
        ..GeneratorConfig::default()
    });
    let file = std::fs::File::create(&path).unwrap();
    let summary = generator
        .write_uci(std::io::BufWriter::new(file))
        .expect("generator writes");
    assert_eq!(summary.rows, households as u64 * days as u64 * 1440);
    path
}

/// The 30-day UCI slice when it is there, otherwise a generated single-household history in
/// the same format (the properties below hold for any valid input).
fn uci_input(dir: &Path) -> PathBuf {
    match data_file("uci_first_30_days.txt") {
        Some(p) => p,
        None => {
            eprintln!("using a generated history instead of the UCI slice");
            generated(dir, 1, 30)
        }
    }
}

fn views(out: &Path) -> [BTreeMap<(String, i64), ViewRow>; 3] {
    ["minute", "hour", "day"].map(|g| by_window(read_view(out, g)))
}

fn assert_same_files(a: &Path, b: &Path, what: &str) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let (na, nb): (BTreeSet<_>, BTreeSet<_>) = (sa.keys().collect(), sb.keys().collect());
    assert_eq!(na, nb, "{what}: different sets of files");
    assert!(
        sa.keys().filter(|k| k.ends_with(".parquet")).count() >= 3,
        "{what}: views were written"
    );
    for (name, bytes) in &sa {
        assert!(sb[name] == *bytes, "{what}: {name} differs");
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotence and worker independence
// ---------------------------------------------------------------------------------------------

#[test]
fn rerunning_into_the_same_output_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 3, 5);
    let out = dir.path().join("views");
    let first = Replay::new(&out).input(&input).run().expect("first run");
    let before = snapshot(&out);
    assert!(before.contains_key("hour/_manifest.json"));
    assert!(before.keys().any(|k| k.ends_with(".parquet")));
    let second = Replay::new(&out).input(&input).run().expect("second run");
    let after = snapshot(&out);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same set of files (no duplicates, no leftovers)"
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} changed on the second run");
    }
    assert_eq!(first.readings, second.readings);
    for ((g1, m1), (g2, m2)) in first.views.iter().zip(&second.views) {
        assert_eq!(g1, g2);
        assert_eq!(m1, m2, "{g1} manifest");
    }
}

#[test]
fn two_workers_write_the_same_bytes_as_one_on_the_uci_slice() {
    let dir = tempfile::tempdir().unwrap();
    let input = uci_input(dir.path());
    let (one, two) = (dir.path().join("w1"), dir.path().join("w2"));
    let s1 = Replay::new(&one).input(&input).run().expect("1 worker");
    // Small chunks, so both workers really share the file.
    let s2 = Replay::new(&two)
        .input(&input)
        .workers(2)
        .chunk_bytes(64 * 1024)
        .run()
        .expect("2 workers");
    assert_same_files(&one, &two, "1 vs 2 workers");
    assert_eq!(
        (s1.rows, s1.readings, s1.missing, s1.rejected),
        (s2.rows, s2.readings, s2.missing, s2.rejected)
    );
}

#[test]
fn two_workers_write_the_same_bytes_as_one_for_three_households() {
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 3, 7);
    let (one, two) = (dir.path().join("w1"), dir.path().join("w2"));
    let s1 = Replay::new(&one).input(&input).run().expect("1 worker");
    let s2 = Replay::new(&two)
        .input(&input)
        .workers(2)
        .chunk_bytes(128 * 1024)
        .run()
        .expect("2 workers");
    assert_same_files(&one, &two, "1 vs 2 workers, 3 households");
    assert_eq!(s1.readings, s2.readings);
    let day = read_view(&one, "day");
    let meters: BTreeSet<&str> = day.iter().map(|r| r.meter.as_str()).collect();
    assert_eq!(
        meters,
        BTreeSet::from(["household-1", "household-2", "household-3"])
    );
    // Every valid row is in the views: Σ samples per meter = its rows that are not '?'.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut expect: BTreeMap<&str, i64> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let (meter, rest) = line.split_once(';').unwrap();
        if matches!(parse_uci_line(rest), UciLine::Reading { .. }) {
            *expect.entry(meter).or_default() += 1;
        }
    }
    let mut got: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &day {
        *got.entry(r.meter.as_str()).or_default() += r.samples;
    }
    assert_eq!(got, expect);
}

/// `text`'s data rows out of order: a few rows (one in about seventy) are moved `1..=40`
/// rows later in the file, so with one row a minute those moved more than ten rows are too
/// late for the default ten minutes of lateness and the others still count.
fn disordered(text: &str, seed: u64) -> String {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut keyed: Vec<(u64, &str)> = lines
        .enumerate()
        .map(|(i, l)| {
            let shift = if next() % 70 == 0 { 1 + next() % 40 } else { 0 };
            (2 * (i as u64 + shift) + u64::from(shift > 0), l)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut out = format!("{header}\r\n");
    for (_, l) in keyed {
        out.push_str(l.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out
}

/// The files a replay wrote, with `rejected.csv` as its sorted records (workers refuse rows
/// in parallel, so only the set of refusals is theirs to agree on).
fn outputs(out: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<Vec<String>>) {
    let mut files = snapshot(out);
    let csv = files.remove("rejected.csv").expect("rejected.csv");
    let mut records = parse_csv(std::str::from_utf8(&csv).unwrap());
    assert_eq!(
        records.first().map(|h| h[0].as_str()),
        Some("file"),
        "header"
    );
    records.remove(0);
    records.sort();
    (files, records)
}

#[test]
fn out_of_order_input_gives_the_same_views_and_refusals_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let uci = std::fs::read_to_string(uci_input(dir.path())).unwrap();
    let one = dir.path().join("one-household.txt");
    std::fs::write(&one, disordered(&uci, 7)).unwrap();
    let three = generated(dir.path(), 3, 4);
    let three_text = std::fs::read_to_string(&three).unwrap();
    let three_disordered = dir.path().join("three-households.txt");
    std::fs::write(&three_disordered, disordered(&three_text, 11)).unwrap();
    // The same disordered rows as Parquet, in row groups of 500 rows: a row group is a chunk,
    // so moved rows land in other workers' row groups.
    let one_parquet = dir.path().join("one-household.parquet");
    write_parquet(&disordered(&uci, 7), &one_parquet, 500);

    for (what, inputs) in [
        ("one file", vec![one.clone()]),
        ("two files", vec![three_disordered.clone(), one.clone()]),
        ("one Parquet file", vec![one_parquet.clone()]),
        (
            "Parquet and text",
            vec![three_disordered.clone(), one_parquet.clone()],
        ),
    ] {
        let mut first = None;
        for workers in [1, 2, 3] {
            let out = dir
                .path()
                .join(format!("{}-{workers}", what.replace(' ', "-")));
            // Chunks of a few dozen rows: moved rows land in other workers' chunks.
            let mut job = Replay::new(&out).workers(workers).chunk_bytes(4 * 1024);
            for i in &inputs {
                job = job.input(i);
            }
            let s = job
                .run()
                .unwrap_or_else(|e| panic!("{what}, {workers}: {e}"));
            let (files, refused) = outputs(&out);
            let late = refused
                .iter()
                .filter(|r| r[2].to_lowercase().contains("too late"))
                .count() as u64;
            assert!(late > 10, "{what}: moved rows are refused as late ({late})");
            assert_eq!(
                refused.len() as u64,
                s.rejected,
                "{what}, {workers}: refusals"
            );
            let summary = (s.rows, s.readings, s.missing, s.rejected);
            match &first {
                None => first = Some((files, refused, summary)),
                Some((files1, refused1, summary1)) => {
                    assert_eq!(&summary, summary1, "{what}: {workers} workers vs 1: counts");
                    assert_eq!(
                        &refused, refused1,
                        "{what}: {workers} workers vs 1: refusals"
                    );
                    assert_eq!(
                        files.keys().collect::<Vec<_>>(),
                        files1.keys().collect::<Vec<_>>(),
                        "{what}: {workers} workers vs 1: files"
                    );
                    for (name, bytes) in &files {
                        assert!(
                            files1[name] == *bytes,
                            "{what}: {workers} workers vs 1: {name} differs"
                        );
                    }
                }
            }
        }
    }
}

/// The `(meter, window_start)` keys of a Parquet file in file order, and its row groups.
fn file_keys(file: &Path) -> (Vec<(String, i64)>, usize) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(file).unwrap(),
    )
    .unwrap();
    let groups = builder.metadata().num_row_groups();
    let mut keys = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let meters = batch.column(0).as_string::<i32>();
        let starts = batch.column(1).as_primitive::<TimestampMillisecondType>();
        for i in 0..batch.num_rows() {
            keys.push((meters.value(i).to_owned(), starts.value(i)));
        }
    }
    (keys, groups)
}

/// Rows of a file are in `(window_start, meter)` order, meters by length and then bytes.
fn assert_in_file_order(file: &Path, keys: &[(String, i64)]) {
    let order = |(m, s): &(String, i64)| (*s, m.len(), m.clone());
    for pair in keys.windows(2) {
        assert!(
            order(&pair[0]) < order(&pair[1]),
            "{}: {:?} before {:?}",
            file.display(),
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn many_meters_are_written_a_row_group_at_a_time_and_buckets_spread_them() {
    // 120 households over 2 days: 345,600 minutes in one month, so the minute partition takes
    // three row groups and the sink writes it while it is still open.
    let dir = tempfile::tempdir().unwrap();
    let input = generated(dir.path(), 120, 2);
    let text = std::fs::read_to_string(&input).unwrap();
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let (meter, rest) = line.split_once(';').unwrap();
        if let UciLine::Reading { ts, values } = parse_uci_line(rest) {
            want.insert((meter.to_owned(), ts), values[0]);
        }
    }
    assert!(want.len() > 2 * wattflow::sink::parquet::ROW_GROUP_ROWS);

    let one = dir.path().join("one");
    Replay::new(&one).input(&input).run().expect("one bucket");
    let file = one.join("minute/month=2006-12/part-0.parquet");
    let (keys, groups) = file_keys(&file);
    assert_eq!(
        groups,
        want.len().div_ceil(wattflow::sink::parquet::ROW_GROUP_ROWS)
    );
    assert_in_file_order(&file, &keys);
    let minute = by_window(read_view(&one, "minute"));
    let got: BTreeMap<(String, i64), i64> = minute
        .iter()
        .map(|(k, r)| {
            assert_eq!(r.samples, 1, "{k:?}");
            (k.clone(), r.dec[0][0] as i64)
        })
        .collect();
    assert!(
        got == want,
        "the minute view holds every reading once, with its value"
    );

    // Four buckets: the same rows over four files a partition, each in file order, and the
    // same bytes from one worker and from two.
    let (b1, b2) = (dir.path().join("b1"), dir.path().join("b2"));
    Replay::new(&b1)
        .input(&input)
        .buckets(4)
        .run()
        .expect("4 buckets");
    Replay::new(&b2)
        .input(&input)
        .buckets(4)
        .workers(2)
        .chunk_bytes(256 * 1024)
        .run()
        .expect("4 buckets, 2 workers");
    assert_same_files(&b1, &b2, "4 buckets, 1 vs 2 workers");
    for g in ["minute", "hour", "day"] {
        let files = common::parquet_files(&b1.join(g));
        assert_eq!(files.len(), 4, "{g}: one file per bucket");
        let mut meters_seen = BTreeSet::new();
        for f in &files {
            let (keys, _) = file_keys(f);
            assert_in_file_order(f, &keys);
            let meters: BTreeSet<String> = keys.into_iter().map(|(m, _)| m).collect();
            assert!(meters.is_disjoint(&meters_seen), "a meter is in one bucket");
            meters_seen.extend(meters);
        }
        assert_eq!(meters_seen.len(), 120, "{g}");
        let (a, b) = (by_window(read_view(&one, g)), by_window(read_view(&b1, g)));
        assert!(
            a == b,
            "{g}: buckets change where rows are, not what they are"
        );
        assert_eq!(common::manifest(&b1, g)["buckets"], 4);
    }
    // A view keeps its number of buckets.
    let err = Replay::new(&b1)
        .input(&input)
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("buckets = 4"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Valid,
    Missing,
    Blank,
    /// Rejected with a reason containing all these (lower-case) words.
    Rejected(&'static [&'static str]),
}

fn row(date: &str, time: &str, values: &str) -> String {
    format!("{date};{time};{values}")
}

#[test]
fn every_bad_row_is_dead_lettered_with_its_line_and_reason() {
    use Expect::*;
    const OK: &str = "1.000;0.100;240.000;4.200;0.000;1.000;0.000";
    let d = "16/12/2006";
    let mut lines: Vec<(String, Expect)> = vec![
        (
            row(
                d,
                "17:24:00",
                "4.216;0.418;234.840;18.400;0.000;1.000;17.000",
            ),
            Valid,
        ),
        (
            row(
                d,
                "17:25:00",
                "5.360;0.436;233.630;23.000;0.000;1.000;16.000",
            ),
            Valid,
        ),
        (
            row(d, "17:26:00", "5.374;0.498;233.290;23.000"),
            Rejected(&["expected 9 fields", "found 6"]),
        ),
        (
            row(
                d,
                "17:26:00",
                "5.x74;0.498;233.290;23.000;0.000;2.000;17.000",
            ),
            Rejected(&["global_active_power", "5.x74", "not a number"]),
        ),
        (
            row("30/2/2006", "17:26:00", OK),
            Rejected(&["date", "30/2/2006"]),
        ),
        (
            row(
                d,
                "17:26:00",
                "5.374;-0.498;233.290;23.000;0.000;2.000;17.000",
            ),
            Rejected(&["global_reactive_power", "negative"]),
        ),
        (
            row(
                d,
                "17:26:00",
                "5.374;0.498;2330.290;23.000;0.000;2.000;17.000",
            ),
            Rejected(&["voltage", "2330.290", "limit"]),
        ),
        (
            row(d, "17:26:00", "5.374;?;233.290;23.000;0.000;2.000;17.000"),
            Rejected(&["missing"]),
        ),
        (
            row(
                d,
                "17:26:00",
                "5.388;0.502;233.740;23.000;0.000;1.000;17.000",
            ),
            Valid,
        ),
        // Same timestamp again, other values: the later row is the duplicate.
        (
            row(
                d,
                "17:26:00",
                "9.999;0.502;233.740;43.000;0.000;1.000;17.000",
            ),
            Rejected(&["duplicate", "household-1", "2006-12-16t17:26:00"]),
        ),
        (row(d, "17:27:00", "?;?;?;?;?;?;"), Missing),
        (String::new(), Blank),
    ];
    // 17:28 to 17:50, leaving 17:33 and 17:41 out for the late rows below.
    for minute in 28..=50 {
        if minute == 33 || minute == 41 {
            continue;
        }
        let p = 1000 + minute * 37;
        let values = format!(
            "{}.{:03};0.1{:02};23{}.{:03};{}.000;0.000;{}.000;{}.000",
            p / 1000,
            p % 1000,
            minute,
            minute % 10,
            minute * 7,
            p / 240 + 1,
            minute % 3,
            minute % 2 * 17
        );
        lines.push((row(d, &format!("17:{minute}:00"), &values), Valid));
    }
    // The watermark is now 17:50 - 10 min = 17:40: 17:33 is too late, 17:41 still counts.
    lines.push((
        row(d, "17:33:00", "2.000;0.200;236.000;8.600;0.000;0.000;1.000"),
        Rejected(&["too late", "2006-12-16t17:33:00", "2006-12-16t17:40:00"]),
    ));
    lines.push((
        row(
            d,
            "17:41:00",
            "3.000;0.300;237.000;12.800;1.000;0.000;0.000",
        ),
        Valid,
    ));
    lines.push((row(d, "17:51:00", OK), Valid));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad input.txt");
    let mut text = format!("{UCI_HEADER}\r\n");
    for (l, _) in &lines {
        text.push_str(l);
        text.push_str("\r\n");
    }
    std::fs::write(&input, &text).unwrap();

    let out = dir.path().join("views");
    let summary = Replay::new(&out)
        .input(&input)
        .lateness(Duration::from_secs(600))
        .run()
        .expect("bad rows never fail a run");

    // Expected dead letters by line number (the header is line 1).
    let expected: BTreeMap<u64, (&str, &[&str])> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, (l, e))| match e {
            Rejected(words) => Some((i as u64 + 2, (l.as_str(), *words))),
            _ => None,
        })
        .collect();
    let csv = std::fs::read_to_string(out.join("rejected.csv")).unwrap();
    let records = parse_csv(&csv);
    assert_eq!(records[0], ["file", "line", "reason", "record"]);
    let mut got: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    for r in &records[1..] {
        assert_eq!(r.len(), 4, "rejected.csv record {r:?}");
        let line: u64 = r[1].parse().unwrap_or_else(|_| panic!("line number {r:?}"));
        assert!(
            got.insert(line, (r[0].clone(), r[2].clone(), r[3].clone()))
                .is_none(),
            "line {line} dead-lettered twice"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "dead-lettered lines; rejected.csv:\n{csv}"
    );
    for (line, (raw, words)) in &expected {
        let (file, reason, record) = &got[line];
        assert_eq!(file, &input.display().to_string(), "line {line}: file name");
        let lower = reason.to_lowercase();
        for w in *words {
            assert!(
                lower.contains(w),
                "line {line}: reason {reason:?} does not mention {w:?}"
            );
        }
        if !lower.contains("duplicate") && !lower.contains("too late") {
            assert_eq!(record, raw, "line {line}: the record as it was");
        } else {
            // Rendered from the reading: its first measure is in it.
            let p = raw.split(';').nth(2).unwrap();
            assert!(
                record.contains(p),
                "line {line}: record {record:?} lacks {p}"
            );
        }
    }
    assert_eq!(summary.rejected, expected.len() as u64);
    assert_eq!(summary.missing, 1, "a '?' row is missing, not rejected");
    let valid: Vec<&str> = lines
        .iter()
        .filter(|(_, e)| *e == Valid)
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(summary.readings, valid.len() as u64);
    assert_eq!(
        summary.rows,
        lines.iter().filter(|(_, e)| *e != Blank).count() as u64,
        "data rows, blank lines excluded"
    );

    // Every valid row is counted, and only those.
    let mut oracle = Oracle::default();
    for l in &valid {
        oracle.add_line(l);
    }
    let [minute, hour, day] = views(&out);
    assert_eq!(minute.len(), valid.len());
    assert_view_matches("hour", &hour, "household-1", &oracle.hours, 60);
    assert_view_matches("day", &day, "household-1", &oracle.days, 60);
    // The minute of the duplicate holds the first row's values.
    let UciLine::Reading { ts, values } = parse_uci_line(&lines[8].0) else {
        panic!()
    };
    let m = &minute[&("household-1".to_owned(), ts)];
    assert_eq!(m.samples, 1);
    assert_eq!(m.dec[0][0], values[0] as i128);
}

// ---------------------------------------------------------------------------------------------
// Input formats
// ---------------------------------------------------------------------------------------------

/// `d/m/yyyy` and `hh:mm:ss` as `yyyy-mm-dd hh:mm:ss`.
fn iso_datetime(date: &str, time: &str) -> String {
    let p: Vec<&str> = date.split('/').collect();
    format!("{}-{:0>2}-{:0>2} {time}", p[2], p[1], p[0])
}

/// A value as pandas prints a float: trailing zeros dropped, at least one decimal.
fn pandas_float(v: &str) -> String {
    let t = v.trim_end_matches('0');
    if t.ends_with('.') {
        format!("{t}0")
    } else {
        t.to_owned()
    }
}

fn body_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .skip(1)
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| l.split(';').collect())
}

fn write_gzip(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(dst).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut enc, &bytes).unwrap();
    enc.finish().unwrap();
}

fn write_parquet(text: &str, dst: &Path, row_group_rows: usize) {
    let rows: Vec<Vec<&str>> = body_lines(text).collect();
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "Date".into(),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[0]))),
        ),
        (
            "Time".into(),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[1]))),
        ),
    ];
    let names: Vec<&str> = UCI_HEADER.split(';').collect();
    for (c, name) in names.iter().enumerate().skip(2) {
        let values: Float64Array = rows
            .iter()
            .map(|r| match r[c] {
                "?" | "" => None,
                v => Some(v.parse::<f64>().unwrap()),
            })
            .collect();
        columns.push((name.to_string(), Arc::new(values)));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(dst).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn every_input_format_gives_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let input = uci_input(dir.path());
    let text = std::fs::read_to_string(&input).unwrap();
    let oracle = Oracle::of_text(&text);
    assert!(oracle.missing > 0, "the input has '?' rows");

    let base_out = dir.path().join("base");
    let base = Replay::new(&base_out)
        .input(&input)
        .run()
        .expect("base run");
    let base_views = views(&base_out);
    assert_eq!(base_views[0].len() as u64, oracle.readings);
    assert_view_matches("hour", &base_views[1], "household-1", &oracle.hours, 60);
    assert_view_matches("day", &base_views[2], "household-1", &oracle.days, 60);

    // gzip'd copy.
    let gz = dir.path().join("copy.txt.gz");
    write_gzip(&input, &gz);
    // Comma CSV, Kaggle header with Date and Time columns.
    let csv_a = dir.path().join("kaggle_date_time.csv");
    let mut a = UCI_HEADER.replace(';', ",") + "\n";
    // Comma CSV with an index column, a combined Datetime and pandas-style floats; missing
    // minutes as empty fields.
    let csv_b = dir.path().join("kaggle_datetime.csv");
    let mut b = String::from(
        "index,Datetime,Global_active_power,Global_reactive_power,Voltage,Global_intensity,Sub_metering_1,Sub_metering_2,Sub_metering_3\n",
    );
    for (i, f) in body_lines(&text).enumerate() {
        a.push_str(&f.join(","));
        a.push('\n');
        let values: Vec<String> = f[2..]
            .iter()
            .map(|v| match *v {
                "?" | "" => String::new(),
                v => pandas_float(v),
            })
            .collect();
        b.push_str(&format!(
            "{i},{},{}\n",
            iso_datetime(f[0], f[1]),
            values.join(",")
        ));
    }
    std::fs::write(&csv_a, a).unwrap();
    std::fs::write(&csv_b, b).unwrap();
    // Parquet: string Date/Time, Float64 measures, nulls for missing minutes, several row groups.
    let pq = dir.path().join("history.parquet");
    write_parquet(&text, &pq, 10_000);

    for (name, path, workers) in [
        ("gzip", &gz, 1),
        ("gzip, 2 workers", &gz, 2),
        ("comma CSV", &csv_a, 1),
        ("comma CSV with Datetime", &csv_b, 1),
        ("Parquet", &pq, 1),
        ("Parquet, 2 workers", &pq, 2),
    ] {
        let out = dir
            .path()
            .join(format!("out-{}", name.replace([' ', ','], "_")));
        let s = Replay::new(&out)
            .input(path)
            .workers(workers)
            .run()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (s.rows, s.readings, s.missing, s.rejected),
            (base.rows, base.readings, base.missing, 0),
            "{name}: counts"
        );
        let got = views(&out);
        for (g, (x, y)) in ["minute", "hour", "day"]
            .iter()
            .zip(got.iter().zip(base_views.iter()))
        {
            assert_eq!(x.len(), y.len(), "{name}: {g} rows");
            for (k, row) in y {
                assert_eq!(x.get(k), Some(row), "{name}: {g} window {k:?}");
            }
        }
        let rejected = std::fs::read_to_string(out.join("rejected.csv")).unwrap();
        assert_eq!(rejected, "file,line,reason,record\n", "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_missing_input_is_a_source_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no such file.txt");
    let err = Replay::new(dir.path().join("out"))
        .input(&missing)
        .run()
        .expect_err("a missing input fails the run");
    match &err {
        ReplayError::Source(e) => {
            assert!(
                e.to_string().contains(&missing.display().to_string()),
                "{e} does not name {}",
                missing.display()
            );
        }
        other => panic!("expected ReplayError::Source, got {other:?}"),
    }
    assert!(err.to_string().contains("no such file.txt"));

    // An input that exists but is empty, or has no usable header, is refused the same way.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let headless = dir.path().join("headless.csv");
    std::fs::write(&headless, "a;b;c\r\n1;2;3\r\n").unwrap();
    for path in [&empty, &headless] {
        match Replay::new(dir.path().join("out")).input(path).run() {
            Err(ReplayError::Source(e)) => assert!(
                e.to_string().contains(&path.display().to_string()),
                "{e} does not name {}",
                path.display()
            ),
            other => panic!(
                "{}: expected ReplayError::Source, got {other:?}",
                path.display()
            ),
        }
    }
    assert!(matches!(
        Replay::new(dir.path().join("out")).run(),
        Err(ReplayError::NoInput)
    ));
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

fn wattflow(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wattflow"))
        .args(args)
        .output()
        .expect("the wattflow binary runs");
    assert!(
        out.status.success(),
        "wattflow {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_cli_replays_the_embedded_demo_and_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    wattflow(&[
        "replay".as_ref(),
        "--out".as_ref(),
        demo.as_os_str(),
        "-q".as_ref(),
    ]);
    assert!(demo.join("hour").is_dir(), "the demo wrote <out>/hour/");
    assert!(!read_view(&demo, "hour").is_empty());
    assert!(demo.join("rejected.csv").is_file());

    let file = dir.path().join("gen/two.txt");
    wattflow(&[
        "generate".as_ref(),
        "--households".as_ref(),
        "2".as_ref(),
        "--days".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        file.as_os_str(),
    ]);
    let text = std::fs::read_to_string(&file).expect("generate wrote the file");
    assert!(text.starts_with("Meter;Date;Time;"));
    let out = dir.path().join("two");
    let run = wattflow(&[
        "replay".as_ref(),
        "--input".as_ref(),
        file.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--workers".as_ref(),
        "2".as_ref(),
        "-q".as_ref(),
    ]);
    assert!(!run.stdout.is_empty(), "a summary is printed");
    let mut expect: BTreeMap<String, i64> = BTreeMap::new();
    let mut hours: BTreeSet<(String, i64)> = BTreeSet::new();
    for line in text.lines().skip(1) {
        let (meter, rest) = line.split_once(';').unwrap();
        if let UciLine::Reading { ts, .. } = parse_uci_line(rest) {
            *expect.entry(meter.to_owned()).or_default() += 1;
            hours.insert((meter.to_owned(), ts.div_euclid(3_600_000)));
        }
    }
    assert_eq!(expect.len(), 2);
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for r in read_view(&out, "day") {
        *got.entry(r.meter).or_default() += r.samples;
    }
    assert_eq!(got, expect, "samples per meter in the day view");
    // One hour row per (meter, clock hour) holding a reading (outages may empty whole hours).
    assert!(hours.len() > 2 * 40 && hours.len() <= 2 * 48);
    assert_eq!(read_view(&out, "hour").len(), hours.len());
}

// ---------------------------------------------------------------------------------------------
// Several inputs, line endings
// ---------------------------------------------------------------------------------------------

/// Replays `inputs` and returns the views (asserting no dead letters).
fn replay_views(
    out: &Path,
    inputs: &[&Path],
    workers: usize,
) -> [BTreeMap<(String, i64), ViewRow>; 3] {
    let mut job = Replay::new(out).workers(workers).chunk_bytes(64 * 1024);
    for i in inputs {
        job = job.input(i);
    }
    let s = job.run().unwrap_or_else(|e| panic!("{inputs:?}: {e}"));
    assert_eq!(s.rejected, 0, "{inputs:?}: nothing is rejected");
    views(out)
}

fn assert_same_views(
    what: &str,
    got: &[BTreeMap<(String, i64), ViewRow>; 3],
    want: &[BTreeMap<(String, i64), ViewRow>; 3],
) {
    for (g, (x, y)) in ["minute", "hour", "day"].iter().zip(got.iter().zip(want)) {
        assert_eq!(x.len(), y.len(), "{what}: {g} rows");
        for (k, row) in y {
            assert_eq!(x.get(k), Some(row), "{what}: {g} window {k:?}");
        }
    }
}

#[test]
fn split_and_interleaved_inputs_and_line_endings_give_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let input = uci_input(dir.path());
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    let base = replay_views(&dir.path().join("base"), &[&input], 1);

    let write = |name: &str, rows: &mut dyn Iterator<Item = &&str>, eol: &str| {
        let path = dir.path().join(name);
        let mut t = format!("{UCI_HEADER}{eol}");
        for r in rows {
            t.push_str(r.trim_end_matches('\r'));
            t.push_str(eol);
        }
        std::fs::write(&path, t).unwrap();
        path
    };
    // Consecutive periods in two files.
    let half = lines.len() / 2;
    let first = write("first.txt", &mut lines[..half].iter(), "\r\n");
    let second = write("second.txt", &mut lines[half..].iter(), "\r\n");
    // The same period in two files, alternate minutes in each: merged in time.
    let even = write("even.txt", &mut lines.iter().step_by(2), "\r\n");
    let odd = write("odd.txt", &mut lines.iter().skip(1).step_by(2), "\r\n");
    // LF line endings, no newline after the last row.
    let lf = write("lf.txt", &mut lines.iter(), "\n");
    let mut t = std::fs::read_to_string(&lf).unwrap();
    t.pop();
    std::fs::write(&lf, t).unwrap();

    for workers in [1, 2] {
        let w = format!("{workers} worker(s)");
        let out = |n: &str| dir.path().join(format!("{n}-{workers}"));
        assert_same_views(
            &format!("two consecutive files, {w}"),
            &replay_views(&out("split"), &[&first, &second], workers),
            &base,
        );
        assert_same_views(
            &format!("second file first, {w}"),
            &replay_views(&out("reversed"), &[&second, &first], workers),
            &base,
        );
        assert_same_views(
            &format!("interleaved files, {w}"),
            &replay_views(&out("interleaved"), &[&even, &odd], workers),
            &base,
        );
        assert_same_views(
            &format!("LF endings, no final newline, {w}"),
            &replay_views(&out("lf"), &[&lf], workers),
            &base,
        );
    }
}

#[test]
fn rows_delivered_twice_count_once_with_any_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = uci_input(dir.path());
    let text = std::fs::read_to_string(&input).unwrap();
    let base_out = dir.path().join("base");
    let base = Replay::new(&base_out).input(&input).run().expect("base");
    let base_views = views(&base_out);
    // The last five rows again, as after a restart that re-reads a little.
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let repeats = &lines[lines.len() - 5..];
    let mut doubled = text.clone();
    if !doubled.ends_with('\n') {
        doubled.push_str("\r\n");
    }
    for r in repeats {
        doubled.push_str(r.trim_end_matches('\r'));
        doubled.push_str("\r\n");
    }
    let path = dir.path().join("redelivered.txt");
    std::fs::write(&path, doubled).unwrap();
    let repeated_readings = repeats
        .iter()
        .filter(|r| matches!(parse_uci_line(r), UciLine::Reading { .. }))
        .count() as u64;
    assert!(repeated_readings > 0);
    for workers in [1, 2] {
        let out = dir.path().join(format!("out-{workers}"));
        let s = Replay::new(&out)
            .input(&path)
            .workers(workers)
            .chunk_bytes(64 * 1024)
            .run()
            .expect("replay");
        assert_eq!(s.readings, base.readings, "{workers} worker(s): readings");
        assert_eq!(
            s.rejected, repeated_readings,
            "{workers} worker(s): rejected"
        );
        assert_eq!(s.missing, base.missing + (5 - repeated_readings));
        let csv = std::fs::read_to_string(out.join("rejected.csv")).unwrap();
        let records = parse_csv(&csv);
        assert_eq!(records.len() as u64, 1 + repeated_readings);
        let first_repeat_line = lines.len() as u64 + 1;
        for r in &records[1..] {
            assert!(r[2].to_lowercase().contains("duplicate"), "{r:?}");
            let line: u64 = r[1].parse().unwrap();
            assert!(
                line >= first_repeat_line,
                "the later copy is refused: {r:?}"
            );
        }
        assert_same_views(&format!("{workers} worker(s)"), &views(&out), &base_views);
    }
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

#[test]
fn progress_never_passes_its_total() {
    // `Progress::source.total_bytes` is the length of the progress bar and `bytes` its position
    // (see `cli::progress_bar`): the position must not run past the end, whatever the format.
    let dir = tempfile::tempdir().unwrap();
    let plain = generated(dir.path(), 1, 3);
    let gz = dir.path().join("generated.txt.gz");
    write_gzip(&plain, &gz);
    let pq = dir.path().join("generated.parquet");
    write_parquet(&std::fs::read_to_string(&plain).unwrap(), &pq, 10_000);
    let mut report = Vec::new();
    for (name, path) in [("plain", &plain), ("gzip", &gz), ("parquet", &pq)] {
        let job = Replay::new(dir.path().join(format!("out-{name}"))).input(path);
        let progress = job.progress();
        job.run().unwrap_or_else(|e| panic!("{name}: {e}"));
        let total = progress.source.total_bytes.load(Ordering::Relaxed);
        let bytes = progress.source.bytes.load(Ordering::Relaxed);
        assert!(bytes > 0, "{name}: bytes are counted");
        if total > 0 && bytes > total {
            report.push(format!(
                "{name}: position {bytes} is past the total {total} ({:.0} %)",
                bytes as f64 * 100.0 / total as f64
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("; "));
}

/// `(window_start, samples)` of every row of a view whose `window_start` is a UTC instant.
fn zoned_view(out: &Path, granularity: &str) -> BTreeMap<i64, i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};
    let mut rows = BTreeMap::new();
    for file in common::parquet_files(&out.join(granularity)) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(
                batch
                    .schema()
                    .field_with_name("window_start")
                    .unwrap()
                    .data_type(),
                &arrow_schema::DataType::Timestamp(
                    arrow_schema::TimeUnit::Millisecond,
                    Some("UTC".into())
                ),
                "window_start is an instant in a zone"
            );
            let starts = batch.column_by_name("window_start").unwrap();
            let starts = starts.as_primitive::<TimestampMillisecondType>();
            let samples = batch.column_by_name("samples").unwrap();
            let samples = samples.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                assert!(rows.insert(starts.value(i), samples.value(i)).is_none());
            }
        }
    }
    rows
}

#[test]
fn in_europe_paris_the_last_sundays_of_march_and_october_last_23_and_25_hours() {
    let Some(file) = common::data_file("household_power_consumption.txt.gz") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let summary = wattflow_pipelines::Pipeline::new()
        .input(&file)
        .parquet(out.path())
        .timezone(wattflow::time::Calendar::parse("Europe/Paris").unwrap())
        .workers(2)
        .run(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            false,
        )))
        .unwrap();
    let utc = |y, m, d, h| wattflow::time::naive_to_ms(y, m, d, h, 0, 0).unwrap();
    let days = zoned_view(out.path(), "day");
    let hours = zoned_view(out.path(), "hour");
    let next_start = |t: i64| *days.range(t + 1..).next().unwrap().0;
    let hours_in = |a: i64, b: i64| hours.range(a..b).count();
    // 30 March 2008: local midnight is 23:00 UTC the day before, the day lasts 23 hours.
    let march = utc(2008, 3, 29, 23);
    assert!(
        days.contains_key(&march),
        "no day starting at local midnight"
    );
    assert_eq!(next_start(march) - march, 23 * 3_600_000);
    assert_eq!(hours_in(march, next_start(march)), 23);
    // 26 October 2008: 25 hours (the data logged the repeated hour once, so 24 hold readings).
    let october = utc(2008, 10, 25, 22);
    assert!(days.contains_key(&october));
    assert_eq!(next_start(october) - october, 25 * 3_600_000);
    assert_eq!(hours_in(october, next_start(october)), 24);
    // An ordinary day: 24 hours from local midnight (CEST: 22:00 UTC).
    let june = utc(2008, 5, 31, 22);
    assert_eq!(next_start(june) - june, 24 * 3_600_000);
    // Every day's samples are its hours' samples, and nothing was lost silently: the file
    // logs the non-existent spring hour (02:00-02:59 local), whose readings shift an hour on
    // and meet the real 03:00-03:59 ones, which are then refused as too late or duplicates.
    for (&start, &samples) in &days {
        let end = days
            .range(start + 1..)
            .next()
            .map_or(start + 25 * 3_600_000, |(&t, _)| {
                t.min(start + 25 * 3_600_000)
            });
        let in_hours: i64 = hours.range(start..end).map(|(_, s)| s).sum();
        assert_eq!(samples, in_hours, "day starting {start}");
    }
    let history = summary.history.unwrap();
    assert_eq!(days.values().sum::<i64>() as u64, history.readings);
    // Four springs in the file, an hour of minutes each at most.
    let refused = history.duplicates + history.rejected;
    assert!((1..=4 * 60).contains(&refused), "{history:?}");
    let naive = Replay::new(tempfile::tempdir().unwrap().path())
        .input(&file)
        .run()
        .unwrap();
    assert_eq!(history.readings + refused, naive.readings);
    assert_eq!(naive.rejected, 0);
}

#[test]
fn replaying_part_of_a_month_into_a_full_output_keeps_the_windows_it_does_not_produce() {
    let Some(input) = data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let full = replay_views(&out, &[&input], 1);
    // Three whole days from the middle of a month, alone in a file.
    let text = std::fs::read_to_string(&input).unwrap();
    let days = ["20/12/2006;", "21/12/2006;", "22/12/2006;"];
    let mut part = format!("{UCI_HEADER}\r\n");
    let mut rows = 0;
    for line in text.lines().skip(1) {
        if days.iter().any(|d| line.starts_with(d)) {
            part.push_str(line.trim_end_matches('\r'));
            part.push_str("\r\n");
            rows += 1;
        }
    }
    assert_eq!(rows, 3 * 1440, "the slice holds those three days whole");
    let part_path = dir.path().join("three-days.txt");
    std::fs::write(&part_path, part).unwrap();
    for workers in [1, 2] {
        let after = replay_views(&out, &[&part_path], workers);
        assert_same_views(
            &format!("after replaying three days with {workers} worker(s)"),
            &after,
            &full,
        );
    }
}
