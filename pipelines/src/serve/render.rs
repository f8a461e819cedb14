//! Answers as JSON and CSV text, written by hand: a year of hourly rows is 8,784 rows of 37
//! numbers, and building a `serde_json::Value` tree for it would cost more than reading it.

use std::fmt::Write as _;

use wattflow::model::Granularity;
use wattflow::serve::{value_columns, Answer, ViewRow};
use wattflow::time::Calendar;

/// Appends `v` as a JSON number, its shortest round-trip form (`null` when it is not finite).
pub fn push_number(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

/// Appends an integer.
fn push_int(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `s` as a JSON string.
pub fn push_string(out: &mut String, s: &str) {
    // serde_json's escaping of a `&str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Appends a time as `"ISO-8601"` in the views' calendar, or `null`.
pub fn push_time(out: &mut String, calendar: &Calendar, ms: Option<i64>) {
    match ms {
        Some(ms) => push_string(out, &calendar.format(ms)),
        None => out.push_str("null"),
    }
}

/// Appends `"YYYY-MM-DDThh:mm:ss"` of a naive time without allocating (the answers' hot
/// path); other calendars go through [`Calendar::format`].
fn push_window_start(out: &mut String, calendar: &Calendar, ms: i64) {
    if calendar.is_zoned() || ms.rem_euclid(1000) != 0 {
        push_string(out, &calendar.format(ms));
        return;
    }
    let (y, m, d) = wattflow::time::civil_from_days(ms.div_euclid(86_400_000));
    let s = ms.rem_euclid(86_400_000) / 1000;
    if !(0..=9999).contains(&y) {
        push_string(out, &calendar.format(ms));
        return;
    }
    let digits = |out: &mut String, v: i64, n: usize| {
        let mut buf = [b'0'; 4];
        let mut v = v;
        for k in (0..n).rev() {
            buf[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or("0"));
    };
    out.push('"');
    digits(out, y, 4);
    out.push('-');
    digits(out, m as i64, 2);
    out.push('-');
    digits(out, d as i64, 2);
    out.push('T');
    digits(out, s / 3600, 2);
    out.push(':');
    digits(out, s / 60 % 60, 2);
    out.push(':');
    digits(out, s % 60, 2);
    out.push('"');
}

/// The value columns an answer carries besides `samples` and `covered_seconds` (which every
/// row has): indices into [`value_columns`], in the order asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns(Vec<usize>);

impl Columns {
    /// Every value column, in contract order.
    pub fn all() -> Columns {
        Columns((2..value_columns().len()).collect())
    }

    /// A comma-separated list of contract names (`voltage_avg,sub_metering_1_sum`): repeats
    /// are dropped, `samples` and `covered_seconds` are always there anyway, and an empty or
    /// unknown name is an error that says which.
    pub fn parse(text: &str) -> Result<Columns, String> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(
                    "columns: an empty name in the list (names are separated by single commas)"
                        .into(),
                );
            }
            let Some(i) = value_columns().iter().position(|c| c == name) else {
                let shown: String = name.chars().take(64).collect();
                return Err(format!(
                    "columns: no column {shown:?}; the views have {}",
                    value_columns().join(", ")
                ));
            };
            if i >= 2 && !out.contains(&i) {
                out.push(i);
            }
        }
        Ok(Columns(out))
    }

    /// The contract names of the columns.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|&i| value_columns()[i].as_str())
    }
}

/// `meter` is the row's meter as a JSON string, escaped once per answer.
fn push_row(out: &mut String, calendar: &Calendar, meter: &str, row: &ViewRow, columns: &Columns) {
    out.push_str("{\"meter\":");
    out.push_str(meter);
    out.push_str(",\"window_start\":");
    push_window_start(out, calendar, row.window_start);
    out.push_str(",\"window_start_ms\":");
    push_int(out, row.window_start);
    out.push_str(",\"samples\":");
    push_int(out, row.samples);
    out.push_str(",\"covered_seconds\":");
    push_int(out, row.covered_seconds);
    for &i in &columns.0 {
        out.push_str(",\"");
        out.push_str(&value_columns()[i]);
        out.push_str("\":");
        push_number(out, row.value_at(i));
    }
    out.push_str(",\"source\":\"");
    out.push_str(row.source.name());
    out.push_str("\"}");
}

/// The freshness object of an answer.
pub fn push_freshness(out: &mut String, calendar: &Calendar, answer: &Answer) {
    let f = &answer.freshness;
    out.push_str("{\"newest_reading\":");
    push_time(out, calendar, f.newest_reading_ms);
    out.push_str(",\"newest_reading_ms\":");
    push_optional(out, f.newest_reading_ms);
    out.push_str(",\"age_seconds\":");
    match f.age_ms {
        Some(a) => push_number(out, a as f64 / 1000.0),
        None => out.push_str("null"),
    }
    out.push_str(",\"batch_sealed_through\":");
    push_time(out, calendar, f.batch_sealed_through_ms);
    out.push_str(",\"batch_sealed_through_ms\":");
    push_optional(out, f.batch_sealed_through_ms);
    let _ = write!(
        out,
        ",\"batch_rows\":{},\"speed_rows\":{}}}",
        f.batch_rows, f.speed_rows
    );
}

