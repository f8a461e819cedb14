//! Golden test: `Replay` over the first 30 days of the UCI file must write hour and day views
//! equal to `tests/golden/uci_30_days_{hour,day}.csv`, which `tests/golden/make_golden.py`
//! computed independently in pure Python (integer thousandths and `decimal`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{data_file, iso, manifest, parquet_files, read_view, repo_root, ViewRow, MEASURES};
use wattflow_pipelines::Replay;

const ROWS: u64 = 43_200;

/// Golden rows by `(meter, window_start)`, each as `column -> text`.
type GoldenRows = BTreeMap<(String, String), BTreeMap<String, String>>;

/// A golden CSV: its header and its rows.
fn golden(granularity: &str) -> (Vec<String>, GoldenRows) {
    let path = repo_root().join(format!("tests/golden/uci_30_days_{granularity}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records = common::parse_csv(&text).into_iter();
    let header = records.next().expect("golden header");
    let mut rows = BTreeMap::new();
    for rec in records {
        assert_eq!(rec.len(), header.len(), "{}: ragged row", path.display());
        let cols: BTreeMap<String, String> = header.iter().cloned().zip(rec).collect();
        let key = (cols["meter"].clone(), cols["window_start"].clone());
        assert!(rows.insert(key, cols).is_none(), "duplicate golden row");
    }
    (header, rows)
}

fn close(what: &str, got: f64, want: &str) {
    let want: f64 = want
        .parse()
        .unwrap_or_else(|_| panic!("{what}: golden {want:?}"));
    assert!(
        (got - want).abs() <= 1e-6,
        "{what}: view has {got}, golden {want}"
    );
}

fn compare_with_golden(granularity: &str, view: Vec<ViewRow>) -> usize {
    let (header, golden) = golden(granularity);
    let mut seen = BTreeMap::new();
    for row in view {
        let key = (row.meter.clone(), iso(row.window_start));
        assert!(
            seen.insert(key.clone(), ()).is_none(),
            "{granularity}: window {key:?} written twice"
        );
        let want = golden
            .get(&key)
            .unwrap_or_else(|| panic!("{granularity}: window {key:?} is not in the golden file"));
        let at = format!("{granularity} {}", key.1);
        for col in &header {
            let w = &want[col];
            match col.as_str() {
                "meter" | "window_start" => {}
                "samples" => assert_eq!(row.samples.to_string(), *w, "{at}: samples"),
                "covered_seconds" => {
                    assert_eq!(row.covered_seconds.to_string(), *w, "{at}: covered_seconds")
                }
                "active_energy_wh" => close(&format!("{at}: {col}"), row.active_energy_wh, w),
                "unmetered_wh" => close(&format!("{at}: {col}"), row.unmetered_wh, w),
                "power_factor_avg" => match (row.power_factor_avg, w.is_empty()) {
                    (None, true) => {}
                    (Some(pf), false) => close(&format!("{at}: {col}"), pf, w),
                    (got, _) => panic!("{at}: power_factor_avg {got:?}, golden {w:?}"),
                },
                other => {
                    let (measure, stat) = other.rsplit_once('_').expect("measure column");
                    let m = MEASURES
                        .iter()
                        .position(|x| *x == measure)
                        .unwrap_or_else(|| panic!("unknown golden column {other}"));
                    match stat {
                        "sum" => assert_eq!(row.dec_text[m][0], *w, "{at}: {other}"),
                        "min" => assert_eq!(row.dec_text[m][1], *w, "{at}: {other}"),
                        "max" => assert_eq!(row.dec_text[m][2], *w, "{at}: {other}"),
                        "avg" => close(&format!("{at}: {other}"), row.avg[m], w),
                        _ => panic!("unknown golden column {other}"),
                    }
                }
            }
        }
    }
    let missing: Vec<_> = golden
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{granularity}: {} golden windows are not in the view, e.g. {missing:?}",
        golden.len() - seen.len()
    );
    golden.len()
}

/// Missing rows counted by a plain scan: every measure `?` or empty.
fn count_missing(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = 0;
    let mut missing = 0;
    for line in text.lines().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        rows += 1;
        let fields: Vec<&str> = line.split(';').collect();
        if fields[2..].iter().all(|f| *f == "?" || f.is_empty()) {
            missing += 1;
        }
    }
    assert_eq!(rows, ROWS, "the 30-day slice has {ROWS} rows");
    missing
}

#[test]
fn thirty_days_match_the_golden_views() {
    let Some(data) = data_file("uci_first_30_days.txt") else {
        return;
    };
    let missing = count_missing(&data);
    assert!(missing > 0, "the slice holds some '?' rows");
    let readings = ROWS - missing;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views");
    let summary = Replay::new(&out).input(&data).run().expect("replay runs");

    let hours = compare_with_golden("hour", read_view(&out, "hour"));
    let days = compare_with_golden("day", read_view(&out, "day"));
    assert!(hours > 700 && days == 31, "{hours} hours, {days} days");

    let minute = read_view(&out, "minute");
    assert_eq!(minute.len() as u64, readings, "one minute row per reading");
    assert!(minute
        .iter()
        .all(|r| r.samples == 1 && r.covered_seconds == 60));

    // The dead-letter file exists and holds its header only.
    let rejected = std::fs::read_to_string(out.join("rejected.csv")).expect("rejected.csv");
    assert_eq!(rejected, "file,line,reason,record\n");

    // Summary counts.
    assert_eq!(summary.rows, ROWS);
    assert_eq!(summary.missing, missing);
    assert_eq!(summary.readings, readings);
    assert_eq!(summary.rejected, 0);

    // Manifests: rows and samples match the files, every file is listed, sealed through the
    // end of the last window.
    let last_minute = minute.iter().map(|r| r.window_start).max().unwrap();
    for (granularity, rows, len_ms) in [
        ("minute", readings, 60_000),
        ("hour", hours as u64, 3_600_000),
        ("day", days as u64, 86_400_000),
    ] {
        let m = manifest(&out, granularity);
        assert_eq!(m["granularity"], granularity);
        assert_eq!(
            m["rows"].as_u64(),
            Some(rows),
            "{granularity} manifest rows"
        );
        assert_eq!(
            m["samples"].as_u64(),
            Some(readings),
            "{granularity} manifest samples"
        );
        let mut listed: Vec<String> = m["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let dir = out.join(granularity);
        let files: Vec<String> = parquet_files(&dir)
            .iter()
            .map(|p| {
                p.strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        assert_eq!(listed, files, "{granularity}: manifest lists the files");
        let part_rows: u64 = m["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(part_rows, rows);
        let sealed = last_minute.div_euclid(len_ms) * len_ms + len_ms;
        assert_eq!(
            m["sealed_through_ms"].as_i64(),
            Some(sealed),
            "{granularity}"
        );
        assert_eq!(m["sealed_through"].as_str(), Some(iso(sealed).as_str()));
        let (_, from_summary) = summary
            .views
            .iter()
            .find(|(g, _)| g.name() == granularity)
            .expect("summary has every view");
        assert_eq!(from_summary.rows, rows);
        assert_eq!(from_summary.samples, readings);
    }
    // Hive-style partitions: months for minutes, years for hours and days.
    assert!(out.join("minute/month=2006-12/part-0.parquet").is_file());
    assert!(out.join("minute/month=2007-01/part-0.parquet").is_file());
    for g in ["hour", "day"] {
        assert!(out.join(g).join("year=2006/part-0.parquet").is_file());
        assert!(out.join(g).join("year=2007/part-0.parquet").is_file());
    }
}
