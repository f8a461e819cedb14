//! Speed views: every change of every window, upserted into Cassandra (or ScyllaDB).
//!
//! # Tables
//! One table per granularity in one keyspace (`wattflow` by default), created at start-up if
//! missing (every statement is `IF NOT EXISTS`, so [`connect`] is idempotent):
//! ```text
//! minute_view | hour_view | day_view
//!   meter text, bucket int, window_start timestamp, samples bigint, covered_seconds bigint,
//!   <measure>_sum, <measure>_min, <measure>_max, <measure>_avg double   (the 7 measures)
//!   active_energy_wh double, unmetered_wh double, power_factor_avg double,
//!   PRIMARY KEY ((meter, bucket), window_start)
//! ```
//! The columns are those of the batch view contract (DESIGN.md), so a serving layer can merge
//! both. `bucket` keeps partitions bounded ([`bucket_of`]): a minute partition holds one day of a
//! meter (1,440 rows), an hour partition one month (≤ 744), a day partition one year (≤ 366).
//! `_sum`, `_min` and `_max` are the exact thousandths divided by 1000 (the nearest double);
//! averages and derived values are the doubles of [`Aggregate::finish`].
//!
//! # Writes
//! [`cassandra_sink`] routes updates to workers by window and keeps, per worker, a *dirty
//! queue* per granularity: each changed window once, with its latest value (the last `+` of its
//! `−old, +new` pairs, read in arrival order; `−` records are otherwise ignored, as readings are
//! insert-only and a row is never deleted). Every change adds a reading, so the latest value is
//! also the one with the most samples, and a waiting value is only replaced by one with as many or
//! more: the view stays right even if two changes of a window were handed over out of order
//! (timely's `for_each_stamp` sorts an activation's messages by time, unstably, so two changes at
//! one time could swap: this sink reads its input with `for_each`). A change to a window already
//! waiting replaces the waiting value in place
//! (counted in [`CassandraStats::coalesced`]), so the queue never holds more than the open
//! windows, whatever the input rate. Changes are taken as they arrive, before their time is
//! complete, so with the window operator's eager folding a reading reaches Cassandra within one
//! round trip of its arrival.
//!
//! A window is written once it is *due*: its first unwritten change is older than the
//! granularity's delay ([`CassandraSinkConfig::minute_delay`], 0 by default;
//! [`CassandraSinkConfig::hour_delay`], 10 s; [`CassandraSinkConfig::day_delay`], 60 s), or it is
//! sealed (the input frontier has reached its end), or the input has ended. Only the head of each
//! queue is examined, so a sealed window behind a younger one waits at most that one's delay.
//! Among due heads the one with the oldest change goes first, as far as the in-flight permits
//! allow. So:
//! - when Cassandra keeps up, every change of a minute row is written at once, and an hour or
//!   day row at most once per its delay, its changes meanwhile merged into one write (a
//!   per-second meter changes its three windows every second: written as they change, the
//!   hour and day rows would double the load for views that a few seconds of lag do not hurt);
//! - while the input catches up on a backlog ([`cassandra_sink_paced`]), every row waits at least
//!   [`CassandraSinkConfig::backlog_delay`] (30 s): those changes are history, and writing each
//!   of them would spend Cassandra on values overwritten a moment later;
//! - when it does not keep up, the queues fill up to the open windows and every row is
//!   rewritten, oldest change first, as often as Cassandra allows: the views lag, but the pipeline keeps its input
//!   rate and memory stays bounded (the lag is the number of open windows over the upsert rate).
//!
//! # Batches
//! Due rows are sent [`CassandraSinkConfig::batch_rows`] at a time (16 by default) as one
//! `UNLOGGED BATCH` of the prepared upserts: on a node where most of the CPU goes to handling
//! requests, this cuts the cost of a row several times over, for the client too. The rows of a
//! batch belong to different partitions; an unlogged batch gives no atomicity, which is not
//! needed (each row is an idempotent upsert with its own write timestamp). 16 rows are about
//! 16 KiB, below Cassandra's default `batch_size_fail_threshold` (50 KiB) but above its warning
//! thresholds (`batch_size_warn_threshold`, 5 KiB; `unlogged_batch_across_partitions_warn_threshold`,
//! 10): raise those (as `scripts/services.sh` does) or the node logs a warning per batch. On a
//! large cluster, where a batch's coordinator forwards rows to other replicas, smaller batches
//! (or 1) spread the load better.
//!
//! Every upsert is a prepared `INSERT ... USING TIMESTAMP ?` (plus `AND TTL ?` for minute rows
//! when [`CassandraSinkConfig::minute_ttl`] is set). When a window has no power factor (P and Q
//! were zero throughout) a second prepared statement without that column is used, so no null,
//! hence no tombstone, is ever written. (A window's power factor can appear later but never
//! disappear: its weight only grows.)
//!
//! Write timestamps are client-side microseconds since the epoch, taken from the wall clock
//! when a window's value is handed to the writer (a window's newer value is only handed over
//! after its older one, as a window waits in the queue once), made strictly increasing per
//! process ([`next_write_timestamp`]) and kept across retries: a
//! retried stale write always loses to a newer write of the same row, whatever the order in
//! which they reach Cassandra.
//!
//! # Durability frontier and back-pressure
//! The sink's one output carries no data: its frontier is the pipeline's *durability frontier*.
//! Each change gets a sequence number; a complete input time is held (a capability) until every
//! change at or before it has been acknowledged by Cassandra, itself or through a newer value of
//! its window (or has failed for good, see below). A Kafka source commits the offsets of a time
//! once this frontier has passed it. Input is never refused: back-pressure on the source comes
//! from its own flow control, while the dirty queues absorb a slow Cassandra.
//!
//! Requests run on a tokio runtime owned by [`CassandraViews`], at most
//! [`CassandraSinkConfig::max_in_flight`] at once per process (a semaphore); the rest wait in
//! the operator, which is woken when a permit frees while writes wait for one, and otherwise polls
//! every [`POLL_INTERVAL`] while writes are pending.
//!
//! # Failures
//! Timeouts, unavailable or overloaded nodes and lost connections (Cassandra restarting) are
//! retried forever with exponential backoff from [`CassandraSinkConfig::retry_initial`] to
//! [`CassandraSinkConfig::retry_max`] (±20 % jitter), each retry after the first
//! [`QUIET_RETRIES`] logged as a warning: nothing is lost, the capability is simply held longer.
//! Errors no retry can fix (an invalid query, a schema changed under us) are counted in
//! [`CassandraStats::write_errors`], logged with `tracing::error!`, and the row is given up so
//! the pipeline does not stall forever on it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, NewSessionError, RequestAttemptError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Statement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::hash::FxMap;
use crate::model::{Aggregate, Granularity, Measure, WindowKey};
use crate::time::{self, DAY_MS};
use crate::Time;

/// Default [`CassandraSinkConfig::contact_points`]: a local node.
pub const DEFAULT_CONTACT_POINT: &str = "127.0.0.1:9042";
/// Default [`CassandraSinkConfig::keyspace`].
pub const DEFAULT_KEYSPACE: &str = "wattflow";
/// Default [`CassandraSinkConfig::replication`]: one copy, fine for a single node or a test.
pub const DEFAULT_REPLICATION: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
/// Default [`CassandraSinkConfig::minute_ttl`]: minute rows are kept forever.
pub const DEFAULT_MINUTE_TTL: Option<Duration> = None;
/// Default [`CassandraSinkConfig::minute_delay`]: a changed minute row is written at once.
pub const DEFAULT_MINUTE_DELAY: Duration = Duration::ZERO;
/// Default [`CassandraSinkConfig::hour_delay`]: a changed hour row waits up to 10 s, gathering
/// the changes of that time into one write.
pub const DEFAULT_HOUR_DELAY: Duration = Duration::from_secs(10);
/// Default [`CassandraSinkConfig::day_delay`]: a changed day row waits up to a minute.
pub const DEFAULT_DAY_DELAY: Duration = Duration::from_secs(60);
/// Default [`CassandraSinkConfig::backlog_delay`]: while the input catches up on a backlog,
/// every changed row waits up to 30 s.
pub const DEFAULT_BACKLOG_DELAY: Duration = Duration::from_secs(30);
/// Default [`CassandraSinkConfig::max_in_flight`]: concurrent requests per process (16 of up to
/// 16 rows). More keeps a node busier on more threads without writing faster; on a machine it
/// shares with the pipeline (W2 in `benchmarks/`) 64 cost the pipeline its pace at 100 k
/// readings/s, and 4 made freshness at 10 k/s worse.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Default [`CassandraSinkConfig::batch_rows`]: rows per unlogged batch.
pub const DEFAULT_BATCH_ROWS: usize = 16;
/// Default [`CassandraSinkConfig::retry_initial`]: first backoff after a failed upsert.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Default [`CassandraSinkConfig::retry_max`]: the backoff doubles up to this.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5);
/// Default [`CassandraSinkConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`CassandraSinkConfig::request_timeout`]: client-side limit of one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`CassandraSinkConfig::schema_timeout`]: schema changes are slow on a busy node.
pub const DEFAULT_SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`CassandraSinkConfig::runtime_threads`]: the driver is asynchronous, two threads
/// keep up with any single node.
pub const DEFAULT_RUNTIME_THREADS: usize = 2;
/// Retries of one upsert logged at debug level before each further one is a warning.
pub const QUIET_RETRIES: u32 = 3;
/// How often the sink operator looks at its pending writes when nothing woke it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Largest TTL Cassandra accepts (20 years), in seconds.
pub const MAX_TTL_S: u64 = 630_720_000;
/// Most partitions one [`read_view`] call may visit (about 27 years of minute buckets).
pub const MAX_READ_BUCKETS: usize = 10_000;

