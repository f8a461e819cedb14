//! The history replay preset: files → readings → window aggregates → Parquet batch views, the
//! [one graph](crate::graph) with history inputs and Parquet views only.
//!
//! ```text
//!  FileSource ─ readings ─> WindowAggregate ─ updates ─> ParquetViewSink  (<out>/{minute,hour,day})
//!      │                          │
//!      └── rejected ──────────────┴── refused ─────────> RejectedSink     (<out>/rejected.csv)
//! ```

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use wattflow::model::{Granularity, Limits, MeterId};
use wattflow::sink::parquet::{Manifest, ParquetSinkConfig};
use wattflow::source::file::FileSourceConfig;

use crate::graph::{Pipeline, PipelineError, Progress, RunSummary};

/// Why a replay failed as a whole (bad rows never fail a run: they are dead-lettered).
pub type ReplayError = PipelineError;

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
    /// Everything the pipeline reported.
    pub run: RunSummary,
}

impl ReplaySummary {
    /// Readings per second of wall time.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn from_run(run: RunSummary, rejected_file: PathBuf) -> ReplaySummary {
        let h = run.history.clone().unwrap_or_default();
        ReplaySummary {
            rows: h.rows,
            readings: h.readings,
            missing: h.missing,
            rejected: run.dead_letter_file_records,
            bytes: h.bytes,
            views: run
                .views
                .iter()
                .map(|v| (v.granularity, v.manifest.clone()))
                .collect(),
            windows_written: run
                .views
                .iter()
                .map(|v| (v.granularity, v.windows_written))
                .collect(),
            elapsed: run.elapsed(),
            rejected_file,
            run,
        }
    }
}

/// A history replay, configured builder-style: the one graph with history only.
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
    sink: ParquetSinkConfig,
    workers: usize,
    progress: Arc<Progress>,
}

impl Replay {
    /// A replay writing its views under `out`.
    pub fn new(out: impl Into<PathBuf>) -> Replay {
        let pipeline = Pipeline::new();
        Replay {
            source: FileSourceConfig::new(Vec::new()),
            sink: ParquetSinkConfig::new(out),
            workers: 1,
            progress: pipeline.progress(),
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
        self.source.lateness_ms = lateness.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// Plausibility limits for readings.
    pub fn limits(mut self, limits: Limits) -> Replay {
        self.source.limits = limits;
        self
    }

    /// zstd level of the Parquet views (default 1; negative levels trade size for speed).
    pub fn zstd_level(mut self, level: i32) -> Replay {
        self.sink.zstd_level = level;
        self
    }

    /// Files per Parquet partition (default 1; see [`ParquetSinkConfig::buckets`]).
    pub fn buckets(mut self, buckets: u32) -> Replay {
        self.sink.buckets = buckets;
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

    /// The pipeline this replay runs.
    pub fn pipeline(self) -> Pipeline {
        Pipeline::with_progress(Arc::clone(&self.progress))
            .history(self.source)
            .parquet_config(self.sink)
            .workers(self.workers)
    }

    /// Runs the replay to completion.
    pub fn run(self) -> Result<ReplaySummary, ReplayError> {
        if self.source.inputs.is_empty() {
            return Err(PipelineError::NoInput);
        }
        let rejected_file = self
            .sink
            .out
            .join(wattflow::sink::dead_letter::REJECTED_FILE);
        let run = self.pipeline().run(Arc::new(AtomicBool::new(false)))?;
        Ok(ReplaySummary::from_run(run, rejected_file))
    }
}
