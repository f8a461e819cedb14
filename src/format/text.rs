//! Delimited text: the UCI file exactly as published (`;`, CRLF, `d/m/yyyy`, `?` rows with an
//! empty last field) and the comma-separated Kaggle copy with a header.
//!
//! The parser is header-driven: it finds the columns by name (case-insensitive), so an optional
//! leading `Meter` column (written by `wattflow generate` for several households), a combined
//! `Datetime` column, a Kaggle index column or reordered columns all work. Numbers are parsed
//! straight into exact thousandths, never through a float.

use crate::model::{Limits, Measure, MeterId, Origin, Reading, RejectReason, MEASURES};
use crate::time;

/// What a header is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header has no column for a measure.
    #[error("header has no {0} column (expected the UCI columns, e.g. Date;Time;Global_active_power;...)")]
    MissingColumn(String),
    /// Neither `Date` + `Time` nor a combined date-time column.
    #[error("header has neither Date and Time columns nor a Datetime column")]
    MissingTime,
    /// The file is empty.
    #[error("the file is empty (no header line)")]
    Empty,
    /// A column the parser needs comes after the first [`MAX_READ_COLUMNS`] columns.
    #[error("column {column:?} is column {position} of the header; wattflow reads the first {limit} columns only")]
    ColumnTooFar {
        /// The column's name.
        column: String,
        /// Its position, from 1.
        position: usize,
        /// [`MAX_READ_COLUMNS`].
        limit: usize,
    },
    /// The header line is longer than the line size limit.
    #[error("the header line is longer than the limit of {limit} bytes")]
    TooLong {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// The columns a line is split into: the ones the parser needs must be among the first this
/// many (a line may have more, which are counted and not looked at).
pub const MAX_READ_COLUMNS: usize = 64;
/// Columns split per line when the needed ones are all among the first this many (the UCI
/// file has 9).
const NARROW_COLUMNS: usize = 16;

/// The bounds of the first `N` fields of `line` and the number of fields.
#[inline]
fn split_fields<const N: usize>(line: &[u8], sep: u8) -> ([(usize, usize); N], usize) {
    let mut bounds = [(0usize, 0usize); N];
    let mut n = 0usize;
    let mut start = 0usize;
    for i in memchr::memchr_iter(sep, line) {
        if n < N {
            bounds[n] = (start, i);
        }
        n += 1;
        start = i + 1;
    }
    if n < N {
        bounds[n] = (start, line.len());
    }
    (bounds, n + 1)
}

/// What one line of the body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A valid reading.
    Reading(Reading),
    /// A minute the source marks as missing (`?` in every measure).
    Missing,
    /// A blank line (ignored, not counted).
    Blank,
    /// A malformed record and why.
    Rejected(RejectReason),
}

#[derive(Debug, Clone, Copy)]
enum TimeColumns {
    DateAndTime { date: usize, time: usize },
    Combined(usize),
}

/// A parser for one file's layout, built from its header line.
#[derive(Debug, Clone)]
pub struct TextFormat {
    sep: u8,
    fields: usize,
    /// The largest index of a column the parser needs.
    last_needed: usize,
    meter_col: Option<usize>,
    time_cols: TimeColumns,
    measure_cols: [usize; MEASURES],
    default_meter: MeterId,
    interval_s: u32,
    limits: Limits,
}

/// Column header names of the UCI file, in order.
pub const UCI_HEADER: &str = "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3";

fn normalise(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    s.trim()
        .trim_matches('"')
        .trim_start_matches('\u{feff}')
        .to_ascii_lowercase()
}