/// Where and how to write the speed views. Durations are (de)serialized as whole milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraSinkConfig {
    /// `host:port` of one or more nodes to contact first; the driver discovers the others.
    pub contact_points: Vec<String>,
    /// Keyspace of the views: letters, digits and `_`, starting with a letter, at most 48
    /// (unquoted, so Cassandra folds it to lower case).
    pub keyspace: String,
    /// Replication map of the keyspace when it has to be created, as CQL map text.
    pub replication: String,
    /// User for password authentication (`None`: no authentication).
    pub username: Option<String>,
    /// Password for `username`; shown as `***` by `Debug`.
    pub password: Option<Secret>,
    /// Time to live of minute rows (hour and day rows are kept forever); whole seconds,
    /// at least one, at most [`MAX_TTL_S`].
    #[serde(with = "opt_duration_ms")]
    pub minute_ttl: Option<Duration>,
    /// Requests (single upserts or batches) in flight at once, per process (all sink workers
    /// share them).
    pub max_in_flight: usize,
    /// Most rows per request: due rows are sent together as one `UNLOGGED BATCH` (1: every row
    /// alone). See "Batches" in the module docs.
    pub batch_rows: usize,
    /// How long a changed minute row may wait before it is written, so that further changes
    /// of it are written together (see "Writes" in the module docs).
    #[serde(with = "duration_ms")]
    pub minute_delay: Duration,
    /// The same for hour rows.
    #[serde(with = "duration_ms")]
    pub hour_delay: Duration,
    /// The same for day rows.
    #[serde(with = "duration_ms")]
    pub day_delay: Duration,
    /// The least delay of every row while the input is catching up on a backlog (see
    /// [`cassandra_sink_paced`]): its intermediate values are history nobody waits for.
    #[serde(with = "duration_ms")]
    pub backlog_delay: Duration,
    /// First backoff after a failed upsert.
    #[serde(with = "duration_ms")]
    pub retry_initial: Duration,
    /// Largest backoff between retries.
    #[serde(with = "duration_ms")]
    pub retry_max: Duration,
    /// How long [`connect`] may wait for the cluster.
    #[serde(with = "duration_ms")]
    pub connect_timeout: Duration,
    /// Client-side timeout of one request (a timed-out upsert is retried).
    #[serde(with = "duration_ms")]
    pub request_timeout: Duration,
    /// Client-side timeout of one schema statement at start-up.
    #[serde(with = "duration_ms")]
    pub schema_timeout: Duration,
    /// Threads of the tokio runtime that drives the driver.
    pub runtime_threads: usize,
    /// The calendar of the buckets: a window's bucket is its local day, month or year.
    #[serde(skip)]
    pub calendar: time::Calendar,
}

impl Default for CassandraSinkConfig {
    fn default() -> Self {
        CassandraSinkConfig {
            contact_points: vec![DEFAULT_CONTACT_POINT.to_owned()],
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            replication: DEFAULT_REPLICATION.to_owned(),
            username: None,
            password: None,
            minute_ttl: DEFAULT_MINUTE_TTL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            batch_rows: DEFAULT_BATCH_ROWS,
            minute_delay: DEFAULT_MINUTE_DELAY,
            hour_delay: DEFAULT_HOUR_DELAY,
            day_delay: DEFAULT_DAY_DELAY,
            backlog_delay: DEFAULT_BACKLOG_DELAY,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            schema_timeout: DEFAULT_SCHEMA_TIMEOUT,
            runtime_threads: DEFAULT_RUNTIME_THREADS,
            calendar: time::Calendar::Naive,
        }
    }
}

impl CassandraSinkConfig {
    /// Defaults, contacting `contact_point`.
    pub fn new(contact_point: impl Into<String>) -> CassandraSinkConfig {
        CassandraSinkConfig {
            contact_points: vec![contact_point.into()],
            ..CassandraSinkConfig::default()
        }
    }

    /// Checks the settings [`connect`] relies on.
    pub fn validate(&self) -> Result<(), CassandraError> {
        let bad = |why: String| Err(CassandraError::Config(why));
        if self.contact_points.is_empty() || self.contact_points.iter().any(|c| c.is_empty()) {
            return bad("contact_points must name at least one host:port".into());
        }
        let ks = self.keyspace.as_bytes();
        let ks_ok = !ks.is_empty()
            && ks.len() <= 48
            && ks[0].is_ascii_alphabetic()
            && ks.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !ks_ok {
            return bad(format!(
                "keyspace {:?}: 1 to 48 letters, digits or '_', starting with a letter",
                self.keyspace
            ));
        }
        let r = self.replication.trim();
        if !(r.starts_with('{') && r.ends_with('}')) || r.contains(';') {
            return bad(format!(
                "replication {:?} is not a CQL map such as {DEFAULT_REPLICATION}",
                self.replication
            ));
        }
        if let Some(ttl) = self.minute_ttl {
            if ttl.as_secs() == 0 || ttl.as_secs() > MAX_TTL_S || ttl.subsec_nanos() != 0 {
                return bad(format!(
                    "minute_ttl {ttl:?}: whole seconds from 1 to {MAX_TTL_S}"
                ));
            }
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return bad("max_in_flight must be at least 1".into());
        }
        if self.batch_rows == 0 || self.batch_rows > u16::MAX as usize {
            return bad("batch_rows must be from 1 to 65535".into());
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return bad("retry_initial must be positive and at most retry_max".into());
        }
        if self.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.schema_timeout.is_zero()
        {
            return bad("timeouts must be positive".into());
        }
        if self.runtime_threads == 0 {
            return bad("runtime_threads must be at least 1".into());
        }
        Ok(())
    }
}

/// A secret (a password): kept as given, shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Durations as whole milliseconds in serialized configs.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Optional durations as whole milliseconds (or null) in serialized configs.
mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u64::MAX as u128) as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

/// What can go wrong talking to Cassandra outside the write path (which retries instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CassandraError {
    /// No node answered within the connect timeout.
    #[error("Cassandra at {address} is unreachable: {reason}")]
    Unreachable {
        /// The contact points tried.
        address: String,
        /// What the driver said.
        reason: String,
    },
    /// The configuration is not usable.
    #[error("Cassandra sink configuration: {0}")]
    Config(String),
    /// A schema statement failed at start-up.
    #[error("Cassandra schema statement failed: {reason}; statement: {statement}")]
    Schema {
        /// The CQL statement.
        statement: String,
        /// What Cassandra or the driver said.
        reason: String,
    },
    /// A statement could not be prepared.
    #[error("preparing a statement failed: {reason}; statement: {statement}")]
    Prepare {
        /// The CQL statement.
        statement: String,
        /// What Cassandra or the driver said.
        reason: String,
    },
    /// A query failed.
    #[error("Cassandra query failed: {0}")]
    Query(String),
    /// A row read back does not have the expected columns or types.
    #[error("unexpected row from Cassandra: {0}")]
    BadRow(String),
    /// The tokio runtime could not be started or stopped answering.
    #[error("Cassandra client runtime: {0}")]
    Runtime(String),
}

/// Counters of the speed-view writes, shared by every sink worker (all atomics, relaxed).
#[derive(Debug, Default)]
pub struct CassandraStats {
    /// Upserts acknowledged by Cassandra.
    pub rows_written: AtomicU64,
    /// Upserts given up on a non-retryable error.
    pub write_errors: AtomicU64,
    /// Retries of failed upserts (one per failed attempt that is tried again).
    pub retries: AtomicU64,
    /// Upserts currently sent or waiting for their next attempt.
    pub in_flight: AtomicU64,
    /// Changes merged into a row already waiting to be written (writes saved).
    pub coalesced: AtomicU64,
    /// Changed rows waiting to be written, as last seen by a sink worker.
    pub queued: AtomicU64,
    /// Wall clock of the latest acknowledged upsert, µs since the Unix epoch (0: none yet).
    pub last_ack_unix_us: AtomicU64,
    /// Time from a request's first attempt to its acknowledgement.
    pub write_seconds: crate::metrics::Histogram,
}

impl CassandraStats {
    /// A fresh set of counters, ready to share.
    pub fn new() -> Arc<CassandraStats> {
        Arc::new(CassandraStats::default())
    }

