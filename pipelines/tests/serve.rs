//! The serving layer: the merge rule of `wattflow::serve` against real Parquet views and the
//! REAL Cassandra, and the HTTP API's answers to good and bad requests.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::http::get;
use common::servers::*;
use wattflow::model::Granularity;
use wattflow::serve::{
    BatchViews, CassandraSpeedViews, MemoryViews, NoSpeedViews, Query, Source, SpeedViews, ViewRow,
    Views,
};
use wattflow::sink::cassandra::read_view;
use wattflow_pipelines::serve::Server;
use wattflow_pipelines::{Pipeline, Replay};

const METER: &str = wattflow::source::file::DEFAULT_METER;

fn ms(text: &str) -> i64 {
    wattflow::time::parse_iso(text).unwrap()
}

/// Body lines of the 30-day slice before 2007-01-01 00:00 (the first line of that day).
fn lines_before(file: &Path, first_line_of: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .skip(1)
        .position(|l| l.starts_with(first_line_of))
        .expect("the slice holds that day")
}

fn replay(file: &Path, out: &Path) {
    Replay::new(out)
        .input(file)
        .workers(2)
        .run()
        .expect("replay");
}

/// A served row equals the independently read Parquet row, column by column.
fn assert_same_as_parquet(g: Granularity, got: &ViewRow, want: &common::ViewRow) {
    let at = format!("{g} {}", common::iso(got.window_start));
    assert_eq!(got.window_start, want.window_start, "{at}");
    assert_eq!(got.samples, want.samples, "{at} samples");
    assert_eq!(got.covered_seconds, want.covered_seconds, "{at} covered");
    for i in 0..7 {
        let m = &got.measures[i];
        assert_eq!(
            m.sum,
            want.dec[i][0] as f64 / 1000.0,
            "{at} measure {i} sum"
        );
        assert_eq!(
            m.min,
            want.dec[i][1] as f64 / 1000.0,
            "{at} measure {i} min"
        );
        assert_eq!(
            m.max,
            want.dec[i][2] as f64 / 1000.0,
            "{at} measure {i} max"
        );
        assert_eq!(m.avg, want.avg[i], "{at} measure {i} avg");
    }
    assert_eq!(got.active_energy_wh, want.active_energy_wh, "{at}");
    assert_eq!(got.unmetered_wh, want.unmetered_wh, "{at}");
    assert_eq!(got.power_factor_avg, want.power_factor_avg, "{at}");
}

/// Checks an answer spanning the mark: batch rows strictly before it, speed rows from it on,
/// strictly increasing starts (no overlap), and exactly the windows of `full` in the range (no
/// gap), each equal to `full`'s row.
fn assert_merged(
    g: Granularity,
    rows: &[ViewRow],
    mark: i64,
    from: i64,
    to: i64,
    full: &BTreeMap<(String, i64), common::ViewRow>,
) {
    assert!(
        rows.windows(2)
            .all(|w| w[0].window_start < w[1].window_start),
        "{g}: overlap or disorder"
    );
    let first_speed = rows.partition_point(|r| r.source == Source::Batch);
    assert!(
        rows[first_speed..]
            .iter()
            .all(|r| r.source == Source::Speed),
        "{g}: batch after speed"
    );
    assert!(
        rows[..first_speed].iter().all(|r| r.window_start < mark),
        "{g}: batch row past the mark"
    );
    assert!(
        rows[first_speed..].iter().all(|r| r.window_start >= mark),
        "{g}: speed row before the mark"
    );
    assert!(
        first_speed > 0 && first_speed < rows.len(),
        "{g}: both sides must answer"
    );
    let want: Vec<&common::ViewRow> = full
        .range((METER.to_owned(), from)..(METER.to_owned(), to))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(rows.len(), want.len(), "{g}: a gap or extra windows");
    for (got, want) in rows.iter().zip(want) {
        assert_same_as_parquet(g, got, want);
    }
}

