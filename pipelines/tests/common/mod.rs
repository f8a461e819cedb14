//! Helpers shared by the replay integration tests. Everything here is written independently of
//! the crate under test: its own UCI line parser (integer thousandths), its own calendar
//! arithmetic and its own aggregation, so the tests compare against a second implementation.
#![allow(dead_code)]

pub mod http;
pub mod servers;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The measure columns of the views, in file order.
pub const MEASURES: [&str; 7] = [
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
];

/// `/work/shared/data/<name>` (beside the checkout), or `None` with a skip note when it is
/// missing. Under `CI=true` a missing file fails the test instead.
pub fn data_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "test data {} is missing (CI=true: not skipping)",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: test data {} is missing (set CI=true to make this a failure)",
        path.display()
    );
    None
}

/// Repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------------------------
// Calendar
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 (proleptic Gregorian), written from scratch for the tests.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    if y >= 1970 {
        for yy in 1970..y {
            days += if leap(yy) { 366 } else { 365 };
        }
    } else {
        for yy in y..1970 {
            days -= if leap(yy) { 366 } else { 365 };
        }
    }
    days += CUM[(m - 1) as usize];
    if m > 2 && leap(y) {
        days += 1;
    }
    days + d - 1
}

/// Naive ISO-8601 of ms since the epoch (`2006-12-16T17:00:00`).
pub fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    // Find the year, then the month, by counting forward from 1970.
    let mut y = 1970;
    while days_from_civil(y + 1, 1, 1) <= days {
        y += 1;
    }
    while days_from_civil(y, 1, 1) > days {
        y -= 1;
    }
    let mut m = 1;
    while m < 12 && days_from_civil(y, m + 1, 1) <= days {
        m += 1;
    }
    let d = days - days_from_civil(y, m, 1) + 1;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------------------------------------
// An independent UCI parser and aggregation
// ---------------------------------------------------------------------------------------------

/// One body line of a UCI file, as the tests understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UciLine {
    /// Every measure `?` or empty.
    Missing,
    /// A reading: start in ms (naive local time as UTC) and the measures in thousandths.
    Reading { ts: i64, values: [i64; 7] },
}

/// Exact thousandths of a decimal with exactly three places (what the UCI file holds).
pub fn thousandths(text: &str) -> i64 {
    let b = text.as_bytes();
    let n = b.len();
    assert!(
        n >= 5 && b[n - 4] == b'.',
        "not a number with three decimals: {text:?}"
    );
    let mut v = 0i64;
    for (i, &c) in b.iter().enumerate() {
        if i == n - 4 {
            continue;
        }
        assert!(c.is_ascii_digit(), "bad number {text:?}");
        v = v * 10 + (c - b'0') as i64;
    }
    v
}

/// Parses a line of the UCI file (`d/m/yyyy;hh:mm:ss;7 values`, CRLF tolerated). Written
/// without allocation: the whole-file test runs it two million times in debug builds.
pub fn parse_uci_line(line: &str) -> UciLine {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut fields = [""; 9];
    let mut n = 0;
    for f in line.split(';') {
        assert!(n < 9, "too many fields: {line:?}");
        fields[n] = f;
        n += 1;
    }
    assert_eq!(n, 9, "line {line:?}");
    if fields[2..].iter().all(|x| *x == "?" || x.is_empty()) {
        return UciLine::Missing;
    }
    let num = |s: &str| -> i64 {
        assert!(
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
            "{line:?}"
        );
        s.bytes().fold(0, |a, b| a * 10 + (b - b'0') as i64)
    };
    let mut dmy = fields[0].split('/');
    let (d, m, y) = (
        num(dmy.next().unwrap()),
        num(dmy.next().unwrap()),
        num(dmy.next().unwrap()),
    );
    let mut hms = fields[1].split(':');
    let (hh, mm, ss) = (
        num(hms.next().unwrap()),
        num(hms.next().unwrap()),
        num(hms.next().unwrap()),
    );
    assert!((1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 60);
    let ts = (days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000;
    let mut values = [0i64; 7];
    for (v, t) in values.iter_mut().zip(&fields[2..]) {
        *v = thousandths(t);
    }
    UciLine::Reading { ts, values }
}

/// Count, sum, min and max of each measure over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agg {
    pub samples: i64,
    pub sum: [i64; 7],
    pub min: [i64; 7],
    pub max: [i64; 7],
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            samples: 0,
            sum: [0; 7],
            min: [i64::MAX; 7],
            max: [i64::MIN; 7],
        }
    }
}