impl TextFormat {
    /// Builds the parser from the header line (without its line ending).
    ///
    /// `default_meter` is used when the file has no `Meter` column; `interval_s` is the interval
    /// each row covers (60 for the UCI minute file).
    pub fn from_header(
        header: &[u8],
        default_meter: MeterId,
        interval_s: u32,
        limits: Limits,
    ) -> Result<TextFormat, HeaderError> {
        let header = trim_eol(header);
        if header.is_empty() {
            return Err(HeaderError::Empty);
        }
        let semis = header.iter().filter(|&&b| b == b';').count();
        let commas = header.iter().filter(|&&b| b == b',').count();
        let sep = if semis >= commas { b';' } else { b',' };
        let names: Vec<String> = header.split(|&b| b == sep).map(normalise).collect();
        let find = |cands: &[&str]| names.iter().position(|n| cands.contains(&n.as_str()));
        let meter_col = find(&["meter", "meter_id", "household", "household_id"]);
        let time_cols = match (find(&["date"]), find(&["time"])) {
            (Some(date), Some(time)) => TimeColumns::DateAndTime { date, time },
            _ => match find(&["datetime", "date_time", "dt", "timestamp", "ts"]) {
                Some(c) => TimeColumns::Combined(c),
                None => return Err(HeaderError::MissingTime),
            },
        };
        let mut measure_cols = [0usize; MEASURES];
        for m in Measure::ALL {
            measure_cols[m.index()] =
                find(&[m.name()]).ok_or_else(|| HeaderError::MissingColumn(m.name().to_owned()))?;
        }
        let time_positions = match time_cols {
            TimeColumns::DateAndTime { date, time } => vec![date, time],
            TimeColumns::Combined(c) => vec![c],
        };
        let needed: Vec<usize> = measure_cols
            .iter()
            .copied()
            .chain(meter_col)
            .chain(time_positions)
            .collect();
        let last_needed = needed.iter().copied().max().unwrap_or(0);
        if let Some(far) = needed.into_iter().filter(|&c| c >= MAX_READ_COLUMNS).min() {
            return Err(HeaderError::ColumnTooFar {
                column: names[far].clone(),
                position: far + 1,
                limit: MAX_READ_COLUMNS,
            });
        }
        Ok(TextFormat {
            sep,
            fields: names.len(),
            last_needed,
            meter_col,
            time_cols,
            measure_cols,
            default_meter,
            interval_s,
            limits,
        })
    }

    /// The field separator found in the header.
    pub fn separator(&self) -> u8 {
        self.sep
    }

    /// Parses one body line (with or without its `\r\n`).
    pub fn parse_line(&self, line: &[u8], origin: Origin, cache: &mut DateCache) -> Line {
        let line = trim_eol(line);
        if line.is_empty() || line.iter().all(|b| b.is_ascii_whitespace()) {
            return Line::Blank;
        }
        // Split without allocating: every column the parser needs is among the first
        // MAX_READ_COLUMNS (checked by `from_header`), and in the usual file among the first
        // NARROW_COLUMNS (a smaller array to fill per line); the rest are only counted.
        if self.last_needed < NARROW_COLUMNS {
            let (bounds, n) = split_fields::<NARROW_COLUMNS>(line, self.sep);
            self.parse_fields(line, &bounds, n, origin, cache)
        } else {
            let (bounds, n) = split_fields::<MAX_READ_COLUMNS>(line, self.sep);
            self.parse_fields(line, &bounds, n, origin, cache)
        }
    }