#[test]
fn a_range_across_the_high_water_mark_is_batch_before_it_and_cassandra_after_it() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let Some(env) = env() else { return };
    let _shared = SERVERS.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Batch views of the history up to 2007-01-01 00:00; speed views of all 30 days.
    let head = dir.path().join("head.txt");
    common::slice(&file, 0, lines_before(&file, "1/1/2007;00:00:00"), &head);
    let (batch_dir, full_dir) = (dir.path().join("batch"), dir.path().join("full"));
    replay(&head, &batch_dir);
    replay(&file, &full_dir);
    let keyspace = unique("serve_merge");
    Pipeline::new()
        .input(&file)
        .cassandra(cassandra_config(&env, &keyspace))
        .dead_letter_file(dir.path().join("rejected.csv"))
        .run(Arc::new(AtomicBool::new(false)))
        .expect("history into Cassandra");
    let cassandra = Arc::new(views(&env, &keyspace));
    let mark = ms("2007-01-01T00:00:00");
    // A window before the mark is in both views: make Cassandra's copy wrong, so only the
    // batch copy can make the answer right.
    cassandra
        .execute(&format!(
            "UPDATE {keyspace}.minute_view SET samples = 999999 WHERE meter = '{METER}' \
             AND bucket = {} AND window_start = {}",
            (mark - 60_000) / 86_400_000,
            mark - 60_000
        ))
        .unwrap();
    let served = Views::new(
        &batch_dir,
        Arc::new(CassandraSpeedViews::new(Arc::clone(&cassandra))),
    );
    assert_eq!(
        served
            .batch()
            .sealed_through(Granularity::Minute, METER)
            .unwrap(),
        Some(mark)
    );
    for (g, from, to) in [
        (
            Granularity::Minute,
            "2006-12-31T22:00:00",
            "2007-01-01T02:00:00",
        ),
        (
            Granularity::Hour,
            "2006-12-30T00:00:00",
            "2007-01-03T00:00:00",
        ),
        (
            Granularity::Day,
            "2006-12-16T00:00:00",
            "2007-01-16T00:00:00",
        ),
    ] {
        let (from, to) = (ms(from), ms(to));
        let full = common::by_window(common::read_view(&full_dir, g.name()));
        let answer = served
            .query(&Query {
                meter: METER.into(),
                granularity: g,
                from_ms: from,
                to_ms: to,
            })
            .unwrap();
        assert_eq!(answer.freshness.batch_sealed_through_ms, Some(mark), "{g}");
        assert_merged(g, &answer.rows, mark, from, to, &full);
        assert_eq!(
            answer.freshness.batch_rows + answer.freshness.speed_rows,
            answer.rows.len()
        );
        // Speed rows are Cassandra's, read directly.
        let direct = read_view(&cassandra, g, METER, mark, to).unwrap();
        let speed: Vec<&ViewRow> = answer
            .rows
            .iter()
            .filter(|r| r.source == Source::Speed)
            .collect();
        assert_eq!(speed.len(), direct.len(), "{g}");
        for (s, d) in speed.iter().zip(&direct) {
            assert_eq!(
                (s.window_start, s.samples),
                (d.window_start, d.samples),
                "{g}"
            );
            assert_eq!(
                Some(s.measures[2].avg),
                d.values.get("voltage_avg").copied(),
                "{g}"
            );
        }
    }
    // The doctored window is served from the batch view.
    let last_minute = served
        .query(&Query {
            meter: METER.into(),
            granularity: Granularity::Minute,
            from_ms: mark - 60_000,
            to_ms: mark + 60_000,
        })
        .unwrap();
    assert_eq!(last_minute.rows[0].source, Source::Batch);
    assert_ne!(last_minute.rows[0].samples, 999_999);
    assert_eq!(last_minute.rows[1].source, Source::Speed);
    // The data end 2007-01-15 17:24: the newest reading of the answer is that instant.
    let tail = served
        .query(&Query {
            meter: METER.into(),
            granularity: Granularity::Minute,
            from_ms: ms("2007-01-15T00:00:00"),
            to_ms: ms("2007-01-16T00:00:00"),
        })
        .unwrap();
    assert_eq!(
        tail.freshness.newest_reading_ms,
        Some(ms("2007-01-15T17:24:00"))
    );
    assert!(tail.freshness.age_ms.unwrap() > 0);
    assert_eq!(
        served.meters().unwrap().into_iter().collect::<Vec<_>>(),
        [METER]
    );
    drop_keyspace(&cassandra, &keyspace);
}

