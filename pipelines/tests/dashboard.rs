//! The dashboard in a real headless browser: Debian's Chromium driven by the npm package
//! `playwright-core` (`pipelines/tests/browser`, installed by `scripts/test.sh`). Against a
//! server with the 30-day slice's views and an embedded speed store, the page's charts must
//! show the views' values (read back from the page), a new speed-view row must appear within
//! 2 s, and a screenshot is kept in `target/test-artefacts/dashboard.png`.
//! Without Chromium or the npm package the test is skipped, except under `CI=true`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wattflow::model::{Aggregate, Granularity, MeterId, Origin, Reading};
use wattflow::serve::{MemoryViews, Query, Views};
use wattflow_pipelines::serve::Server;
use wattflow_pipelines::Replay;

const METER: &str = wattflow::source::file::DEFAULT_METER;

fn ms(text: &str) -> i64 {
    wattflow::time::parse_iso(text).unwrap()
}

/// The driver process, killed if the test fails before it ends.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium and the driver, or `None` (a failure under `CI=true`).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(
        std::env::var("WATTFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ok = chromium.is_file() && dir.join("node_modules/playwright-core").is_dir();
    if ok {
        return Some((chromium, dir));
    }
    let why = format!(
        "needs {} and `npm ci` in {} (scripts/test.sh installs both)",
        chromium.display(),
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the dashboard test {why}");
    }
    eprintln!("SKIPPED: the dashboard test {why}");
    None
}

#[test]
fn the_dashboard_shows_the_views_values_and_a_live_window_within_two_seconds() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let Some((chromium, dir)) = browser() else {
        return;
    };
    let views_dir = tempfile::tempdir().unwrap();
    Replay::new(views_dir.path())
        .input(&file)
        .run()
        .expect("replay");
    let speed = Arc::new(MemoryViews::new());
    let server = Server::start(Views::new(views_dir.path(), speed.clone()), "127.0.0.1:0").unwrap();
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = Driver(
        Command::new("node")
            .arg(dir.join("dashboard.mjs"))
            .arg(format!("http://{}/", server.addr()))
            .arg(&shot)
            .env("WATTFLOW_CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node"),
    );
    let mut out = BufReader::new(node.0.stdout.take().unwrap());
    let mut next = || -> serde_json::Value {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver said {line:?} ({e})"))
    };

    // The default view: the last day of minutes up to the newest reading, 2007-01-15 17:24.
    let loaded = next();
    assert_eq!(loaded["step"], "loaded", "{loaded}");
    assert_eq!(
        loaded["errors"].as_array().unwrap().len(),
        0,
        "page errors: {loaded}"
    );
    assert_eq!(
        loaded["foreign"].as_array().unwrap().len(),
        0,
        "requests elsewhere: {loaded}"
    );
    assert_eq!(loaded["granularity"], "minute");
    let (from, to) = (
        loaded["from"].as_i64().unwrap(),
        loaded["to"].as_i64().unwrap(),
    );
    assert_eq!(to, ms("2007-01-15T17:24:00"));
    assert_eq!(from, to - 86_400_000);
    let want = Views::new(views_dir.path(), speed.clone())
        .query(&Query {
            meter: METER.into(),
            granularity: Granularity::Minute,
            from_ms: from,
            to_ms: to,
        })
        .unwrap()
        .rows;
    assert_eq!(loaded["rows"].as_u64().unwrap() as usize, want.len());
    assert_eq!(loaded["first"].as_i64().unwrap(), want[0].window_start);
    let panels = &loaded["panels"];
    let series = |panel: &str, column: &str| -> serde_json::Value {
        panels[panel]
            .as_array()
            .unwrap_or_else(|| panic!("no panel {panel}: {panels}"))
            .iter()
            .find(|s| s["column"] == column)
            .unwrap_or_else(|| panic!("{panel}: no series {column}"))
            .clone()
    };
    for (panel, column, value) in [
        (
            "active-power",
            "global_active_power_avg",
            &|r: &wattflow::serve::ViewRow| r.value("global_active_power_avg"),
        ),
        ("voltage", "voltage_min", &|r: &wattflow::serve::ViewRow| {
            r.value("voltage_min")
        }),
        (
            "power-factor",
            "power_factor_avg",
            &|r: &wattflow::serve::ViewRow| r.power_factor_avg,
        ),
        (
            "sub-metering",
            "sub_metering_3_sum",
            &|r: &wattflow::serve::ViewRow| r.value("sub_metering_3_sum"),
        ),
        (
            "other-devices",
            "unmetered_wh",
            &|r: &wattflow::serve::ViewRow| Some(r.unmetered_wh),
        ),
    ]
        as [(
            &str,
            &str,
            &dyn Fn(&wattflow::serve::ViewRow) -> Option<f64>,
        ); 5]
    {
        let s = series(panel, column);
        let values: Vec<f64> = want.iter().filter_map(value).collect();
        assert_eq!(
            s["count"].as_u64().unwrap() as usize,
            values.len(),
            "{panel} {column}"
        );
        assert!(
            (s["first"].as_f64().unwrap() - values[0]).abs() < 1e-9,
            "{panel} {column} first: {s}"
        );
        assert!(
            (s["last"].as_f64().unwrap() - values[values.len() - 1]).abs() < 1e-9,
            "{panel} {column} last: {s}"
        );
        assert!(
            s["drawn"].as_u64().unwrap() > 100,
            "{panel} {column}: no line drawn"
        );
    }
    assert!(
        panels["typical-day"]
            .as_array()
            .is_some_and(|a| a.len() == 3),
        "{panels}"
    );
    assert!(
        loaded["tooltip"].as_str().unwrap().contains("average:"),
        "{loaded}"
    );
    assert_eq!(loaded["shares"].as_array().unwrap().len(), 4);
    assert!(loaded["summary"].as_str().unwrap().contains("kWh"));

    // A live window: the minute after the newest reading, in the speed view.
    assert_eq!(next()["step"], "ready");
    let start = to;
    let reading = Reading {
        meter: MeterId::new(METER).unwrap(),
        ts: start,
        interval_s: 60,
        values: [7777, 100, 240_000, 32_000, 0, 0, 0],
        origin: Origin::default(),
    };
    let added = Instant::now();
    speed.upsert(Granularity::Minute, METER, start, &Aggregate::of(&reading));
    writeln!(node.0.stdin.as_mut().unwrap(), "GO {start}").unwrap();
    let live = next();
    let seen = added.elapsed();
    assert_eq!(live["step"], "live", "{live}");
    assert!(
        seen < Duration::from_secs(2),
        "the live window took {seen:?}"
    );
    assert_eq!(live["row"]["source"], "speed");
    assert_eq!(live["last"].as_f64().unwrap(), 7.777, "{live}");
    let done = next();
    assert_eq!(done["step"], "done");
    assert_eq!(done["errors"].as_array().unwrap().len(), 0, "{done}");
    assert!(node.0.wait().unwrap().success());
    // The screenshot is a real PNG of the page.
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    server.stop();
}
