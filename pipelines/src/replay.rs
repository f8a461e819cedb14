//! The history replay pipeline: files → readings → window aggregates → Parquet batch views.
//!
//! ```text
//!  FileSource ─ readings ─> WindowAggregate ─ updates ─> ParquetViewSink  (<out>/{minute,hour,day})
//!      │                          │
//!      └── rejected ──────────────┴── refused ─────────> RejectedSink     (<out>/rejected.csv)
//! ```
//!
//! Every worker runs the whole graph on its share of the input; timely's exchange channels move
//! readings to the worker that owns their (meter, day) and window updates to the worker that
//! owns their Parquet partition. The run ends when every input is read and every frontier is
//! empty; the manifests are then merged and written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::core::{Concat, Map, Probe};
use timely::dataflow::ProbeHandle;
use wattflow::model::{Granularity, Limits, MeterId};
use wattflow::sink::parquet::{
    parquet_sink, update_manifest, Manifest, ParquetSinkConfig, SinkReport,
};
use wattflow::sink::rejected::{rejected_sink, REJECTED_FILE};
use wattflow::source::file::{
    check_inputs, file_source, render_reading, FileSourceConfig, SourceError, SourceStats,
};
use wattflow::source::Rejection;
use wattflow_operators::{WindowAggregate, WindowConfig};

/// Why a replay failed as a whole (bad rows never fail a run: they are dead-lettered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No input was given.
    #[error("no input: give at least one --input file")]
    NoInput,
    /// An input cannot be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Timely could not start its workers.
    #[error("could not start the workers: {0}")]
    Workers(String),
    /// Writing the views or the dead-letter file failed.
    #[error("writing the output failed: {}", .0.join("; "))]
    Output(Vec<String>),
}

/// Counts and timings of a finished replay.
#[derive(Clone, Debug)]
pub struct ReplaySummary {
    /// Data rows read.
    pub rows: u64,
    /// Valid readings aggregated (duplicates excluded).
    pub readings: u64,
    /// Rows marked missing in the source.
    pub missing: u64,
    /// Records dead-lettered (source rejections and duplicates).
    pub rejected: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Manifests of the views after the run, by granularity.
    pub views: Vec<(Granularity, Manifest)>,
    /// Windows written in this run, by granularity.
    pub windows_written: Vec<(Granularity, u64)>,
    /// Wall time.
    pub elapsed: Duration,
    /// Where the dead-letter file is.
    pub rejected_file: PathBuf,
}

impl ReplaySummary {
    /// Readings per second of wall time.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Live counters of a running replay, for progress reporting.
#[derive(Debug, Default)]
pub struct Progress {
    /// Source counters.
    pub source: Arc<SourceStats>,
    /// Records dead-lettered so far (source rejections and duplicates).
    pub rejected: Arc<AtomicU64>,
}

/// Everything one worker needs to build the replay graph.
#[derive(Clone)]
struct Graph {
    source: Arc<FileSourceConfig>,
    sink: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    errors: Arc<Mutex<Vec<String>>>,
    names: Arc<Vec<String>>,
    rejected_file: PathBuf,
    progress: Arc<Progress>,
}

impl Graph {
    fn build(self, scope: timely::dataflow::Scope<'_, wattflow::Time>) {
        let flow = ProbeHandle::new();
        let streams = file_source(
            scope,
            self.source,
            Arc::clone(&self.progress.source),
            Arc::clone(&self.errors),
            Some(flow.clone()),
        );
        let windows = streams.readings.window_aggregate(&WindowConfig::default());
        parquet_sink(
            windows.updates.inner.probe_with(&flow),
            self.sink,
            self.report,
        );
        let refused = windows.refused.map(|(reading, reason)| Rejection {
            origin: reading.origin,
            reason,
            record: render_reading(&reading),
        });
        rejected_sink(
            streams.rejected.concat(refused),
            self.rejected_file,
            self.names,
            Arc::clone(&self.progress.rejected),
            self.errors,
        );
    }
}

/// A history replay, configured builder-style.
///
/// ```no_run
/// use wattflow_pipelines::Replay;
///
/// let summary = Replay::new("views/")
///     .input("household_power_consumption.txt")
///     .workers(2)
///     .run()?;
/// println!("{} rows, {} rejected", summary.rows, summary.rejected);
/// # Ok::<(), wattflow_pipelines::ReplayError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Replay {
    source: FileSourceConfig,
    out: PathBuf,
    workers: usize,
    zstd_level: i32,
    progress: Arc<Progress>,
}

