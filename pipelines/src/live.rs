//! The live pipeline: Kafka → readings → the same window operator as the replay → Cassandra
//! speed views (every change) and, optionally, Parquet batch views (sealed windows).
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
//! The window operator folds eagerly ([`WindowConfig::eager`]): a reading changes its windows
//! as soon as it arrives, without waiting for event time to move on, and the Cassandra sink
//! takes each change as it comes. The source's flow control watches the aggregation, not the
//! durability frontier: when Cassandra is slower than the input, the sink merges the waiting
//! changes of each window (latest value wins), so the pipeline keeps the input's pace with
//! bounded memory while the views lag (see [`wattflow::sink::cassandra`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::core::{Inspect, Probe};
use timely::dataflow::ProbeHandle;
use wattflow::sink::cassandra::{
    cassandra_sink_paced, connect, CassandraSinkConfig, CassandraStats,
};
use wattflow::sink::parquet::{parquet_sink, update_manifest, ParquetSinkConfig, SinkReport};
use wattflow::source::kafka::{kafka_source, KafkaSourceConfig, KafkaStats};
use wattflow::Granularity;
use wattflow_operators::{WindowAggregate, WindowConfig};

/// Why the live pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// Kafka could not be reached or the topic is missing.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Cassandra could not be reached or the schema could not be created.
    #[error("cassandra: {0}")]
    Cassandra(String),
    /// Timely could not start its workers.
    #[error("could not start the workers: {0}")]
    Workers(String),
    /// Writing the Parquet views failed.
    #[error("writing the batch views failed: {}", .0.join("; "))]
    Output(Vec<String>),
}

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
}

/// The live pipeline, configured builder-style.
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

    /// Runs until the source finishes (see [`KafkaSourceConfig`]'s exit on idleness) or `stop`
    /// is set.
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<LiveSummary, LiveError> {
        let started = Instant::now();
        let started_unix_us = wattflow::time::now_unix_us() as u64;
        let views =
            Arc::new(connect(&self.cassandra).map_err(|e| LiveError::Cassandra(e.to_string()))?);
        let kafka = Arc::new(self.kafka);
        let kstats = Arc::new(KafkaStats::default());
        let cstats = Arc::new(CassandraStats::default());
        let duplicates = Arc::new(AtomicU64::new(0));
        let report = Arc::new(Mutex::new(SinkReport::default()));
        let setup_errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let parquet = self
            .parquet_out
            .clone()
            .map(|out| Arc::new(ParquetSinkConfig::new(out)));

        let done = Arc::new(AtomicBool::new(false));
        let logger = {
            let (kstats, cstats, done, stop) = (
                Arc::clone(&kstats),
                Arc::clone(&cstats),
                Arc::clone(&done),
                Arc::clone(&stop),
            );
            let every = self.log_every;
            std::thread::spawn(move || log_progress(&kstats, &cstats, &done, &stop, every))
        };

        let result = {
            let (kafka, kstats, cstats, duplicates, report, setup_errors, parquet, views, stop) = (
                Arc::clone(&kafka),
                Arc::clone(&kstats),
                Arc::clone(&cstats),
                Arc::clone(&duplicates),
                Arc::clone(&report),
                Arc::clone(&setup_errors),
                parquet.clone(),
                Arc::clone(&views),
                Arc::clone(&stop),
            );
            timely::execute(timely::Config::process(self.workers), move |worker| {
                let durable = ProbeHandle::new();
                let aggregated = ProbeHandle::new();
                let built = worker.dataflow::<wattflow::Time, _, _>(|scope| {
                    let streams = kafka_source(
                        scope,
                        Arc::clone(&kafka),
                        Arc::clone(&kstats),
                        durable.clone(),
                        aggregated.clone(),
                        Arc::clone(&stop),
                    )?;
                    let windows = streams.readings.window_aggregate(&WindowConfig::eager());
                    windows.updates.inner.clone().probe_with(&aggregated);
                    let source_stats = Arc::clone(&kstats);
                    cassandra_sink_paced(
                        windows.updates.inner.clone(),
                        Arc::clone(&views),
                        Arc::clone(&cstats),
                        Arc::new(move || source_stats.backlogged()),
                    )
                    .probe_with(&durable);
                    if let Some(config) = &parquet {
                        parquet_sink(
                            windows.updates.inner,
                            Arc::clone(config),
                            Arc::clone(&report),
                        );
                    }
                    let duplicates = Arc::clone(&duplicates);
                    windows.refused.inspect_core(move |event| {
                        if let Ok((_, data)) = event {
                            duplicates.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                    });
                    Ok::<(), wattflow::source::kafka::KafkaError>(())
                });
                if let Err(e) = built {
                    setup_errors
                        .lock()
                        .expect("errors lock")
                        .push(e.to_string());
                }
            })
            .map_err(LiveError::Workers)
            .and_then(|guards| {
                for r in guards.join() {
                    r.map_err(LiveError::Workers)?;
                }
                Ok(())
            })
        };
        done.store(true, Ordering::Relaxed);
        logger.join().ok();
        result?;
        if let Some(e) = setup_errors.lock().expect("errors lock").first() {
            return Err(LiveError::Kafka(e.clone()));
        }
        if let Some(config) = &parquet {
            let report = std::mem::take(&mut *report.lock().expect("report lock"));
            if !report.errors.is_empty() {
                return Err(LiveError::Output(report.errors));
            }
            for g in Granularity::ALL {
                let written = report.written.get(&g).cloned().unwrap_or_default();
                update_manifest(&config.out, g, &written)
                    .map_err(|e| LiveError::Output(vec![e]))?;
            }
        }
        Ok(LiveSummary {
            messages: kstats.messages.load(Ordering::Relaxed),
            readings: kstats.readings.load(Ordering::Relaxed),
            rejected: kstats.rejected.load(Ordering::Relaxed),
            duplicates: duplicates.load(Ordering::Relaxed),
            rows_written: cstats.rows_written.load(Ordering::Relaxed),
            changes_merged: cstats.coalesced.load(Ordering::Relaxed),
            last_message_after: match kstats.last_message_ms.load(Ordering::Relaxed) {
                ms if ms <= 0 => None,
                ms => Some(Duration::from_millis(
                    (ms as u64).saturating_sub(started_unix_us / 1000),
                )),
            },
            last_write_after: match cstats.last_ack_unix_us.load(Ordering::Relaxed) {
                0 => None,
                us => Some(Duration::from_micros(us.saturating_sub(started_unix_us))),
            },
            elapsed: started.elapsed(),
        })
    }
}

fn log_progress(
    kstats: &KafkaStats,
    cstats: &CassandraStats,
    done: &AtomicBool,
    stop: &AtomicBool,
    every: Duration,
) {
    let mut last = (Instant::now(), 0u64);
    while !done.load(Ordering::Relaxed) {
        let wake = Instant::now() + every;
        while Instant::now() < wake {
            if done.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
        let readings = kstats.readings.load(Ordering::Relaxed);
        let rate = (readings - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), readings);
        tracing::info!(
            readings,
            readings_per_s = format!("{rate:.0}"),
            watermark = wattflow::time::format_iso(kstats.watermark()),
            rejected = kstats.rejected.load(Ordering::Relaxed),
            rows_written = cstats.rows_written.load(Ordering::Relaxed),
            rows_waiting = cstats.queued.load(Ordering::Relaxed),
            changes_merged = cstats.coalesced.load(Ordering::Relaxed),
            "live"
        );
    }
}
