//! History, then simulated live sensors, in one graph: every reading counted once across the
//! switch (the views against an aggregation computed here from the generator's readings), for
//! one and two workers; the fixed switch; and `wattflow demo` itself, serving live windows
//! while it runs and leaving exact views when stopped. No Kafka or Cassandra needed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::get;
use common::servers::{expected, Expect};
use wattflow::generate::{Generator, GeneratorConfig};
use wattflow::model::{Granularity, Reading};
use wattflow::serve::{MemoryViews, SpeedViews};
use wattflow::source::handover::SwitchAt;
use wattflow::source::sensors::SensorSourceConfig;
use wattflow::time::DAY_MS;
use wattflow_pipelines::{Demo, DemoError, Pipeline, RunSummary};

const MINUTE: i64 = 60_000;

fn ms(text: &str) -> i64 {
    wattflow::time::parse_iso(text).unwrap()
}

/// The history the generator writes for `config`: every minute that is not missing.
fn history_readings(config: GeneratorConfig) -> Vec<Reading> {
    let g = Generator::new(config);
    let mut out = Vec::new();
    let mut ts = config.start_ms;
    while ts < g.end_ms() {
        for h in 1..=config.households {
            if !g.is_missing(h, ts) {
                out.push(g.reading(h, ts, 60));
            }
        }
        ts += MINUTE;
    }
    out
}

/// What the sensors of `households` send from `from[h]` to `until`, one reading a second.
fn live_readings(seed: u64, from: &BTreeMap<u32, i64>, until: i64) -> Vec<Reading> {
    let g = Generator::new(GeneratorConfig {
        seed,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    });
    let mut out = Vec::new();
    for (&h, &start) in from {
        out.extend((start..until).step_by(1000).map(|ts| g.reading(h, ts, 1)));
    }
    out
}

/// Writes the history of `config` as `<dir>/history.txt`.
fn write_history(config: GeneratorConfig, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("history.txt");
    let file = std::fs::File::create(&path).unwrap();
    Generator::new(config)
        .write_uci(std::io::BufWriter::new(file))
        .unwrap();
    path
}

/// Every window of every granularity in the Parquet views under `out` equals the aggregation
/// of `readings` computed here, and holds nothing else.
fn assert_views_are(out: &Path, readings: &[Reading]) {
    for g in Granularity::ALL {
        let want = expected(readings, g);
        let got = common::by_window(common::read_view(out, g.name()));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{g}: the windows differ"
        );
        for (key, e) in &want {
            assert_row(g, key, &got[key], e);
        }
    }
}

fn assert_row(g: Granularity, key: &(String, i64), row: &common::ViewRow, e: &Expect) {
    assert_eq!(row.samples, e.samples, "{g} {key:?} samples");
    for i in 0..7 {
        assert_eq!(
            row.dec[i],
            [e.sum[i] as i128, e.min[i] as i128, e.max[i] as i128],
            "{g} {key:?} {} sum/min/max",
            common::MEASURES[i]
        );
    }
}

/// The memory views hold, for every window, what the Parquet views hold.
fn assert_memory_matches_parquet(memory: &MemoryViews, out: &Path) {
    for g in Granularity::ALL {
        let parquet = common::read_view(out, g.name());
        let mut meters: Vec<&str> = parquet.iter().map(|r| r.meter.as_str()).collect();
        meters.dedup();
        let mut held = 0;
        for meter in meters {
            let rows = memory.rows(g, meter, i64::MIN / 2, i64::MAX / 2).unwrap();
            let by_start: BTreeMap<i64, _> = rows.iter().map(|r| (r.window_start, r)).collect();
            for p in parquet.iter().filter(|p| p.meter == meter) {
                let m = by_start
                    .get(&p.window_start)
                    .unwrap_or_else(|| panic!("{g} {meter} {} not in memory", p.window_start));
                assert_eq!(m.samples, p.samples, "{g} {meter} {}", p.window_start);
                let sum = m.measures[0].sum;
                assert!(
                    (sum - p.dec[0][0] as f64 / 1000.0).abs() < 1e-6,
                    "{g} {meter} {}: {sum} vs {:?}",
                    p.window_start,
                    p.dec[0]
                );
                held += 1;
            }
        }
        assert!(held > 0, "{g}: no window compared");
    }
}

/// History of `config`, then sensors up to `until`, into Parquet and memory views.
fn run(
    history: &Path,
    config: GeneratorConfig,
    switch: SwitchAt,
    until: i64,
    workers: usize,
    out: &Path,
) -> (RunSummary, Arc<MemoryViews>) {
    let memory = Arc::new(MemoryViews::new());
    let summary = Pipeline::new()
        .input(history)
        .sensors(
            SensorSourceConfig::new(config.households)
                .seed(config.seed)
                .until_ms(until),
        )
        .switch_at(switch)
        .parquet(out)
        .memory_views(Arc::clone(&memory))
        .workers(workers)
        .run(Arc::new(AtomicBool::new(false)))
        .expect("history then sensors");
    (summary, memory)
}

