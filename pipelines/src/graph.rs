//! The one graph: history files and a live source (a Kafka topic, or simulated sensors in the
//! process) through the same window operator into the Parquet batch views and the speed views
//! (Cassandra, or a store in memory). [`Pipeline`] wires it once; `replay`, `live`, `run` and
//! `demo` are configurations of it ([`crate::Replay`], [`crate::Live`], [`crate::demo`]).
//!
//! ```text
//!  history files ─> FileSource ─ readings ───────────────┐
//!                      ├─ rejected ─────────────────┐    │ concat
//!                      └─ ends (meter, T) ─ broadcast│    │
//!                                              ▼     │    ▼
//!  Kafka topic ────> KafkaSource ─ readings ─────────┼──> WindowAggregate ─ ±updates ─┬─> CassandraSink ─ durable ─┐
//!    ▲                  └─ bad messages ─> <topic>.rejected    └─ refused ─┐           └─> ParquetSink             │
//!    │                                               ▼                     ▼                                      │
//!    │                                          RejectedSink (rejected.csv)                                       │
//!    └────────── offsets committed once the durable probe has passed them ◄──────────────────────────────────────┘
//!  simulated sensors ─> SensorSource ─ readings ──> (beside or instead of Kafka; follows the ends like it)
//!                                     every change ──> MemoryViewSink ─> MemoryViews (speed views in the process)
//! ```
//!
//! # Time and the switch
//! Timestamps are event-time watermarks in ms. Each source emits a reading at a time no later
//! than its `ts`, so a window `[start, end)` is sealed once the frontier reaches `end`. The
//! file source's frontier is its watermark; the Kafka source reads nothing until the history is
//! read and meanwhile follows the history's frontier (its `ends` input is connected to its
//! outputs), so the combined frontier is the history's during the history phase and Kafka's
//! after it: history windows seal without waiting for Kafka, and the windows around the switch
//! stay open until the live readings that complete them have arrived. Live readings before
//! their meter's switch time are covered by history (see [`wattflow::source::handover`]). The
//! simulated sensors ([`wattflow::source::sensors`]) take the same hand-over: they wait for the
//! history, following its frontier, then start each meter at its switch time.
//!
//! # State, sealing and sinks
//! The window operator holds only open windows and emits `−old, +new` at every change; the
//! Parquet sink keeps each partition until the frontier passes the partition's end and writes it
//! once; the Cassandra sink writes every change and returns the durability frontier the Kafka
//! source commits by. The memory sink stores every change at once and holds nothing back. With
//! a live source the window operator folds eagerly (a reading reaches the speed views at once);
//! history alone folds per complete time, as a replay wants.
//!
//! # The shared context
//! Everything a worker needs to build its copy of the graph is one `Context` behind an
//! `Arc`: the configurations, the sinks' connections, the counters and the error list.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::collection::vec::Collection as VecCollection;
use serde::Serialize;
use timely::dataflow::operators::core::{Concat, Concatenate, Inspect, Map, Probe};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use wattflow::error::{Halt, RunError, RunErrors};
use wattflow::format::json::render_message;
use wattflow::metrics::RejectCounts;
use wattflow::model::{Granularity, Reading};
use wattflow::serve::MemoryViews;
use wattflow::sink::cassandra::{
    cassandra_sink_paced, connect, CassandraError, CassandraSinkConfig, CassandraStats,
    CassandraViews,
};
use wattflow::sink::dead_letter::{
    dead_letter_sink, DeadLetterConfig, DeadLetterStats, KafkaDeadLetters, REJECTED_FILE,
};
use wattflow::sink::memory::{memory_sink, MemorySinkStats};
use wattflow::sink::parquet::{
    check_buckets, clean_debris, parquet_sink, update_manifest, At, Manifest, ParquetSinkConfig,
    ParquetSinkError, ParquetStats, SinkReport,
};
use wattflow::source::file::{
    check_inputs, file_source, render_reading, FileSourceConfig, SourceError, SourceStats,
};
use wattflow::source::handover::SwitchAt;
use wattflow::source::kafka::{
    check_topic, kafka_source, Backpressure, Handover, KafkaError, KafkaSourceConfig, KafkaStats,
};
use wattflow::source::sensors::{sensor_source, SensorSourceConfig, SensorStats};
use wattflow::source::Rejection;
use wattflow::time::Calendar;
use wattflow::Time;
use wattflow_operators::{WindowAggregate, WindowConfig, WindowStats};

use crate::recovery::{self, checkpoint, Checkpoint};

