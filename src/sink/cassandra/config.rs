//! Settings of the speed views ([`CassandraSinkConfig`], TOML/serde-ready, secrets redacted),
//! their defaults, the sink's errors and its counters.

use crate::time;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

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
/// Largest [`CassandraSinkConfig::batch_rows`]: about 256 KiB of rows, beyond any cluster's
/// sensible `batch_size_fail_threshold`. A batch the cluster refuses as too large is sent
/// again row by row, so a value above the threshold costs speed, never rows.
pub const MAX_BATCH_ROWS: usize = 256;
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
/// Default [`CassandraSinkConfig::max_queued_rows`]: 256 Ki rows, some 80 MiB.
pub const DEFAULT_MAX_QUEUED_ROWS: usize = 256 * 1024;
/// Default [`CassandraSinkConfig::runtime_threads`]: the driver is asynchronous, two threads
/// keep up with any single node.
pub const DEFAULT_RUNTIME_THREADS: usize = 2;
/// Retries of one upsert logged at debug level before each further one is a warning.
pub const QUIET_RETRIES: u32 = 3;
/// How often the sink operator looks at its pending writes when nothing woke it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Largest TTL Cassandra accepts (20 years), in seconds.
pub const MAX_TTL_S: u64 = 630_720_000;
/// Most partitions one [`read_view`](super::read_view) call may visit (about 27 years of minute buckets).
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
    /// [`cassandra_sink_paced`](super::cassandra_sink_paced)): its intermediate values are history nobody waits for.
    #[serde(with = "duration_ms")]
    pub backlog_delay: Duration,
    /// First backoff after a failed upsert.
    #[serde(with = "duration_ms")]
    pub retry_initial: Duration,
    /// Largest backoff between retries.
    #[serde(with = "duration_ms")]
    pub retry_max: Duration,
    /// How long [`connect`](super::connect) may wait for the cluster.
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
    /// Changed rows the sinks of one process may hold unwritten (queued or in flight), the
    /// memory budget of the speed layer (about 300 bytes a row: 256 Ki rows are some 80 MiB).
    /// A queue at its share of the budget writes its oldest rows without waiting for their
    /// delay, and a pipeline's live source pauses while the budget is used up, so a Cassandra
    /// that is down or slow stops consumption instead of filling memory.
    pub max_queued_rows: usize,
    /// Node addresses as the cluster announces them (`ip:port`) mapped to the address to
    /// connect to instead: for a cluster behind NAT, a port forward or a proxy (the
    /// fault-injection tests reach the node through Toxiproxy so). Empty: connect as
    /// announced.
    pub address_map: std::collections::BTreeMap<String, String>,
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
            max_queued_rows: DEFAULT_MAX_QUEUED_ROWS,
            address_map: Default::default(),
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

    /// Checks the settings [`connect`](super::connect) relies on.
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
        if self.batch_rows == 0 || self.batch_rows > MAX_BATCH_ROWS {
            return bad(format!(
                "batch_rows must be from 1 to {MAX_BATCH_ROWS} (a row is about 1 KiB; Cassandra \
                 refuses batches over batch_size_fail_threshold, 50 KiB by default)"
            ));
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
        if self.max_queued_rows == 0 {
            return bad("max_queued_rows must be at least 1".into());
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
pub(super) mod duration_ms {
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
pub(super) mod opt_duration_ms {
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

/// An error of the Cassandra driver (or of its runtime), kept whole as an error's source.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn unreachable_reason(timeout: &std::time::Duration, source: &Option<DriverError>) -> String {
    match source {
        Some(e) => e.to_string(),
        None => format!("no answer within {} ms", timeout.as_millis()),
    }
}

/// What can go wrong talking to Cassandra outside the write path (which retries instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CassandraError {
    /// No node answered within the connect timeout.
    #[error("Cassandra at {address} is unreachable: {}", unreachable_reason(.timeout, .source))]
    Unreachable {
        /// The contact points tried.
        address: String,
        /// How long the driver was given.
        timeout: std::time::Duration,
        /// What the driver said (`None`: it said nothing in time).
        #[source]
        source: Option<DriverError>,
    },
    /// The configuration is not usable.
    #[error("Cassandra sink configuration: {0}")]
    Config(String),
    /// A schema statement failed at start-up.
    #[error("Cassandra schema statement failed: {source}; statement: {statement}")]
    Schema {
        /// The CQL statement.
        statement: String,
        /// What Cassandra or the driver said.
        #[source]
        source: DriverError,
    },
    /// A statement could not be prepared.
    #[error("preparing a statement failed: {source}; statement: {statement}")]
    Prepare {
        /// The CQL statement.
        statement: String,
        /// What Cassandra or the driver said.
        #[source]
        source: DriverError,
    },
    /// A query failed.
    #[error("Cassandra query failed: {0}")]
    Query(#[source] DriverError),
    /// A row read back could not be decoded.
    #[error("unexpected row from Cassandra: {0}")]
    BadRow(#[source] DriverError),
    /// A column read back holds a type this version does not write.
    #[error("unexpected row from Cassandra: column {column} holds {found}")]
    BadColumn {
        /// The column.
        column: String,
        /// What it holds (the driver's rendering of the value).
        found: String,
    },
    /// Cassandra refused an upsert for good (an error no retry can fix): the row is not in the
    /// view, so the run stops and nothing after it is committed.
    #[error(
        "Cassandra refused the {granularity} row of {meter} at {window_start} for good: {source}"
    )]
    Refused {
        /// The view's granularity.
        granularity: String,
        /// The row's meter.
        meter: String,
        /// The row's window start, ISO-8601.
        window_start: String,
        /// What Cassandra or the driver said.
        #[source]
        source: DriverError,
    },
    /// The tokio runtime could not be started.
    #[error("Cassandra client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The tokio runtime stopped answering.
    #[error("the Cassandra client runtime stopped")]
    RuntimeStopped,
}

/// Counters of the speed-view writes, shared by every sink worker (all atomics, relaxed).
#[derive(Debug, Default)]
pub struct CassandraStats {
    /// Upserts acknowledged by Cassandra.
    pub rows_written: AtomicU64,
    /// Upserts Cassandra refused for good (an error no retry can fix): never durable; in a
    /// pipeline the run stops on the first.
    pub write_errors: AtomicU64,
    /// Batches refused for good as a whole and sent again row by row.
    pub split_batches: AtomicU64,
    /// Retries of failed upserts (one per failed attempt that is tried again).
    pub retries: AtomicU64,
    /// Upserts currently sent or waiting for their next attempt.
    pub in_flight: AtomicU64,
    /// Changes merged into a row already waiting to be written (writes saved).
    pub coalesced: AtomicU64,
    /// Changed rows waiting to be written, summed over the sink workers of the process.
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

    /// Whether the rows queued or in flight have reached `max_queued_rows` (the
    /// [`CassandraSinkConfig::max_queued_rows`] of the sinks these counters follow).
    pub fn over_budget(&self, max_queued_rows: usize) -> bool {
        self.queued.load(Ordering::Relaxed) + self.in_flight.load(Ordering::Relaxed)
            >= max_queued_rows as u64
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