#[test]
fn history_then_sensors_count_every_reading_once_for_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = GeneratorConfig {
        households: 2,
        days: 2,
        start_ms: ms("2026-01-10T00:00:00"),
        seed: 7,
        missing_rate: 0.02,
    };
    let history = write_history(config, dir.path());
    let past = history_readings(config);
    let end = config.start_ms + 2 * DAY_MS;
    // Each meter switches at the end of its last history reading.
    let mut switch: BTreeMap<u32, i64> = BTreeMap::new();
    for r in &past {
        let h: u32 = r.meter.as_str()["household-".len()..].parse().unwrap();
        let e = switch.entry(h).or_insert(i64::MIN);
        *e = (*e).max(r.ts + 60_000);
    }
    assert!(
        switch.values().all(|&t| t > end - 10 * MINUTE),
        "the seed must not end a history with a long outage: {switch:?}"
    );
    let until = end + 30 * MINUTE + 17_000;
    let live = live_readings(config.seed, &switch, until);
    let mut all = past.clone();
    all.extend(live.iter().copied());

    let mut outs = Vec::new();
    for workers in [1, 2] {
        let out = dir.path().join(format!("views-{workers}"));
        let (summary, memory) = run(&history, config, SwitchAt::Auto, until, workers, &out);
        let sensors = summary.sensors.as_ref().unwrap();
        assert_eq!(sensors.readings, live.len() as u64, "{workers} workers");
        assert_eq!(sensors.newest_ms, Some(until));
        assert_eq!(
            summary.history.as_ref().unwrap().readings,
            past.len() as u64
        );
        assert_eq!(summary.dead_letter_file_records, 0);
        assert_views_are(&out, &all);
        assert_memory_matches_parquet(&memory, &out);
        // At the switch: the history's minute of one reading, then the sensors' 60.
        let minutes = common::by_window(common::read_view(&out, "minute"));
        for (h, t) in &switch {
            let meter = format!("household-{h}");
            if let Some(before) = minutes.get(&(meter.clone(), t - MINUTE)) {
                assert_eq!(before.samples, 1, "{meter} before the switch");
            }
            assert_eq!(
                minutes[&(meter.clone(), *t)].samples,
                60,
                "{meter} at the switch"
            );
        }
        outs.push(out);
    }
    common::assert_same_parquet_files(&outs[1], &outs[0]);
}

#[test]
fn a_fixed_switch_inside_the_history_leaves_the_rest_to_the_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let config = GeneratorConfig {
        households: 3,
        days: 1,
        start_ms: ms("2026-03-02T00:00:00"),
        seed: 11,
        missing_rate: 0.0,
    };
    let history = write_history(config, dir.path());
    let at = ms("2026-03-02T18:30:00");
    let until = ms("2026-03-02T19:05:00");
    let past: Vec<Reading> = history_readings(config)
        .into_iter()
        .filter(|r| r.ts < at)
        .collect();
    let from: BTreeMap<u32, i64> = (1..=3).map(|h| (h, at)).collect();
    let mut all = past.clone();
    all.extend(live_readings(config.seed, &from, until));
    let out = dir.path().join("views");
    let (summary, _) = run(&history, config, SwitchAt::At(at), until, 2, &out);
    let h = summary.history.as_ref().unwrap();
    assert_eq!(h.readings, past.len() as u64);
    assert_eq!(h.after_switch, 3 * (24 * 60 - 18 * 60 - 30));
    assert_views_are(&out, &all);
}

#[test]
fn sensors_alone_start_where_they_are_told_and_stop_at_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let start = ms("2026-06-30T23:58:00");
    let until = ms("2026-07-01T00:03:30");
    let memory = Arc::new(MemoryViews::new());
    let summary = Pipeline::new()
        .sensors(
            SensorSourceConfig::new(2)
                .seed(5)
                .start_ms(start)
                .until_ms(until),
        )
        .parquet(dir.path())
        .memory_views(Arc::clone(&memory))
        .run(Arc::new(AtomicBool::new(false)))
        .expect("sensors alone");
    let from: BTreeMap<u32, i64> = (1..=2).map(|h| (h, start)).collect();
    let live = live_readings(5, &from, until);
    assert_eq!(summary.sensors.unwrap().readings, live.len() as u64);
    assert_views_are(dir.path(), &live);
    // Two months, two minute partitions.
    assert!(dir.path().join("minute/month=2026-06").is_dir());
    assert!(dir.path().join("minute/month=2026-07").is_dir());
    assert_memory_matches_parquet(&memory, dir.path());
}

#[test]
fn the_demo_serves_live_windows_and_leaves_exact_views_when_stopped() {
    demo_serves_live_windows_and_leaves_exact_views(1);
}

#[test]
fn the_demo_on_two_workers_serves_live_windows_and_leaves_exact_views() {
    demo_serves_live_windows_and_leaves_exact_views(2);
}