/// Why a pipeline failed as a whole (bad records never fail a run: they are dead-lettered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Neither history inputs nor a live source (Kafka topic, sensors) were given.
    #[error("no input: give at least one history --input or a Kafka --topic")]
    NoInput,
    /// Neither Parquet views nor speed views (Cassandra, memory) were asked for.
    #[error("no output: give --out (Parquet batch views) or --cassandra (speed views)")]
    NoOutput,
    /// A history input cannot be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Kafka could not be reached or the topic is missing.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Cassandra could not be reached or the schema could not be created.
    #[error(transparent)]
    Cassandra(#[from] CassandraError),
    /// Timely could not start its workers.
    #[error("could not start the workers: {0}")]
    Workers(String),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// `buckets = 0` was asked for: a partition needs at least one file.
    #[error("parquet buckets must be at least 1")]
    NoBuckets,
    /// The batch views could not be prepared or completed (the output folder, the manifests,
    /// the progress file).
    #[error(transparent)]
    View(#[from] ParquetSinkError),
    /// Parts of the running graph failed: every error collected from every worker, in order.
    #[error("the run failed: {}", join_errors(.0))]
    Output(Vec<RunError>),
}

fn join_errors(errors: &[RunError]) -> String {
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    shown.join("; ")
}

/// Live counters of a running pipeline, shared by every worker: read them from any thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// History source counters.
    pub source: Arc<SourceStats>,
    /// The dead-letter path: file records, letters delivered and pending.
    pub dead_letters: Arc<DeadLetterStats>,
    /// Kafka source counters.
    pub kafka: Arc<KafkaStats>,
    /// Speed-view write counters.
    pub cassandra: Arc<CassandraStats>,
    /// History readings the window operator refused (duplicates of a counted `(meter, ts)`).
    pub history_duplicates: AtomicU64,
    /// Kafka readings the window operator refused.
    pub kafka_duplicates: AtomicU64,
    /// Every refusal of every source and of the window operator, by reason.
    pub rejections: Arc<RejectCounts>,
    /// Sealed and open windows.
    pub windows: Arc<WindowStats>,
    /// Parquet files written.
    pub parquet: Arc<ParquetStats>,
    /// Simulated sensor counters.
    pub sensors: Arc<SensorStats>,
    /// Window values stored in the memory speed views.
    pub memory: Arc<MemorySinkStats>,
}

impl Progress {
    /// The graph's event-time watermark as far as the sources have published it: Kafka's once
    /// it reads, else the simulated sensors' newest reading once they run, else the history's
    /// (`None` before any started).
    pub fn watermark_ms(&self) -> Option<i64> {
        let kafka = self.kafka.watermark();
        let history = self.source.watermark.load(Ordering::Relaxed);
        if kafka > 0 {
            Some(kafka)
        } else if let Some(sensors) = self.sensors.newest() {
            Some(sensors)
        } else {
            (history != i64::MIN).then_some(history)
        }
    }
}

/// What a history source did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistorySummary {
    /// Data rows read.
    pub rows: u64,
    /// Readings aggregated (duplicates excluded).
    pub readings: u64,
    /// Rows marked missing.
    pub missing: u64,
    /// Rows refused by the source.
    pub rejected: u64,
    /// Duplicates refused by the window operator.
    pub duplicates: u64,
    /// Readings at or after a fixed switch, left to the live source.
    pub after_switch: u64,
    /// Readings skipped because a resumed run found their windows durable already.
    pub already_durable: u64,
    /// Bytes of the files consumed.
    pub bytes: u64,
}

/// What a Kafka source did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KafkaSummary {
    /// Messages consumed.
    pub messages: u64,
    /// Readings emitted to the window operator.
    pub readings: u64,
    /// Messages refused (dead-lettered).
    pub rejected: u64,
    /// Readings before their meter's switch time (counted, not aggregated).
    pub covered_by_history: u64,
    /// Readings read again after a restart whose windows were durable already (skipped).
    pub already_durable: u64,
    /// Duplicates refused by the window operator.
    pub duplicates: u64,
    /// Dead letters the broker acknowledged.
    pub dead_letters: u64,
    /// Times a worker paused its partitions because the speed views were over their memory
    /// budget (Cassandra down or slow).
    pub pauses: u64,
    /// When the last message was read, seconds from the start.
    pub last_message_after_s: Option<f64>,
}

/// What the simulated sensors did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SensorSummary {
    /// Readings emitted.
    pub readings: u64,
    /// End of the newest reading, ms.
    pub newest_ms: Option<i64>,
}

/// What the speed-view sink did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CassandraSummary {
    /// Rows upserted.
    pub rows_written: u64,
    /// Changes merged into a row that was waiting.
    pub changes_merged: u64,
    /// Rows Cassandra refused for good (the run stops on the first).
    pub write_errors: u64,
    /// Failed attempts that were tried again (Cassandra down, slow or restarting).
    pub retries: u64,
    /// When the last upsert was acknowledged, seconds from the start.
    pub last_write_after_s: Option<f64>,
}

/// One batch view after the run.
#[derive(Clone, Debug, Serialize)]
pub struct ViewSummary {
    /// `minute`, `hour` or `day`.
    pub granularity: Granularity,
    /// Windows written in this run.
    pub windows_written: u64,
    /// The view's manifest after the run.
    pub manifest: Manifest,
}

/// Counts and timings of a finished pipeline; `--summary-json` writes it as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The history source, if there was one.
    pub history: Option<HistorySummary>,
    /// The Kafka source, if there was one.
    pub kafka: Option<KafkaSummary>,
    /// The simulated sensors, if there were.
    pub sensors: Option<SensorSummary>,
    /// The speed views, if written.
    pub cassandra: Option<CassandraSummary>,
    /// Window values stored in the memory speed views, if there were.
    pub memory_rows_written: Option<u64>,
    /// The batch views, if written.
    pub views: Vec<ViewSummary>,
    /// Records written to the dead-letter file.
    pub dead_letter_file_records: u64,
    /// The dead-letter file, if any.
    pub dead_letter_file: Option<PathBuf>,
    /// Where this run resumed an interrupted one (ms): windows before it were durable.
    pub resumed_from_ms: Option<i64>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
}

