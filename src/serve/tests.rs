use std::sync::Arc;

use super::*;
use crate::model::{Aggregate, MeterId, Origin, Reading};

/// A one-second reading of meter `m` at `ts`.
fn reading(ts: i64) -> Reading {
    Reading {
        meter: MeterId::new("m").unwrap(),
        ts,
        interval_s: 1,
        values: [1000, 100, 230_000, 4000, 0, 0, 0],
        origin: Origin::default(),
    }
}

fn ms(text: &str) -> i64 {
    time::parse_iso(text).unwrap()
}

#[test]
fn query_times_are_dates_local_times_or_rfc3339() {
    let naive = Calendar::Naive;
    assert_eq!(
        parse_time("2007-01-01", &naive),
        Ok(ms("2007-01-01T00:00:00"))
    );
    assert_eq!(
        parse_time("2007-01-01T06:30", &naive),
        Ok(ms("2007-01-01T06:30:00"))
    );
    assert_eq!(
        parse_time("2007-01-01 06:30:15.5", &naive),
        Ok(ms("2007-01-01T06:30:15.500"))
    );
    // The naive calendar has no zone: the clock time as written.
    assert_eq!(
        parse_time("2007-01-01T06:30:00Z", &naive),
        Ok(ms("2007-01-01T06:30:00"))
    );
    assert_eq!(
        parse_time("2007-01-01T06:30:00+01:00", &naive),
        Ok(ms("2007-01-01T06:30:00"))
    );
    let paris = Calendar::parse("Europe/Paris").unwrap();
    // Paris is UTC+1 in January: local midnight is 23:00 UTC the day before.
    assert_eq!(
        parse_time("2007-01-01", &paris),
        Ok(ms("2006-12-31T23:00:00"))
    );
    assert_eq!(
        parse_time("2007-01-01T06:30:00Z", &paris),
        Ok(ms("2007-01-01T06:30:00"))
    );
    assert_eq!(
        parse_time("2007-01-01T06:30:00-02:00", &paris),
        Ok(ms("2007-01-01T08:30:00"))
    );
    for bad in [
        "",
        "yesterday",
        "2007-13-01",
        "2007-02-30",
        "2007-01-01T25:00",
        "1e9",
        "2007-01",
    ] {
        let e = parse_time(bad, &naive).unwrap_err();
        assert!(!e.is_empty(), "{bad:?}");
    }
}

#[test]
fn ranges_are_checked_before_anything_is_read() {
    let views = Views::new("/nonexistent", Arc::new(NoSpeedViews)).with_max_rows(1440);
    let q = |g, from: &str, to: &str| Query {
        meter: "m".into(),
        granularity: g,
        from_ms: ms(from),
        to_ms: ms(to),
    };
    assert!(views
        .check(&q(Granularity::Minute, "2007-01-01", "2007-01-02"))
        .is_ok());
    assert!(matches!(
        views.check(&q(Granularity::Minute, "2007-01-01", "2007-01-03")),
        Err(QueryError::TooManyRows { cap: 1440, .. })
    ));
    assert!(views
        .check(&q(Granularity::Hour, "2007-01-01", "2007-02-01"))
        .is_ok());
    assert!(matches!(
        views.check(&q(Granularity::Minute, "2007-01-02", "2007-01-01")),
        Err(QueryError::BadRange { .. })
    ));
    assert!(matches!(
        views.check(&q(Granularity::Day, "2007-01-01", "2007-01-01")),
        Err(QueryError::BadRange { .. })
    ));
    let huge = Query {
        meter: "m".into(),
        granularity: Granularity::Day,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };
    assert!(matches!(
        views.check(&huge),
        Err(QueryError::BadRange { .. })
    ));
    assert_eq!(
        Views::windows_in(Granularity::Minute, 0, i64::MAX),
        (i64::MAX as u64).div_ceil(60_000)
    );
    // No files: nothing sealed, no rows, nothing fresh.
    let a = views
        .query(&q(Granularity::Hour, "2007-01-01", "2007-01-02"))
        .unwrap();
    assert!(a.rows.is_empty());
    assert_eq!(a.freshness.batch_sealed_through_ms, None);
    assert_eq!(a.freshness.newest_reading_ms, None);
}