fn push_optional(out: &mut String, v: Option<i64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// `{"meter", "granularity", "from", "to", "rows": [...], "freshness": {...}}`, the rows with
/// `columns` of the values.
pub fn answer_json(
    calendar: &Calendar,
    meter: &str,
    granularity: Granularity,
    (from_ms, to_ms): (i64, i64),
    answer: &Answer,
    columns: &Columns,
) -> String {
    let mut out = String::with_capacity(256 + answer.rows.len() * (160 + 28 * columns.0.len()));
    out.push_str("{\"meter\":");
    push_string(&mut out, meter);
    let _ = write!(out, ",\"granularity\":\"{granularity}\",\"from\":");
    push_string(&mut out, &calendar.format(from_ms));
    out.push_str(",\"to\":");
    push_string(&mut out, &calendar.format(to_ms));
    out.push_str(",\"rows\":[");
    let mut escaped = String::new();
    for (i, row) in answer.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if i == 0 || row.meter != answer.rows[i - 1].meter {
            escaped.clear();
            push_string(&mut escaped, &row.meter);
        }
        push_row(&mut out, calendar, &escaped, row, columns);
    }
    out.push_str("],\"freshness\":");
    push_freshness(&mut out, calendar, answer);
    out.push('}');
    out
}

/// The rows as CSV with a header: `meter,window_start,samples,covered_seconds,<columns>,source`.
pub fn answer_csv(calendar: &Calendar, answer: &Answer, columns: &Columns) -> String {
    let mut out = String::with_capacity(256 + answer.rows.len() * (80 + 14 * columns.0.len()));
    out.push_str("meter,window_start,samples,covered_seconds");
    for c in columns.names() {
        out.push(',');
        out.push_str(c);
    }
    out.push_str(",source\n");
    for row in &answer.rows {
        push_csv_field(&mut out, &row.meter);
        out.push(',');
        out.push_str(&calendar.format(row.window_start));
        out.push(',');
        push_int(&mut out, row.samples);
        out.push(',');
        push_int(&mut out, row.covered_seconds);
        for &i in &columns.0 {
            out.push(',');
            let v = row.value_at(i);
            if v.is_finite() {
                out.push_str(ryu::Buffer::new().format_finite(v));
            }
        }
        out.push(',');
        out.push_str(row.source.name());
        out.push('\n');
    }
    out
}

/// A CSV field, quoted when it holds a separator, a quote or a line break (meter ids are
/// validated, but a CSV writer should not rely on it).
fn push_csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattflow::serve::{Freshness, MeasureValues, Source};

    #[test]
    fn answers_render_as_valid_json_and_csv() {
        let mut row = ViewRow {
            meter: "MT \"1\"".into(),
            window_start: 0,
            samples: 60,
            covered_seconds: 60,
            measures: [MeasureValues {
                sum: 1.5,
                min: 0.25,
                max: 2.0,
                avg: 1.0,
            }; 7],
            active_energy_wh: 12.5,
            unmetered_wh: -0.125,
            power_factor_avg: None,
            source: Source::Batch,
        };
        let mut second = row.clone();
        second.window_start = 60_000;
        second.source = Source::Speed;
        row.measures[0].avg = f64::NAN;
        let answer = Answer {
            rows: vec![row, second],
            freshness: Freshness {
                newest_reading_ms: Some(120_000),
                age_ms: Some(5_500),
                batch_sealed_through_ms: Some(60_000),
                batch_rows: 1,
                speed_rows: 1,
            },
        };
        let cal = Calendar::Naive;
        let all = Columns::all();
        let text = answer_json(
            &cal,
            "MT \"1\"",
            Granularity::Minute,
            (0, 120_000),
            &answer,
            &all,
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rows"][0]["meter"], "MT \"1\"");
        assert_eq!(v["rows"][0]["window_start"], "1970-01-01T00:00:00");
        assert!(v["rows"][0]["global_active_power_avg"].is_null());
        assert_eq!(v["rows"][0]["voltage_sum"], 1.5);
        assert_eq!(v["rows"][0]["unmetered_wh"], -0.125);
        assert!(v["rows"][0]["power_factor_avg"].is_null());
        assert_eq!(v["rows"][0]["source"], "batch");
        assert_eq!(v["rows"][1]["source"], "speed");
        assert_eq!(v["freshness"]["age_seconds"], 5.5);
        assert_eq!(
            v["freshness"]["batch_sealed_through"],
            "1970-01-01T00:01:00"
        );
        let csv = answer_csv(&cal, &answer, &all);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header.len(), 2 + value_columns().len() + 1);
        assert!(lines[1].starts_with("\"MT \"\"1\"\"\",1970-01-01T00:00:00,60,60,1.5,"));
        assert!(lines[2].ends_with(",speed"));
    }
}