/// `wattflow demo` on `workers` timely workers, on the real clock: meters listed, the newest
/// window growing, history then sensors across midnight, and exact views after the stop.
fn demo_serves_live_windows_and_leaves_exact_views(workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("demo");
    let demo = Demo::new(&folder)
        .households(2)
        .days(1)
        .seed(3)
        .workers(workers)
        .start()
        .expect("demo starts");
    assert!(demo.wait_live(Duration::from_secs(60)), "not live in 60 s");
    let addr = demo.addr();
    let midnight = demo.history_end_ms();

    let meters = get(addr, "/api/v1/meters", false).json();
    let names: Vec<&str> = meters["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["meter"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["household-1", "household-2"]);
    assert!(get(addr, "/", false).status == 200);

    // The newest minute window grows with the clock, from the speed view.
    let newest = |meter: &str| -> serde_json::Value {
        let reply = get(
            addr,
            &format!("/api/v1/views/minute?meter={meter}&from={}", iso(midnight)),
            false,
        );
        assert_eq!(reply.status, 200);
        let rows = reply.json()["rows"].as_array().unwrap().clone();
        rows.last().cloned().expect("a window since midnight")
    };
    let first = newest("household-2");
    assert_eq!(first["source"], "speed");
    let key = |r: &serde_json::Value| {
        (
            r["window_start_ms"].as_i64().unwrap(),
            r["samples"].as_i64().unwrap(),
        )
    };
    let seen = Instant::now();
    loop {
        let now = newest("household-2");
        if key(&now) > key(&first) {
            assert!(now["samples"].as_i64().unwrap() <= 60, "{now}");
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(3),
            "the newest window did not change in 3 s: {first}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Across the switch: the history's minutes (one reading each), then the sensors' (60).
    let reply = get(
        addr,
        &format!(
            "/api/v1/views/minute?meter=household-1&from={}&to={}",
            iso(midnight - 10 * MINUTE),
            iso(midnight + 2 * MINUTE)
        ),
        false,
    )
    .json();
    let rows = reply["rows"].as_array().unwrap();
    let after: Vec<i64> = rows
        .iter()
        .filter(|r| r["window_start_ms"].as_i64().unwrap() >= midnight)
        .map(|r| r["samples"].as_i64().unwrap())
        .collect();
    let before = rows.len() - after.len();
    assert!(before >= 5, "history minutes before midnight: {reply}");
    assert!(rows[..before].iter().all(|r| r["samples"] == 1), "{reply}");
    // Every sensor minute is whole but the newest, which may still be filling.
    let (last, whole) = after
        .split_last()
        .unwrap_or_else(|| panic!("no sensor minute after midnight: {reply}"));
    assert!(whole.iter().all(|&s| s == 60), "{reply}");
    assert!((1..=60).contains(last), "{reply}");

    let summary = demo.stop().expect("a clean stop");
    assert!(server_gone(addr), "the server still answers after stop");
    // The views left behind: today's windows equal the sensors' readings from midnight to the
    // newest, and every reading of the run is in the day view.
    let newest_ms = summary.sensors.as_ref().unwrap().newest_ms.unwrap();
    let from: BTreeMap<u32, i64> = (1..=2).map(|h| (h, midnight)).collect();
    let live = live_readings(3, &from, newest_ms);
    assert_eq!(
        summary.sensors.as_ref().unwrap().readings,
        live.len() as u64
    );
    let past = history_readings(GeneratorConfig {
        households: 2,
        days: 1,
        start_ms: midnight - DAY_MS,
        seed: 3,
        missing_rate: wattflow::generate::DEFAULT_MISSING_RATE,
    });
    let mut all = past;
    all.extend(live);
    assert_views_are(&folder, &all);
    for g in ["minute", "hour", "day"] {
        let manifest = common::manifest(&folder, g);
        assert!(manifest["rows"].as_u64().unwrap() > 0, "{g}: {manifest}");
    }
}

#[test]
fn the_demo_writes_only_into_a_new_folder_or_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let err = Demo::new(&foreign).days(0).start().unwrap_err();
    assert!(matches!(err, DemoError::Folder { .. }), "{err}");
    assert!(err.to_string().contains("mine"), "{err}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "keep me"
    );

    // A demo's own folder is reused: its views are replaced, its other files kept.
    let own = dir.path().join("demo");
    let first = Demo::new(&own).households(1).days(1).start().unwrap();
    first.stop().unwrap();
    std::fs::write(own.join("minute/month=1999-01.parquet"), "stale").ok();
    std::fs::write(own.join("keep.txt"), "mine").unwrap();
    let second = Demo::new(&own).households(1).days(1).start().unwrap();
    assert!(second.wait_live(Duration::from_secs(60)));
    second.stop().unwrap();
    assert!(!own.join("minute/month=1999-01.parquet").exists());
    assert_eq!(
        std::fs::read_to_string(own.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(own.join("day/_manifest.json").is_file());
}

fn iso(ms: i64) -> String {
    wattflow::time::format_iso(ms)
}

/// Whether a server has gone: a connection to its address is refused.
fn server_gone(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}