#[test]
fn without_batch_files_every_row_comes_from_the_speed_view_with_its_freshness() {
    let speed = Arc::new(MemoryViews::new());
    let start = ms("2026-12-01T10:00:00");
    let mut agg = Aggregate::EMPTY;
    for s in 0..30 {
        agg.add(&reading(start + s * 1000));
    }
    speed.upsert(Granularity::Minute, "m", start, &agg);
    let views = Views::new("/nonexistent", speed.clone());
    let a = views
        .query(&Query {
            meter: "m".into(),
            granularity: Granularity::Minute,
            from_ms: start - 3_600_000,
            to_ms: start + 3_600_000,
        })
        .unwrap();
    assert_eq!(a.rows.len(), 1);
    assert_eq!(a.rows[0].source, Source::Speed);
    assert_eq!(a.rows[0].samples, 30);
    // 30 one-second readings from the window's start: they cover it to 10:00:30.
    assert_eq!(a.freshness.newest_reading_ms, Some(start + 30_000));
    assert_eq!(a.freshness.speed_rows, 1);
    assert_eq!(a.freshness.batch_rows, 0);
    assert!(a.freshness.age_ms.is_some());
    assert_eq!(
        views.meters().unwrap().into_iter().collect::<Vec<_>>(),
        ["m"]
    );
}

#[test]
fn an_extent_takes_the_newest_reading_from_finer_speed_rows_than_the_day_row() {
    let speed = Arc::new(MemoryViews::new());
    let fold = |from: i64, seconds: i64| {
        let mut agg = Aggregate::EMPTY;
        for s in 0..seconds {
            agg.add(&reading(from + s * 1000));
        }
        agg
    };
    let now = crate::time::Calendar::Naive.now_ms();
    let minute = now - now.rem_euclid(60_000) - 120_000;
    let hour = minute - minute.rem_euclid(3_600_000);
    let day = minute - minute.rem_euclid(86_400_000);
    let views = Views::new("/nonexistent", speed.clone());
    // Only an hour row so far (a Cassandra sink holds day rows up to a minute): the meter is
    // known, with the hour row's end as its newest reading.
    speed.upsert(Granularity::Hour, "m", hour, &fold(hour, 10));
    let e = views
        .extent("m")
        .unwrap()
        .expect("a meter with an hour row");
    assert_eq!((e.first_day_ms, e.last_day_ms), (day, day));
    assert_eq!(e.newest_reading_ms, hour + 10_000);
    // A stale day row and a newer minute row: the minute row says how far the readings go.
    speed.upsert(Granularity::Day, "m", day, &fold(day, 5));
    speed.upsert(Granularity::Minute, "m", minute, &fold(minute, 42));
    let e = views.extent("m").unwrap().unwrap();
    assert_eq!(e.newest_reading_ms, minute + 42_000);
    assert_eq!(e.last_day_ms, day);
    assert!(views.extent("nobody").unwrap().is_none());
}

#[test]
fn a_meter_is_the_one_named_or_the_only_one() {
    let one = ["a".to_owned()];
    let two = ["a".to_owned(), "b".to_owned()];
    let name = String::as_str;
    assert_eq!(choose_meter(&one, name, None).unwrap(), "a");
    assert_eq!(choose_meter(&two, name, Some("b")).unwrap(), "b");
    assert_eq!(
        choose_meter(&two, name, None),
        Err(MeterChoiceError::Ambiguous(2))
    );
    assert_eq!(
        choose_meter(&[] as &[String], name, None),
        Err(MeterChoiceError::NoMeter)
    );
    let long = "x".repeat(100);
    assert_eq!(
        choose_meter(&one, name, Some(&long)),
        Err(MeterChoiceError::Unknown("x".repeat(64)))
    );
}
