//! The sensor simulator: synthetic households, or a replayed history file, into a Kafka topic.
//!
//! Live mode stands in for a neighbourhood of smart meters: every second (wall clock, UTC,
//! truncated to the second, used as the data's naive local time) each household sends one JSON
//! message (see [`crate::format::json`]) with `interval_s` 1 carrying all seven measures: the
//! whole-house meter and its three smart plugs (the sub-meters), from the seeded
//! [`Generator`], so the rhythm of the day (night base load, morning and evening peaks, the
//! water heater at night) is the generator's. Messages are keyed by meter, so a household stays
//! on one partition and its readings stay in order.
//!
//! From-file mode replays a UCI-format history (header-driven, as read by
//! [`TextFormat`]; gzip'd files too) one message per row (`interval_s` 60), as fast as possible
//! or `speedup` times real time; missing rows (`?`) are skipped and counted.
//!
//! The topic is created with [`SimulatorConfig::partitions`] partitions when it does not exist.

use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::format::json::render_message;
use crate::format::text::{DateCache, Line, TextFormat};
use crate::generate::{Generator, GeneratorConfig, DEFAULT_SEED};
use crate::model::{Limits, MeterId, Origin, Reading};
use crate::source::file::{
    detect_kind, open_text, FileKind, SourceError, DEFAULT_INTERVAL_S, DEFAULT_METER,
};

/// Default number of simulated households.
pub const DEFAULT_SIMULATED_HOUSEHOLDS: u32 = 1;
/// Default number of partitions of a topic the simulator creates.
pub const DEFAULT_PARTITIONS: i32 = 4;
/// How long topic creation and metadata checks may take before the brokers count as unreachable.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush waits for the broker to acknowledge what is still queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest sleep between two checks of the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What to simulate. Build with [`SimulatorConfig::new`] and adjust the fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatorConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic to produce to (created when missing).
    pub topic: String,
    /// Live mode: households `1..=households` (`household-1`, ...).
    pub households: u32,
    /// Live mode: seed of the generator (the same seed gives the same households).
    pub seed: u64,
    /// Stop after this much wall-clock time; `None` runs until the stop flag is raised (live)
    /// or the file ends (from-file).
    pub duration: Option<Duration>,
    /// Live mode: readings per second in total (default: `households`, one per household per
    /// second). Event time still advances one second per round of all households, so a higher
    /// rate runs the data's clock ahead of the wall clock, and the Kafka source refuses
    /// readings more than its allowed skew ahead.
    pub rate: Option<f64>,
    /// Replay this UCI-format history file instead of simulating live households.
    pub from_file: Option<PathBuf>,
    /// From-file mode: replay at this many times real time (`None`: as fast as possible).
    pub speedup: Option<f64>,
    /// Partitions of the topic when the simulator creates it (default [`DEFAULT_PARTITIONS`]).
    pub partitions: i32,
}

impl SimulatorConfig {
    /// A live simulation of [`DEFAULT_SIMULATED_HOUSEHOLDS`] household(s) into `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> SimulatorConfig {
        SimulatorConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            households: DEFAULT_SIMULATED_HOUSEHOLDS,
            seed: DEFAULT_SEED,
            duration: None,
            rate: None,
            from_file: None,
            speedup: None,
            partitions: DEFAULT_PARTITIONS,
        }
    }
}

/// What a simulation produced.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulateSummary {
    /// Messages handed to the producer.
    pub sent: u64,
    /// Messages the broker acknowledged.
    pub produced: u64,
    /// Messages that could not be delivered.
    pub failed: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// From-file mode: rows marked missing (`?`), skipped.
    pub missing: u64,
    /// From-file mode: malformed or implausible rows, skipped.
    pub invalid: u64,
    /// Event time of the first message sent, ms since the epoch.
    pub first_ts: Option<i64>,
    /// Event time of the last message sent.
    pub last_ts: Option<i64>,
    /// Wall-clock time of the run, final flush included.
    pub elapsed: Duration,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// The configuration cannot work.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// A Kafka client could not be created or the brokers did not answer.
    #[error("Kafka ({brokers}): {what}: {source}")]
    Kafka {
        /// The bootstrap brokers.
        brokers: String,
        /// What was being done.
        what: String,
        /// librdkafka's error.
        source: Box<RdKafkaError>,
    },
    /// The topic could not be created.
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// The history file cannot be read, or its header is not one we can read.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Runs `future` to completion on this thread (rdkafka's admin futures need no runtime).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park_timeout(STOP_CHECK);
    }
}