#[test]
fn the_embedded_store_merges_the_same_way_and_batch_alone_stops_at_the_mark() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.txt");
    common::slice(&file, 0, lines_before(&file, "1/1/2007;00:00:00"), &head);
    let (batch_dir, full_dir) = (dir.path().join("batch"), dir.path().join("full"));
    replay(&head, &batch_dir);
    replay(&file, &full_dir);
    // The embedded speed store holds every window of the full replay.
    let speed = Arc::new(MemoryViews::with_retention([i64::MAX; 3]));
    let full_views = BatchViews::open(&full_dir);
    for g in Granularity::ALL {
        for row in full_views.rows(g, METER, i64::MIN, i64::MAX).unwrap() {
            speed.upsert_row(g, row);
        }
    }
    let mark = ms("2007-01-01T00:00:00");
    let merged = Views::new(&batch_dir, speed.clone());
    let batch_only = Views::new(&batch_dir, Arc::new(NoSpeedViews));
    for g in Granularity::ALL {
        let full = common::by_window(common::read_view(&full_dir, g.name()));
        let (from, to) = match g {
            Granularity::Minute => (ms("2006-12-31T12:00:00"), ms("2007-01-01T12:00:00")),
            _ => (ms("2006-12-25T00:00:00"), ms("2007-01-05T00:00:00")),
        };
        let q = Query {
            meter: METER.into(),
            granularity: g,
            from_ms: from,
            to_ms: to,
        };
        let answer = merged.query(&q).unwrap();
        assert_merged(g, &answer.rows, mark, from, to, &full);
        let alone = batch_only.query(&q).unwrap();
        assert_eq!(alone.rows.len(), answer.freshness.batch_rows, "{g}");
        assert!(alone
            .rows
            .iter()
            .all(|r| r.source == Source::Batch && r.window_start < mark));
        assert_eq!(alone.freshness.newest_reading_ms, Some(mark), "{g}");
    }
    assert_eq!(speed.meters().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[test]
fn a_projected_query_reads_the_asked_columns_of_the_same_rows() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    replay(&file, dir.path());
    let q = Query {
        meter: METER.into(),
        granularity: Granularity::Minute,
        from_ms: ms("2006-12-20T00:00:00"),
        to_ms: ms("2007-01-10T00:00:00"),
    };
    let columns = [
        "global_active_power_avg",
        "sub_metering_3_sum",
        "unmetered_wh",
    ];
    // Each on fresh views: the full query would otherwise leave its rows in the cache.
    let fresh = || Views::new(dir.path(), Arc::new(NoSpeedViews));
    let projected = fresh().query_columns(&q, &columns).unwrap();
    let full = fresh().query(&q).unwrap();
    assert_eq!(projected.rows.len(), full.rows.len());
    assert!(full.rows.len() > 20_000, "{} rows", full.rows.len());
    // The same freshness, but for its age (taken at each answer).
    let without_age = |f: &wattflow::serve::Freshness| wattflow::serve::Freshness {
        age_ms: None,
        ..f.clone()
    };
    assert_eq!(
        without_age(&projected.freshness),
        without_age(&full.freshness)
    );
    for (p, f) in projected.rows.iter().zip(&full.rows) {
        assert_eq!(
            (p.window_start, p.samples, p.covered_seconds, p.source),
            (f.window_start, f.samples, f.covered_seconds, f.source)
        );
        for c in columns {
            assert_eq!(p.value(c), f.value(c), "{c} at {}", p.window_start);
        }
        // What was not asked for was not decoded.
        assert!(p.value("voltage_avg").unwrap().is_nan());
        assert_eq!(p.power_factor_avg, None);
    }
    // A cached full read serves a projection too (with every value).
    let views = fresh();
    views.query(&q).unwrap();
    let again = views.query_columns(&q, &columns).unwrap();
    assert_eq!(again.rows, full.rows);
    let err = views.query_columns(&q, &["voltage_average"]).unwrap_err();
    assert!(err.to_string().contains("voltage_average"), "{err}");
}