impl Agg {
    pub fn add(&mut self, values: &[i64; 7]) {
        self.samples += 1;
        for (i, &v) in values.iter().enumerate() {
            self.sum[i] += v;
            self.min[i] = self.min[i].min(v);
            self.max[i] = self.max[i].max(v);
        }
    }
}

/// Hour and day aggregates of one meter, plus the counts of a scan.
#[derive(Debug, Default)]
pub struct Oracle {
    pub rows: u64,
    pub missing: u64,
    pub readings: u64,
    /// Readings whose minute is not after the previous reading's (out of order or repeated).
    pub not_increasing: u64,
    pub last_ts: Option<i64>,
    pub hours: BTreeMap<i64, Agg>,
    pub days: BTreeMap<i64, Agg>,
}

impl Oracle {
    pub fn add_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.rows += 1;
        match parse_uci_line(line) {
            UciLine::Missing => self.missing += 1,
            UciLine::Reading { ts, values } => self.add(ts, &values),
        }
    }

    pub fn add(&mut self, ts: i64, values: &[i64; 7]) {
        self.readings += 1;
        if self.last_ts.is_some_and(|last| ts <= last) {
            self.not_increasing += 1;
        }
        self.last_ts = Some(ts);
        self.hours
            .entry(ts.div_euclid(3_600_000) * 3_600_000)
            .or_default()
            .add(values);
        self.days
            .entry(ts.div_euclid(86_400_000) * 86_400_000)
            .or_default()
            .add(values);
    }

    /// Scans a whole UCI text (header first).
    pub fn of_text(text: &str) -> Oracle {
        let mut o = Oracle::default();
        for line in text.split('\n').skip(1) {
            o.add_line(line);
        }
        o
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the views back
// ---------------------------------------------------------------------------------------------

/// One row of a view as read from Parquet.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRow {
    pub meter: String,
    pub window_start: i64,
    pub samples: i64,
    pub covered_seconds: i64,
    /// Unscaled `DECIMAL(18,3)` values: `[sum, min, max]` per measure.
    pub dec: [[i128; 3]; 7],
    /// The same as text, as the Arrow reader formats them.
    pub dec_text: [[String; 3]; 7],
    pub avg: [f64; 7],
    pub active_energy_wh: f64,
    pub unmetered_wh: f64,
    pub power_factor_avg: Option<f64>,
}

/// Every `*.parquet` file below `dir` (hidden temporaries excluded), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads every row of `<out>/<granularity>/**/*.parquet`, checking the column types of the
/// batch view contract on the way.
pub fn read_view(out: &Path, granularity: &str) -> Vec<ViewRow> {
    let mut rows = Vec::new();
    for file in parquet_files(&out.join(granularity)) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("{}: no column {name}", file.display()))
                    .clone()
            };
            assert_eq!(
                schema.field_with_name("window_start").unwrap().data_type(),
                &DataType::Timestamp(TimeUnit::Millisecond, None)
            );
            let meter = col("meter");
            let meter = meter.as_string::<i32>();
            let start = col("window_start");
            let start = start.as_primitive::<TimestampMillisecondType>();
            let samples = col("samples");
            let samples = samples.as_primitive::<Int64Type>();
            let covered = col("covered_seconds");
            let covered = covered.as_primitive::<Int64Type>();
            let mut decs = Vec::new();
            let mut avgs = Vec::new();
            for m in MEASURES {
                let mut three = Vec::new();
                for stat in ["sum", "min", "max"] {
                    let name = format!("{m}_{stat}");
                    assert_eq!(
                        schema.field_with_name(&name).unwrap().data_type(),
                        &DataType::Decimal128(18, 3),
                        "{name}"
                    );
                    three.push(col(&name));
                }
                decs.push(three);
                avgs.push(col(&format!("{m}_avg")));
            }
            let energy = col("active_energy_wh");
            let energy = energy.as_primitive::<Float64Type>();
            let unmetered = col("unmetered_wh");
            let unmetered = unmetered.as_primitive::<Float64Type>();
            let pf = col("power_factor_avg");
            let pf = pf.as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                let mut dec = [[0i128; 3]; 7];
                let mut dec_text: [[String; 3]; 7] = Default::default();
                let mut avg = [0f64; 7];
                for m in 0..7 {
                    for s in 0..3 {
                        let a = decs[m][s].as_primitive::<Decimal128Type>();
                        assert!(!a.is_null(i));
                        dec[m][s] = a.value(i);
                        dec_text[m][s] = a.value_as_string(i);
                    }
                    avg[m] = avgs[m].as_primitive::<Float64Type>().value(i);
                }
                rows.push(ViewRow {
                    meter: meter.value(i).to_owned(),
                    window_start: start.value(i),
                    samples: samples.value(i),
                    covered_seconds: covered.value(i),
                    dec,
                    dec_text,
                    avg,
                    active_energy_wh: energy.value(i),
                    unmetered_wh: unmetered.value(i),
                    power_factor_avg: (!pf.is_null(i)).then(|| pf.value(i)),
                });
            }
        }
    }
    rows
}