    /// `(rows_written, write_errors, retries, in_flight)` right now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.rows_written.load(Ordering::Relaxed),
            self.write_errors.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        )
    }
}

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
fn next_bucket_start(granularity: Granularity, ts: i64) -> i64 {
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

/// Names of the double columns of a view, in table order.
pub fn double_columns() -> &'static [String] {
    static COLUMNS: LazyLock<Vec<String>> = LazyLock::new(|| {
        let mut cols = Vec::with_capacity(Measure::ALL.len() * 4 + 3);
        for m in Measure::ALL {
            for stat in ["sum", "min", "max", "avg"] {
                cols.push(format!("{}_{stat}", m.name()));
            }
        }
        for c in ["active_energy_wh", "unmetered_wh", "power_factor_avg"] {
            cols.push(c.to_owned());
        }
        cols
    });
    &COLUMNS
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
static LAST_WRITE_TS: AtomicI64 = AtomicI64::new(i64::MIN);

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

/// The prepared statements of one view.
struct Upserts {
    with_pf: PreparedStatement,
    without_pf: PreparedStatement,
    select: PreparedStatement,
    ttl_s: Option<i32>,
}

/// What the write tasks share: the session and the prepared statements.
struct Shared {
    session: Session,
    /// Indexed by `Granularity as usize`.
    views: Vec<Upserts>,
    retry_initial: Duration,
    retry_max: Duration,
    calendar: time::Calendar,
}

impl Shared {
    fn view(&self, granularity: Granularity) -> &Upserts {
        &self.views[granularity as usize]
    }
}

/// A connected session with the schema in place and the upserts prepared; owns the tokio
/// runtime its requests run on. Share it between workers with an `Arc`.
pub struct CassandraViews {
    config: CassandraSinkConfig,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    handle: Handle,
    /// `Option` only so that `Drop` can shut it down without blocking.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for CassandraViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraViews")
            .field("contact_points", &self.config.contact_points)
            .field("keyspace", &self.config.keyspace)
            .field("free_permits", &self.permits.available_permits())
            .finish()
    }
}

impl Drop for CassandraViews {
    fn drop(&mut self) {
        // Never blocks and never panics, even when dropped inside an async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl CassandraViews {
    /// The configuration it was made with.
    pub fn config(&self) -> &CassandraSinkConfig {
        &self.config
    }

    /// Runs `fut` on the views' runtime and waits for it from any thread (also from inside
    /// another runtime, where `block_on` would panic).
    fn run<F>(&self, fut: F) -> Result<F::Output, CassandraError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run_on(&self.handle, fut)
    }

    /// Runs one unprepared CQL statement (administration and tests, e.g. `DROP KEYSPACE`),
    /// with the schema timeout.
    pub fn execute(&self, cql: &str) -> Result<(), CassandraError> {
        let shared = Arc::clone(&self.shared);
        let mut statement = Statement::new(cql.to_owned());
        statement.set_request_timeout(Some(self.config.schema_timeout));
        self.run(async move { shared.session.query_unpaged(statement, &[]).await })?
            .map(|_| ())
            .map_err(|e| CassandraError::Query(e.to_string()))
    }
}

fn run_on<F>(handle: &Handle, fut: F) -> Result<F::Output, CassandraError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| CassandraError::Runtime("the Cassandra client runtime stopped".into()))
}

/// Connects, creates the keyspace and tables if missing, and prepares the statements.
///
/// Blocks the calling thread (up to `connect_timeout` for the connection, then up to
/// `schema_timeout` per schema statement). A cluster that does not answer gives
/// [`CassandraError::Unreachable`] with the addresses tried.
pub fn connect(config: &CassandraSinkConfig) -> Result<CassandraViews, CassandraError> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_threads)
        .thread_name("wattflow-cassandra")
        .enable_all()
        .build()
        .map_err(|e| CassandraError::Runtime(e.to_string()))?;
    let handle = runtime.handle().clone();
    let cfg = config.clone();
    let started = Instant::now();
    let shared = run_on(&handle, async move { open(&cfg).await })??;
    tracing::info!(
        contact_points = %config.contact_points.join(", "),
        keyspace = %config.keyspace,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "connected to Cassandra; speed-view schema in place"
    );
    Ok(CassandraViews {
        config: config.clone(),
        shared: Arc::new(shared),
        permits: Arc::new(Semaphore::new(config.max_in_flight)),
        handle,
        runtime: Some(runtime),
    })
}

async fn open(config: &CassandraSinkConfig) -> Result<Shared, CassandraError> {
    let address = config.contact_points.join(", ");
    let unreachable = |reason: String| CassandraError::Unreachable {
        address: address.clone(),
        reason,
    };
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(config.request_timeout))
        .build()
        .into_handle();
    let mut builder = SessionBuilder::new();
    if let Some(user) = &config.username {
        let password = config.password.as_ref().map_or("", |p| p.expose());
        builder = builder.user(user, password);
    }
    let builder = builder
        .known_nodes(&config.contact_points)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile);
    let session = match tokio::time::timeout(config.connect_timeout, builder.build()).await {
        Ok(Ok(session)) => session,
        Ok(Err(e @ (NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_)))) => {
            return Err(CassandraError::Config(e.to_string()))
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} ms",
                config.connect_timeout.as_millis()
            )))
        }
    };
    let ks = &config.keyspace;
    let mut schema = vec![keyspace_cql(ks, &config.replication)];
    schema.extend(Granularity::ALL.map(|g| table_cql(ks, g)));
    for cql in schema {
        let mut statement = Statement::new(cql.clone());
        statement.set_request_timeout(Some(config.schema_timeout));
        session
            .query_unpaged(statement, &[])
            .await
            .map_err(|e| CassandraError::Schema {
                statement: cql,
                reason: e.to_string(),
            })?;
    }
    let ttl_s = config.minute_ttl.map(|d| d.as_secs() as i32);
    let mut views = Vec::with_capacity(3);
    for g in Granularity::ALL {
        let ttl_s = if g == Granularity::Minute {
            ttl_s
        } else {
            None
        };
        let with_pf = prepare(&session, upsert_cql(ks, g, true, ttl_s.is_some()), true).await?;
        let without_pf = prepare(&session, upsert_cql(ks, g, false, ttl_s.is_some()), true).await?;
        let select = prepare(&session, select_cql(ks, g), false).await?;
        views.push(Upserts {
            with_pf,
            without_pf,
            select,
            ttl_s,
        });
    }
    Ok(Shared {
        session,
        views,
        retry_initial: config.retry_initial,
        retry_max: config.retry_max,
        calendar: config.calendar.clone(),
    })
}

async fn prepare(
    session: &Session,
    cql: String,
    upsert: bool,
) -> Result<PreparedStatement, CassandraError> {
    let mut prepared = session
        .prepare(cql.clone())
        .await
        .map_err(|e| CassandraError::Prepare {
            statement: cql,
            reason: e.to_string(),
        })?;
    // Upserts with explicit timestamps can be applied any number of times.
    prepared.set_is_idempotent(upsert);
    Ok(prepared)
}

/// Checks that the cluster answers (`SELECT release_version FROM system.local`).
pub fn health_check(views: &CassandraViews) -> Result<(), CassandraError> {
    let shared = Arc::clone(&views.shared);
    let result = views.run(async move {
        shared
            .session
            .query_unpaged("SELECT release_version FROM system.local", &[])
            .await
    })?;
    let rows = result
        .map_err(|e| CassandraError::Query(e.to_string()))?
        .into_rows_result()
        .map_err(|e| CassandraError::Query(e.to_string()))?;
    let (version,): (String,) = rows
        .single_row()
        .map_err(|e| CassandraError::BadRow(e.to_string()))?;
    tracing::debug!(%version, "Cassandra health check");
    Ok(())
}

/// One row of a speed view, as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct CassandraRow {
    /// The meter.
    pub meter: String,
    /// Window start, ms since the epoch.
    pub window_start: i64,
    /// Readings in the window.
    pub samples: i64,
    /// Seconds of the window covered by readings.
    pub covered_seconds: i64,
    /// Every non-null double column by name (`voltage_avg`, `power_factor_avg`, ...).
    pub values: BTreeMap<String, f64>,
}