/// The 30-day slice's views, served without a speed view.
fn served_slice() -> Option<(tempfile::TempDir, Server)> {
    let file = common::data_file("uci_first_30_days.txt")?;
    let dir = tempfile::tempdir().unwrap();
    replay(&file, dir.path());
    let views = Views::new(dir.path(), Arc::new(NoSpeedViews)).with_max_rows(5000);
    let server = Server::start(views, "127.0.0.1:0").unwrap();
    Some((dir, server))
}

#[test]
fn the_api_answers_views_meters_csv_and_gzip() {
    let Some((dir, server)) = served_slice() else {
        return;
    };
    let addr = server.addr();
    let meters = get(addr, "/api/v1/meters", false);
    assert_eq!(meters.status, 200);
    let m = meters.json();
    assert_eq!(m["meters"][0]["meter"], METER);
    assert_eq!(m["meters"][0]["first_day"], "2006-12-16");
    assert_eq!(m["meters"][0]["last_day"], "2007-01-15");
    // One day of minutes: the rows of the Parquet view, in order, tagged batch.
    let day = get(
        addr,
        &format!("/api/v1/views/minute?meter={METER}&from=2007-01-02&to=2007-01-03"),
        true,
    );
    assert_eq!(day.status, 200, "{}", String::from_utf8_lossy(&day.body));
    assert!(
        day.headers
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{}",
        day.headers
    );
    let v = day.json();
    let rows = v["rows"].as_array().unwrap();
    let want: Vec<common::ViewRow> = common::read_view(dir.path(), "minute")
        .into_iter()
        .filter(|r| {
            (ms("2007-01-02T00:00:00")..ms("2007-01-03T00:00:00")).contains(&r.window_start)
        })
        .collect();
    assert_eq!(rows.len(), want.len());
    assert_eq!(rows.len(), 1440);
    let mut want = want;
    want.sort_by_key(|r| r.window_start);
    for (got, want) in rows.iter().zip(&want) {
        assert_eq!(got["window_start"], common::iso(want.window_start));
        assert_eq!(got["samples"], want.samples);
        assert_eq!(
            got["voltage_max"].as_f64().unwrap(),
            want.dec[2][2] as f64 / 1000.0
        );
        assert_eq!(
            got["global_active_power_avg"].as_f64().unwrap(),
            want.avg[0]
        );
        assert_eq!(got["source"], "batch");
    }
    assert_eq!(
        v["freshness"]["batch_sealed_through"],
        "2007-01-15T17:24:00"
    );
    assert_eq!(v["freshness"]["speed_rows"], 0);
    // Without the meter (one meter) and without a range: the last day of minutes.
    let last = get(addr, "/api/v1/views/minute", false).json();
    let last_rows = last["rows"].as_array().unwrap();
    assert_eq!(
        last_rows.last().unwrap()["window_start"],
        "2007-01-15T17:23:00"
    );
    assert_eq!(last["from"], "2007-01-14T17:24:00");
    // CSV: a header, then the same rows.
    let csv = get(
        addr,
        "/api/v1/views/hour?from=2007-01-02&to=2007-01-03&format=csv",
        false,
    );
    assert_eq!(csv.status, 200);
    let text = String::from_utf8(csv.body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("meter,window_start,samples,covered_seconds,global_active_power_sum")
    );
    assert_eq!(lines.len(), 25);
    assert!(lines[1].starts_with(&format!("{METER},2007-01-02T00:00:00,60,3600,")));
    // `columns`: only the named values (besides the keys and counts), the same numbers, in
    // the order asked; a repeat is dropped; the CSV header follows it.
    let full = get(
        addr,
        "/api/v1/views/hour?from=2007-01-02&to=2007-01-03",
        false,
    )
    .json();
    let some = get(
        addr,
        "/api/v1/views/hour?from=2007-01-02&to=2007-01-03&columns=voltage_avg,sub_metering_3_sum,voltage_avg",
        false,
    );
    assert_eq!(some.status, 200, "{}", String::from_utf8_lossy(&some.body));
    let some = some.json();
    let (full_rows, some_rows) = (
        full["rows"].as_array().unwrap(),
        some["rows"].as_array().unwrap(),
    );
    assert_eq!(some_rows.len(), 24);
    assert_eq!(some_rows.len(), full_rows.len());
    for (s, f) in some_rows.iter().zip(full_rows) {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "meter",
            "window_start",
            "window_start_ms",
            "samples",
            "covered_seconds",
            "voltage_avg",
            "sub_metering_3_sum",
            "source",
        ];
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(sorted, want);
        for k in &want {
            assert_eq!(s[k], f[k], "{k}");
        }
    }
    // The same freshness, but for its age, which the clock moves between the two requests.
    let without_age = |v: &serde_json::Value| {
        let mut f = v["freshness"].clone();
        f.as_object_mut().unwrap().remove("age_seconds");
        f
    };
    assert_eq!(without_age(&some), without_age(&full));
    let csv = get(
        addr,
        "/api/v1/views/hour?from=2007-01-02&to=2007-01-03&format=csv&columns=sub_metering_3_sum,voltage_avg",
        false,
    );
    let text = String::from_utf8(csv.body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "meter,window_start,samples,covered_seconds,sub_metering_3_sum,voltage_avg,source"
    );
    assert_eq!(lines.len(), 25);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 7);
    assert_eq!(
        first[4].parse::<f64>().unwrap(),
        full_rows[0]["sub_metering_3_sum"].as_f64().unwrap()
    );
    assert_eq!(
        first[5].parse::<f64>().unwrap(),
        full_rows[0]["voltage_avg"].as_f64().unwrap()
    );
    assert!(get(addr, "/health", false).json()["status"] == "ok");
    let metrics = String::from_utf8(get(addr, "/metrics", false).body).unwrap();
    assert!(
        metrics.contains("wattflow_http_requests_total{endpoint=\"views\",status=\"200\"}"),
        "{metrics}"
    );
    server.stop();
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let Some((_dir, server)) = served_slice() else {
        return;
    };
    let addr = server.addr();
    let cases: &[(&str, &str)] = &[
        (
            "/api/v1/views/week?from=2007-01-01&to=2007-01-02",
            "granularity",
        ),
        (
            "/api/v1/views/minute?meter=nobody&from=2007-01-01&to=2007-01-02",
            "meter",
        ),
        ("/api/v1/views/minute?from=2007-01-02&to=2007-01-01", "from"),
        ("/api/v1/views/minute?from=2007-01-01&to=2007-01-01", "from"),
        ("/api/v1/views/minute?from=yesterday&to=2007-01-02", "from"),
        ("/api/v1/views/minute?from=2007-01-01&to=2007-02-30", "to"),
        ("/api/v1/views/minute?from=2007-01-01&to=2007-01-31", "to"),
        ("/api/v1/views/day?from=0001-01-01&to=9999-12-31", "to"),
        (
            "/api/v1/views/hour?from=2007-01-01&to=2007-01-02&format=xml",
            "format",
        ),
        ("/api/v1/views/hour?from=2007-01-01&from=2007-01-02", "from"),
        ("/api/v1/views/hour?columns=voltage_average", "columns"),
        ("/api/v1/views/hour?columns=voltage_avg,,samples", "columns"),
        ("/api/v1/views/hour?columns=", "columns"),
        ("/api/v1/views/hour?limit=5", "limit"),
        ("/api/v1/meters?x=1", "x"),
    ];
    for (target, parameter) in cases {
        let r = get(addr, target, false);
        assert_eq!(
            r.status,
            400,
            "{target}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["parameter"], *parameter, "{target}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{target}"
        );
    }
    let r = get(addr, "/api/v2/nothing", false);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    server.stop();
}