impl RunSummary {
    /// Wall time.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.elapsed_s)
    }

    /// Writes the summary as pretty JSON to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}

/// Everything a worker needs to build its copy of the graph.
struct Context {
    history: Option<Arc<FileSourceConfig>>,
    kafka: Option<Arc<KafkaSourceConfig>>,
    sensors: Option<Arc<SensorSourceConfig>>,
    parquet: Option<Arc<ParquetSinkConfig>>,
    cassandra: Option<Arc<CassandraViews>>,
    memory: Option<Arc<MemoryViews>>,
    switch_at: SwitchAt,
    calendar: Calendar,
    progress: Arc<Progress>,
    report: Arc<Mutex<SinkReport>>,
    errors: RunErrors,
    dead_letters: Arc<DeadLetterConfig>,
    /// The checkpoint this run starts from (with Parquet views only).
    checkpoint: Option<Checkpoint>,
    workers_per_process: usize,
    stop: Arc<AtomicBool>,
}

impl Context {
    fn error(&self, e: impl Into<RunError>) {
        self.errors.push(e);
    }

    /// How a sink stops the run on a fatal error (commits and checkpoints held first).
    fn halt(&self) -> Halt {
        Halt {
            errors: self.errors.clone(),
            stop: Arc::clone(&self.stop),
            hold_commits: Arc::clone(&self.progress.kafka.hold_commits),
        }
    }

