//! The connection: session, schema set-up, prepared statements, the runtime the writes run on,
//! health checks, and reading a view back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::NewSessionError;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Statement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;

use crate::model::Granularity;
use crate::time;

use super::{
    buckets_between, keyspace_cql, select_cql, table_cql, upsert_cql, CassandraError,
    CassandraSinkConfig, DriverError, MAX_READ_BUCKETS,
};

/// The prepared statements of one view.
pub(super) struct Upserts {
    pub(super) with_pf: PreparedStatement,
    pub(super) without_pf: PreparedStatement,
    pub(super) select: PreparedStatement,
    pub(super) ttl_s: Option<i32>,
}

/// What the write tasks share: the session and the prepared statements.
pub(super) struct Shared {
    pub(super) session: Session,
    /// Indexed by `Granularity as usize`.
    pub(super) views: Vec<Upserts>,
    pub(super) retry_initial: Duration,
    pub(super) retry_max: Duration,
    pub(super) calendar: time::Calendar,
}

impl Shared {
    pub(super) fn view(&self, granularity: Granularity) -> &Upserts {
        &self.views[granularity as usize]
    }
}

/// A connected session with the schema in place and the upserts prepared; owns the tokio
/// runtime its requests run on. Share it between workers with an `Arc`.
pub struct CassandraViews {
    pub(super) config: CassandraSinkConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) handle: Handle,
    /// `Option` only so that `Drop` can shut it down without blocking.
    pub(super) runtime: Option<Runtime>,
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
    pub(super) fn run<F>(&self, fut: F) -> Result<F::Output, CassandraError>
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
            .map_err(|e| CassandraError::Query(e.into()))
    }
}

pub(super) fn run_on<F>(handle: &Handle, fut: F) -> Result<F::Output, CassandraError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| CassandraError::RuntimeStopped)
}

/// Connects, creates the keyspace and tables if missing, and prepares the statements.
///
/// Blocks the calling thread (up to `connect_timeout` for the connection, then up to
/// `schema_timeout` per schema statement). A cluster that does not answer gives
/// [`CassandraError::Unreachable`] with the addresses tried.
pub fn connect(config: &CassandraSinkConfig) -> Result<CassandraViews, CassandraError> {
    connect_with(config, true)
}

/// Connects to speed views a pipeline made, changing nothing: [`connect`] without creating
/// the keyspace or the tables (a reader such as `wattflow serve`). Views that do not exist
/// yet give [`CassandraError::Prepare`] naming the table.
pub fn connect_existing(config: &CassandraSinkConfig) -> Result<CassandraViews, CassandraError> {
    connect_with(config, false)
}

fn connect_with(
    config: &CassandraSinkConfig,
    create_schema: bool,
) -> Result<CassandraViews, CassandraError> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_threads)
        .thread_name("wattflow-cassandra")
        .enable_all()
        .build()
        .map_err(CassandraError::Runtime)?;
    let handle = runtime.handle().clone();
    let cfg = config.clone();
    let started = Instant::now();
    let shared = run_on(&handle, async move { open(&cfg, create_schema).await })??;
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