    /// [`TextFormat::parse_line`] once the line is split: `n` fields, the first ones at
    /// `bounds`.
    fn parse_fields(
        &self,
        line: &[u8],
        bounds: &[(usize, usize)],
        n: usize,
        origin: Origin,
        cache: &mut DateCache,
    ) -> Line {
        if n != self.fields {
            return Line::Rejected(RejectReason::FieldCount {
                expected: self.fields,
                found: n,
            });
        }
        let field = |i: usize| {
            let (a, b) = bounds[i];
            trim_quotes(&line[a..b])
        };

        // Missing rows: every measure '?' or empty (the UCI file leaves the last field empty).
        let mut missing = 0;
        for &c in &self.measure_cols {
            let f = field(c);
            if f == b"?" || f.is_empty() {
                missing += 1;
            }
        }
        if missing == MEASURES {
            return Line::Missing;
        }
        if missing > 0 {
            return Line::Rejected(RejectReason::PartiallyMissing);
        }

        let ts = match self.time_cols {
            TimeColumns::DateAndTime { date, time } => {
                match (cache.date(field(date)), parse_time(field(time))) {
                    (Ok(day_ms), Ok(tod)) => day_ms + tod,
                    (Err(why), _) | (_, Err(why)) => {
                        return Line::Rejected(RejectReason::BadTimestamp {
                            text: format!("{} {}", lossy(field(date)), lossy(field(time))),
                            why: why.to_owned(),
                        })
                    }
                }
            }
            TimeColumns::Combined(c) => match parse_datetime(field(c), cache) {
                Ok(ts) => ts,
                Err(why) => {
                    return Line::Rejected(RejectReason::BadTimestamp {
                        text: lossy(field(c)),
                        why: why.to_owned(),
                    })
                }
            },
        };
        if ts < 0 {
            return Line::Rejected(RejectReason::BadTimestamp {
                text: time::format_iso(ts),
                why: "before 1970".to_owned(),
            });
        }

        let mut values = [0i32; MEASURES];
        for m in Measure::ALL {
            let f = field(self.measure_cols[m.index()]);
            match parse_thousandths(f) {
                Some(v) => values[m.index()] = v,
                None => {
                    return Line::Rejected(RejectReason::BadNumber {
                        field: m.name().to_owned(),
                        text: lossy(f),
                    })
                }
            }
        }
        let meter = match self.meter_col {
            None => self.default_meter,
            Some(c) => {
                let text = field(c);
                match std::str::from_utf8(text)
                    .map_err(|_| ())
                    .and_then(|s| MeterId::new(s.trim()).map_err(|_| ()))
                {
                    Ok(m) => m,
                    Err(()) => {
                        return Line::Rejected(RejectReason::BadMeter(format!(
                            "invalid meter id {:?}",
                            lossy(text)
                        )))
                    }
                }
            }
        };
        let reading = Reading {
            meter,
            ts,
            interval_s: self.interval_s,
            values,
            origin,
        };
        match reading.validate(&self.limits) {
            Ok(()) => Line::Reading(reading),
            Err(reason) => Line::Rejected(reason),
        }
    }
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 64 {
        format!("{}…", &s[..s.floor_char_boundary(64)])
    } else {
        s.into_owned()
    }
}

#[inline]
fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

#[inline]
fn trim_quotes(f: &[u8]) -> &[u8] {
    let f = f.trim_ascii();
    if f.len() >= 2 && f[0] == b'"' && f[f.len() - 1] == b'"' {
        &f[1..f.len() - 1]
    } else {
        f
    }
}

/// Parses a decimal with at most three decimals (more are allowed only if they are zeros)
/// into thousandths, exactly. `None` for anything else (signs other than a leading `-`,
/// exponents, empty text, overflow).
#[inline]
pub fn parse_thousandths(f: &[u8]) -> Option<i32> {
    let (neg, digits) = match f.first()? {
        b'-' => (true, &f[1..]),
        b'+' => (false, &f[1..]),
        _ => (false, f),
    };
    if digits.is_empty() {
        return None;
    }
    let mut int: i64 = 0;
    let mut i = 0;
    let mut saw_digit = false;
    while i < digits.len() && digits[i].is_ascii_digit() {
        int = int * 10 + (digits[i] - b'0') as i64;
        if int > i32::MAX as i64 {
            return None;
        }
        saw_digit = true;
        i += 1;
    }
    let mut frac: i64 = 0;
    let mut places = 0;
    if i < digits.len() {
        if digits[i] != b'.' {
            return None;
        }
        i += 1;
        while i < digits.len() {
            let d = digits[i];
            if !d.is_ascii_digit() {
                return None;
            }
            saw_digit = true;
            if places < 3 {
                frac = frac * 10 + (d - b'0') as i64;
                places += 1;
            } else if d != b'0' {
                return None;
            }
            i += 1;
        }
    }
    if !saw_digit {
        return None;
    }
    while places < 3 {
        frac *= 10;
        places += 1;
    }
    let v = int * 1000 + frac;
    let v = if neg { -v } else { v };
    i32::try_from(v).ok()
}

#[inline]
fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [d] if d.is_ascii_digit() => Some((d - b'0') as u32),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(((a - b'0') * 10 + (b - b'0')) as u32)
        }
        _ => None,
    }
}

