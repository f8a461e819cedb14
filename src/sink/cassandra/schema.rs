//! The tables of the speed views: names, partition buckets, CQL statements, the values of an
//! upsert, write timestamps, and which errors are worth a retry.

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::value::{CqlTimestamp, CqlValue};

use crate::model::{Aggregate, Granularity, WindowKey};
use crate::time;
use crate::time::DAY_MS;

use super::MAX_READ_BUCKETS;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;

/// Name of the table of a granularity's speed view.
pub fn table_of(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "minute_view",
        Granularity::Hour => "hour_view",
        Granularity::Day => "day_view",
    }
}

/// Partition bucket of a window: minute windows by day number since the epoch
/// (`window_start / 86_400_000`), hour windows by month (`yyyymm`), day windows by year.
pub fn bucket_of(granularity: Granularity, window_start_ms: i64) -> i32 {
    let day = window_start_ms.div_euclid(DAY_MS);
    let b = match granularity {
        Granularity::Minute => day,
        Granularity::Hour => {
            let (y, m, _) = time::civil_from_days(day);
            y * 100 + m as i64
        }
        Granularity::Day => time::civil_from_days(day).0,
    };
    b.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// First instant of the bucket after the one holding `ts`.
pub(super) fn next_bucket_start(granularity: Granularity, ts: i64) -> i64 {
    match granularity {
        Granularity::Minute => (ts.div_euclid(DAY_MS) + 1) * DAY_MS,
        Granularity::Hour => time::month_bounds(ts).1,
        Granularity::Day => time::year_bounds(ts).1,
    }
}

/// The partition buckets holding window starts in `[from_ms, to_ms)`, in order.
pub fn buckets_between(granularity: Granularity, from_ms: i64, to_ms: i64) -> Vec<i32> {
    let mut out = Vec::new();
    let mut t = from_ms;
    while t < to_ms && out.len() <= MAX_READ_BUCKETS {
        out.push(bucket_of(granularity, t));
        t = next_bucket_start(granularity, t);
    }
    out
}

/// Names of the double columns of a view, in table order: the contract's value columns
/// after the two counts.
pub fn double_columns() -> &'static [String] {
    &crate::model::value_columns()[2..]
}

/// `CREATE KEYSPACE IF NOT EXISTS` for the views.
pub fn keyspace_cql(keyspace: &str, replication: &str) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
        replication.trim()
    )
}

/// `CREATE TABLE IF NOT EXISTS` of a granularity's view.
pub fn table_cql(keyspace: &str, granularity: Granularity) -> String {
    let mut cql = format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.{} (meter text, bucket int, \
         window_start timestamp, samples bigint, covered_seconds bigint",
        table_of(granularity)
    );
    for c in double_columns() {
        cql.push_str(", ");
        cql.push_str(c);
        cql.push_str(" double");
    }
    cql.push_str(", PRIMARY KEY ((meter, bucket), window_start))");
    cql
}

/// The prepared upsert of a granularity's view: all columns (without `power_factor_avg` unless
/// `with_power_factor`), `USING TIMESTAMP ?` and, if `with_ttl`, `AND TTL ?`.
pub fn upsert_cql(
    keyspace: &str,
    granularity: Granularity,
    with_power_factor: bool,
    with_ttl: bool,
) -> String {
    let mut cols: Vec<&str> = vec![
        "meter",
        "bucket",
        "window_start",
        "samples",
        "covered_seconds",
    ];
    cols.extend(
        double_columns()
            .iter()
            .map(String::as_str)
            .filter(|c| with_power_factor || *c != "power_factor_avg"),
    );
    let marks = vec!["?"; cols.len()].join(", ");
    let ttl = if with_ttl { " AND TTL ?" } else { "" };
    format!(
        "INSERT INTO {keyspace}.{} ({}) VALUES ({marks}) USING TIMESTAMP ?{ttl}",
        table_of(granularity),
        cols.join(", ")
    )
}

/// The prepared read of one partition's windows in a range.
pub fn select_cql(keyspace: &str, granularity: Granularity) -> String {
    format!(
        "SELECT * FROM {keyspace}.{} WHERE meter = ? AND bucket = ? \
         AND window_start >= ? AND window_start < ?",
        table_of(granularity)
    )
}

/// The values of an upsert in [`upsert_cql`] order; the flag tells whether the window has a
/// power factor (and so which statement they are for).
pub fn upsert_values(
    key: &WindowKey,
    agg: &Aggregate,
    write_ts_us: i64,
    ttl_s: Option<i32>,
) -> (bool, Vec<CqlValue>) {
    upsert_values_in(&time::Calendar::Naive, key, agg, write_ts_us, ttl_s)
}

/// [`upsert_values`] with the bucket of the window's local start in `calendar`.
pub fn upsert_values_in(
    calendar: &time::Calendar,
    key: &WindowKey,
    agg: &Aggregate,
    write_ts_us: i64,
    ttl_s: Option<i32>,
) -> (bool, Vec<CqlValue>) {
    let f = agg.finish();
    let mut v = Vec::with_capacity(5 + double_columns().len() + 2);
    v.push(CqlValue::Text(key.meter.as_str().to_owned()));
    v.push(CqlValue::Int(bucket_of(
        key.granularity,
        calendar.to_local(key.start),
    )));
    v.push(CqlValue::Timestamp(CqlTimestamp(key.start)));
    v.push(CqlValue::BigInt(f.samples.min(i64::MAX as u64) as i64));
    v.push(CqlValue::BigInt(f.covered_s.min(i64::MAX as u64) as i64));
    for m in &f.measures {
        v.push(CqlValue::Double(m.sum as f64 / 1000.0));
        v.push(CqlValue::Double(m.min as f64 / 1000.0));
        v.push(CqlValue::Double(m.max as f64 / 1000.0));
        v.push(CqlValue::Double(m.avg));
    }
    v.push(CqlValue::Double(f.active_energy_wh));
    v.push(CqlValue::Double(f.unmetered_wh));
    if let Some(pf) = f.power_factor_avg {
        v.push(CqlValue::Double(pf));
    }
    v.push(CqlValue::BigInt(write_ts_us));
    if let Some(ttl) = ttl_s {
        v.push(CqlValue::Int(ttl));
    }
    (f.power_factor_avg.is_some(), v)
}

/// Last write timestamp handed out in this process.
pub(super) static LAST_WRITE_TS: AtomicI64 = AtomicI64::new(i64::MIN);

/// A write timestamp: wall-clock microseconds since the epoch, strictly greater than every
/// timestamp handed out before in this process (`max(now, last + 1)`), so a later write of a row
/// always wins even when the clock stands still or steps back.
pub fn next_write_timestamp() -> i64 {
    let now = time::now_unix_us();
    let mut last = LAST_WRITE_TS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_WRITE_TS.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// Whether a failed request may succeed if tried again (timeouts, unavailable or overloaded
/// nodes, broken connections, nodes restarting) as opposed to errors of the request itself.
pub fn is_retryable(error: &ExecutionError) -> bool {
    match error {
        ExecutionError::BadQuery(_) | ExecutionError::UseKeyspaceError(_) => false,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::RepreparedIdChanged { .. } => false,
            RequestAttemptError::DbError(db, _) => !matches!(
                db,
                DbError::SyntaxError
                    | DbError::Invalid
                    | DbError::AlreadyExists { .. }
                    | DbError::FunctionFailure { .. }
                    | DbError::AuthenticationError
                    | DbError::Unauthorized
                    | DbError::ConfigError
                    | DbError::ProtocolError
            ),
            _ => true,
        },
        _ => true,
    }
}