/// Rows by `(meter, window_start)`, failing on a window written twice.
pub fn by_window(rows: Vec<ViewRow>) -> BTreeMap<(String, i64), ViewRow> {
    let mut map = BTreeMap::new();
    for r in rows {
        let key = (r.meter.clone(), r.window_start);
        if let Some(old) = map.insert(key.clone(), r) {
            panic!("window {key:?} appears twice in the view (first: {old:?})");
        }
    }
    map
}

/// Checks a view of one meter against the oracle's windows: every row's samples, and exact
/// sum/min/max of every measure; the same set of windows.
pub fn assert_view_matches(
    what: &str,
    view: &BTreeMap<(String, i64), ViewRow>,
    meter: &str,
    expected: &BTreeMap<i64, Agg>,
    interval_s: i64,
) {
    let got: Vec<i64> = view
        .keys()
        .filter(|(m, _)| m == meter)
        .map(|(_, s)| *s)
        .collect();
    let want: Vec<i64> = expected.keys().copied().collect();
    if got != want {
        let extra: Vec<String> = got
            .iter()
            .filter(|s| !expected.contains_key(s))
            .take(5)
            .map(|s| iso(*s))
            .collect();
        let missing: Vec<String> = want
            .iter()
            .filter(|s| !got.contains(s))
            .take(5)
            .map(|s| iso(*s))
            .collect();
        panic!(
            "{what}: {} windows in the view, {} expected; unexpected {extra:?}; missing {missing:?}",
            got.len(),
            want.len()
        );
    }
    for (start, agg) in expected {
        let row = &view[&(meter.to_owned(), *start)];
        let at = iso(*start);
        assert_eq!(row.samples, agg.samples, "{what} {at}: samples");
        assert_eq!(
            row.covered_seconds,
            agg.samples * interval_s,
            "{what} {at}: covered_seconds"
        );
        for (m, name) in MEASURES.iter().enumerate() {
            assert_eq!(
                row.dec[m],
                [agg.sum[m] as i128, agg.min[m] as i128, agg.max[m] as i128],
                "{what} {at}: {name} sum/min/max"
            );
        }
        let energy = agg.sum[0] as f64 * interval_s as f64 / 3600.0;
        assert!(
            (row.active_energy_wh - energy).abs() <= 1e-6 * energy.abs().max(1.0),
            "{what} {at}: active_energy_wh {} vs {energy}",
            row.active_energy_wh
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Every file below `dir` with its bytes, by path relative to `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Parses an RFC 4180 CSV text into records.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => record.push(std::mem::take(&mut field)),
                '\r' => {}
                '\n' => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                    any = false;
                }
                _ => field.push(c),
            }
        }
    }
    if any {
        record.push(field);
        records.push(record);
    }
    records
}

/// The `rows`/`samples` of a granularity's `_manifest.json`, read as plain JSON.
pub fn manifest(out: &Path, granularity: &str) -> serde_json::Value {
    let path = out.join(granularity).join("_manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every Parquet file of `got` equals the file of the same name in `want`, byte for byte,
/// and both hold the same files.
pub fn assert_same_parquet_files(got: &Path, want: &Path) {
    let rel = |root: &Path| -> Vec<PathBuf> {
        parquet_files(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    let (g, w) = (rel(got), rel(want));
    assert_eq!(g, w, "the files of the views differ");
    for f in w {
        assert!(
            std::fs::read(got.join(&f)).unwrap() == std::fs::read(want.join(&f)).unwrap(),
            "{} differs from an uninterrupted run",
            f.display()
        );
    }
}

/// Writes the header and body rows `[from, to)` of the UCI file `src` to `dst`; returns the
/// number of rows with values (not `?`) written.
pub fn slice(src: &Path, from: usize, to: usize, dst: &Path) -> u64 {
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

pub struct Split {
    _dir: tempfile::TempDir,
    pub head: PathBuf,
    pub tail: PathBuf,
    pub head_readings: u64,
    pub tail_readings: u64,
}

/// Days 1–15 and 16–30 of the 30-day slice as two files.
pub fn split_thirty_days(file: &Path) -> Split {
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