impl Replay {
    /// A replay writing its views under `out`.
    pub fn new(out: impl Into<PathBuf>) -> Replay {
        Replay {
            source: FileSourceConfig::new(Vec::new()),
            out: out.into(),
            workers: 1,
            zstd_level: wattflow::sink::parquet::DEFAULT_ZSTD_LEVEL,
            progress: Arc::new(Progress::default()),
        }
    }

    /// Adds an input file (UCI text, gzip'd text, CSV or Parquet).
    pub fn input(mut self, path: impl Into<PathBuf>) -> Replay {
        self.source.inputs.push(path.into());
        self
    }

    /// Number of timely worker threads (default 1).
    pub fn workers(mut self, workers: usize) -> Replay {
        self.workers = workers.max(1);
        self
    }

    /// Meter id for inputs without a `Meter` column (default `household-1`).
    pub fn meter(mut self, meter: MeterId) -> Replay {
        self.source.default_meter = meter;
        self
    }

    /// Allowed lateness (default 10 minutes).
    pub fn lateness(mut self, lateness: Duration) -> Replay {
        self.source.lateness_ms = lateness.as_millis() as i64;
        self
    }

    /// Plausibility limits for readings.
    pub fn limits(mut self, limits: Limits) -> Replay {
        self.source.limits = limits;
        self
    }

    /// zstd level of the Parquet views (default 1; negative levels trade size for speed).
    pub fn zstd_level(mut self, level: i32) -> Replay {
        self.zstd_level = level;
        self
    }

    /// Chunk size for splitting text files between workers.
    pub fn chunk_bytes(mut self, bytes: usize) -> Replay {
        self.source.chunk_bytes = bytes.max(4096);
        self
    }

    /// The live counters, to watch the run from another thread.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Runs the replay to completion.
    pub fn run(self) -> Result<ReplaySummary, ReplayError> {
        if self.source.inputs.is_empty() {
            return Err(ReplayError::NoInput);
        }
        let started = Instant::now();
        let total = check_inputs(&self.source)?;
        self.progress
            .source
            .total_bytes
            .store(total, Ordering::Relaxed);
        std::fs::create_dir_all(&self.out)
            .map_err(|e| ReplayError::Output(vec![format!("{}: {e}", self.out.display())]))?;

        let source = Arc::new(self.source);
        let sink_config = Arc::new(ParquetSinkConfig {
            out: self.out.clone(),
            zstd_level: self.zstd_level,
        });
        let report = Arc::new(Mutex::new(SinkReport::default()));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let names: Arc<Vec<String>> = Arc::new(
            source
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
        let rejected_file = self.out.join(REJECTED_FILE);
        let progress = Arc::clone(&self.progress);

        let graph = Graph {
            source: Arc::clone(&source),
            sink: Arc::clone(&sink_config),
            report: Arc::clone(&report),
            errors: Arc::clone(&errors),
            names,
            rejected_file: rejected_file.clone(),
            progress: Arc::clone(&progress),
        };
        let guards = timely::execute(timely::Config::process(self.workers), move |worker| {
            let graph = graph.clone();
            worker.dataflow::<wattflow::Time, _, _>(move |scope| graph.build(scope));
        })
        .map_err(ReplayError::Workers)?;
        for result in guards.join() {
            result.map_err(ReplayError::Workers)?;
        }

        let mut all_errors = std::mem::take(&mut *errors.lock().expect("errors lock"));
        let report = std::mem::take(&mut *report.lock().expect("report lock"));
        all_errors.extend(report.errors);
        if !all_errors.is_empty() {
            return Err(ReplayError::Output(all_errors));
        }
        let mut views = Vec::new();
        let mut windows_written = Vec::new();
        for g in Granularity::ALL {
            let written = report.written.get(&g).cloned().unwrap_or_default();
            windows_written.push((g, written.iter().map(|p| p.rows).sum()));
            let manifest = update_manifest(&sink_config.out, g, &written)
                .map_err(|e| ReplayError::Output(vec![e]))?;
            views.push((g, manifest));
        }
        let stats = &self.progress.source;
        let rejected = self.progress.rejected.load(Ordering::Relaxed);
        let duplicates = rejected.saturating_sub(stats.rejected.load(Ordering::Relaxed));
        Ok(ReplaySummary {
            rows: stats.rows.load(Ordering::Relaxed),
            readings: stats.readings.load(Ordering::Relaxed) - duplicates,
            missing: stats.missing.load(Ordering::Relaxed),
            rejected,
            bytes: stats.bytes.load(Ordering::Relaxed),
            views,
            windows_written,
            elapsed: started.elapsed(),
            rejected_file,
        })
    }
}