/// Reads the rows of `meter` in a granularity's view whose window starts in `[from_ms, to_ms)`,
/// in window order, visiting every partition bucket of the range.
pub fn read_view(
    views: &CassandraViews,
    granularity: Granularity,
    meter: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<CassandraRow>, CassandraError> {
    let calendar = &views.shared.calendar;
    let buckets = buckets_between(
        granularity,
        calendar.to_local(from_ms),
        calendar.to_local(to_ms),
    );
    if buckets.len() > MAX_READ_BUCKETS {
        return Err(CassandraError::Config(format!(
            "range [{from_ms}, {to_ms}) spans more than {MAX_READ_BUCKETS} {granularity} buckets"
        )));
    }
    let shared = Arc::clone(&views.shared);
    let meter = meter.to_owned();
    views.run(async move {
        let select = &shared.view(granularity).select;
        let mut out = Vec::new();
        for bucket in buckets {
            let mut paging = PagingState::start();
            loop {
                let values = (
                    meter.as_str(),
                    bucket,
                    CqlTimestamp(from_ms),
                    CqlTimestamp(to_ms),
                );
                let (result, next) = shared
                    .session
                    .execute_single_page(select, values, paging)
                    .await
                    .map_err(|e| CassandraError::Query(e.to_string()))?;
                let rows = result
                    .into_rows_result()
                    .map_err(|e| CassandraError::Query(e.to_string()))?;
                let names: Vec<String> = rows
                    .column_specs()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect();
                for row in rows
                    .rows::<Row>()
                    .map_err(|e| CassandraError::BadRow(e.to_string()))?
                {
                    let row = row.map_err(|e| CassandraError::BadRow(e.to_string()))?;
                    out.push(to_row(&names, row)?);
                }
                match next {
                    PagingStateResponse::HasMorePages { state } => paging = state,
                    PagingStateResponse::NoMorePages => break,
                }
            }
        }
        Ok(out)
    })?
}

fn to_row(names: &[String], row: Row) -> Result<CassandraRow, CassandraError> {
    let mut out = CassandraRow {
        meter: String::new(),
        window_start: 0,
        samples: 0,
        covered_seconds: 0,
        values: BTreeMap::new(),
    };
    for (name, value) in names.iter().zip(row.columns) {
        match (name.as_str(), value) {
            (_, None) => {}
            ("meter", Some(CqlValue::Text(m))) => out.meter = m,
            ("window_start", Some(CqlValue::Timestamp(t))) => out.window_start = t.0,
            ("samples", Some(CqlValue::BigInt(n))) => out.samples = n,
            ("covered_seconds", Some(CqlValue::BigInt(n))) => out.covered_seconds = n,
            ("bucket", Some(CqlValue::Int(_))) => {}
            (name, Some(CqlValue::Double(v))) => {
                out.values.insert(name.to_owned(), v);
            }
            (name, Some(other)) => {
                return Err(CassandraError::BadRow(format!(
                    "column {name} holds {other:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// The update stream the sink consumes: `((window, aggregate), time, diff)` with `−old, +new`
/// per change of a window, as produced by the window aggregation operator.
pub type UpdateStream<'scope> = StreamVec<'scope, Time, ((WindowKey, Aggregate), Time, isize)>;

/// Spreads windows over sink workers with a stable hash of `(meter, granularity, start)`.
fn window_hash(key: &WindowKey) -> u64 {
    splitmix(
        key.meter.stable_hash() ^ splitmix(key.start as u64 ^ ((key.granularity as u64) << 62)),
    )
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The backoff before retry `attempt`: `base` ±20 %, spread by the row's write timestamp so
/// that writes failing together do not come back together.
fn jittered(base: Duration, write_ts: i64, attempt: u32) -> Duration {
    let h = splitmix(write_ts as u64 ^ ((attempt as u64) << 48));
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.8 + 0.4 * unit)
}

/// Rows handed to one write task: one upsert, or an unlogged batch of them.
struct Write {
    rows: Vec<(WindowKey, Aggregate)>,
    write_ts: i64,
    /// Sequence number of the oldest change each row makes durable.
    first_seqs: Vec<u64>,
}

/// A changed window waiting to be written: its latest value.
struct Dirty {
    key: WindowKey,
    agg: Aggregate,
    /// Sequence number of the first change not yet written.
    first_seq: u64,
    /// When that change arrived.
    since: Instant,
}

/// Changed windows of one granularity in the order they became dirty (so `first_seq` ascends),
/// addressable by an absolute position so a newer value can replace a queued one in place.
#[derive(Default)]
struct DirtyQueue {
    /// Absolute position of `items[0]`.
    base: u64,
    items: VecDeque<Dirty>,
}

impl DirtyQueue {
    fn push(&mut self, dirty: Dirty) -> u64 {
        self.items.push_back(dirty);
        self.base + self.items.len() as u64 - 1
    }

    fn get_mut(&mut self, position: u64) -> Option<&mut Dirty> {
        let i = position.checked_sub(self.base)?;
        self.items.get_mut(usize::try_from(i).ok()?)
    }

    fn pop(&mut self) -> Option<Dirty> {
        let d = self.items.pop_front()?;
        self.base += 1;
        Some(d)
    }
}

/// Wakes the sink operator from the write tasks.
struct Waker {
    activator: timely::scheduling::activate::SyncActivator,
    /// Set by the operator while writes wait for permits: the next task to finish wakes it.
    armed: AtomicBool,
    /// `first_seq` of the writes finished since the operator last looked.
    finished: std::sync::Mutex<Vec<u64>>,
}

impl Waker {
    fn finish(&self, first_seqs: &[u64]) {
        self.finished
            .lock()
            .expect("waker lock")
            .extend_from_slice(first_seqs);
        if self.armed.swap(false, Ordering::AcqRel) {
            // Fails only when the worker is gone; then there is nobody to wake.
            let _ = self.activator.activate();
        }
    }
}

/// Writes one row or one unlogged batch of rows, retrying retryable failures forever with
/// backoff.
async fn write_rows(
    shared: Arc<Shared>,
    stats: Arc<CassandraStats>,
    waker: Arc<Waker>,
    permit: OwnedSemaphorePermit,
    write: Write,
) {
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values = Vec::with_capacity(write.rows.len());
    for (key, agg) in &write.rows {
        let view = shared.view(key.granularity);
        let (with_pf, row) =
            upsert_values_in(&shared.calendar, key, agg, write.write_ts, view.ttl_s);
        batch.append_statement(if with_pf {
            view.with_pf.clone()
        } else {
            view.without_pf.clone()
        });
        values.push(row);
    }
    // Every row carries its own write timestamp: the batch can be applied any number of times.
    batch.set_is_idempotent(true);
    let (first_key, _) = &write.rows[0];
    let rows = write.rows.len() as u64;
    let mut delay = shared.retry_initial;
    let mut attempt = 0u32;
    let started = Instant::now();
    loop {
        let result = match (&batch.statements[..], &values[..]) {
            ([BatchStatement::PreparedStatement(statement)], [row]) => shared
                .session
                .execute_unpaged(statement, row)
                .await
                .map(|_| ()),
            _ => shared.session.batch(&batch, &values).await.map(|_| ()),
        };
        match result {
            Ok(()) => {
                stats.write_seconds.observe(started.elapsed());
                stats.rows_written.fetch_add(rows, Ordering::Relaxed);
                stats
                    .last_ack_unix_us
                    .fetch_max(time::now_unix_us() as u64, Ordering::Relaxed);
                break;
            }
            Err(e) if is_retryable(&e) => {
                attempt = attempt.saturating_add(1);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                let wait = jittered(delay, write.write_ts, attempt);
                if attempt > QUIET_RETRIES {
                    tracing::warn!(
                        meter = %first_key.meter, granularity = %first_key.granularity,
                        window_start = first_key.start, rows, attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e, "Cassandra upsert failed; retrying"
                    );
                } else {
                    tracing::debug!(
                        meter = %first_key.meter, window_start = first_key.start, rows, attempt,
                        error = %e, "Cassandra upsert failed; retrying"
                    );
                }
                tokio::time::sleep(wait).await;
                delay = delay.saturating_mul(2).min(shared.retry_max);
            }
            Err(e) => {
                stats.write_errors.fetch_add(rows, Ordering::Relaxed);
                tracing::error!(
                    meter = %first_key.meter, granularity = %first_key.granularity,
                    window_start = first_key.start, rows, error = %e,
                    "Cassandra upsert failed and cannot succeed by retrying; rows given up"
                );
                break;
            }
        }
    }
    stats.in_flight.fetch_sub(rows, Ordering::Relaxed);
    // Free the permit before waking, so the woken operator can use it.
    drop(permit);
    waker.finish(&write.first_seqs);
}

/// A time whose updates have all arrived, held until they are durable.
struct Completed {
    /// Held for its effect on the output frontier; dropped when durable.
    _cap: Option<Capability<Time>>,
    /// Largest sequence number of any change at this time or before.
    last_seq: u64,
}

/// A capability for `time` on output 0, from the capability of the message carrying it.
fn hold(cap: &InputCapability<Time>, time: Time) -> Option<Capability<Time>> {
    if cap.stamp().iter().any(|s| *s <= time) {
        Some(cap.delayed(&time, 0))
    } else {
        // A record earlier than its message (not produced by wattflow's operators): hold the
        // message's own time, or nothing for a message that makes no progress claims.
        cap.retain_least(0)
    }
}

/// The write scheduler of one sink worker: dirty windows, writes in flight, held times.
struct Scheduler {
    delays: [Duration; 3],
    backlog_delay: Duration,
    /// Whether the input is catching up (then every delay is at least `backlog_delay`).
    backlogged: bool,
    /// Sequence number of the last change received.
    seq: u64,
    /// Queue position of every dirty window, by window.
    positions: FxMap<WindowKey, u64>,
    /// Indexed by `Granularity as usize`.
    queues: [DirtyQueue; 3],
    /// `first_seq` of every write sent and not yet finished.
    in_flight: std::collections::BTreeSet<u64>,
    /// Times with updates whose input is not complete yet: capability and last change.
    open: BTreeMap<Time, (Option<Capability<Time>>, u64)>,
    /// Complete times in time order, not yet durable.
    completed: VecDeque<Completed>,
}

impl Scheduler {
    fn new(config: &CassandraSinkConfig) -> Scheduler {
        Scheduler {
            backlog_delay: config.backlog_delay,
            backlogged: false,
            delays: [config.minute_delay, config.hour_delay, config.day_delay],
            seq: 0,
            positions: FxMap::default(),
            queues: Default::default(),
            in_flight: Default::default(),
            open: BTreeMap::new(),
            completed: VecDeque::new(),
        }
    }

    /// Records the new value of a window; returns whether it replaced a queued value.
    fn change(&mut self, key: WindowKey, agg: Aggregate, now: Instant) -> bool {
        self.seq += 1;
        let queue = &mut self.queues[key.granularity as usize];
        if let Some(dirty) = self.positions.get(&key).and_then(|p| queue.get_mut(*p)) {
            // Readings are insert-only and every change adds at least one, so of two values
            // of a window the one with more samples is the newer, whatever order they came in.
            if agg.samples >= dirty.agg.samples {
                dirty.agg = agg;
            }
            return true;
        }
        let position = queue.push(Dirty {
            key,
            agg,
            first_seq: self.seq,
            since: now,
        });
        self.positions.insert(key, position);
        false
    }

    /// Moves the times the input frontier has passed to `completed`.
    fn complete(&mut self, frontier: &timely::progress::frontier::AntichainRef<'_, Time>) {
        while let Some(entry) = self.open.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let (cap, last_seq) = entry.remove();
            let last_seq = last_seq.max(self.completed.back().map_or(0, |c| c.last_seq));
            self.completed.push_back(Completed {
                _cap: cap,
                last_seq,
            });
        }
    }

    /// The oldest dirty window that is due: its delay has passed, it is sealed (its end is
    /// at or behind the input frontier, `sealed_before`), or the input has ended (`None`).
    fn next_due(&mut self, now: Instant, sealed_before: Option<Time>) -> Option<Dirty> {
        let mut best: Option<usize> = None;
        for (g, queue) in self.queues.iter().enumerate() {
            let Some(front) = queue.items.front() else {
                continue;
            };
            let due = match sealed_before {
                None => true,
                Some(f) => {
                    now.duration_since(front.since) >= self.delay(g)
                        || front
                            .key
                            .start
                            .saturating_add(front.key.granularity.len_ms())
                            <= f.min(i64::MAX as Time) as i64
                }
            };
            let older = best.is_none_or(|b| {
                self.queues[b].items.front().map(|d| d.first_seq) > Some(front.first_seq)
            });
            if due && older {
                best = Some(g);
            }
        }
        let dirty = self.queues[best?].pop()?;
        self.positions.remove(&dirty.key);
        Some(dirty)
    }

    /// The delay of granularity index `g` now.
    fn delay(&self, g: usize) -> Duration {
        if self.backlogged {
            self.delays[g].max(self.backlog_delay)
        } else {
            self.delays[g]
        }
    }

    /// When the oldest not-yet-due window becomes due, if any is waiting.
    fn next_wake(&self) -> Option<Instant> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(g, q)| q.items.front().map(|d| d.since + self.delay(g)))
            .min()
    }

    /// Releases the capabilities of the completed times whose changes are all written.
    fn release(&mut self) {
        let pending = self
            .queues
            .iter()
            .filter_map(|q| q.items.front().map(|d| d.first_seq))
            .chain(self.in_flight.first().copied())
            .min()
            .unwrap_or(u64::MAX);
        while self.completed.front().is_some_and(|c| c.last_seq < pending) {
            self.completed.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.queues.iter().all(|q| q.items.is_empty()) && self.in_flight.is_empty()
    }
}

/// Writes every change of the window aggregates to the Cassandra speed views and returns the
/// durability frontier: a data-less stream whose frontier passes a time once every change of
/// that time (or a newer value of its window) has been acknowledged (see the module docs).
///
/// `stats` may be shared with other sinks and read at any time.
pub fn cassandra_sink<'scope>(
    updates: UpdateStream<'scope>,
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
) -> StreamVec<'scope, Time, ()> {
    cassandra_sink_paced(updates, views, stats, Arc::new(|| false))
}

/// [`cassandra_sink`], told by `backlogged` whether its input is catching up on a backlog (for
/// example [`crate::source::kafka::KafkaStats::backlogged`]): while it is, every row waits at
/// least [`CassandraSinkConfig::backlog_delay`], so a window's many changes during a catch-up
/// become a few writes and Cassandra's capacity goes to the values that last.
pub fn cassandra_sink_paced<'scope>(
    updates: UpdateStream<'scope>,
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
    backlogged: Arc<dyn Fn() -> bool + Send + Sync>,
) -> StreamVec<'scope, Time, ()> {
    let scope = updates.scope();
    let mut builder = OperatorBuilder::new("CassandraViewSink".to_owned(), scope);
    let pact =
        Exchange::new(|((key, _), _, _): &((WindowKey, Aggregate), Time, isize)| window_hash(key));
    let mut input = builder.new_input(updates, pact);
    let (output, durable) = builder.new_output::<Vec<()>>();
    let address = builder.operator_info().address;
    let activator = scope.activator_for(Rc::clone(&address));
    let waker = Arc::new(Waker {
        activator: scope.worker().sync_activator_for(address.to_vec()),
        armed: AtomicBool::new(false),
        finished: std::sync::Mutex::new(Vec::new()),
    });

    builder.build(move |initial_capabilities| {
        drop(initial_capabilities);
        // Never used to send: kept so the output exists for as long as the operator.
        let _output = output;
        let mut sched = Scheduler::new(views.config());
        let batch_rows = views.config().batch_rows.max(1);
        let mut finished = Vec::new();
        move |frontiers| {
            let now = Instant::now();
            // In arrival order (`for_each`, not `for_each_stamp`, which sorts the messages
            // of an activation by time, unstably: two changes of one window at one time
            // could swap). The window's producer sends its changes in order on one channel.
            input.for_each(|cap, data| {
                for ((key, agg), time, diff) in data.drain(..) {
                    // The `+` of a change comes after its `−`, so the last `+` is the window's
                    // latest value (and `change` keeps the larger of two values anyway).
                    if diff <= 0 {
                        continue;
                    }
                    if sched.change(key, agg, now) {
                        stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    let seq = sched.seq;
                    sched
                        .open
                        .entry(time)
                        .or_insert_with(|| (hold(&cap, time), 0))
                        .1 = seq;
                }
            });
            let frontier = frontiers[0].frontier();
            sched.complete(&frontier);
            sched.backlogged = backlogged();

            // Send what is due, oldest change first, in batches, as far as the permits go.
            let sealed_before = frontier.first().copied();
            loop {
                let Ok(permit) = Arc::clone(&views.permits).try_acquire_owned() else {
                    waker.armed.store(true, Ordering::Release);
                    break;
                };
                let mut write = Write {
                    rows: Vec::new(),
                    write_ts: next_write_timestamp(),
                    first_seqs: Vec::new(),
                };
                while write.rows.len() < batch_rows {
                    let Some(dirty) = sched.next_due(now, sealed_before) else {
                        break;
                    };
                    sched.in_flight.insert(dirty.first_seq);
                    write.first_seqs.push(dirty.first_seq);
                    write.rows.push((dirty.key, dirty.agg));
                }
                if write.rows.is_empty() {
                    break;
                }
                stats
                    .in_flight
                    .fetch_add(write.rows.len() as u64, Ordering::Relaxed);
                views.handle.spawn(write_rows(
                    Arc::clone(&views.shared),
                    Arc::clone(&stats),
                    Arc::clone(&waker),
                    permit,
                    write,
                ));
            }

            std::mem::swap(
                &mut finished,
                &mut *waker.finished.lock().expect("waker lock"),
            );
            for seq in finished.drain(..) {
                sched.in_flight.remove(&seq);
            }
            sched.release();
            stats
                .queued
                .store(sched.positions.len() as u64, Ordering::Relaxed);

            if !sched.in_flight.is_empty() {
                activator.activate_after(POLL_INTERVAL);
            } else if let Some(at) = sched.next_wake() {
                activator.activate_after(at.saturating_duration_since(now).max(POLL_INTERVAL));
            }
            debug_assert!(!sched.is_idle() || sched.completed.is_empty());
        }
    });
    durable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MeterId, Origin, Reading};
    use std::sync::atomic::AtomicU32;
    use timely::dataflow::operators::{Input, Probe};
    use timely::dataflow::{InputHandle, ProbeHandle};
    use timely::progress::Antichain;

    type Update = ((WindowKey, Aggregate), Time, isize);

    fn ms(y: i64, m: u32, d: u32, h: u32, mi: u32) -> i64 {
        time::naive_to_ms(y, m, d, h, mi, 0).unwrap()
    }

    fn reading(meter: &str, ts: i64, p: i32, q: i32) -> Reading {
        Reading {
            meter: MeterId::new(meter).unwrap(),
            ts,
            interval_s: 60,
            values: [p, q, 234_840, 18_400, 1_000, 2_000, 17_000],
            origin: Origin::default(),
        }
    }

    fn key(meter: &str, granularity: Granularity, ts: i64) -> WindowKey {
        WindowKey {
            meter: MeterId::new(meter).unwrap(),
            granularity,
            start: granularity.window_start(ts),
        }
    }

    #[test]
    fn buckets_bound_partitions_by_day_month_and_year() {
        let t = ms(2008, 2, 29, 23, 59);
        assert_eq!(bucket_of(Granularity::Minute, t), (t / 86_400_000) as i32);
        assert_eq!(bucket_of(Granularity::Minute, 0), 0);
        assert_eq!(bucket_of(Granularity::Minute, 86_400_000), 1);
        assert_eq!(bucket_of(Granularity::Hour, t), 200_802);
        assert_eq!(
            bucket_of(Granularity::Hour, ms(2006, 12, 31, 23, 0)),
            200_612
        );
        assert_eq!(bucket_of(Granularity::Day, t), 2008);
        assert_eq!(bucket_of(Granularity::Minute, -1), -1);
        assert_eq!(bucket_of(Granularity::Minute, i64::MAX), i32::MAX);
    }

    #[test]
    fn buckets_between_visits_every_partition_of_a_range() {
        let from = ms(2006, 12, 30, 12, 0);
        let to = ms(2007, 1, 2, 0, 0);
        let days: Vec<i32> = (0..3).map(|i| (from / DAY_MS) as i32 + i).collect();
        assert_eq!(buckets_between(Granularity::Minute, from, to), days);
        assert_eq!(
            buckets_between(Granularity::Hour, from, to),
            vec![200_612, 200_701]
        );
        assert_eq!(
            buckets_between(Granularity::Day, from, ms(2009, 1, 1, 0, 0)),
            vec![2006, 2007, 2008]
        );
        assert!(buckets_between(Granularity::Hour, to, from).is_empty());
        assert!(buckets_between(Granularity::Minute, 0, i64::MAX).len() > MAX_READ_BUCKETS);
    }

    #[test]
    fn tables_are_named_by_granularity() {
        assert_eq!(table_of(Granularity::Minute), "minute_view");
        assert_eq!(table_of(Granularity::Hour), "hour_view");
        assert_eq!(table_of(Granularity::Day), "day_view");
    }

    #[test]
    fn cql_text_has_the_contract_columns() {
        assert_eq!(
            keyspace_cql("ks", DEFAULT_REPLICATION),
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        let table = table_cql("ks", Granularity::Hour);
        assert!(table.starts_with(
            "CREATE TABLE IF NOT EXISTS ks.hour_view (meter text, bucket int, \
             window_start timestamp, samples bigint, covered_seconds bigint, \
             global_active_power_sum double, global_active_power_min double, "
        ));
        assert!(table.ends_with(
            "active_energy_wh double, unmetered_wh double, power_factor_avg double, \
             PRIMARY KEY ((meter, bucket), window_start))"
        ));
        assert_eq!(table.matches(" double").count(), 7 * 4 + 3);

        let with = upsert_cql("ks", Granularity::Minute, true, true);
        assert!(with.starts_with("INSERT INTO ks.minute_view (meter, bucket, window_start, "));
        assert!(with.ends_with("USING TIMESTAMP ? AND TTL ?"));
        assert!(with.contains("power_factor_avg"));
        assert_eq!(with.matches('?').count(), 5 + 31 + 2);
        let without = upsert_cql("ks", Granularity::Day, false, false);
        assert!(!without.contains("power_factor_avg"));
        assert!(without.ends_with(") USING TIMESTAMP ?"));
        assert_eq!(without.matches('?').count(), 5 + 30 + 1);
        assert_eq!(
            select_cql("ks", Granularity::Day),
            "SELECT * FROM ks.day_view WHERE meter = ? AND bucket = ? \
             AND window_start >= ? AND window_start < ?"
        );
    }

    #[test]
    fn values_follow_the_statement_and_skip_a_missing_power_factor() {
        let r = reading("h1", ms(2007, 1, 1, 10, 5), 4_216, 418);
        let k = key("h1", Granularity::Minute, r.ts);
        let (has_pf, v) = upsert_values(&k, &Aggregate::of(&r), 42, Some(600));
        assert!(has_pf);
        assert_eq!(v.len(), 5 + 31 + 2);
        assert_eq!(v[0], CqlValue::Text("h1".into()));
        assert_eq!(v[1], CqlValue::Int(bucket_of(Granularity::Minute, k.start)));
        assert_eq!(v[2], CqlValue::Timestamp(CqlTimestamp(k.start)));
        assert_eq!(v[3], CqlValue::BigInt(1));
        assert_eq!(v[4], CqlValue::BigInt(60));
        assert_eq!(v[5], CqlValue::Double(4.216)); // global_active_power_sum
        assert_eq!(v[v.len() - 2], CqlValue::BigInt(42));
        assert_eq!(v[v.len() - 1], CqlValue::Int(600));

        let zero = reading("h1", r.ts, 0, 0);
        let (has_pf, v) = upsert_values(&k, &Aggregate::of(&zero), 43, None);
        assert!(!has_pf);
        assert_eq!(v.len(), 5 + 30 + 1);
        assert_eq!(v[v.len() - 1], CqlValue::BigInt(43));
    }

    #[test]
    fn write_timestamps_strictly_increase_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| next_write_timestamp()).collect()))
            .collect();
        let mut all: Vec<i64> = Vec::new();
        for h in handles {
            let ts: Vec<i64> = h.join().unwrap();
            assert!(ts.windows(2).all(|w| w[0] < w[1]));
            all.extend(ts);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "every timestamp is unique in the process");
        // Read the clock independently of the code under test.
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!(
            (all[0] - now_us).abs() < 60_000_000,
            "wall-clock microseconds"
        );
    }

    #[test]
    fn config_defaults_validate_and_round_trip() {
        let c = CassandraSinkConfig::default();
        assert_eq!(c.contact_points, vec!["127.0.0.1:9042".to_owned()]);
        assert_eq!((c.max_in_flight, c.batch_rows), (16, 16));
        assert_eq!(
            (c.minute_delay, c.hour_delay, c.day_delay, c.backlog_delay),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(30)
            )
        );
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"retry_initial\":100"), "{json}");
        let back: CassandraSinkConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let partial: CassandraSinkConfig =
            serde_json::from_str(r#"{"keyspace": "views", "minute_ttl": 86400000}"#).unwrap();
        assert_eq!(partial.minute_ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(partial.retry_max, DEFAULT_RETRY_MAX);
        assert!(serde_json::from_str::<CassandraSinkConfig>(r#"{"keyspcae": "x"}"#).is_err());

        for bad in [
            CassandraSinkConfig {
                keyspace: "drop table;".into(),
                ..c.clone()
            },
            CassandraSinkConfig {
                keyspace: "1abc".into(),
                ..c.clone()
            },
            CassandraSinkConfig {
                replication: "{'class': 'X'}; DROP KEYSPACE y".into(),
                ..c.clone()
            },
            CassandraSinkConfig {
                minute_ttl: Some(Duration::from_millis(1500)),
                ..c.clone()
            },
            CassandraSinkConfig {
                batch_rows: 0,
                ..c.clone()
            },
            CassandraSinkConfig {
                max_in_flight: 0,
                ..c.clone()
            },
            CassandraSinkConfig {
                retry_max: Duration::from_millis(10),
                ..c.clone()
            },
            CassandraSinkConfig {
                contact_points: vec![],
                ..c.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(CassandraError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn retryable_errors_are_told_apart_from_hopeless_ones() {
        let db = |e: DbError| {
            ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, String::new()))
        };
        assert!(is_retryable(&ExecutionError::RequestTimeout(
            Duration::from_secs(1)
        )));
        assert!(is_retryable(&db(DbError::Overloaded)));
        assert!(is_retryable(&db(DbError::IsBootstrapping)));
        assert!(is_retryable(&ExecutionError::EmptyPlan));
        assert!(!is_retryable(&db(DbError::Invalid)));
        assert!(!is_retryable(&db(DbError::SyntaxError)));
        assert!(!is_retryable(&db(DbError::Unauthorized)));
    }

    #[test]
    fn backoff_jitter_stays_within_twenty_percent() {
        let base = Duration::from_millis(1000);
        for attempt in 0..50 {
            let d = jittered(base, 1_700_000_000_000_000 + attempt as i64 * 7, attempt);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
    }

    #[test]
    fn an_unreachable_cluster_fails_fast_with_its_address() {
        // A closed local port: refused at once. (Nothing listens on port 1.)
        let config = CassandraSinkConfig {
            connect_timeout: Duration::from_secs(3),
            ..CassandraSinkConfig::new("127.0.0.1:1")
        };
        let started = Instant::now();
        match connect(&config) {
            Err(CassandraError::Unreachable { address, .. }) => assert_eq!(address, "127.0.0.1:1"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    // ---- against a real Cassandra: only when WATTFLOW_CASSANDRA names a node ----------------

    /// Real-Cassandra tests share the node; the restart test takes it for itself.
    static NODE: std::sync::RwLock<()> = std::sync::RwLock::new(());

    fn shared_node() -> std::sync::RwLockReadGuard<'static, ()> {
        NODE.read().unwrap_or_else(|e| e.into_inner())
    }

    fn real_cassandra(test: &str) -> Option<CassandraSinkConfig> {
        match std::env::var("WATTFLOW_CASSANDRA") {
            Ok(addr) if !addr.is_empty() => {
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                Some(CassandraSinkConfig {
                    keyspace: format!("wattflow_test_{}_{n}", std::process::id()),
                    connect_timeout: Duration::from_secs(30),
                    // Short, so the durability frontier passes quickly, but not zero.
                    hour_delay: Duration::from_millis(200),
                    day_delay: Duration::from_millis(300),
                    ..CassandraSinkConfig::new(addr)
                })
            }
            _ => {
                eprintln!("skipping {test}: set WATTFLOW_CASSANDRA=127.0.0.1:9042 to run it");
                None
            }
        }
    }

    /// Drops the test keyspace when the test ends, passed or not.
    struct DropKeyspace(Arc<CassandraViews>);

    impl Drop for DropKeyspace {
        fn drop(&mut self) {
            let ks = self.0.config().keyspace.clone();
            if let Err(e) = self.0.execute(&format!("DROP KEYSPACE IF EXISTS {ks}")) {
                eprintln!("could not drop {ks}: {e}");
            }
        }
    }

    /// Runs `batches` (time, updates) through a two-worker graph into the sink and waits until
    /// its durability frontier has passed the last time.
    fn run_graph(
        views: Arc<CassandraViews>,
        stats: Arc<CassandraStats>,
        batches: Vec<(Time, Vec<Update>)>,
    ) -> Duration {
        let end = batches.iter().map(|(t, _)| *t).max().unwrap_or(0) + 1;
        let batches = Arc::new(batches);
        let started = Instant::now();
        timely::execute(timely::Config::process(2), move |worker| {
            let mut input = InputHandle::<Time, _>::new();
            let probe = ProbeHandle::new();
            let (views, stats) = (Arc::clone(&views), Arc::clone(&stats));
            worker.dataflow::<Time, _, _>(|scope| {
                let updates: UpdateStream = scope.input_from(&mut input);
                cassandra_sink(updates, views, stats).probe_with(&probe);
            });
            if worker.index() == 0 {
                for (time, updates) in batches.iter() {
                    input.advance_to(*time);
                    for u in updates {
                        input.send(*u);
                    }
                }
            }
            input.advance_to(end);
            while probe.less_than(&end) {
                worker.step();
            }
        })
        .expect("timely runs");
        started.elapsed()
    }

    fn at(sched: &mut Scheduler, time: Time) {
        let seq = sched.seq;
        sched.open.entry(time).or_insert((None, 0)).1 = seq;
    }

    #[test]
    fn scheduler_merges_waiting_changes_and_sends_the_oldest_due_first() {
        let config = CassandraSinkConfig {
            hour_delay: Duration::from_secs(5),
            ..CassandraSinkConfig::default()
        };
        let mut s = Scheduler::new(&config);
        let now = Instant::now();
        let t0 = ms(2007, 1, 1, 10, 0);
        let a1 = Aggregate::of(&reading("h1", t0, 1_000, 100));
        let mut a2 = a1;
        a2.add(&reading("h1", t0 + 1_000, 2_000, 100));
        let (m, h) = (
            key("h1", Granularity::Minute, t0),
            key("h1", Granularity::Hour, t0),
        );
        assert!(!s.change(h, a1, now));
        at(&mut s, 5);
        assert!(!s.change(m, a1, now));
        assert!(
            s.change(m, a2, now),
            "a waiting minute row takes the newer value"
        );
        assert!(s.change(h, a2, now), "so does a waiting hour row");
        assert!(
            s.change(h, a1, now),
            "an older value, come late, is merged..."
        );
        assert_eq!(s.queues[1].items[0].agg, a2, "...but the newer one is kept");
        at(&mut s, 6);
        assert_eq!(s.positions.len(), 2);

        // The minute row is due at once; the hour row waits for its delay.
        let first = s.next_due(now, Some(7)).expect("minute row due");
        assert_eq!((first.key, first.agg, first.first_seq), (m, a2, 2));
        assert!(s.next_due(now, Some(7)).is_none());
        assert_eq!(s.next_wake(), Some(now + Duration::from_secs(5)));
        s.in_flight.insert(first.first_seq);

        // Times 5 and 6 complete; neither is durable while the hour row waits.
        s.complete(&Antichain::from_elem(7).borrow());
        assert_eq!(s.completed.len(), 2);
        s.release();
        assert_eq!(s.completed.len(), 2);

        // A change while the minute row is in flight queues it again, behind.
        let mut a3 = a2;
        a3.add(&reading("h1", t0 + 2_000, 500, 0));
        assert!(!s.change(m, a3, now));
        at(&mut s, 8);

        // Later, the hour row (oldest change, seq 1) goes before the re-queued minute row.
        let later = now + Duration::from_secs(5);
        let second = s.next_due(later, Some(9)).expect("hour row due");
        assert_eq!((second.key, second.agg, second.first_seq), (h, a2, 1));
        s.in_flight.insert(second.first_seq);
        let third = s.next_due(later, Some(9)).expect("minute row due again");
        assert_eq!((third.key, third.agg), (m, a3));
        s.in_flight.insert(third.first_seq);

        // Acknowledgements release the times whose changes are all written, in order.
        s.in_flight.remove(&2);
        s.release();
        assert_eq!(
            s.completed.len(),
            2,
            "the hour row (seq 1) is still in flight"
        );
        s.in_flight.remove(&1);
        s.release();
        assert!(s.completed.is_empty(), "times 5 and 6 are durable");
        s.complete(&Antichain::from_elem(9).borrow());
        s.release();
        assert_eq!(s.completed.len(), 1, "time 8 waits for its minute row");
        s.in_flight.remove(&third.first_seq);
        s.release();
        assert!(s.completed.is_empty() && s.is_idle());
    }

    #[test]
    fn sealed_windows_and_the_end_of_input_make_rows_due_at_once() {
        let mut s = Scheduler::new(&CassandraSinkConfig::default());
        let now = Instant::now();
        let t0 = ms(2007, 1, 1, 10, 0);
        let a = Aggregate::of(&reading("h1", t0, 1_000, 100));
        let (h, d) = (
            key("h1", Granularity::Hour, t0),
            key("h1", Granularity::Day, t0),
        );
        s.change(h, a, now);
        s.change(d, a, now);
        assert!(s.next_due(now, Some(t0 as Time)).is_none());
        let hour_end = (t0 + 3_600_000) as Time;
        assert_eq!(s.next_due(now, Some(hour_end)).map(|w| w.key), Some(h));
        assert!(s.next_due(now, Some(hour_end)).is_none());
        assert_eq!(s.next_due(now, None).map(|w| w.key), Some(d));
    }

    #[test]
    fn schema_creation_is_idempotent() {
        let Some(config) = real_cassandra("schema_creation_is_idempotent") else {
            return;
        };
        let _node = shared_node();
        let started = Instant::now();
        let first = Arc::new(connect(&config).expect("first connect"));
        let first_took = started.elapsed();
        let _cleanup = DropKeyspace(Arc::clone(&first));
        let started = Instant::now();
        let second = connect(&config).expect("second connect: schema exists already");
        eprintln!(
            "connect + schema: first {first_took:?}, again {:?}",
            started.elapsed()
        );
        health_check(&second).expect("health check");
        let rows = read_view(&second, Granularity::Day, "nobody", 0, ms(1971, 1, 1, 0, 0));
        assert_eq!(rows, Ok(vec![]));
    }

    #[test]
    fn graph_writes_exactly_the_final_values() {
        let Some(config) = real_cassandra("graph_writes_exactly_the_final_values") else {
            return;
        };
        let _node = shared_node();
        let views = Arc::new(connect(&config).expect("connect"));
        let _cleanup = DropKeyspace(Arc::clone(&views));
        let stats = CassandraStats::new();

        // Minute windows on both sides of midnight (two buckets), their hour and day.
        let t0 = ms(2006, 12, 31, 23, 59);
        let t1 = ms(2007, 1, 1, 0, 0);
        let a1 = Aggregate::of(&reading("h1", t0, 1_000, 100));
        let mut a2 = a1;
        a2.add(&reading("h1", t0 + 30_000, 3_000, 0));
        let mut a3 = a2;
        a3.add(&reading("h1", t0 + 45_000, 2_500, 50));
        let no_pf = Aggregate::of(&reading("h1", t1, 0, 0));
        let other = Aggregate::of(&reading("h2", t1, 7_777, 1));
        let m0 = key("h1", Granularity::Minute, t0);
        let m1 = key("h1", Granularity::Minute, t1);
        let h0 = key("h1", Granularity::Hour, t0);
        let d0 = key("h1", Granularity::Day, t0);
        let o1 = key("h2", Granularity::Minute, t1);
        let batches = vec![
            (
                10,
                vec![((m0, a1), 10, 1), ((h0, a1), 10, 1), ((d0, a1), 10, 1)],
            ),
            (
                // −old, +new at one time, twice over for m0 (collapses to a3).
                11,
                vec![
                    ((m0, a1), 11, -1),
                    ((m0, a2), 11, 1),
                    ((m0, a2), 11, -1),
                    ((m0, a3), 11, 1),
                    ((h0, a1), 11, -1),
                    ((h0, a2), 11, 1),
                    ((m1, no_pf), 11, 1),
                    ((o1, other), 11, 1),
                ],
            ),
            // A later, newer value of the hour.
            (12, vec![((h0, a2), 12, -1), ((h0, a3), 12, 1)]),
        ];
        let took = run_graph(Arc::clone(&views), Arc::clone(&stats), batches);
        let (written, errors, retries, in_flight) = stats.snapshot();
        eprintln!("graph took {took:?}: {written} rows, {errors} errors, {retries} retries");
        // Five windows; the changes of m0 and h0 may be merged before they are written, and the
        // hour and day rows wait for their delay (or the end), merging theirs.
        assert!((5..=8).contains(&written), "{written} rows written");
        assert_eq!((errors, in_flight), (0, 0));

        let check = |row: &CassandraRow, k: &WindowKey, agg: &Aggregate| {
            let f = agg.finish();
            assert_eq!(row.meter, k.meter.as_str());
            assert_eq!(row.window_start, k.start);
            assert_eq!(row.samples, f.samples as i64);
            assert_eq!(row.covered_seconds, f.covered_s as i64);
            for (m, fm) in Measure::ALL.iter().zip(f.measures.iter()) {
                let get = |stat: &str| row.values[&format!("{}_{stat}", m.name())];
                assert_eq!(get("sum"), fm.sum as f64 / 1000.0);
                assert_eq!(get("min"), fm.min as f64 / 1000.0);
                assert_eq!(get("max"), fm.max as f64 / 1000.0);
                assert_eq!(get("avg"), fm.avg);
            }
            assert_eq!(row.values["active_energy_wh"], f.active_energy_wh);
            assert_eq!(row.values["unmetered_wh"], f.unmetered_wh);
            assert_eq!(
                row.values.get("power_factor_avg").copied(),
                f.power_factor_avg
            );
        };

        let day_start = ms(2006, 12, 31, 0, 0);
        let minutes = read_view(
            &views,
            Granularity::Minute,
            "h1",
            day_start,
            day_start + 2 * DAY_MS,
        )
        .expect("read minutes");
        assert_eq!(minutes.len(), 2, "{minutes:?}");
        check(&minutes[0], &m0, &a3);
        check(&minutes[1], &m1, &no_pf);
        assert!(!minutes[1].values.contains_key("power_factor_avg"));
        // Half-open range: the window starting at `to` is not included.
        let only_first =
            read_view(&views, Granularity::Minute, "h1", m0.start, m1.start).expect("read");
        assert_eq!(only_first.len(), 1);

        let hours =
            read_view(&views, Granularity::Hour, "h1", day_start, t1 + DAY_MS).expect("read hours");
        assert_eq!(hours.len(), 1);
        check(&hours[0], &h0, &a3);
        let days = read_view(&views, Granularity::Day, "h1", 0, t1 + DAY_MS).expect("read days");
        assert_eq!(days.len(), 1);
        check(&days[0], &d0, &a1);
        let h2 = read_view(&views, Granularity::Minute, "h2", t1, t1 + 60_000).expect("read h2");
        assert_eq!(h2.len(), 1);
        check(&h2[0], &o1, &other);

        // A stale write with an older timestamp loses to what is there.
        let stale_ts = LAST_WRITE_TS.load(Ordering::Relaxed) - 1_000_000;
        let (_, values) = upsert_values(&h0, &a1, stale_ts, None);
        let shared = Arc::clone(&views.shared);
        views
            .run(async move {
                shared
                    .session
                    .execute_unpaged(&shared.view(Granularity::Hour).with_pf, values)
                    .await
            })
            .expect("runtime")
            .expect("stale upsert");
        let hours = read_view(&views, Granularity::Hour, "h1", h0.start, h0.end()).expect("read");
        check(&hours[0], &h0, &a3);
    }

    #[test]
    fn many_windows_throughput() {
        let Some(config) = real_cassandra("many_windows_throughput") else {
            return;
        };
        let _node = shared_node();
        let views = Arc::new(connect(&config).expect("connect"));
        let _cleanup = DropKeyspace(Arc::clone(&views));
        let stats = CassandraStats::new();
        // Two days of minutes for 5 meters, in 48 hourly epochs: 14,400 upserts.
        let start = ms(2007, 3, 1, 0, 0);
        let mut batches = Vec::new();
        for hour in 0..48i64 {
            let time = (start + hour * 3_600_000) as Time;
            let mut updates = Vec::new();
            for meter in ["m1", "m2", "m3", "m4", "m5"] {
                for minute in 0..60 {
                    let ts = start + hour * 3_600_000 + minute * 60_000;
                    let agg = Aggregate::of(&reading(meter, ts, 1_000 + minute as i32, 10));
                    updates.push(((key(meter, Granularity::Minute, ts), agg), time, 1));
                }
            }
            batches.push((time, updates));
        }
        let took = run_graph(Arc::clone(&views), Arc::clone(&stats), batches);
        let (written, errors, retries, _) = stats.snapshot();
        eprintln!(
            "{written} upserts in {took:?}: {:.0} rows/s ({retries} retries)",
            written as f64 / took.as_secs_f64()
        );
        assert_eq!((written, errors), (14_400, 0));
        let rows =
            read_view(&views, Granularity::Minute, "m3", start, start + 2 * DAY_MS).expect("read");
        assert_eq!(rows.len(), 2 * 1440);
        assert!(rows
            .windows(2)
            .all(|w| w[0].window_start < w[1].window_start));
    }

    #[test]
    fn writes_survive_a_cassandra_restart() {
        let Some(config) = real_cassandra("writes_survive_a_cassandra_restart") else {
            return;
        };
        if std::env::var("WATTFLOW_CASSANDRA_RESTART_TEST").as_deref() != Ok("1") {
            eprintln!("skipping the restart test: set WATTFLOW_CASSANDRA_RESTART_TEST=1");
            return;
        }
        let _node = NODE.write().unwrap_or_else(|e| e.into_inner());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
        let services = |what: &str| {
            let status = std::process::Command::new(script)
                .args([what, "cassandra"])
                .status()
                .expect("run services.sh");
            assert!(status.success(), "services.sh {what} cassandra failed");
        };
        let config = CassandraSinkConfig {
            retry_max: Duration::from_secs(2),
            ..config
        };
        let views = Arc::new(connect(&config).expect("connect"));
        let _cleanup = DropKeyspace(Arc::clone(&views));
        let stats = CassandraStats::new();
        let start = ms(2007, 6, 1, 0, 0);
        let batch = move |hour: i64| {
            let time = (start + hour * 3_600_000) as Time;
            let updates: Vec<Update> = (0..60)
                .map(|minute| {
                    let ts = start + hour * 3_600_000 + minute * 60_000;
                    let agg = Aggregate::of(&reading("r1", ts, 500 + minute as i32, 5));
                    ((key("r1", Granularity::Minute, ts), agg), time, 1)
                })
                .collect();
            (time, updates)
        };
        // One hour written while Cassandra is up.
        run_graph(Arc::clone(&views), Arc::clone(&stats), vec![batch(0)]);
        assert_eq!(stats.snapshot().0, 60);

        services("down");
        let writer = {
            let (views, stats) = (Arc::clone(&views), Arc::clone(&stats));
            std::thread::spawn(move || run_graph(views, stats, (1..4).map(batch).collect()))
        };
        std::thread::sleep(Duration::from_secs(30));
        assert!(
            !writer.is_finished(),
            "the durability frontier must wait for Cassandra"
        );
        let retries_while_down = stats.snapshot().2;
        services("up");
        let took = writer.join().expect("writer thread");
        let (written, errors, retries, _) = stats.snapshot();
        eprintln!(
            "restart: graph finished after {took:?}; {written} rows, {retries} retries \
             ({retries_while_down} while down), {errors} errors"
        );
        assert!(retries_while_down > 0);
        assert_eq!((written, errors), (4 * 60, 0));
        let rows = read_view(&views, Granularity::Minute, "r1", start, start + DAY_MS)
            .expect("read after restart");
        assert_eq!(rows.len(), 4 * 60);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.window_start, start + i as i64 * 60_000);
            assert_eq!(
                row.values["global_active_power_sum"],
                (500 + (i % 60) as i32) as f64 / 1000.0
            );
        }
    }
}