/// Creates `topic` with `partitions` partitions (broker-default replication) unless it exists,
/// and waits until its partitions have leaders. Errors within about [`ADMIN_TIMEOUT`] when the
/// brokers do not answer.
pub fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), SimulateError> {
    let kafka = |what: &str, source| SimulateError::Kafka {
        brokers: brokers.to_owned(),
        what: what.to_owned(),
        source: Box::new(source),
    };
    if topic.is_empty() {
        return Err(SimulateError::Config("the topic name is empty".into()));
    }
    if partitions < 1 {
        return Err(SimulateError::Config(format!(
            "a topic needs at least one partition, not {partitions}"
        )));
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Else asking for the topic's metadata creates it with the broker's defaults.
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| kafka("admin client", e))?;
    let metadata_has_topic = |admin: &AdminClient<DefaultClientContext>| {
        admin
            .inner()
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .map(|m| {
                m.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            })
    };
    if metadata_has_topic(&admin).map_err(|e| kafka("metadata", e))? {
        return Ok(());
    }
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let results =
        block_on(admin.create_topics([&new], &options)).map_err(|e| kafka("create topic", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(SimulateError::CreateTopic {
                    topic: topic.to_owned(),
                    reason: code.to_string(),
                })
            }
        }
    }
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    while !metadata_has_topic(&admin).map_err(|e| kafka("metadata", e))? {
        if Instant::now() >= deadline {
            return Err(SimulateError::CreateTopic {
                topic: topic.to_owned(),
                reason: format!(
                    "no leader for its partitions after {} s",
                    ADMIN_TIMEOUT.as_secs()
                ),
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Deletes `topics` (those that do not exist are left alone), e.g. a benchmark's or a test's
/// scratch topics.
pub fn delete_topics(brokers: &str, topics: &[&str]) -> Result<(), SimulateError> {
    let kafka = |what: &str, source| SimulateError::Kafka {
        brokers: brokers.to_owned(),
        what: what.to_owned(),
        source: Box::new(source),
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| kafka("admin client", e))?;
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results =
        block_on(admin.delete_topics(topics, &options)).map_err(|e| kafka("delete topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(SimulateError::Config(format!(
                    "cannot delete topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// Delivery counters of a [`ReadingProducer`].
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// Messages the broker acknowledged.
    pub delivered: AtomicU64,
    /// Messages that failed for good.
    pub failed: AtomicU64,
}

/// Producer context that counts deliveries.
pub struct CountingContext {
    counts: Arc<DeliveryCounts>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.counts.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer of JSON readings keyed by meter: lz4-compressed, `acks=all`, idempotent, 5 ms
/// linger; it polls for deliveries on its own thread.
pub struct ReadingProducer {
    producer: ThreadedProducer<CountingContext>,
    counts: Arc<DeliveryCounts>,
    topic: String,
    brokers: String,
    sent: u64,
    bytes: u64,
}

impl ReadingProducer {
    /// A producer to `topic` on `brokers` (the topic is not checked; see [`ensure_topic`]).
    pub fn new(brokers: &str, topic: &str) -> Result<ReadingProducer, SimulateError> {
        let counts = Arc::new(DeliveryCounts::default());
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "20")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            .create_with_context(CountingContext {
                counts: Arc::clone(&counts),
            })
            .map_err(|source| SimulateError::Kafka {
                brokers: brokers.to_owned(),
                what: "producer".into(),
                source: Box::new(source),
            })?;
        Ok(ReadingProducer {
            producer,
            counts,
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            sent: 0,
            bytes: 0,
        })
    }

    /// Queues one raw message, waiting while the producer's queue is full. Returns false if
    /// it could not be queued (counted as failed).
    pub fn send_raw(&mut self, key: &[u8], payload: &[u8]) -> bool {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    self.bytes += payload.len() as u64;
                    return true;
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    tracing::warn!("cannot produce to {}: {e}", self.topic);
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
    }

    /// Queues one reading as a JSON message keyed by its meter.
    pub fn send(&mut self, reading: &Reading) -> bool {
        let payload = render_message(reading);
        self.send_raw(reading.meter.as_str().as_bytes(), payload.as_bytes())
    }

    /// Waits up to `timeout` for every queued message to be acknowledged or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), SimulateError> {
        self.producer
            .flush(timeout)
            .map_err(|source| SimulateError::Kafka {
                brokers: self.brokers.clone(),
                what: "flush".into(),
                source: Box::new(source),
            })
    }

    /// Messages queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The delivery counters.
    pub fn counts(&self) -> &DeliveryCounts {
        &self.counts
    }
}

/// Sleeps until `at` or until `stop` is raised, whichever comes first. True if stopped.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= at {
            return false;
        }
        thread::sleep((at - now).min(STOP_CHECK));
    }
}

/// Runs the simulation (see the module docs) until the duration is over, the file ends or
/// `stop` is raised; then flushes and reports.
pub fn simulate(
    config: &SimulatorConfig,
    stop: &AtomicBool,
) -> Result<SimulateSummary, SimulateError> {
    let started = Instant::now();
    if config.from_file.is_none() && config.households == 0 {
        return Err(SimulateError::Config("no households to simulate".into()));
    }
    if let Some(rate) = config.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(SimulateError::Config(format!(
                "rate must be positive, not {rate}"
            )));
        }
    }
    if let Some(x) = config.speedup {
        if !(x.is_finite() && x > 0.0) {
            return Err(SimulateError::Config(format!(
                "speedup must be positive, not {x}"
            )));
        }
    }
    ensure_topic(&config.brokers, &config.topic, config.partitions)?;
    let mut producer = ReadingProducer::new(&config.brokers, &config.topic)?;
    let deadline = config.duration.map(|d| started + d);
    let mut summary = SimulateSummary::default();
    match &config.from_file {
        None => live(config, &mut producer, deadline, stop, &mut summary),
        Some(path) => replay(path, config, &mut producer, deadline, stop, &mut summary)?,
    }
    let flushed = producer.flush(FLUSH_TIMEOUT);
    summary.sent = producer.sent();
    summary.bytes = producer.bytes;
    summary.produced = producer.counts().delivered.load(Ordering::Relaxed);
    summary.failed = producer.counts().failed.load(Ordering::Relaxed);
    summary.elapsed = started.elapsed();
    if let Err(e) = flushed {
        tracing::warn!("{e}");
        // Whatever was not acknowledged in time counts as failed.
        summary.failed = summary
            .failed
            .max(summary.sent.saturating_sub(summary.produced));
    }
    Ok(summary)
}