fn parse_uint(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |a, &d| a * 10 + (d - b'0') as i64))
}

/// Parses `hh:mm:ss` (or `hh:mm`) into ms since midnight.
#[inline]
pub fn parse_time(t: &[u8]) -> Result<i64, &'static str> {
    let mut parts = t.split(|&b| b == b':');
    let h = parts.next().and_then(two_digits).ok_or("bad hour")?;
    let m = parts.next().and_then(two_digits).ok_or("bad minute")?;
    let s = match parts.next() {
        None => 0,
        Some(s) => two_digits(s).ok_or("bad second")?,
    };
    if parts.next().is_some() {
        return Err("bad time");
    }
    if h > 23 || m > 59 || s > 59 {
        return Err("time out of range");
    }
    Ok(((h * 3600 + m * 60 + s) as i64) * 1000)
}

/// Parses a date: `d/m/yyyy` (the UCI file) or `yyyy-mm-dd` (ISO, the Kaggle copies); ms at midnight.
pub fn parse_date(d: &[u8]) -> Result<i64, &'static str> {
    let (y, m, day) = if d.contains(&b'/') {
        let mut p = d.split(|&b| b == b'/');
        let day = p.next().and_then(two_digits).ok_or("bad day")?;
        let m = p.next().and_then(two_digits).ok_or("bad month")?;
        let y = p.next().and_then(parse_uint).ok_or("bad year")?;
        if p.next().is_some() {
            return Err("bad date");
        }
        (y, m, day)
    } else {
        let mut p = d.split(|&b| b == b'-');
        let y = p.next().and_then(parse_uint).ok_or("bad year")?;
        let m = p.next().and_then(two_digits).ok_or("bad month")?;
        let day = p.next().and_then(two_digits).ok_or("bad day")?;
        if p.next().is_some() {
            return Err("bad date");
        }
        (y, m, day)
    };
    time::check_date(y, m, day)?;
    Ok(time::days_from_civil(y, m, day) * time::DAY_MS)
}

fn parse_datetime(f: &[u8], cache: &mut DateCache) -> Result<i64, &'static str> {
    let split = f
        .iter()
        .position(|&b| b == b' ' || b == b'T')
        .ok_or("expected 'date time'")?;
    let day = cache.date(&f[..split])?;
    let t = &f[split + 1..];
    // Tolerate a fractional ".000" second.
    let t = match t.iter().position(|&b| b == b'.') {
        Some(p) if t[p + 1..].iter().all(|&b| b == b'0') => &t[..p],
        Some(_) => return Err("sub-second timestamps are not supported in files"),
        None => t,
    };
    Ok(day + parse_time(t)?)
}

/// Remembers the last date parsed: consecutive rows share their date 1,440 times a day.
#[derive(Debug, Default)]
pub struct DateCache {
    text: Vec<u8>,
    value: Option<Result<i64, &'static str>>,
}

