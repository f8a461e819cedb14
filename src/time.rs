//! Calendar arithmetic. By default the data's naive local time is written as if it were UTC, so
//! a calendar day is a plain 86,400,000 ms span and no time-zone database is needed on the hot
//! path ([`Calendar::Naive`]). With a time zone ([`Calendar::Zoned`], `--timezone
//! Europe/Paris`) timestamps are UTC instants and hour and day windows, partitions and buckets
//! follow the household's local calendar: a day lasts 23 or 25 hours at daylight-saving
//! changes (the IANA database comes with `jiff`, bundled into the binary).

use crate::model::Granularity;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The wall clock in µs since the Unix epoch (0 if the clock is before it).
pub fn now_unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(i64::MAX as u128) as i64)
}

/// The wall clock in ms since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> i64 {
    now_unix_us() / 1000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number since 1970-01-01.
pub const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `y` is a Gregorian leap year.
pub const fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` of year `y`.
pub const fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Why a date or time was refused.
pub fn check_date(y: i64, m: u32, d: u32) -> Result<(), &'static str> {
    if !(1..=9999).contains(&y) {
        return Err("year out of range");
    }
    if !(1..=12).contains(&m) {
        return Err("month out of range");
    }
    if d == 0 || d > days_in_month(y, m) {
        return Err("no such day in that month");
    }
    Ok(())
}

/// Ms since the epoch of a naive date-time, or `None` if it does not exist.
pub fn naive_to_ms(y: i64, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    check_date(y, m, d).ok()?;
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400 + (h * 3600 + mi * 60 + s) as i64) * 1000)
}

/// `YYYY-MM-DDThh:mm:ss` (with `.mmm` when not a whole second).
pub fn format_iso(ts: i64) -> String {
    let days = ts.div_euclid(DAY_MS);
    let ms = ts.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let s = ms / 1000;
    let frac = ms % 1000;
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:03}")
    }
}

/// `YYYY-MM-DD` of the day holding `ts`.
pub fn format_date(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// First instant of the month holding `ts`, and of the next month.
pub fn month_bounds(ts: i64) -> (i64, i64) {
    let (y, m, _) = civil_from_days(ts.div_euclid(DAY_MS));
    let start = days_from_civil(y, m, 1) * DAY_MS;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (start, days_from_civil(ny, nm, 1) * DAY_MS)
}

/// First instant of the year holding `ts`, and of the next year.
pub fn year_bounds(ts: i64) -> (i64, i64) {
    let (y, _, _) = civil_from_days(ts.div_euclid(DAY_MS));
    (
        days_from_civil(y, 1, 1) * DAY_MS,
        days_from_civil(y + 1, 1, 1) * DAY_MS,
    )
}

/// Parses `YYYY-MM-DDThh:mm:ss` or `YYYY-MM-DD hh:mm:ss` (optionally `.fff`, no zone) or `YYYY-MM-DD`.
pub fn parse_iso(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() {
        return None;
    }
    let (h, mi, s, ms) = match time {
        None => (0, 0, 0, 0),
        Some(time) => {
            let (hms, frac) = match time.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (time, None),
            };
            let mut tp = hms.split(':');
            let h: u32 = tp.next()?.parse().ok()?;
            let mi: u32 = tp.next()?.parse().ok()?;
            let s: u32 = tp.next().unwrap_or("0").parse().ok()?;
            let ms = match frac {
                None => 0,
                Some(f)
                    if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    f.parse::<i64>().ok()? * 10i64.pow(3 - f.len() as u32)
                }
                Some(_) => return None,
            };
            (h, mi, s, ms)
        }
    };
    Some(naive_to_ms(y, m, d, h, mi, s)? + ms)
}

/// The calendar windows, partitions and buckets follow.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Calendar {
    /// Naive local time written as if UTC (the UCI file): fixed-length days, no zone.
    #[default]
    Naive,
    /// UTC instants, read in this zone's local calendar.
    Zoned(jiff::tz::TimeZone),
}

/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: give an IANA name such as Europe/Paris, or `naive`")]
pub struct UnknownZone(pub String);

impl Calendar {
    /// `naive` (or empty) or an IANA zone name.
    pub fn parse(name: &str) -> Result<Calendar, UnknownZone> {
        match name.trim() {
            "" | "naive" => Ok(Calendar::Naive),
            zone => jiff::tz::TimeZone::get(zone)
                .map(Calendar::Zoned)
                .map_err(|_| UnknownZone(zone.to_owned())),
        }
    }

    /// The zone's name (`naive` for [`Calendar::Naive`]).
    pub fn name(&self) -> String {
        match self {
            Calendar::Naive => "naive".into(),
            Calendar::Zoned(tz) => tz.iana_name().unwrap_or("UTC").to_owned(),
        }
    }

    /// Whether timestamps are UTC instants.
    pub fn is_zoned(&self) -> bool {
        matches!(self, Calendar::Zoned(_))
    }

    fn offset_ms(tz: &jiff::tz::TimeZone, ts: i64) -> i64 {
        match jiff::Timestamp::from_millisecond(ts) {
            Ok(t) => tz.to_offset(t).seconds() as i64 * 1000,
            Err(_) => 0,
        }
    }

    /// UTC instant of a local civil time (`naive` ms), the earlier one when the time is
    /// ambiguous and shifted forward by the gap when it does not exist (jiff's "compatible").
    fn local_ms_to_utc(tz: &jiff::tz::TimeZone, naive: i64) -> i64 {
        let days = naive.div_euclid(DAY_MS);
        let ms = naive.rem_euclid(DAY_MS);
        let (y, m, d) = civil_from_days(days);
        let secs = ms / 1000;
        let dt = jiff::civil::DateTime::new(
            y as i16,
            m as i8,
            d as i8,
            (secs / 3600) as i8,
            (secs / 60 % 60) as i8,
            (secs % 60) as i8,
            ((ms % 1000) * 1_000_000) as i32,
        );
        match dt.and_then(|dt| tz.to_ambiguous_timestamp(dt).compatible()) {
            Ok(t) => t.as_millisecond(),
            Err(_) => naive - Calendar::offset_ms(tz, naive),
        }
    }

    /// The instant of a timestamp read from a history file, which holds naive local time:
    /// itself when naive, its UTC instant in the zone otherwise.
    #[inline]
    pub fn from_local(&self, naive: i64) -> i64 {
        match self {
            Calendar::Naive => naive,
            Calendar::Zoned(tz) => Calendar::local_ms_to_utc(tz, naive),
        }
    }

    /// The local civil time of `ts`, as naive ms (itself when naive).
    #[inline]
    pub fn to_local(&self, ts: i64) -> i64 {
        match self {
            Calendar::Naive => ts,
            Calendar::Zoned(tz) => ts + Calendar::offset_ms(tz, ts),
        }
    }

    /// The window `[start, end)` of `granularity` holding `ts`.
    #[inline]
    pub fn window(&self, granularity: Granularity, ts: i64) -> (i64, i64) {
        match self {
            Calendar::Naive => {
                let start = granularity.window_start(ts);
                (start, start + granularity.len_ms())
            }
            Calendar::Zoned(tz) => match granularity {
                Granularity::Minute => {
                    let start = granularity.window_start(ts);
                    (start, start + granularity.len_ms())
                }
                Granularity::Hour => {
                    let offset = Calendar::offset_ms(tz, ts);
                    let start = Granularity::Hour.window_start(ts + offset) - offset;
                    (start, start + Granularity::Hour.len_ms())
                }
                Granularity::Day => {
                    let local = ts + Calendar::offset_ms(tz, ts);
                    let day = Granularity::Day.window_start(local);
                    (
                        Calendar::local_ms_to_utc(tz, day),
                        Calendar::local_ms_to_utc(tz, day + DAY_MS),
                    )
                }
            },
        }
    }

    /// Start of the window of `granularity` holding `ts`.
    #[inline]
    pub fn window_start(&self, granularity: Granularity, ts: i64) -> i64 {
        match self {
            Calendar::Naive => granularity.window_start(ts),
            _ => self.window(granularity, ts).0,
        }
    }

    /// Start of the (local) day holding `ts`.
    #[inline]
    pub fn day_start(&self, ts: i64) -> i64 {
        self.window_start(Granularity::Day, ts)
    }

    /// Local first instant of the month holding `ts` and of the next month, as instants.
    pub fn month_bounds(&self, ts: i64) -> (i64, i64) {
        let (a, b) = month_bounds(self.to_local(ts));
        (self.from_local(a), self.from_local(b))
    }

    /// Local first instant of the year holding `ts` and of the next year, as instants.
    pub fn year_bounds(&self, ts: i64) -> (i64, i64) {
        let (a, b) = year_bounds(self.to_local(ts));
        (self.from_local(a), self.from_local(b))
    }

    /// `YYYY-MM-DD` of the local day holding `ts`.
    pub fn format_date(&self, ts: i64) -> String {
        format_date(self.to_local(ts))
    }

    /// `ts` as ISO-8601: naive, or with its UTC offset in a zone (`2008-03-30T03:00:00+02:00`).
    pub fn format(&self, ts: i64) -> String {
        match self {
            Calendar::Naive => format_iso(ts),
            Calendar::Zoned(tz) => {
                let offset = Calendar::offset_ms(tz, ts) / 60_000;
                let sign = if offset < 0 { '-' } else { '+' };
                let o = offset.abs();
                format!(
                    "{}{sign}{:02}:{:02}",
                    format_iso(ts + offset * 60_000),
                    o / 60,
                    o % 60
                )
            }
        }
    }

    /// The wall clock in the readings' time basis: UTC in a zone; naive, the local time of
    /// this machine's zone (what a sensor stamping naive local time reads).
    pub fn now_ms(&self) -> i64 {
        let now = now_unix_ms();
        match self {
            Calendar::Zoned(_) => now,
            Calendar::Naive => now + Calendar::offset_ms(&jiff::tz::TimeZone::system(), now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> Calendar {
        Calendar::parse("Europe/Paris").unwrap()
    }

    fn utc(y: i64, m: u32, d: u32, h: u32, mi: u32) -> i64 {
        naive_to_ms(y, m, d, h, mi, 0).unwrap()
    }

    #[test]
    fn daylight_saving_days_last_23_and_25_hours() {
        let c = paris();
        // 30 March 2008: clocks go from 02:00 to 03:00 (CET to CEST).
        let (a, b) = c.window(Granularity::Day, utc(2008, 3, 30, 12, 0));
        assert_eq!(
            a,
            utc(2008, 3, 29, 23, 0),
            "local midnight is 23:00 UTC (CET)"
        );
        assert_eq!(b - a, 23 * 3_600_000);
        // 26 October 2008: 03:00 back to 02:00.
        let (a, b) = c.window(Granularity::Day, utc(2008, 10, 26, 12, 0));
        assert_eq!(
            a,
            utc(2008, 10, 25, 22, 0),
            "local midnight is 22:00 UTC (CEST)"
        );
        assert_eq!(b - a, 25 * 3_600_000);
        // An ordinary day is 24 hours, and the next day starts where this one ends.
        let (a, b) = c.window(Granularity::Day, utc(2008, 6, 1, 12, 0));
        assert_eq!(b - a, DAY_MS);
        assert_eq!(c.window(Granularity::Day, b).0, b);
    }

    #[test]
    fn zoned_hours_and_minutes_are_aligned_to_local_time() {
        let c = paris();
        let ts = utc(2008, 6, 1, 10, 37);
        assert_eq!(
            c.window(Granularity::Hour, ts),
            (utc(2008, 6, 1, 10, 0), utc(2008, 6, 1, 11, 0))
        );
        assert_eq!(c.window_start(Granularity::Minute, ts + 5_000), ts);
        let india = Calendar::parse("Asia/Kolkata").unwrap();
        assert_eq!(
            india.window_start(Granularity::Hour, ts),
            utc(2008, 6, 1, 10, 30)
        );
        assert_eq!(c.format(ts), "2008-06-01T12:37:00+02:00");
    }

    #[test]
    fn local_history_times_become_instants() {
        let c = paris();
        let winter = naive_to_ms(2008, 1, 15, 12, 0, 0).unwrap();
        assert_eq!(c.from_local(winter), utc(2008, 1, 15, 11, 0));
        // 02:30 does not exist on 30 March 2008: shifted forward by the gap.
        let gap = naive_to_ms(2008, 3, 30, 2, 30, 0).unwrap();
        assert_eq!(c.from_local(gap), utc(2008, 3, 30, 1, 30));
        // 02:30 happens twice on 26 October 2008: the earlier one (CEST).
        let twice = naive_to_ms(2008, 10, 26, 2, 30, 0).unwrap();
        assert_eq!(c.from_local(twice), utc(2008, 10, 26, 0, 30));
        assert_eq!(Calendar::Naive.from_local(twice), twice);
        assert!(Calendar::parse("Mars/Olympus_Mons").is_err());
        assert_eq!(Calendar::parse("naive").unwrap(), Calendar::Naive);
    }

    #[test]
    fn zoned_months_and_years_are_local() {
        let c = paris();
        let (a, b) = c.month_bounds(utc(2008, 3, 31, 23, 30)); // 1 April 01:30 local
        assert_eq!(a, utc(2008, 3, 31, 22, 0));
        assert_eq!(b, utc(2008, 4, 30, 22, 0));
        assert_eq!(
            c.year_bounds(utc(2008, 12, 31, 23, 30)).0,
            utc(2008, 12, 31, 23, 0)
        );
        assert_eq!(c.format_date(utc(2008, 12, 31, 23, 30)), "2009-01-01");
    }

    #[test]
    fn civil_round_trips_over_centuries() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            assert!(check_date(y, m, d).is_ok() || !(1..=9999).contains(&y));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn invalid_dates_and_times_are_refused() {
        assert!(naive_to_ms(2007, 2, 29, 0, 0, 0).is_none());
        assert!(naive_to_ms(2008, 2, 29, 0, 0, 0).is_some());
        assert!(naive_to_ms(2007, 13, 1, 0, 0, 0).is_none());
        assert!(naive_to_ms(2007, 4, 31, 0, 0, 0).is_none());
        assert!(naive_to_ms(2007, 4, 30, 24, 0, 0).is_none());
        assert!(naive_to_ms(2007, 4, 30, 23, 60, 0).is_none());
    }

    #[test]
    fn formats_and_parses_iso() {
        let ts = naive_to_ms(2006, 12, 16, 17, 24, 0).unwrap();
        assert_eq!(format_iso(ts), "2006-12-16T17:24:00");
        assert_eq!(parse_iso("2006-12-16T17:24:00"), Some(ts));
        assert_eq!(parse_iso("2006-12-16 17:24:00.5"), Some(ts + 500));
        assert_eq!(format_iso(ts + 5), "2006-12-16T17:24:00.005");
        assert_eq!(format_date(ts), "2006-12-16");
        assert_eq!(parse_iso("2006-12-16"), naive_to_ms(2006, 12, 16, 0, 0, 0));
        assert_eq!(parse_iso("2006-02-30"), None);
    }

    #[test]
    fn month_and_year_bounds() {
        let ts = naive_to_ms(2008, 2, 29, 12, 0, 0).unwrap();
        assert_eq!(
            month_bounds(ts),
            (
                naive_to_ms(2008, 2, 1, 0, 0, 0).unwrap(),
                naive_to_ms(2008, 3, 1, 0, 0, 0).unwrap()
            )
        );
        let ts = naive_to_ms(2008, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(year_bounds(ts).1, naive_to_ms(2009, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(
            month_bounds(ts).1,
            naive_to_ms(2009, 1, 1, 0, 0, 0).unwrap()
        );
    }
}