#[test]
fn random_query_strings_never_get_a_server_error() {
    let Some((_dir, server)) = served_slice() else {
        return;
    };
    let addr = server.addr();
    // A seeded xorshift: the same strings every run, so a failure can be replayed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces = [
        "meter",
        "from",
        "to",
        "format",
        "columns",
        "voltage_avg",
        ",",
        "granularity",
        "=",
        "&",
        "%",
        "%00",
        "%ff",
        "%zz",
        "+",
        "2007-01-01",
        "2007-01-02T00:00:00Z",
        "9999-12-31",
        "0000-00-00",
        "-1",
        "1e308",
        "household-1",
        "csv",
        "json",
        "🔌",
        "\u{7f}",
        "..",
        "/",
        "?",
        "#",
        "T",
        ":",
        "99999999999",
        "2007-01-01T00:00:00+99:00",
        "NaN",
    ];
    let paths = [
        "/api/v1/views/minute",
        "/api/v1/views/hour",
        "/api/v1/views/day",
        "/api/v1/views/x",
        "/api/v1/meters",
        "/health",
    ];
    let mut statuses = BTreeMap::new();
    for _ in 0..400 {
        let path = paths[(next() % paths.len() as u64) as usize];
        let mut q = String::new();
        for _ in 0..(next() % 9) {
            q.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let q: String = q
            .bytes()
            .map(|b| match b {
                b'0'..=b'9'
                | b'a'..=b'z'
                | b'A'..=b'Z'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'='
                | b'&'
                | b'%'
                | b'+'
                | b':'
                | b'/'
                | b'?' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let target = format!("{path}?{q}");
        let r = get(addr, &target, false);
        assert!(
            r.status < 500,
            "{target}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.status == 200 || r.json()["error"].is_string(), "{target}");
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    // The strings reach both outcomes.
    assert!(
        statuses.contains_key(&200) && statuses.contains_key(&400),
        "{statuses:?}"
    );
    server.stop();
}

/// The speed side of a merged answer can be any store: one that is down gives a 503.
#[test]
fn a_speed_view_that_cannot_be_read_is_a_503_not_a_500() {
    struct Down;
    impl SpeedViews for Down {
        fn rows(
            &self,
            _: Granularity,
            _: &str,
            _: i64,
            _: i64,
        ) -> Result<Vec<ViewRow>, wattflow::serve::ServeError> {
            Err(wattflow::serve::ServeError::Speed(
                "connection refused".into(),
            ))
        }
        fn meters(
            &self,
        ) -> Result<std::collections::BTreeSet<String>, wattflow::serve::ServeError> {
            Err(wattflow::serve::ServeError::Speed(
                "connection refused".into(),
            ))
        }
        fn describe(&self) -> String {
            "down".into()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Views::new(dir.path(), Arc::new(Down)), "127.0.0.1:0").unwrap();
    for target in [
        "/api/v1/meters",
        "/api/v1/views/hour?meter=m&from=2007-01-01&to=2007-01-02",
        "/health",
    ] {
        let r = get(server.addr(), target, false);
        assert_eq!(r.status, 503, "{target}");
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"));
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// The live feed
// ---------------------------------------------------------------------------------------------

/// A minute row of meter `m` with `samples` readings and voltage average `volts`.
fn speed_row(meter: &str, window_start: i64, samples: i64, volts: f64) -> ViewRow {
    let mut measures = [wattflow::serve::MeasureValues::default(); 7];
    measures[2].avg = volts;
    ViewRow {
        meter: meter.into(),
        window_start,
        samples,
        covered_seconds: samples,
        measures,
        active_energy_wh: 0.0,
        unmetered_wh: 0.0,
        power_factor_avg: None,
        source: Source::Speed,
    }
}

/// A Server-Sent Events client of one feed (HTTP/1.0, so the body is not chunked).
struct SseClient(std::io::BufReader<std::net::TcpStream>);

impl SseClient {
    fn open(addr: std::net::SocketAddr, target: &str) -> SseClient {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(s, "GET {target} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        if !status.contains(" 200 ") {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut r, &mut rest);
            panic!("{status} {rest}");
        }
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
        }
        SseClient(r)
    }

    /// The next `windows` event's rows, as (window start, samples, voltage average).
    fn next_windows(&mut self) -> Vec<(i64, i64, f64)> {
        use std::io::BufRead;
        let mut event = String::new();
        loop {
            let mut line = String::new();
            let n = self.0.read_line(&mut line).expect("an event within 5 s");
            assert!(n > 0, "the feed ended");
            let line = line.trim_end();
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                assert_eq!(event, "windows", "{data}");
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["granularity"], "minute", "{v}");
                return v["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        assert_eq!(r["source"], "speed");
                        (
                            r["window_start_ms"].as_i64().unwrap(),
                            r["samples"].as_i64().unwrap(),
                            r["voltage_avg"].as_f64().unwrap(),
                        )
                    })
                    .collect();
            }
        }
    }
}

/// A gauge of `/metrics`.
fn gauge(addr: std::net::SocketAddr, name: &str) -> i64 {
    let text = String::from_utf8(get(addr, "/metrics", false).body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn live_feeds_of_one_meter_share_one_watcher_and_each_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let speed = Arc::new(MemoryViews::new());
    // An hour ago: a meter is known when the speed view has a row of it in the last ten years.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now / 60_000 * 60_000 - 3_600_000;
    speed.upsert_row(Granularity::Minute, speed_row("m1", t0 - 60_000, 60, 230.0));
    speed.upsert_row(Granularity::Minute, speed_row("m1", t0, 30, 231.0));
    let server = Server::start(Views::new(dir.path(), speed.clone()), "127.0.0.1:0").unwrap();
    let addr = server.addr();
    let live = "/api/v1/live?meter=m1";
    // The first feed starts the watcher and gets the newest window; the second joins it and
    // gets the same window first.
    let mut a = SseClient::open(addr, live);
    assert_eq!(a.next_windows(), [(t0, 30, 231.0)]);
    let mut b = SseClient::open(addr, live);
    assert_eq!(b.next_windows(), [(t0, 30, 231.0)]);
    assert_eq!(gauge(addr, "wattflow_http_live_watchers"), 1);
    assert_eq!(gauge(addr, "wattflow_http_live_feeds"), 2);
    // Each change reaches both, once: the window that grew and the one that began.
    speed.upsert_row(Granularity::Minute, speed_row("m1", t0, 60, 232.0));
    speed.upsert_row(Granularity::Minute, speed_row("m1", t0 + 60_000, 5, 233.0));
    for feed in [&mut a, &mut b] {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(feed.next_windows());
        }
        assert_eq!(got, [(t0, 60, 232.0), (t0 + 60_000, 5, 233.0)]);
    }
    // A view query without `to` ends after the newest reading as it is now, not as the
    // server's list of meters (read when the feeds opened) has it.
    let rows = get(addr, "/api/v1/views/minute?meter=m1", false).json()["rows"].clone();
    let last = rows.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["window_start_ms"], t0 + 60_000, "{rows}");
    assert_eq!(last["samples"], 5);
    // A meter that began after the server read its list is found (the list is read again
    // when a request names a meter it lacks and it is older than 250 ms), and has a watcher of
    // its own.
    speed.upsert_row(Granularity::Minute, speed_row("m2", t0, 1, 229.0));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut c = SseClient::open(addr, "/api/v1/live?meter=m2");
    assert_eq!(c.next_windows(), [(t0, 1, 229.0)]);
    assert_eq!(gauge(addr, "wattflow_http_live_watchers"), 2);
    // When the clients go, their feeds end at the next write and the watchers with them.
    drop((a, b, c));
    let gone = std::time::Instant::now();
    let mut t = t0 + 120_000;
    while gauge(addr, "wattflow_http_live_watchers") + gauge(addr, "wattflow_http_live_feeds") > 0 {
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(10),
            "feeds or watchers outlive their clients"
        );
        for m in ["m1", "m2"] {
            speed.upsert_row(Granularity::Minute, speed_row(m, t, 1, 230.0));
        }
        t += 60_000;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A new feed starts a new watcher and gets the newest window.
    let mut d = SseClient::open(addr, live);
    assert_eq!(d.next_windows()[0].0, t - 60_000);
    assert_eq!(gauge(addr, "wattflow_http_live_watchers"), 1);
    // Stopping the server ends an open feed: its client sees the stream end, not a hang.
    server.stop();
    let mut rest = String::new();
    match std::io::Read::read_to_string(&mut d.0, &mut rest) {
        Ok(_) => assert!(!rest.contains("data: "), "an event after the stop: {rest}"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the feed still open 5 s after the stop"
        ),
    }
}