impl DateCache {
    /// Parses `d`, reusing the previous answer when the text repeats.
    #[inline]
    pub fn date(&mut self, d: &[u8]) -> Result<i64, &'static str> {
        if let Some(v) = self.value {
            if self.text == d {
                return v;
            }
        }
        let v = parse_date(d);
        self.text.clear();
        self.text.extend_from_slice(d);
        self.value = Some(v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uci() -> TextFormat {
        TextFormat::from_header(
            format!("{UCI_HEADER}\r\n").as_bytes(),
            MeterId::new("h1").unwrap(),
            60,
            Limits::default(),
        )
        .unwrap()
    }

    fn parse(f: &TextFormat, line: &str) -> Line {
        f.parse_line(
            line.as_bytes(),
            Origin::default(),
            &mut DateCache::default(),
        )
    }

    #[test]
    fn parses_the_first_uci_line_exactly() {
        let Line::Reading(r) = parse(
            &uci(),
            "16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000\r\n",
        ) else {
            panic!("not a reading")
        };
        assert_eq!(r.ts, time::naive_to_ms(2006, 12, 16, 17, 24, 0).unwrap());
        assert_eq!(r.values, [4_216, 418, 234_840, 18_400, 0, 1_000, 17_000]);
        assert_eq!(r.interval_s, 60);
        assert_eq!(r.meter.as_str(), "h1");
    }

    #[test]
    fn unpadded_dates_and_crlf() {
        let Line::Reading(r) = parse(
            &uci(),
            "1/2/2007;00:00:00;0.326;0.128;242.800;1.400;0.000;0.000;0.000\r",
        ) else {
            panic!()
        };
        assert_eq!(r.ts, time::naive_to_ms(2007, 2, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn question_mark_rows_with_empty_last_field_are_missing() {
        assert_eq!(
            parse(&uci(), "21/12/2006;11:23:00;?;?;?;?;?;?;\r\n"),
            Line::Missing
        );
        assert_eq!(
            parse(&uci(), "21/12/2006;11:23:00;?;?;?;?;?;?;?"),
            Line::Missing
        );
        assert_eq!(parse(&uci(), "\r\n"), Line::Blank);
    }

    #[test]
    fn every_rejection_reason() {
        let f = uci();
        let cases = [
            ("16/12/2006;17:24:00;4.216;0.418", "FieldCount"),
            (
                "16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000;9",
                "FieldCount",
            ),
            (
                "16/12/2006;17:24:00;abc;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadNumber",
            ),
            (
                "16/12/2006;17:24:00;4.2167;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadNumber",
            ),
            (
                "16/12/2006;17:24:00;1e3;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadNumber",
            ),
            (
                "31/2/2007;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadTimestamp",
            ),
            (
                "16/13/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadTimestamp",
            ),
            (
                "16/12/2006;24:00:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadTimestamp",
            ),
            (
                "16-12-2006x;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000",
                "BadTimestamp",
            ),
            (
                "16/12/2006;17:24:00;?;0.418;234.840;18.400;0.000;1.000;17.000",
                "PartiallyMissing",
            ),
            (
                "16/12/2006;17:24:00;-4.216;0.418;234.840;18.400;0.000;1.000;17.000",
                "Negative",
            ),
            (
                "16/12/2006;17:24:00;4216.000;0.418;234.840;18.400;0.000;1.000;17.000",
                "Absurd",
            ),
            (
                "16/12/2006;17:24:00;4.216;0.418;2348.400;18.400;0.000;1.000;17.000",
                "Absurd",
            ),
        ];
        for (line, want) in cases {
            match parse(&f, line) {
                Line::Rejected(reason) => {
                    let got = format!("{reason:?}");
                    assert!(got.starts_with(want), "{line}: got {got}, want {want}");
                    assert!(!reason.to_string().is_empty());
                }
                other => panic!("{line}: expected rejection {want}, got {other:?}"),
            }
        }
    }

    #[test]
    fn kaggle_comma_csv_with_index_and_datetime() {
        let f = TextFormat::from_header(
            b"index,Datetime,Global_active_power,Global_reactive_power,Voltage,Global_intensity,Sub_metering_1,Sub_metering_2,Sub_metering_3",
            MeterId::new("h1").unwrap(),
            60,
            Limits::default(),
        )
        .unwrap();
        let Line::Reading(r) = parse(
            &f,
            "0,2006-12-16 17:24:00,4.216,0.418,234.84,18.4,0.0,1.0,17.0",
        ) else {
            panic!()
        };
        assert_eq!(r.values, [4_216, 418, 234_840, 18_400, 0, 1_000, 17_000]);
        assert_eq!(r.ts, time::naive_to_ms(2006, 12, 16, 17, 24, 0).unwrap());
        assert_eq!(parse(&f, "1,2006-12-16 17:25:00,,,,,,,"), Line::Missing);
    }

    #[test]
    fn meter_column_is_used_and_checked() {
        let f = TextFormat::from_header(
            format!("Meter;{UCI_HEADER}").as_bytes(),
            MeterId::new("default").unwrap(),
            60,
            Limits::default(),
        )
        .unwrap();
        let Line::Reading(r) = parse(
            &f,
            "household-7;16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000",
        ) else {
            panic!()
        };
        assert_eq!(r.meter.as_str(), "household-7");
        assert!(matches!(
            parse(
                &f,
                "bad meter!;16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000"
            ),
            Line::Rejected(RejectReason::BadMeter(_))
        ));
    }

    #[test]
    fn wide_files_parse_or_are_refused_at_the_header_never_panic() {
        let m = MeterId::new("h").unwrap();
        let extra = |n: usize| (0..n).map(|i| format!(";x{i}")).collect::<String>();
        // 100 columns, the needed ones first: lines of 100 fields parse.
        let wide = format!("{UCI_HEADER}{}", extra(91));
        let f = TextFormat::from_header(wide.as_bytes(), m, 60, Limits::default()).unwrap();
        let line = format!(
            "16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000{}",
            ";0".repeat(91)
        );
        let mut cache = DateCache::default();
        match f.parse_line(line.as_bytes(), Origin::default(), &mut cache) {
            Line::Reading(r) => assert_eq!(r.values[0], 4216),
            other => panic!("expected a reading, got {other:?}"),
        }
        // A line far wider than its header is a field-count refusal.
        let line = format!("16/12/2006;17:24:00{}", ";1".repeat(500));
        assert_eq!(
            f.parse_line(line.as_bytes(), Origin::default(), &mut cache),
            Line::Rejected(RejectReason::FieldCount {
                expected: 100,
                found: 502
            })
        );
        // Needed columns past the narrow split (columns 23 to 29): the wide split reads them.
        let mid = format!("Date;Time{};{}", extra(20), &UCI_HEADER[10..]);
        let f = TextFormat::from_header(mid.as_bytes(), m, 60, Limits::default()).unwrap();
        let line = format!(
            "16/12/2006;17:24:00{};4.216;0.418;234.840;18.400;0.000;1.000;17.000",
            ";9".repeat(20)
        );
        match f.parse_line(line.as_bytes(), Origin::default(), &mut cache) {
            Line::Reading(r) => assert_eq!(r.values, [4216, 418, 234_840, 18_400, 0, 1000, 17_000]),
            other => panic!("expected a reading, got {other:?}"),
        }
        // A needed column past the columns a line is split into: refused with its position.
        let far = format!("Date;Time{};{}", extra(70), &UCI_HEADER[10..]);
        assert_eq!(
            TextFormat::from_header(far.as_bytes(), m, 60, Limits::default()).unwrap_err(),
            HeaderError::ColumnTooFar {
                column: "global_active_power".into(),
                position: 73,
                limit: MAX_READ_COLUMNS
            }
        );
    }

    #[test]
    fn headers_without_needed_columns_are_refused() {
        let m = MeterId::new("h").unwrap();
        assert_eq!(
            TextFormat::from_header(b"Date;Time;Voltage", m, 60, Limits::default()).unwrap_err(),
            HeaderError::MissingColumn("global_active_power".into())
        );
        assert_eq!(
            TextFormat::from_header(b"Foo;Bar", m, 60, Limits::default()).unwrap_err(),
            HeaderError::MissingTime
        );
        assert_eq!(
            TextFormat::from_header(b"\r\n", m, 60, Limits::default()).unwrap_err(),
            HeaderError::Empty
        );
    }

    #[test]
    fn thousandths_are_exact() {
        assert_eq!(parse_thousandths(b"4.216"), Some(4216));
        assert_eq!(parse_thousandths(b"234.840"), Some(234_840));
        assert_eq!(parse_thousandths(b"0.000"), Some(0));
        assert_eq!(parse_thousandths(b"17"), Some(17_000));
        assert_eq!(parse_thousandths(b"17."), Some(17_000));
        assert_eq!(parse_thousandths(b".5"), Some(500));
        assert_eq!(parse_thousandths(b"1.25000"), Some(1250));
        assert_eq!(parse_thousandths(b"-0.001"), Some(-1));
        assert_eq!(parse_thousandths(b"1.2345"), None);
        assert_eq!(parse_thousandths(b"."), None);
        assert_eq!(parse_thousandths(b""), None);
        assert_eq!(parse_thousandths(b"99999999999"), None);
        assert_eq!(parse_thousandths(b"1,5"), None);
    }
}