    /// Counts the refusals passing by, by reason.
    fn count_rejections<'scope>(
        &self,
        rejected: StreamVec<'scope, Time, Rejection>,
    ) -> StreamVec<'scope, Time, Rejection> {
        let counts = Arc::clone(&self.progress.rejections);
        rejected.inspect(move |r| counts.count(&r.reason))
    }

    /// Builds this worker's copy of the graph into `scope`.
    fn build(&self, scope: Scope<'_, Time>) {
        let durable = ProbeHandle::new();
        let flow = ProbeHandle::new();
        let mut readings: Option<VecCollection<'_, Time, Reading>> = None;
        let mut rejected: Option<StreamVec<'_, Time, Rejection>> = None;
        // The history's ends, broadcast, for the live sources' hand-over.
        let mut ends = None;
        let mut kafka_rejected = None;
        if let Some(history) = &self.history {
            let streams = file_source(
                scope,
                Arc::clone(history),
                Arc::clone(&self.progress.source),
                self.errors.clone(),
                Some(flow.clone()),
            );
            readings = Some(streams.readings);
            rejected = Some(self.count_rejections(streams.rejected));
            if self.kafka.is_some() || self.sensors.is_some() {
                ends = Some(streams.ends.broadcast());
            }
        }
        let handover = || {
            ends.clone().map(|ends| Handover {
                ends,
                rule: self.switch_at,
            })
        };
        if let Some(sensors) = &self.sensors {
            let live = sensor_source(
                scope,
                Arc::clone(sensors),
                Arc::clone(&self.progress.sensors),
                flow.clone(),
                Arc::clone(&self.stop),
                handover(),
            );
            readings = Some(match readings {
                Some(h) => h.concat(live),
                None => live,
            });
        }
        if let Some(kafka) = &self.kafka {
            match kafka_source(
                scope,
                Arc::clone(kafka),
                Arc::clone(&self.progress.kafka),
                durable.clone(),
                flow.clone(),
                self.cassandra.as_ref().map(|views| {
                    let stats = Arc::clone(&self.progress.cassandra);
                    let budget = views.config().max_queued_rows;
                    Arc::new(move || stats.over_budget(budget)) as Backpressure
                }),
                Arc::clone(&self.stop),
                handover(),
            ) {
                Ok(streams) => {
                    readings = Some(match readings {
                        Some(h) => h.concat(streams.readings),
                        None => streams.readings,
                    });
                    kafka_rejected = Some(self.count_rejections(streams.rejected));
                }
                Err(e) => {
                    self.error(e);
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        let Some(readings) = readings else { return };
        let window = WindowConfig {
            eager: self.kafka.is_some() || self.sensors.is_some(),
            stats: Some(Arc::clone(&self.progress.windows)),
            calendar: self.calendar.clone(),
            ..WindowConfig::default()
        };
        let windows = readings.window_aggregate(&window);
        let updates = windows.updates.inner.probe_with(&flow);
        let mut durables = Vec::new();
        if let Some(views) = &self.memory {
            memory_sink(
                updates.clone(),
                Arc::clone(views),
                Arc::clone(&self.progress.memory),
            );
        }
        if let Some(views) = &self.cassandra {
            let kafka_stats = Arc::clone(&self.progress.kafka);
            durables.push(cassandra_sink_paced(
                updates.clone(),
                Arc::clone(views),
                Arc::clone(&self.progress.cassandra),
                Arc::new(move || kafka_stats.backlogged()),
                Some(self.halt()),
            ));
        }
        if let Some(config) = &self.parquet {
            durables.push(parquet_sink(
                updates,
                Arc::clone(config),
                Arc::clone(&self.report),
                Arc::clone(&self.progress.parquet),
                Some(self.halt()),
            ));
        }
        let progress = Arc::clone(&self.progress);
        let refused = windows.refused.map(move |(reading, reason)| {
            progress.rejections.count(&reason);
            match reading.origin.kafka_partition() {
                // A live reading is dead-lettered as the message it came in.
                Some(_) => {
                    progress.kafka_duplicates.fetch_add(1, Ordering::Relaxed);
                    let mut r = Rejection::new(reading.origin, reason, render_message(&reading));
                    r.key = Some(reading.meter.as_str().as_bytes().to_vec());
                    r
                }
                None => {
                    if !reading.origin.is_sensor() {
                        progress.history_duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Rejection::new(reading.origin, reason, render_reading(&reading))
                }
            }
        });
        let mut dead = match rejected {
            Some(r) => r.concat(refused),
            None => refused,
        };
        if let Some(kafka) = kafka_rejected {
            dead = dead.concat(kafka);
        }
        durables.push(dead_letter_sink(
            dead,
            Arc::clone(&self.dead_letters),
            Arc::clone(&self.progress.dead_letters),
            self.halt(),
        ));
        // The durability frontier: every sink's. Offsets are committed by it, and the
        // progress file follows it.
        let durable_stream = scope.concatenate(durables).probe_with(&durable);
        if let (Some(parquet), Some(start)) = (&self.parquet, &self.checkpoint) {
            checkpoint(
                durable_stream,
                self.calendar.clone(),
                parquet.out.clone(),
                start.clone(),
                Arc::clone(&self.progress.kafka.commit_limit),
                self.halt(),
                self.workers_per_process,
            );
        }
    }
}

/// Timely's cluster mode: `processes` processes of `workers` threads each, this one number
/// `process`, at `addresses` (one `host:port` per process, in process order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Processes in the cluster (1: a single process).
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process: usize,
    /// Every process's address; default `localhost:2101`, `localhost:2102`, ...
    pub addresses: Vec<String>,
}

/// A cluster that cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The process index is not below the number of processes.
    #[error("--process {process} is not below --processes {processes}")]
    ProcessOutOfRange {
        /// The index given.
        process: usize,
        /// The processes of the cluster.
        processes: usize,
    },
    /// The host file cannot be read.
    #[error("{}: {source}", path.display())]
    Hostfile {
        /// The host file.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The host file names fewer addresses than there are processes.
    #[error("{}: {found} addresses for {processes} processes", path.display())]
    TooFewAddresses {
        /// The host file.
        path: std::path::PathBuf,
        /// Addresses in it.
        found: usize,
        /// The processes of the cluster.
        processes: usize,
    },
}

impl Cluster {
    /// Reads the addresses from a host file: one `host:port` per line, in process order (the
    /// format of timely's `--hostfile`; blank lines and `#` comments are skipped). Without a
    /// file, process `i` is at `localhost:210<i+1>`.
    pub fn from_hostfile(
        processes: usize,
        process: usize,
        hostfile: Option<&std::path::Path>,
    ) -> Result<Cluster, ClusterError> {
        if process >= processes.max(1) {
            return Err(ClusterError::ProcessOutOfRange { process, processes });
        }
        let addresses = match hostfile {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ClusterError::Hostfile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect();
                if lines.len() < processes {
                    return Err(ClusterError::TooFewAddresses {
                        path: path.to_path_buf(),
                        found: lines.len(),
                        processes,
                    });
                }
                lines.into_iter().take(processes).collect()
            }
            None => (0..processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        Ok(Cluster {
            processes,
            process,
            addresses,
        })
    }
}

/// One pipeline over any mix of history inputs and one Kafka topic, into any mix of Parquet
/// batch views and Cassandra speed views, all in one timely dataflow (see the module docs).
///
/// ```no_run
/// use std::sync::{atomic::AtomicBool, Arc};
/// use wattflow_pipelines::Pipeline;
/// use wattflow::source::kafka::KafkaSourceConfig;
/// use wattflow::sink::cassandra::CassandraSinkConfig;
///
/// let summary = Pipeline::new()
///     .input("household_power_consumption.txt")
///     .kafka(KafkaSourceConfig::new("127.0.0.1:9092", "readings", "wattflow"))
///     .parquet("views/")
///     .cassandra(CassandraSinkConfig::new("127.0.0.1:9042"))
///     .workers(2)
///     .run(Arc::new(AtomicBool::new(false)))?;
/// println!("{summary:?}");
/// # Ok::<(), wattflow_pipelines::PipelineError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Pipeline {
    history: FileSourceConfig,
    kafka: Option<KafkaSourceConfig>,
    sensors: Option<SensorSourceConfig>,
    parquet: Option<ParquetSinkConfig>,
    cassandra: Option<CassandraSinkConfig>,
    memory: Option<Arc<MemoryViews>>,
    dead_letter_file: Option<PathBuf>,
    switch_at: SwitchAt,
    workers: usize,
    log_every: Option<Duration>,
    metrics_listen: Option<String>,
    calendar: Calendar,
    cluster: Option<Cluster>,
    progress: Arc<Progress>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new()
    }
}

impl Pipeline {
    /// A pipeline with no source and no sink yet.
    pub fn new() -> Pipeline {
        Pipeline::with_progress(Arc::new(Progress::default()))
    }

    /// [`Pipeline::new`], counting into `progress` (for a caller that watches it from the
    /// start, as the CLI's progress bar does).
    pub fn with_progress(progress: Arc<Progress>) -> Pipeline {
        Pipeline {
            history: FileSourceConfig::new(Vec::new()),
            kafka: None,
            sensors: None,
            parquet: None,
            cassandra: None,
            memory: None,
            dead_letter_file: None,
            switch_at: SwitchAt::Auto,
            workers: 1,
            log_every: None,
            metrics_listen: None,
            calendar: Calendar::Naive,
            cluster: None,
            progress,
        }
    }

    /// Adds a history input file (UCI text, gzip'd text, CSV or Parquet).
    pub fn input(mut self, path: impl Into<PathBuf>) -> Pipeline {
        self.history.inputs.push(path.into());
        self
    }

    /// Replaces the history source's configuration (its inputs included).
    pub fn history(mut self, config: FileSourceConfig) -> Pipeline {
        self.history = config;
        self
    }

    /// The history source's configuration, to adjust.
    pub fn history_mut(&mut self) -> &mut FileSourceConfig {
        &mut self.history
    }

    /// Follows a Kafka topic (after the history, if any).
    pub fn kafka(mut self, config: KafkaSourceConfig) -> Pipeline {
        self.kafka = Some(config);
        self
    }

    /// Follows simulated sensors in the process (after the history, if any), from each meter's
    /// switch time; see [`wattflow::source::sensors`]. Their clock and calendar become the
    /// pipeline's ([`Pipeline::timezone`]).
    pub fn sensors(mut self, config: SensorSourceConfig) -> Pipeline {
        self.sensors = Some(config);
        self
    }

    /// Stores every change of every window in `views`, speed views in the process that a
    /// [`wattflow::serve::Views`] can serve while the pipeline runs (see
    /// [`wattflow::sink::memory`]).
    pub fn memory_views(mut self, views: Arc<MemoryViews>) -> Pipeline {
        self.memory = Some(views);
        self
    }

    /// Writes sealed windows as Parquet batch views under `out` (default settings).
    pub fn parquet(self, out: impl Into<PathBuf>) -> Pipeline {
        self.parquet_config(ParquetSinkConfig::new(out))
    }

    /// Writes sealed windows as Parquet batch views.
    pub fn parquet_config(mut self, config: ParquetSinkConfig) -> Pipeline {
        self.parquet = Some(config);
        self
    }

    /// Upserts every change into the Cassandra speed views.
    pub fn cassandra(mut self, config: CassandraSinkConfig) -> Pipeline {
        self.cassandra = Some(config);
        self
    }

    /// Where refused history records (and duplicates) are written; default
    /// `<out>/rejected.csv` with Parquet views, else `rejected.csv` when there is history.
    pub fn dead_letter_file(mut self, path: impl Into<PathBuf>) -> Pipeline {
        self.dead_letter_file = Some(path.into());
        self
    }

    /// Where the hand-over from history to Kafka happens (default: per meter, automatic).
    pub fn switch_at(mut self, switch: SwitchAt) -> Pipeline {
        self.switch_at = switch;
        self
    }

    /// Timely worker threads (default 1).
    pub fn workers(mut self, workers: usize) -> Pipeline {
        self.workers = workers.max(1);
        self
    }

    /// Logs progress (`tracing` at info level) this often (default: never).
    pub fn log_every(mut self, every: Duration) -> Pipeline {
        self.log_every = Some(every);
        self
    }

    /// The calendar of hour and day windows (default: the data's naive local time). With a
    /// zone, history timestamps (naive local time) become UTC instants, live readings carry UTC
    /// instants, and hours, days, partitions and buckets follow the local calendar, 23- and
    /// 25-hour days included.
    pub fn timezone(mut self, calendar: Calendar) -> Pipeline {
        self.calendar = calendar;
        self
    }

    /// Runs as one process of a timely cluster (`workers` threads in each process). Every
    /// process runs the same command with its own `process`; history inputs and the output
    /// folder must be on a file system all of them see. Kafka partitions are spread over all
    /// workers of all processes; one manifest per granularity is shared (updated under a file
    /// lock); process 0 keeps the progress file and the dead-letter file.
    pub fn cluster(mut self, cluster: Cluster) -> Pipeline {
        self.cluster = (cluster.processes > 1).then_some(cluster);
        self
    }

    fn process_index(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.process)
    }

    /// Serves Prometheus metrics at `http://addr/metrics` while the pipeline runs (see
    /// [`crate::metrics`]).
    pub fn metrics_listen(mut self, addr: impl Into<String>) -> Pipeline {
        self.metrics_listen = Some(addr.into());
        self
    }

    /// The live counters, to watch the run from another thread.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// What this pipeline reads and every setting that changes its views, for the progress
    /// file: a run resumes only a run of the same pipeline.
    fn fingerprint(&self, history: &FileSourceConfig) -> String {
        let mut parts: Vec<String> = history
            .inputs
            .iter()
            .map(|p| recovery::file_identity(p))
            .collect();
        parts.push(format!(
            "meter={} interval={} lateness={} limits={:?} switch={:?} calendar={}",
            history.default_meter,
            history.interval_s,
            history.lateness_ms,
            history.limits,
            self.switch_at,
            self.calendar.name()
        ));
        if let Some(k) = &self.kafka {
            parts.push(format!(
                "kafka {} {} {} lateness={} skew={}",
                k.brokers, k.topic, k.group_id, k.lateness_ms, k.future_skew_ms
            ));
        }
        if let Some(s) = &self.sensors {
            parts.push(format!(
                "sensors households={} seed={} interval={} start={:?} until={:?}",
                s.households, s.seed, s.interval_s, s.start_ms, s.until_ms
            ));
        }
        if let Some(p) = &self.parquet {
            parts.push(format!("zstd={}", p.zstd_level));
            if p.buckets > 1 {
                parts.push(format!("buckets={}", p.buckets));
            }
        }
        recovery::fingerprint(&parts)
    }

    /// Runs the pipeline until its sources are exhausted (history read, and the Kafka source
    /// idle for its `exit_when_idle`) or `stop` is raised, then writes the manifests.
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<RunSummary, PipelineError> {
        let started = Instant::now();
        let started_unix_us = wattflow::time::now_unix_us() as u64;
        let has_history = !self.history.inputs.is_empty();
        let live = self.kafka.is_some() || self.sensors.is_some();
        if !has_history && !live {
            return Err(PipelineError::NoInput);
        }
        if self.parquet.is_none() && self.cassandra.is_none() && self.memory.is_none() {
            return Err(PipelineError::NoOutput);
        }
        let mut history = self.history.clone();
        history.calendar = self.calendar.clone();
        let parquet_config = self.parquet.clone().map(|mut p| {
            p.calendar = self.calendar.clone();
            p
        });
        let cassandra_config = self.cassandra.clone().map(|mut c| {
            c.calendar = self.calendar.clone();
            c
        });
        if let SwitchAt::At(t) = self.switch_at {
            if live {
                history.switch_at = Some(t);
            }
        }
        if has_history {
            let total = check_inputs(&history)?;
            self.progress
                .source
                .total_bytes
                .store(total, Ordering::Relaxed);
        }
        if let Some(parquet) = &self.parquet {
            let out = &parquet.out;
            std::fs::create_dir_all(out).at(out)?;
            if parquet.buckets == 0 {
                return Err(PipelineError::NoBuckets);
            }
            check_buckets(out, parquet.buckets)?;
            // Temporaries a killed run left behind (process 0 of a cluster only: the others
            // would race with its first writes).
            let removed = match self.process_index() {
                0 => clean_debris(out).at(out)?,
                _ => 0,
            };
            if removed > 0 {
                tracing::info!(
                    "removed {removed} temporary file(s) a previous run left in {}",
                    out.display()
                );
            }
        }
        // Resume an interrupted run of this pipeline (see `crate::recovery`).
        let mut kafka_config = self.kafka.clone().map(|mut k| {
            k.calendar = self.calendar.clone();
            k
        });
        let mut start_checkpoint = None;
        let mut resuming = false;
        if let Some(parquet) = &self.parquet {
            let fp = self.fingerprint(&history);
            let resume = recovery::read(&parquet.out).and_then(|c| c.resume_for(&fp));
            let mut start = Checkpoint::start(&fp);
            match resume {
                Some(floor) => {
                    resuming = true;
                    let floor = (floor > i64::MIN).then_some(floor);
                    if let Some(f) = floor {
                        start = start.at(f);
                        tracing::info!(
                            "resuming an interrupted run: windows before {} are durable",
                            wattflow::time::format_iso(f)
                        );
                    } else {
                        tracing::info!("resuming an interrupted run that made nothing durable");
                    }
                    history.resume_from = floor;
                    if let Some(k) = kafka_config.as_mut() {
                        k.resume_floor = floor;
                    }
                }
                None if self.process_index() != 0 => {}
                None => recovery::write(&parquet.out, &start)?,
            }
            // Kafka commits follow the progress file (see `crate::recovery`).
            self.progress
                .kafka
                .commit_limit
                .store(start.resume_from_ms.unwrap_or(0), Ordering::SeqCst);
            start_checkpoint = Some(start);
        }
        let dead_letter_file = self
            .dead_letter_file
            .clone()
            .or_else(|| match &self.parquet {
                Some(p) => Some(p.out.join(REJECTED_FILE)),
                None => has_history.then(|| PathBuf::from(REJECTED_FILE)),
            });
        if let Some(kafka) = &self.kafka {
            // Fail before the history is read, not after.
            check_topic(kafka)?;
        }
        let cassandra = match &cassandra_config {
            Some(config) => Some(Arc::new(connect(config)?)),
            None => None,
        };
        let _metrics = match &self.metrics_listen {
            Some(addr) => {
                let server = crate::metrics::serve(addr, Arc::clone(&self.progress))?;
                tracing::info!("metrics at http://{}/metrics", server.addr());
                Some(server)
            }
            None => None,
        };
        let dead_letters = Arc::new(DeadLetterConfig {
            file: dead_letter_file.clone(),
            sources: history
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            kafka: self.kafka.as_ref().and_then(|k| {
                k.dead_letter_topic.as_ref().map(|topic| KafkaDeadLetters {
                    brokers: k.brokers.clone(),
                    source_topic: k.topic.clone(),
                    topic: topic.clone(),
                    properties: k.properties.clone(),
                })
            }),
            append: resuming,
            ..DeadLetterConfig::new()
        });
        let context = Arc::new(Context {
            history: has_history.then(|| Arc::new(history)),
            kafka: kafka_config.map(Arc::new),
            sensors: self.sensors.clone().map(|mut s| {
                s.calendar = self.calendar.clone();
                Arc::new(s)
            }),
            parquet: parquet_config.map(Arc::new),
            cassandra,
            memory: self.memory.clone(),
            switch_at: self.switch_at,
            calendar: self.calendar.clone(),
            progress: Arc::clone(&self.progress),
            report: Arc::new(Mutex::new(SinkReport::default())),
            errors: RunErrors::new(),
            dead_letters,
            checkpoint: start_checkpoint.clone(),
            workers_per_process: self.workers,
            stop,
        });

        let done = Arc::new(AtomicBool::new(false));
        let logger = self.log_every.map(|every| {
            let (progress, done, stop) = (
                Arc::clone(&self.progress),
                Arc::clone(&done),
                Arc::clone(&context.stop),
            );
            std::thread::spawn(move || log_progress(&progress, live, &done, &stop, every))
        });
        let result = {
            let context = Arc::clone(&context);
            let config = match &self.cluster {
                None => timely::Config::process(self.workers),
                Some(c) => timely::Config {
                    communication: timely::CommunicationConfig::Cluster {
                        threads: self.workers,
                        process: c.process,
                        addresses: c.addresses.clone(),
                        report: false,
                        zerocopy: false,
                    },
                    worker: timely::WorkerConfig::default(),
                },
            };
            timely::execute(config, move |worker| {
                let context = Arc::clone(&context);
                worker.dataflow::<Time, _, _>(move |scope| context.build(scope));
            })
            .map_err(PipelineError::Workers)
            .and_then(|guards| {
                for r in guards.join() {
                    r.map_err(PipelineError::Workers)?;
                }
                Ok(())
            })
        };
        done.store(true, Ordering::Relaxed);
        if let Some(logger) = logger {
            logger.join().ok();
        }
        result?;

        let mut errors = context.errors.take();
        let report = std::mem::take(&mut *context.report.lock().expect("report lock"));
        errors.extend(report.errors.into_iter().map(RunError::from));
        if !errors.is_empty() {
            return Err(PipelineError::Output(errors));
        }
        let mut views = Vec::new();
        if let Some(parquet) = &context.parquet {
            for g in Granularity::ALL {
                let written = report.written.get(&g).cloned().unwrap_or_default();
                let manifest = update_manifest(&parquet.out, g, parquet.buckets.max(1), &written)?;
                views.push(ViewSummary {
                    granularity: g,
                    windows_written: written.iter().map(|p| p.rows).sum(),
                    manifest,
                });
            }
            if let (Some(start), 0) = (&start_checkpoint, self.process_index()) {
                // Everything the run read is durable now. Without Kafka the run is complete
                // (a new one starts afresh); with Kafka the next run resumes where this one
                // left the topic, so the views stay consistent with the committed offsets.
                let end = if context.kafka.is_some() {
                    let watermark = self.progress.kafka.watermark();
                    let floor = self.calendar.day_start(watermark.max(0));
                    start.at(floor.max(start.resume_from_ms.unwrap_or(i64::MIN)))
                } else {
                    Checkpoint {
                        complete: true,
                        ..start.clone()
                    }
                };
                recovery::write(&parquet.out, &end)?;
            }
        }
        let p = &self.progress;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let after = |us: u64| (us > 0).then(|| us.saturating_sub(started_unix_us) as f64 / 1e6);
        let history = context.history.as_ref().map(|_| {
            let s = &p.source;
            let duplicates = load(&p.history_duplicates);
            HistorySummary {
                rows: load(&s.rows),
                readings: load(&s.readings).saturating_sub(duplicates),
                missing: load(&s.missing),
                rejected: load(&s.rejected),
                duplicates,
                after_switch: load(&s.after_switch),
                already_durable: load(&s.already_durable),
                bytes: load(&s.bytes),
            }
        });
        let kafka = context.kafka.as_ref().map(|_| {
            let k = &p.kafka;
            let last = k.last_message_ms.load(Ordering::Relaxed);
            KafkaSummary {
                messages: load(&k.messages),
                readings: load(&k.readings),
                rejected: load(&k.rejected),
                covered_by_history: load(&k.covered),
                already_durable: load(&k.already_durable),
                duplicates: load(&p.kafka_duplicates),
                dead_letters: load(&p.dead_letters.letters),
                pauses: load(&k.pauses),
                last_message_after_s: after(last.max(0) as u64 * 1000),
            }
        });
        let sensors = context.sensors.as_ref().map(|_| SensorSummary {
            readings: load(&p.sensors.readings),
            newest_ms: p.sensors.newest(),
        });
        let cassandra = context.cassandra.as_ref().map(|_| {
            let c = &p.cassandra;
            CassandraSummary {
                rows_written: load(&c.rows_written),
                changes_merged: load(&c.coalesced),
                write_errors: load(&c.write_errors),
                retries: load(&c.retries),
                last_write_after_s: after(load(&c.last_ack_unix_us)),
            }
        });
        Ok(RunSummary {
            history,
            kafka,
            sensors,
            cassandra,
            memory_rows_written: context
                .memory
                .as_ref()
                .map(|_| load(&p.memory.rows_written)),
            views,
            dead_letter_file_records: load(&p.dead_letters.file_records),
            dead_letter_file,
            resumed_from_ms: if resuming {
                start_checkpoint.as_ref().and_then(|c| c.resume_from_ms)
            } else {
                None
            },
            elapsed_s: started.elapsed().as_secs_f64(),
        })
    }
}