/// [`CassandraSinkConfig::address_map`] as the driver's translator: node address to the
/// address to connect to.
fn address_translator(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::HashMap<std::net::SocketAddr, std::net::SocketAddr>, CassandraError> {
    let parse = |text: &str| {
        text.parse::<std::net::SocketAddr>().map_err(|e| {
            CassandraError::Config(format!(
                "address_map: {text:?} is not an ip:port address ({e})"
            ))
        })
    };
    let mut rules = std::collections::HashMap::new();
    for (node, to) in map {
        let to = parse(to)?;
        rules.insert(parse(node)?, to);
        // The driver also asks about the node it reached through a contact point, by the
        // address it reached it at: an address already translated stays as it is.
        rules.entry(to).or_insert(to);
    }
    Ok(rules)
}

pub(super) async fn open(
    config: &CassandraSinkConfig,
    create_schema: bool,
) -> Result<Shared, CassandraError> {
    let address = config.contact_points.join(", ");
    let unreachable = |source: Option<DriverError>| CassandraError::Unreachable {
        address: address.clone(),
        timeout: config.connect_timeout,
        source,
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
    if !config.address_map.is_empty() {
        builder = builder.address_translator(Arc::new(address_translator(&config.address_map)?));
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
        Ok(Err(e)) => return Err(unreachable(Some(e.into()))),
        Err(_) => return Err(unreachable(None)),
    };
    let ks = &config.keyspace;
    let mut schema = vec![keyspace_cql(ks, &config.replication)];
    schema.extend(Granularity::ALL.map(|g| table_cql(ks, g)));
    if !create_schema {
        schema.clear();
    }
    for cql in schema {
        let mut statement = Statement::new(cql.clone());
        statement.set_request_timeout(Some(config.schema_timeout));
        session
            .query_unpaged(statement, &[])
            .await
            .map_err(|e| CassandraError::Schema {
                statement: cql,
                source: e.into(),
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

pub(super) async fn prepare(
    session: &Session,
    cql: String,
    upsert: bool,
) -> Result<PreparedStatement, CassandraError> {
    let mut prepared = session
        .prepare(cql.clone())
        .await
        .map_err(|e| CassandraError::Prepare {
            statement: cql,
            source: e.into(),
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
        .map_err(|e| CassandraError::Query(e.into()))?
        .into_rows_result()
        .map_err(|e| CassandraError::Query(e.into()))?;
    let (version,): (String,) = rows
        .single_row()
        .map_err(|e| CassandraError::BadRow(e.into()))?;
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
                    .map_err(|e| CassandraError::Query(e.into()))?;
                let rows = result
                    .into_rows_result()
                    .map_err(|e| CassandraError::Query(e.into()))?;
                let names: Vec<String> = rows
                    .column_specs()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect();
                for row in rows
                    .rows::<Row>()
                    .map_err(|e| CassandraError::BadRow(e.into()))?
                {
                    let row = row.map_err(|e| CassandraError::BadRow(e.into()))?;
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

/// The meters that have rows in the day or the hour view (`SELECT DISTINCT meter, bucket`:
/// one entry per meter and year, and per meter and month), sorted and without repeats. The
/// hour view is asked too because the sink holds a day row up to
/// [`CassandraSinkConfig::day_delay`] (a minute): a meter that has just started is in the
/// hour view first.
pub fn list_meters(views: &CassandraViews) -> Result<Vec<String>, CassandraError> {
    let mut meters = std::collections::BTreeSet::new();
    for g in [Granularity::Day, Granularity::Hour] {
        meters.extend(distinct_meters(views, g)?);
    }
    Ok(meters.into_iter().collect())
}

fn distinct_meters(
    views: &CassandraViews,
    granularity: Granularity,
) -> Result<std::collections::BTreeSet<String>, CassandraError> {
    let shared = Arc::clone(&views.shared);
    let mut statement = Statement::new(format!(
        "SELECT DISTINCT meter, bucket FROM {}.{}",
        views.config.keyspace,
        super::table_of(granularity)
    ));
    statement.set_page_size(5000);
    statement.set_request_timeout(Some(views.config.schema_timeout));
    views.run(async move {
        let mut meters = std::collections::BTreeSet::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = shared
                .session
                .query_single_page(statement.clone(), &[], paging)
                .await
                .map_err(|e| CassandraError::Query(e.into()))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| CassandraError::Query(e.into()))?;
            for row in rows
                .rows::<(String, i32)>()
                .map_err(|e| CassandraError::BadRow(e.into()))?
            {
                let (meter, _) = row.map_err(|e| CassandraError::BadRow(e.into()))?;
                meters.insert(meter);
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => break,
            }
        }
        Ok(meters)
    })?
}

pub(super) fn to_row(names: &[String], row: Row) -> Result<CassandraRow, CassandraError> {
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
                return Err(CassandraError::BadColumn {
                    column: name.to_owned(),
                    found: format!("{other:?}"),
                })
            }
        }
    }
    Ok(out)
}
