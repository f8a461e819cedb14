//! The live preset: Kafka → readings → the same window operator as the replay → Cassandra
//! speed views (every change) and, optionally, Parquet batch views (sealed windows): the
//! [one graph](crate::graph) with a Kafka source only.
//!
//! ```text
//!  KafkaSource ─ readings ─> WindowAggregate ─ ±updates ─┬─> CassandraSink ─ durable ─> probe
//!      │  ▲                                               └─> ParquetViewSink (optional)
//!      │  └── offsets committed once the probe says the outputs are durable
//!      └── bad messages ─> <topic>.rejected (dead-letter topic)
//! ```
//!
//! The Cassandra sink's output carries no data: its frontier is the durability frontier. The
//! source commits a partition's offset only up to the first reading of the oldest window that
//! is not yet sealed and durable, so a restart re-reads exactly what the lost in-memory windows
//! held: nothing lost, nothing counted twice.
//!
//! # Freshness and throughput
//! The window operator folds eagerly ([`wattflow_operators::WindowConfig::eager`]): a reading
//! changes its windows as soon as it arrives, and the Cassandra sink takes each change as it
//! comes. The source's flow control watches the aggregation, not the durability frontier: when
//! Cassandra is slower than the input, the sink merges the waiting changes of each window
//! (latest value wins), so the pipeline keeps the input's pace with bounded memory while the
//! views lag (see [`wattflow::sink::cassandra`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use wattflow::sink::cassandra::CassandraSinkConfig;
use wattflow::source::kafka::KafkaSourceConfig;

use crate::graph::{Pipeline, PipelineError, RunSummary};

/// Why the live pipeline stopped with an error.
pub type LiveError = PipelineError;

/// Counters of a finished live run.
#[derive(Clone, Debug)]
pub struct LiveSummary {
    /// Messages consumed.
    pub messages: u64,
    /// Readings aggregated.
    pub readings: u64,
    /// Messages dead-lettered.
    pub rejected: u64,
    /// Duplicates refused by the window operator.
    pub duplicates: u64,
    /// Rows upserted into Cassandra.
    pub rows_written: u64,
    /// Changes merged into a row that was waiting to be written.
    pub changes_merged: u64,
    /// When the last message was read, from the start (`None`: none was).
    pub last_message_after: Option<Duration>,
    /// When the last upsert was acknowledged, from the start (`None`: nothing was written):
    /// how long the pipeline took to bring the views up to date with its input.
    pub last_write_after: Option<Duration>,
    /// Wall time.
    pub elapsed: Duration,
    /// Everything the pipeline reported.
    pub run: RunSummary,
}

impl LiveSummary {
    fn from_run(run: RunSummary) -> LiveSummary {
        let k = run.kafka.clone().unwrap_or_default();
        let c = run.cassandra.clone().unwrap_or_default();
        LiveSummary {
            messages: k.messages,
            readings: k.readings,
            rejected: k.rejected,
            duplicates: k.duplicates,
            rows_written: c.rows_written,
            changes_merged: c.changes_merged,
            last_message_after: k.last_message_after_s.map(Duration::from_secs_f64),
            last_write_after: c.last_write_after_s.map(Duration::from_secs_f64),
            elapsed: run.elapsed(),
            run,
        }
    }
}

/// The live pipeline, configured builder-style: the one graph with a Kafka source only.
#[derive(Clone, Debug)]
pub struct Live {
    kafka: KafkaSourceConfig,
    cassandra: CassandraSinkConfig,
    workers: usize,
    parquet_out: Option<PathBuf>,
    log_every: Duration,
}

impl Live {
    /// A pipeline from `kafka` to `cassandra`.
    pub fn new(kafka: KafkaSourceConfig, cassandra: CassandraSinkConfig) -> Live {
        Live {
            kafka,
            cassandra,
            workers: 1,
            parquet_out: None,
            log_every: Duration::from_secs(5),
        }
    }

    /// Timely worker threads (default 1); Kafka partitions are spread over them.
    pub fn workers(mut self, workers: usize) -> Live {
        self.workers = workers.max(1);
        self
    }

    /// Also write sealed windows as Parquet batch views under `out`.
    pub fn parquet(mut self, out: impl Into<PathBuf>) -> Live {
        self.parquet_out = Some(out.into());
        self
    }

    /// How often progress is logged (default 5 s).
    pub fn log_every(mut self, every: Duration) -> Live {
        self.log_every = every;
        self
    }

    /// The pipeline this preset runs.
    pub fn pipeline(self) -> Pipeline {
        let mut pipeline = Pipeline::new()
            .kafka(self.kafka)
            .cassandra(self.cassandra)
            .workers(self.workers)
            .log_every(self.log_every);
        if let Some(out) = self.parquet_out {
            pipeline = pipeline.parquet(out);
        }
        pipeline
    }

    /// Runs until the source finishes (see [`KafkaSourceConfig`]'s exit on idleness) or `stop`
    /// is set.
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<LiveSummary, LiveError> {
        self.pipeline().run(stop).map(LiveSummary::from_run)
    }
}