fn log_progress(
    progress: &Progress,
    live: bool,
    done: &AtomicBool,
    stop: &AtomicBool,
    every: Duration,
) {
    let mut last = (Instant::now(), 0u64, 0u64);
    // A stop logs the progress at once, but only once: afterwards the run may take a while to
    // wind down, and the lines keep their pace.
    let mut stop_seen = false;
    while !done.load(Ordering::Relaxed) {
        let wake = Instant::now() + every;
        while Instant::now() < wake {
            if done.load(Ordering::Relaxed) {
                break;
            }
            if !stop_seen && stop.load(Ordering::Relaxed) {
                stop_seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
        let s = &progress.source;
        let k = &progress.kafka;
        let c = &progress.cassandra;
        let rows = s.rows.load(Ordering::Relaxed);
        let readings =
            k.readings.load(Ordering::Relaxed) + progress.sensors.readings.load(Ordering::Relaxed);
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        let (rows_rate, kafka_rate) = (
            (rows - last.1) as f64 / secs,
            (readings - last.2) as f64 / secs,
        );
        last = (Instant::now(), rows, readings);
        if live {
            let behind = k
                .behind_ms
                .load(Ordering::Relaxed)
                .max(progress.sensors.behind_ms.load(Ordering::Relaxed));
            tracing::info!(
                history_rows = rows,
                readings,
                readings_per_s = format!("{kafka_rate:.0}"),
                watermark = progress
                    .watermark_ms()
                    .map_or_else(|| "-".to_owned(), wattflow::time::format_iso),
                behind_real_time = format!("{:.1}s", behind as f64 / 1000.0),
                covered_by_history = k.covered.load(Ordering::Relaxed),
                rejected = k.rejected.load(Ordering::Relaxed),
                rows_written = c.rows_written.load(Ordering::Relaxed),
                rows_waiting = c.queued.load(Ordering::Relaxed),
                changes_merged = c.coalesced.load(Ordering::Relaxed),
                "live"
            );
        } else {
            tracing::info!(
                rows,
                rows_per_s = format!("{rows_rate:.0}"),
                missing = s.missing.load(Ordering::Relaxed),
                rejected = s.rejected.load(Ordering::Relaxed),
                "history"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cluster, ClusterError};

    #[test]
    fn a_cluster_takes_its_addresses_from_the_host_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts.txt");
        std::fs::write(
            &hosts,
            "# the cluster\nnode-a:2101\n\n node-b:2101 \nnode-c:2101\n",
        )
        .unwrap();
        let c = Cluster::from_hostfile(2, 1, Some(&hosts)).unwrap();
        assert_eq!(c.addresses, ["node-a:2101", "node-b:2101"]);
        assert_eq!((c.processes, c.process), (2, 1));
        let d = Cluster::from_hostfile(3, 0, None).unwrap();
        assert_eq!(
            d.addresses,
            ["localhost:2101", "localhost:2102", "localhost:2103"]
        );
    }

    #[test]
    fn a_cluster_that_cannot_be_formed_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts.txt");
        std::fs::write(&hosts, "node-a:2101\n").unwrap();
        let err = Cluster::from_hostfile(2, 0, Some(&hosts)).unwrap_err();
        assert!(matches!(
            err,
            ClusterError::TooFewAddresses {
                found: 1,
                processes: 2,
                ..
            }
        ));
        assert!(
            err.to_string().ends_with("1 addresses for 2 processes"),
            "{err}"
        );
        let err = Cluster::from_hostfile(2, 2, None).unwrap_err();
        assert_eq!(err.to_string(), "--process 2 is not below --processes 2");
        let missing = dir.path().join("none.txt");
        let err = Cluster::from_hostfile(2, 0, Some(&missing)).unwrap_err();
        assert!(matches!(err, ClusterError::Hostfile { .. }), "{err}");
    }
}