fn note_ts(summary: &mut SimulateSummary, ts: i64) {
    summary.first_ts.get_or_insert(ts);
    summary.last_ts = Some(ts);
}

fn live(
    config: &SimulatorConfig,
    producer: &mut ReadingProducer,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    summary: &mut SimulateSummary,
) {
    let generator = Generator::new(GeneratorConfig {
        households: config.households,
        seed: config.seed,
        missing_rate: 0.0,
        ..GeneratorConfig::default()
    });
    let start_ts = crate::time::now_unix_ms() / 1000 * 1000;
    let rate = config.rate.unwrap_or(config.households as f64);
    let round = Duration::from_secs_f64(config.households as f64 / rate);
    // One cached sequence per household: the same values as `Generator::reading`, cheaper.
    let mut houses: Vec<_> = (1..=config.households)
        .map(|h| generator.readings(h, start_ts, 1, u64::MAX))
        .collect();
    let t0 = Instant::now();
    let mut rounds: u32 = 0;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        for house in houses.iter_mut() {
            let Some(reading) = house.next() else { return };
            note_ts(summary, reading.ts);
            producer.send(&reading);
        }
        rounds = rounds.saturating_add(1);
        let next = t0 + round.mul_f64(rounds as f64);
        let next = deadline.map_or(next, |d| next.min(d));
        if sleep_until(next, stop) {
            break;
        }
    }
}

fn replay(
    path: &Path,
    config: &SimulatorConfig,
    producer: &mut ReadingProducer,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    summary: &mut SimulateSummary,
) -> Result<(), SimulateError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    if detect_kind(path)? == FileKind::Parquet {
        return Err(SimulateError::Config(format!(
            "{}: Parquet files cannot be replayed into Kafka; give the UCI text file",
            path.display()
        )));
    }
    let mut reader = open_text(path)?;
    let mut line = Vec::with_capacity(256);
    reader.read_until(b'\n', &mut line).map_err(io)?;
    let meter = MeterId::new(DEFAULT_METER).map_err(|e| SimulateError::Config(e.to_string()))?;
    let format = TextFormat::from_header(&line, meter, DEFAULT_INTERVAL_S, Limits::default())
        .map_err(|source| SourceError::Header {
            path: path.to_path_buf(),
            source,
        })?;
    let mut dates = DateCache::default();
    let mut line_no: u64 = 1;
    let t0 = Instant::now();
    let mut first_ts: Option<i64> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        line_no += 1;
        if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed) {
            break;
        }
        let origin = Origin {
            source: 0,
            position: line_no,
        };
        match format.parse_line(&line, origin, &mut dates) {
            Line::Reading(r) => {
                if let Some(x) = config.speedup {
                    let first = *first_ts.get_or_insert(r.ts);
                    let ahead_ms = (r.ts - first).max(0) as f64 / x;
                    let at = t0 + Duration::from_secs_f64(ahead_ms / 1000.0);
                    let at = deadline.map_or(at, |d| at.min(d));
                    if sleep_until(at, stop) {
                        break;
                    }
                }
                note_ts(summary, r.ts);
                producer.send(&r);
            }
            Line::Missing => summary.missing += 1,
            Line::Rejected(_) => summary.invalid += 1,
            Line::Blank => {}
        }
    }
    Ok(())
}
