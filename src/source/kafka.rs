//! Kafka: the live path. JSON readings from a topic into a timely graph, refusals to a
//! dead-letter topic, consumed offsets committed only once the sinks have made the
//! corresponding output durable.
//!
//! # How the work is shared
//! Each worker reads the partitions `p` of the topic with `p % peers == worker` through its own
//! `BaseConsumer`, `assign`ed (not `subscribe`d: no group join, no rebalance pause), and never
//! blocks: it polls with a zero timeout, up to [`KafkaSourceConfig::max_batch`] messages per
//! activation, and reschedules itself a few ms later when nothing came.
//!
//! # Watermarks, idleness and time
//! As in the [file source](super::file), each partition keeps a watermark: the largest event
//! time it delivered minus the allowed lateness. A reading behind its partition's watermark, or
//! behind the worker's capability, is refused as too late (dead-lettered, never dropped
//! silently); a reading more than [`KafkaSourceConfig::future_skew_ms`] ahead of the wall clock
//! is refused as from the future, so one bad clock cannot make every honest reading late.
//! Readings are emitted at the worker's capability, the least watermark of its *active*
//! partitions. A partition that has reached its end and received nothing for
//! [`KafkaSourceConfig::idle_timeout`] is idle and no longer holds the capability back; when all
//! of a worker's partitions are idle (or it has none), it advances to the largest watermark
//! published by the workers of this process (see [`KafkaStats::worker_watermarks`]). The
//! capability never moves backwards; a reading that later arrives on an idle partition behind
//! it is too late.
//!
//! In a multi-process cluster the watermark registry is per process: a process whose
//! partitions are all idle advances to what its own workers saw, so if every partition of a
//! process is idle from the start it holds the global frontier where it is (windows stop
//! sealing) until data returns. Give every process partitions that carry data, or use one
//! process with several workers.
//!
//! # Offsets and restarts
//! The window operator keeps open windows in memory, so after a restart every reading of every
//! window that was not yet sealed and durable must be read again. Each partition remembers the
//! first offset it saw for every calendar day; about once a second (and when the source ends)
//! it commits, per partition, the least of its next offset and the first offset of any day that
//! is not yet final at the `durable` probe. The commit's metadata carries the start of the
//! first open day (`wattflow:floor=<ms>`): after a restart, readings before it (whose days are
//! sealed and written) are refused as too late instead of producing partial windows. Before
//! each commit the dead-letter producer is flushed and letters that failed are sent again; while
//! any letter is undelivered no offset is committed, so no refusal is lost with its offset (a
//! restart reads it again from the last commit).
//! Partitions without a committed offset start from [`KafkaSourceConfig::start`].
//!
//! # Flow control
//! Like the file source, a worker polls only while fewer than
//! [`KafkaSourceConfig::batches_in_flight`] of its earlier batch times are still ahead of a
//! flow-control probe (see [`kafka_source`]); the rest waits in librdkafka's bounded prefetch
//! queue and then in Kafka.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::collection::vec::Collection as VecCollection;
use differential_dataflow::AsCollection;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::format::json::{check_future, parse_message};
use crate::model::{Granularity, Limits, MeterId, Origin, Reading, RejectReason};
use crate::source::file::record_text;
use crate::source::handover::{SwitchAt, SwitchTimes};
use crate::source::{Rejection, SourceOperator};
use crate::time::{format_iso, DAY_MS};
use crate::Time;

/// Default consumer group, under which offsets are committed.
pub const DEFAULT_GROUP_ID: &str = "wattflow";
/// Default allowed lateness: the same ten minutes as the file source.
pub const DEFAULT_LATENESS_MS: i64 = crate::source::file::DEFAULT_LATENESS_MS;
/// Default allowed clock skew: readings more than five minutes ahead of the wall clock are refused.
pub const DEFAULT_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// Default time after which a partition at its end with no new message stops holding the watermark.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default suffix of the dead-letter topic: `<topic>.rejected`.
pub const DEAD_LETTER_SUFFIX: &str = ".rejected";
/// Default number of messages a worker takes per activation.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Default number of emitted batch times a worker may have ahead of the flow-control probe.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 4;
/// How long start-up waits for metadata and committed offsets before reporting the brokers unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often consumed offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a finished source waits for the sinks to make everything durable before its last commit.
pub const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(30);
/// How long a commit waits for the dead-letter producer to deliver what it holds.
pub const DEAD_LETTER_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before polling again after a poll that found nothing.
pub const EMPTY_POLL_DELAY: Duration = Duration::from_millis(5);
/// A message older than this (by its Kafka timestamp) when read means the source is catching up.
pub const BACKLOG_AGE_MS: i64 = 2_000;
/// Prefix of the commit metadata that carries the restart floor.
const FLOOR_PREFIX: &str = "wattflow:floor=";

/// Whether a broker error is one a retry can outlive: the group coordinator is still loading
/// or has moved (a fresh cluster creates `__consumer_offsets` on the first group request and
/// answers `NOT_COORDINATOR` meanwhile), a partition leader is being elected, or a request
/// timed out.
pub fn is_transient(error: &RdKafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
        )
    )
}

/// Runs `request` (given the time it may still take) again after transient errors
/// ([`is_transient`]), backing off from 50 ms to 1 s, until it succeeds, fails for good, or
/// `budget` is spent; the last error is returned then.
pub fn retry_transient<T>(
    budget: Duration,
    mut request: impl FnMut(Duration) -> KafkaResult<T>,
) -> KafkaResult<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let left = budget
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(100));
        match request(left) {
            Err(e) if is_transient(&e) && start.elapsed() + pause < budget => {
                tracing::debug!("Kafka request failed ({e}); retrying in {pause:?}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            done => return done,
        }
    }
}

/// Where a partition starts when the consumer group has no committed offset for it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest message still in the topic.
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
    /// The first message whose Kafka timestamp (producer or broker time, not the reading's
    /// `ts`) is at or after this many ms since the epoch; the end if there is none.
    Timestamp(i64),
}

/// How to read a topic. Build with [`KafkaSourceConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic of JSON readings (see [`crate::format::json`]).
    pub topic: String,
    /// Consumer group under which offsets are committed (default [`DEFAULT_GROUP_ID`]).
    pub group_id: String,
    /// Start position of partitions without a committed offset (default [`StartFrom::Earliest`]).
    pub start: StartFrom,
    /// Allowed lateness in ms (default [`DEFAULT_LATENESS_MS`]).
    pub lateness_ms: i64,
    /// Allowed lead of a reading over the wall clock (UTC), in ms (default
    /// [`DEFAULT_FUTURE_SKEW_MS`]). Sensors stamping naive local time east of UTC need more.
    pub future_skew_ms: i64,
    /// A partition at its end that received nothing for this long is idle (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Topic for refused messages (default `<topic>.rejected`); `None` keeps refusals on the
    /// `rejected` stream only. The source creates no topic: it must exist, or the broker must
    /// create topics on first use.
    pub dead_letter_topic: Option<String>,
    /// Plausibility bounds; readings beyond them are refused.
    pub limits: Limits,
    /// Most messages a worker takes per activation (default [`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// Most emitted batch times a worker may have ahead of the flow-control probe (default
    /// [`DEFAULT_BATCHES_IN_FLIGHT`]; see [`kafka_source`]).
    pub batches_in_flight: usize,
    /// When set, a worker finishes once every partition it reads has reached its end and been
    /// idle this long (a worker without partitions: this long after start). For tests and
    /// benchmarks; a live pipeline leaves it `None` and runs until stopped.
    pub exit_when_idle: Option<Duration>,
    /// Extra librdkafka properties for the consumer and the dead-letter producer (TLS, SASL,
    /// tuning), applied after the source's own settings.
    pub properties: Vec<(String, String)>,
}

impl KafkaSourceConfig {
    /// A configuration with the defaults for `topic` on `brokers`, committing offsets under
    /// `group_id` (see [`DEFAULT_GROUP_ID`]).
    pub fn new(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
    ) -> KafkaSourceConfig {
        let topic = topic.into();
        KafkaSourceConfig {
            brokers: brokers.into(),
            dead_letter_topic: Some(format!("{topic}{DEAD_LETTER_SUFFIX}")),
            topic,
            group_id: group_id.into(),
            start: StartFrom::default(),
            lateness_ms: DEFAULT_LATENESS_MS,
            future_skew_ms: DEFAULT_FUTURE_SKEW_MS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            limits: Limits::default(),
            max_batch: DEFAULT_MAX_BATCH,
            batches_in_flight: DEFAULT_BATCHES_IN_FLIGHT,
            exit_when_idle: None,
            properties: Vec::new(),
        }
    }
}

/// Counters of a Kafka source, shared by all workers of the process.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Messages consumed.
    pub messages: AtomicU64,
    /// Valid readings emitted.
    pub readings: AtomicU64,
    /// Messages refused (undecodable, implausible, from the future, too late).
    pub rejected: AtomicU64,
    /// Payload bytes consumed.
    pub bytes: AtomicU64,
    /// Refusals the dead-letter topic acknowledged.
    pub dead_letters: AtomicU64,
    /// Failed attempts to write a refusal to the dead-letter topic. A failed letter is kept and
    /// sent again at the next commit, and offsets are not committed while one is undelivered.
    pub dead_letter_failures: AtomicU64,
    /// Refusals waiting to be sent again to the dead-letter topic (offsets are not committed
    /// while this is above zero).
    pub dead_letters_pending: AtomicU64,
    /// Readings that start before their meter's switch time: covered by history, counted here
    /// and not aggregated again (see [`crate::source::handover`]).
    pub covered: AtomicU64,
    /// Wall clock (ms since the epoch) minus the Kafka timestamp of the newest message read:
    /// how far behind real time the source is (0 before the first message).
    pub behind_ms: std::sync::atomic::AtomicI64,
    /// Partition offsets committed successfully.
    pub committed_offsets: AtomicU64,
    /// Commits that failed (retried at the next commit).
    pub commit_failures: AtomicU64,
    /// Consumer errors other than end-of-partition (broker down, ...), logged and retried.
    pub consumer_errors: AtomicU64,
    /// Wall clock (ms since the epoch) when a worker last read a message produced more than
    /// [`BACKLOG_AGE_MS`] before; see [`KafkaStats::backlogged`].
    pub backlog_seen_ms: std::sync::atomic::AtomicI64,
    /// Wall clock (ms since the epoch) when a worker last read a message (0: none yet).
    pub last_message_ms: std::sync::atomic::AtomicI64,
    watermarks: Mutex<BTreeMap<usize, i64>>,
}

impl KafkaStats {
    /// Whether the source was catching up on a backlog within the last second: some worker read
    /// a message whose Kafka timestamp (the producer's clock, not the reading's `ts`) was more
    /// than [`BACKLOG_AGE_MS`] old. A sink may then merge more changes per write (the Cassandra
    /// sink does).
    pub fn backlogged(&self) -> bool {
        wall_clock_ms() - self.backlog_seen_ms.load(Ordering::Relaxed) < 1_000
    }

    /// The capability (watermark, ms) each worker of this process has published, by worker index.
    pub fn worker_watermarks(&self) -> Vec<(usize, i64)> {
        self.registry().iter().map(|(&w, &t)| (w, t)).collect()
    }

    /// The least published worker watermark (ms): how far the source as a whole has advanced;
    /// 0 (the graph's first time) before any worker published one.
    pub fn watermark(&self) -> i64 {
        self.registry().values().min().copied().unwrap_or(0)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, i64>> {
        // A poisoned lock only means another worker panicked; the map is still valid.
        self.watermarks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, worker: usize, watermark: i64) {
        self.registry().insert(worker, watermark);
    }

    fn largest_other(&self, worker: usize) -> Option<i64> {
        self.registry()
            .iter()
            .filter(|(&w, _)| w != worker)
            .map(|(_, &t)| t)
            .max()
    }
}

/// Why a Kafka source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The configuration cannot work (empty topic, bad librdkafka property...).
    #[error("invalid Kafka source configuration: {0}")]
    Config(String),
    /// No broker answered a metadata request in time.
    #[error("Kafka brokers {brokers} unreachable: no metadata for topic {topic} within {} s ({source})", METADATA_TIMEOUT.as_secs())]
    Unreachable {
        /// The bootstrap brokers.
        brokers: String,
        /// The topic asked for.
        topic: String,
        /// librdkafka's error.
        source: Box<RdKafkaError>,
    },
    /// The topic does not exist.
    #[error("topic {topic} does not exist on {brokers} (the source creates no topics; `wattflow simulate` creates its topic)")]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
    },
    /// The broker answered, but the topic's metadata carries an error.
    #[error("metadata of topic {topic}: {reason}")]
    Metadata {
        /// The topic.
        topic: String,
        /// The broker's error.
        reason: String,
    },
    /// The group's committed offsets or the start offsets could not be read.
    #[error("cannot read the start offsets of group {group} on topic {topic}: {source}")]
    Offsets {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: Box<RdKafkaError>,
    },
    /// The consumer refused the partition assignment.
    #[error("cannot assign the partitions of topic {topic}: {source}")]
    Assign {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: Box<RdKafkaError>,
    },
}

/// Streams returned by [`kafka_source`].
pub struct KafkaStreams<'scope> {
    /// Valid readings, at their worker's watermark (never later than their `ts`).
    pub readings: VecCollection<'scope, Time, Reading>,
    /// Refused messages; [`Origin::kafka_partition`] and `origin.position` give the partition
    /// and offset.
    pub rejected: StreamVec<'scope, Time, Rejection>,
}

/// Counts commit results (asynchronous commits report through the consumer's poll).
struct SourceContext {
    stats: Arc<KafkaStats>,
    /// Set when an asynchronous commit failed: the next commit sends every offset again.
    commit_failed: AtomicBool,
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Reaching the end of a partition is how the source learns it is caught up, not a fault.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.stats
                    .committed_offsets
                    .fetch_add(offsets.count() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                self.commit_failed.store(true, Ordering::Relaxed);
                tracing::warn!("Kafka offset commit failed (retried at the next commit): {e}");
            }
        }
    }
}

/// Most bytes of a refused message copied into its dead letter (the broker's default message
/// limit is 1 MiB; the letter's JSON escaping may double the size).
pub const DEAD_LETTER_RECORD_BYTES: usize = 256 * 1024;

/// A dead letter that has to be sent again: its key and JSON body.
type Letter = (Option<Vec<u8>>, Vec<u8>);

/// Counts dead-letter deliveries and keeps the letters that failed, to send them again.
struct DeadLetterContext {
    stats: Arc<KafkaStats>,
    /// Letters to send again, and the last error.
    failed: Mutex<(Vec<Letter>, String)>,
}

impl DeadLetterContext {
    /// Keeps a letter that failed (logged once per commit, by [`Worker::commit`]).
    fn hold(&self, letter: Letter, error: &dyn std::fmt::Display) {
        tracing::debug!("dead letter not delivered: {error}");
        self.stats
            .dead_letter_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.0.push(letter);
        failed.1 = error.to_string();
        self.stats
            .dead_letters_pending
            .store(failed.0.len() as u64, Ordering::Relaxed);
    }

    fn take_failed(&self) -> Vec<Letter> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        self.stats.dead_letters_pending.store(0, Ordering::Relaxed);
        std::mem::take(&mut failed.0)
    }

    /// How many letters wait to be sent again, and the last error.
    fn pending(&self) -> (usize, String) {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        (failed.0.len(), failed.1.clone())
    }
}

impl ClientContext for DeadLetterContext {}

impl ProducerContext for DeadLetterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, message)) => self.hold(
                (
                    message.key().map(<[u8]>::to_vec),
                    message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                ),
                e,
            ),
        }
    }
}

fn client_config(config: &KafkaSourceConfig, own: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in own {
        c.set(*k, *v);
    }
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

fn wall_clock_ms() -> i64 {
    crate::time::now_unix_ms()
}

fn parse_floor(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(FLOOR_PREFIX)?.parse().ok()
}

/// One partition a worker reads.
struct PartitionState {
    partition: i32,
    /// Largest event time delivered.
    max_ts: i64,
    /// `max(restart floor, max_ts - lateness)`.
    watermark: i64,
    /// When the last message (or the start) was seen.
    last_message: Instant,
    /// Reached the end of the partition since its last message.
    eof: bool,
    /// Counted idle at the last full drain of the queue.
    idle: bool,
    /// Offset of the next message to read, once one was read.
    next_offset: Option<i64>,
    /// First offset of a delivered reading, per day start (ms), for days not yet final.
    days: BTreeMap<i64, i64>,
    /// Last committed `(offset, floor)`.
    committed: Option<(i64, i64)>,
}

impl PartitionState {
    /// A partition starting at `offset`, refusing readings before `floor` (restart floor).
    fn new(partition: i32, offset: Offset, floor: i64, now: Instant) -> PartitionState {
        let start = match offset {
            Offset::Offset(n) => Some(n),
            _ => None,
        };
        PartitionState {
            partition,
            max_ts: i64::MIN,
            watermark: floor,
            last_message: now,
            eof: false,
            idle: false,
            next_offset: start,
            days: BTreeMap::new(),
            // A resumed partition need not commit again what it was resumed from.
            committed: start.filter(|_| floor != i64::MIN).map(|n| (n, floor)),
        }
    }
}

/// Queues one dead letter, waiting out a full queue for up to a second; a letter that cannot
/// be queued is kept to be sent again at the next commit.
fn send_letter(producer: &BaseProducer<DeadLetterContext>, topic: &str, letter: Letter) {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&letter.1);
    if let Some(key) = &letter.0 {
        record = record.key(key);
    }
    let mut attempts = 0;
    let error = loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if attempts < 100 =>
            {
                attempts += 1;
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => break e,
        }
    };
    producer.context().hold(letter, &error);
}

/// Everything one worker's source owns.
struct Worker {
    config: Arc<KafkaSourceConfig>,
    stats: Arc<KafkaStats>,
    durable: ProbeHandle<Time>,
    index: usize,
    dead_letters: Option<BaseProducer<DeadLetterContext>>,
    partitions: Vec<PartitionState>,
    started: Instant,
    last_commit: Instant,
    /// The capability's time, mirrored for the final commit after the capabilities are gone.
    cap: Time,
    readings: Vec<(Reading, Time, isize)>,
    rejected: Vec<Rejection>,
    /// The clock at the start of the current activation (one read for all its messages).
    now: Instant,
    /// Switch times of the hand-over from history: readings before them are covered.
    switch: SwitchTimes,
    /// Partitions that have seen a covered reading (logged once each).
    covered_logged: Vec<i32>,
}

impl Worker {
    /// A worker over `partitions`, its clocks started now.
    fn new(
        config: Arc<KafkaSourceConfig>,
        stats: Arc<KafkaStats>,
        durable: ProbeHandle<Time>,
        index: usize,
        dead_letters: Option<BaseProducer<DeadLetterContext>>,
        partitions: Vec<PartitionState>,
    ) -> Worker {
        let now = Instant::now();
        Worker {
            config,
            stats,
            durable,
            index,
            dead_letters,
            partitions,
            started: now,
            last_commit: now,
            cap: 0,
            readings: Vec::new(),
            rejected: Vec::new(),
            now,
            switch: SwitchTimes::default(),
            covered_logged: Vec::new(),
        }
    }

    /// Refuses one message: on the stream and to the dead-letter topic.
    fn reject(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: RejectReason,
    ) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        if let (Some(producer), Some(topic)) = (&self.dead_letters, &self.config.dead_letter_topic)
        {
            let kept = &payload[..payload.len().min(DEAD_LETTER_RECORD_BYTES)];
            let mut body = serde_json::json!({
                "reason": reason.to_string(),
                "topic": self.config.topic,
                "partition": partition,
                "offset": offset,
                "record": String::from_utf8_lossy(kept),
            });
            if kept.len() < payload.len() {
                body["record_bytes"] = payload.len().into();
            }
            send_letter(
                producer,
                topic,
                (key.map(<[u8]>::to_vec), body.to_string().into_bytes()),
            );
        }
        self.rejected.push(Rejection {
            origin: Origin::kafka(partition, offset),
            reason,
            record: record_text(payload),
        });
    }

    /// Parses, checks and sorts one message into `readings` or `rejected`.
    fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        now_ms: i64,
    ) {
        let payload = payload.unwrap_or(&[]);
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let Some(i) = self
            .partitions
            .iter()
            .position(|p| p.partition == partition)
        else {
            // Not one of ours (cannot happen with `assign`): leave it alone.
            return;
        };
        {
            let p = &mut self.partitions[i];
            p.next_offset = Some(offset + 1);
            p.last_message = self.now;
            p.eof = false;
            p.idle = false;
        }
        let origin = Origin::kafka(partition, offset);
        let parsed = parse_message(payload, &self.config.limits, origin)
            .and_then(|r| check_future(&r, now_ms, self.config.future_skew_ms).map(|()| r));
        let reading = match parsed {
            Ok(r) => r,
            Err(reason) => return self.reject(partition, offset, key, payload, reason),
        };
        if self.switch.covers(&reading.meter, reading.ts) {
            self.stats.covered.fetch_add(1, Ordering::Relaxed);
            if !self.covered_logged.contains(&partition) {
                self.covered_logged.push(partition);
                tracing::info!(
                    partition,
                    offset,
                    meter = %reading.meter,
                    ts = %format_iso(reading.ts),
                    switch = %self.switch.of(&reading.meter).map_or_else(String::new, format_iso),
                    "readings before the switch time are covered by history: counted, not aggregated again"
                );
            }
            return;
        }
        let cap = self.cap;
        let lateness = self.config.lateness_ms;
        let p = &mut self.partitions[i];
        let bar = p
            .watermark
            .max(p.max_ts.saturating_sub(lateness))
            .max(cap as i64);
        if reading.ts < bar {
            let reason = RejectReason::TooLate {
                ts: format_iso(reading.ts),
                watermark: format_iso(bar),
            };
            return self.reject(partition, offset, key, payload, reason);
        }
        p.max_ts = p.max_ts.max(reading.ts);
        p.watermark = p.watermark.max(p.max_ts.saturating_sub(lateness));
        p.days
            .entry(Granularity::Day.window_start(reading.ts))
            .or_insert(offset);
        self.readings.push((reading, cap, 1));
    }

    /// Where the capability should be, from the partitions' watermarks and idleness.
    fn target(&self) -> Time {
        let active = self
            .partitions
            .iter()
            .filter(|p| !p.idle)
            .map(|p| p.watermark)
            .min();
        let target = match active {
            Some(t) => t,
            None => {
                let own = self.partitions.iter().map(|p| p.watermark).max();
                let other = self.stats.largest_other(self.index);
                own.max(other).unwrap_or(i64::MIN)
            }
        };
        target.max(0) as Time
    }

    /// What to commit: the restart floor and, per partition `(index, partition, offset)`, the
    /// first offset a restart must read again, leaving out unchanged ones unless `force`.
    /// Forgets the days that are final.
    fn plan_commit(&mut self, force: bool) -> (i64, Vec<(usize, i32, i64)>) {
        // Windows ending at or before `frontier` are final at the sinks. Once the probe is
        // empty (the graph finished), what this worker reached counts, so the open days of its
        // partitions are read again after a restart rather than written partially.
        let frontier = self
            .durable
            .with_frontier(|f| f.iter().min().copied())
            .unwrap_or(self.cap)
            .min(i64::MAX as Time) as i64;
        let floor = Granularity::Day.window_start(frontier);
        let mut planned = Vec::new();
        for (i, p) in self.partitions.iter_mut().enumerate() {
            let Some(next) = p.next_offset else { continue };
            p.days
                .retain(|&day, _| day.saturating_add(DAY_MS) > frontier);
            let offset = p.days.values().min().copied().unwrap_or(next).min(next);
            if force || p.committed != Some((offset, floor)) {
                planned.push((i, p.partition, offset));
            }
        }
        (floor, planned)
    }

    /// Commits, per partition, the first offset that a restart must read again.
    fn commit(&mut self, consumer: &BaseConsumer<SourceContext>, mode: CommitMode) {
        self.last_commit = Instant::now();
        // No offset is committed past a refusal before its dead letter is acknowledged: failed
        // letters are sent again, and while any is undelivered nothing is committed, so a
        // restart reads those refusals (and everything since the last commit) again.
        if let (Some(producer), Some(topic)) = (&self.dead_letters, &self.config.dead_letter_topic)
        {
            for letter in producer.context().take_failed() {
                send_letter(producer, topic, letter);
            }
            if producer.in_flight_count() > 0 {
                if let Err(e) = producer.flush(DEAD_LETTER_FLUSH_TIMEOUT) {
                    tracing::warn!("dead letters not flushed, offsets not committed yet: {e}");
                    return;
                }
            }
            let (pending, error) = producer.context().pending();
            if pending > 0 {
                tracing::warn!(
                    "{pending} dead letters for {topic} undelivered ({error}); offsets not \
                     committed until they are"
                );
                return;
            }
        }
        // The last commit, and any commit after a failed one, sends every offset.
        let force = matches!(mode, CommitMode::Sync)
            || consumer
                .context()
                .commit_failed
                .swap(false, Ordering::Relaxed);
        let (floor, planned) = self.plan_commit(force);
        let mut tpl = TopicPartitionList::new();
        for &(_, partition, offset) in &planned {
            if let Err(e) =
                tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
            {
                tracing::warn!("cannot prepare the commit of partition {partition}: {e}");
                return;
            }
            if let Some(mut elem) = tpl.find_partition(&self.config.topic, partition) {
                elem.set_metadata(format!("{FLOOR_PREFIX}{floor}"));
            }
        }
        if planned.is_empty() {
            return;
        }
        // The last (synchronous) commit outlives a coordinator that is moving or loading;
        // an asynchronous one that fails is sent again whole at the next commit.
        let result = match mode {
            CommitMode::Sync => retry_transient(METADATA_TIMEOUT, |_| consumer.commit(&tpl, mode)),
            CommitMode::Async => consumer.commit(&tpl, mode),
        };
        match result {
            Ok(()) => {
                if matches!(mode, CommitMode::Sync) {
                    self.stats
                        .committed_offsets
                        .fetch_add(planned.len() as u64, Ordering::Relaxed);
                }
                for (i, _, offset) in planned {
                    self.partitions[i].committed = Some((offset, floor));
                }
            }
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("Kafka offset commit failed (retried at the next commit): {e}");
            }
        }
    }

    /// Whether the source may finish ([`KafkaSourceConfig::exit_when_idle`]).
    fn may_exit(&self) -> bool {
        let Some(after) = self.config.exit_when_idle else {
            return false;
        };
        if self.partitions.is_empty() {
            return self.started.elapsed() >= after;
        }
        self.partitions
            .iter()
            .all(|p| p.eof && p.last_message.elapsed() >= after)
    }
}

/// The partitions of `config.topic`, from the brokers' metadata (waiting up to
/// [`METADATA_TIMEOUT`]).
fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    config: &KafkaSourceConfig,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), METADATA_TIMEOUT)
        .map_err(|source| KafkaError::Unreachable {
            brokers: config.brokers.clone(),
            topic: config.topic.clone(),
            source: Box::new(source),
        })?;
    let missing = || KafkaError::MissingTopic {
        topic: config.topic.clone(),
        brokers: config.brokers.clone(),
    };
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .ok_or_else(missing)?;
    if let Some(err) = topic.error() {
        let code: RDKafkaErrorCode = err.into();
        return Err(match code {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => missing(),
            other => KafkaError::Metadata {
                topic: config.topic.clone(),
                reason: other.to_string(),
            },
        });
    }
    if topic.partitions().is_empty() {
        return Err(missing());
    }
    Ok(topic.partitions().iter().map(|p| p.id()).collect())
}

/// Checks, before a pipeline starts, that the brokers answer and the topic exists: the same
/// errors [`kafka_source`] would return, without building anything.
pub fn check_topic(config: &KafkaSourceConfig) -> Result<Vec<i32>, KafkaError> {
    if config.topic.is_empty() {
        return Err(KafkaError::Config("the topic name is empty".into()));
    }
    if config.brokers.is_empty() {
        return Err(KafkaError::Config("no brokers given".into()));
    }
    let consumer: BaseConsumer = client_config(config, &[("allow.auto.create.topics", "false")])
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))?;
    topic_partitions(&consumer, config)
}

/// Opens the worker's consumer, assigns it its partitions at their start offsets, and opens the
/// dead-letter producer. All the waiting (bounded by [`METADATA_TIMEOUT`]) happens here.
fn open_worker(
    config: &Arc<KafkaSourceConfig>,
    stats: &Arc<KafkaStats>,
    durable: ProbeHandle<Time>,
    index: usize,
    peers: usize,
) -> Result<(Worker, BaseConsumer<SourceContext>), KafkaError> {
    if config.topic.is_empty() {
        return Err(KafkaError::Config("the topic name is empty".into()));
    }
    if config.brokers.is_empty() {
        return Err(KafkaError::Config("no brokers given".into()));
    }
    let reset = match config.start {
        StartFrom::Latest => "latest",
        _ => "earliest",
    };
    let consumer: BaseConsumer<SourceContext> = client_config(
        config,
        &[
            ("group.id", &config.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", reset),
            ("allow.auto.create.topics", "false"),
            ("queued.max.messages.kbytes", "16384"),
            // Once that prefetch queue is full librdkafka stops fetching for this long
            // (default 1 s): a source draining a backlog then idles most of each second.
            ("fetch.queue.backoff.ms", "10"),
            // Caught up with a steady stream, wait for 64 KiB or 50 ms rather than fetch every
            // few messages: far fewer requests for the broker, at most 50 ms more latency.
            ("fetch.min.bytes", "65536"),
            ("fetch.wait.max.ms", "50"),
        ],
    )
    .create_with_context(SourceContext {
        stats: Arc::clone(stats),
        commit_failed: AtomicBool::new(false),
    })
    .map_err(|e| KafkaError::Config(e.to_string()))?;

    let partitions_of_topic = topic_partitions(&consumer, config)?;
    let mut mine: Vec<i32> = partitions_of_topic
        .into_iter()
        .filter(|&p| p as usize % peers == index)
        .collect();
    mine.sort_unstable();

    let offsets_error = |source| KafkaError::Offsets {
        group: config.group_id.clone(),
        topic: config.topic.clone(),
        source: Box::new(source),
    };
    let mut partitions = Vec::new();
    let mut assignment = TopicPartitionList::new();
    if !mine.is_empty() {
        let mut ask = TopicPartitionList::new();
        for &p in &mine {
            ask.add_partition(&config.topic, p);
        }
        let committed = retry_transient(METADATA_TIMEOUT, |left| {
            consumer.committed_offsets(ask.clone(), left)
        })
        .map_err(offsets_error)?;
        let mut starts: BTreeMap<i32, (Offset, i64)> = BTreeMap::new();
        let mut uncommitted = Vec::new();
        for &p in &mine {
            match committed.find_partition(&config.topic, p) {
                Some(e) if matches!(e.offset(), Offset::Offset(_)) => {
                    let floor = parse_floor(e.metadata()).unwrap_or(i64::MIN);
                    starts.insert(p, (e.offset(), floor));
                }
                _ => uncommitted.push(p),
            }
        }
        match config.start {
            StartFrom::Earliest | StartFrom::Latest => {
                let o = if config.start == StartFrom::Earliest {
                    Offset::Beginning
                } else {
                    Offset::End
                };
                for p in uncommitted {
                    starts.insert(p, (o, i64::MIN));
                }
            }
            StartFrom::Timestamp(ms) => {
                if !uncommitted.is_empty() {
                    let mut times = TopicPartitionList::new();
                    for &p in &uncommitted {
                        times
                            .add_partition_offset(&config.topic, p, Offset::Offset(ms))
                            .map_err(offsets_error)?;
                    }
                    let found = retry_transient(METADATA_TIMEOUT, |left| {
                        consumer.offsets_for_times(times.clone(), left)
                    })
                    .map_err(offsets_error)?;
                    for p in uncommitted {
                        let o = match found.find_partition(&config.topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(n)) => Offset::Offset(n),
                            _ => Offset::End,
                        };
                        starts.insert(p, (o, i64::MIN));
                    }
                }
            }
        }
        let now = Instant::now();
        for (p, (offset, floor)) in starts {
            assignment
                .add_partition_offset(&config.topic, p, offset)
                .map_err(|source| KafkaError::Assign {
                    topic: config.topic.clone(),
                    source: Box::new(source),
                })?;
            partitions.push(PartitionState::new(p, offset, floor, now));
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|source| KafkaError::Assign {
            topic: config.topic.clone(),
            source: Box::new(source),
        })?;

    let dead_letters = match &config.dead_letter_topic {
        Some(_) => Some(
            client_config(
                config,
                &[
                    ("linger.ms", "5"),
                    ("acks", "all"),
                    ("compression.type", "lz4"),
                    ("message.timeout.ms", "30000"),
                ],
            )
            .create_with_context(DeadLetterContext {
                stats: Arc::clone(stats),
                failed: Mutex::new((Vec::new(), String::new())),
            })
            .map_err(|e| KafkaError::Config(format!("dead-letter producer: {e}")))?,
        ),
        None => None,
    };

    let worker = Worker::new(
        Arc::clone(config),
        Arc::clone(stats),
        durable,
        index,
        dead_letters,
        partitions,
    );
    Ok((worker, consumer))
}

/// The history side of a hand-over to this source (see [`crate::source::handover`]).
pub struct Handover<'scope> {
    /// Per meter, the end of its history, as every file-source worker sent it, broadcast to
    /// every worker of this source. Nothing is read from Kafka until this stream's frontier is
    /// empty (the history is read); meanwhile the source's capability follows that frontier.
    pub ends: StreamVec<'scope, Time, (MeterId, i64)>,
    /// Where the switch is.
    pub rule: SwitchAt,
}

/// Reads `config.topic` into the graph; see the module docs.
///
/// With a `handover`, the source first waits for the history to be read, then counts readings
/// before their meter's switch time as covered (see [`crate::source::handover`]).
///
/// `durable` is a probe placed after the sinks: offsets are committed only for output the probe
/// has passed. `flow` is the probe of flow control: a worker polls only while fewer than
/// [`KafkaSourceConfig::batches_in_flight`] of its batch times are ahead of it. Give `durable`
/// for strict back-pressure from the sinks, or a probe after the aggregation when the sinks
/// absorb a slow store themselves (the Cassandra sink merges the changes of a window while it
/// waits). (A probe attached to nothing counts everything behind the worker's capability as
/// passed.)
///
/// Raising `stop` ends the source gracefully (as [`KafkaSourceConfig::exit_when_idle`] does):
/// each worker stops reading, releases its capabilities, waits up to [`FINAL_COMMIT_WAIT`] for
/// `durable` to finish and commits its offsets synchronously.
///
/// Start-up errors (brokers unreachable within [`METADATA_TIMEOUT`], missing topic, unreadable
/// offsets) are returned before any operator is built; later broker trouble is logged and
/// retried by librdkafka.
#[allow(clippy::too_many_arguments)]
pub fn kafka_source<'scope>(
    scope: Scope<'scope, Time>,
    config: Arc<KafkaSourceConfig>,
    stats: Arc<KafkaStats>,
    durable: ProbeHandle<Time>,
    flow: ProbeHandle<Time>,
    stop: Arc<AtomicBool>,
    handover: Option<Handover<'scope>>,
) -> Result<KafkaStreams<'scope>, KafkaError> {
    let index = scope.index();
    let peers = scope.peers();
    let (mut worker, consumer) = open_worker(&config, &stats, durable.clone(), index, peers)?;

    let SourceOperator {
        mut builder,
        activator,
        mut readings_out,
        readings,
        mut rejected_out,
        rejected,
    } = SourceOperator::new(format!("KafkaSource({})", config.topic), scope);
    // Connected to both outputs: while history is read, this input's frontier holds ours.
    let mut ends_input = handover.map(|h| {
        worker.switch = SwitchTimes::new(h.rule);
        builder.new_input(h.ends, timely::dataflow::channels::pact::Pipeline)
    });
    let mut history_done = ends_input.is_none();

    builder.build_reschedule(move |capabilities| {
        let mut caps = Some(capabilities);
        let mut in_flight: VecDeque<Time> = VecDeque::new();
        let mut finished_at: Option<Instant> = None;
        let mut done = false;
        move |frontiers| {
            if done {
                return false;
            }
            if let Some(producer) = &worker.dead_letters {
                producer.poll(Duration::ZERO);
            }
            if let Some(input) = ends_input.as_mut() {
                input.for_each(|_, data| {
                    for (meter, end) in data.drain(..) {
                        worker.switch.absorb(meter, end);
                    }
                });
            }
            if !history_done {
                match (frontiers[0].frontier().first().copied(), caps.as_mut()) {
                    (Some(t), Some(current)) => {
                        // History still being read: follow its frontier, read nothing yet.
                        if t > worker.cap {
                            for cap in current.iter_mut() {
                                cap.downgrade(&t);
                            }
                            worker.cap = t;
                        }
                        worker
                            .stats
                            .publish(worker.index, worker.cap.min(i64::MAX as Time) as i64);
                        if stop.load(Ordering::Relaxed) {
                            caps = None;
                            history_done = true;
                        }
                        activator.activate_after(Duration::from_millis(20));
                        return true;
                    }
                    _ => {
                        history_done = true;
                        if worker.index == 0 {
                            tracing::info!(
                                meters = worker.switch.meters(),
                                switch = %worker.switch.latest().map_or_else(|| "-".to_owned(), format_iso),
                                topic = %worker.config.topic,
                                "history read; following the topic from the switch"
                            );
                        }
                        // Partitions quiet all along the history phase are not idle yet.
                        let now = Instant::now();
                        for p in worker.partitions.iter_mut() {
                            p.last_message = now;
                        }
                        worker.started = now;
                    }
                }
            }
            let Some(current) = caps.as_mut() else {
                // Finished: wait for the sinks, then make the last commit.
                let waited = finished_at.get_or_insert_with(Instant::now).elapsed();
                if worker.durable.done() || waited >= FINAL_COMMIT_WAIT {
                    worker.commit(&consumer, CommitMode::Sync);
                    // Serve the consumer's callbacks (earlier asynchronous commits) once more.
                    let _ = consumer.poll(Duration::ZERO);
                    done = true;
                    return false;
                }
                if worker.last_commit.elapsed() >= COMMIT_INTERVAL {
                    worker.commit(&consumer, CommitMode::Async);
                }
                let _ = consumer.poll(Duration::ZERO);
                activator.activate_after(Duration::from_millis(10));
                return true;
            };
            worker.cap = *current[0].time();
            let now = worker.cap;
            in_flight.retain(|t| *t < now && flow.less_equal(t));
            let blocked = in_flight.len() >= worker.config.batches_in_flight.max(1);
            let mut taken = 0usize;
            let mut drained = false;
            let mut behind = false;
            let mut lag_ms = i64::MIN;
            if !blocked {
                let now_ms = wall_clock_ms();
                worker.now = Instant::now();
                let max_batch = worker.config.max_batch.max(1);
                while taken < max_batch {
                    match consumer.poll(Duration::ZERO) {
                        None => {
                            drained = true;
                            break;
                        }
                        Some(Ok(msg)) => {
                            taken += 1;
                            if let Some(at) = msg.timestamp().to_millis() {
                                behind |= now_ms - at > BACKLOG_AGE_MS;
                                lag_ms = now_ms - at;
                            }
                            worker.handle(
                                msg.partition(),
                                msg.offset(),
                                msg.key(),
                                msg.payload(),
                                now_ms,
                            );
                        }
                        Some(Err(RdKafkaError::PartitionEOF(p))) => {
                            if let Some(s) = worker.partitions.iter_mut().find(|s| s.partition == p)
                            {
                                s.eof = true;
                            }
                        }
                        Some(Err(e)) => {
                            // Persistent trouble (a broker down) repeats at every poll: log the
                            // 1st, 2nd, 4th, 8th... occurrence only.
                            let n =
                                worker.stats.consumer_errors.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_power_of_two() {
                                tracing::warn!(
                                    "Kafka consumer of {} ({n} errors so far): {e}",
                                    worker.config.topic
                                );
                            }
                            break;
                        }
                    }
                }
            }
            if taken > 0 {
                worker
                    .stats
                    .last_message_ms
                    .fetch_max(wall_clock_ms(), Ordering::Relaxed);
            }
            if lag_ms != i64::MIN {
                worker.stats.behind_ms.store(lag_ms.max(0), Ordering::Relaxed);
            } else if drained {
                worker.stats.behind_ms.store(0, Ordering::Relaxed);
            }
            if behind {
                worker
                    .stats
                    .backlog_seen_ms
                    .store(wall_clock_ms(), Ordering::Relaxed);
            }
            if !worker.readings.is_empty() {
                if in_flight.back() != Some(&now) {
                    in_flight.push_back(now);
                }
                let emitted = worker.readings.len() as u64;
                let mut handle = readings_out.activate();
                let mut session = handle.session(&current[0]);
                session.give_iterator(worker.readings.drain(..));
                drop(session);
                worker.stats.readings.fetch_add(emitted, Ordering::Relaxed);
            }
            if !worker.rejected.is_empty() {
                let mut handle = rejected_out.activate();
                handle
                    .session(&current[1])
                    .give_iterator(worker.rejected.drain(..));
            }
            // Idleness is judged only when the queue was drained: while blocked or busy, a
            // quiet partition may have messages waiting behind the others.
            if drained {
                let timeout = worker.config.idle_timeout;
                for p in worker.partitions.iter_mut() {
                    p.idle = p.eof && p.last_message.elapsed() >= timeout;
                }
            }
            let target = worker.target();
            if target > now {
                for cap in current.iter_mut() {
                    cap.downgrade(&target);
                }
                worker.cap = target;
            }
            worker
                .stats
                .publish(worker.index, worker.cap.min(i64::MAX as Time) as i64);
            if worker.last_commit.elapsed() >= COMMIT_INTERVAL {
                worker.commit(&consumer, CommitMode::Async);
            }
            if (drained && worker.may_exit()) || stop.load(Ordering::Relaxed) {
                caps = None;
                // Nothing more is read; commits (and their callbacks) still go through.
                if let Err(e) = consumer.unassign() {
                    tracing::warn!("Kafka consumer of {}: unassign: {e}", worker.config.topic);
                }
                activator.activate_after(Duration::from_millis(1));
                return true;
            }
            if taken >= worker.config.max_batch.max(1) {
                activator.activate();
            } else if blocked {
                activator.activate_after(Duration::from_millis(1));
            } else {
                activator.activate_after(EMPTY_POLL_DELAY);
            }
            true
        }
    });

    Ok(KafkaStreams {
        readings: readings.as_collection(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    //! Against a real broker: run only when `WATTFLOW_KAFKA` names one (e.g. `127.0.0.1:9092`,
    //! after `scripts/services.sh up kafka`); otherwise each test prints a skip note.

    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicBool;

    use timely::dataflow::operators::core::{Inspect, Probe};

    use super::*;
    use crate::generate::{Generator, GeneratorConfig};
    use crate::model::MeterId;
    use crate::simulate::{ensure_topic, simulate, ReadingProducer, SimulatorConfig};
    use crate::time::naive_to_ms;

    fn broker(test: &str) -> Option<String> {
        match std::env::var("WATTFLOW_KAFKA") {
            Ok(b) if !b.trim().is_empty() => Some(b.trim().to_owned()),
            _ => {
                eprintln!(
                    "{test}: skipped (set WATTFLOW_KAFKA=host:port to run against a real broker)"
                );
                None
            }
        }
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    /// Deletes the topics a test made when it ends, passed or failed.
    struct Topics {
        brokers: String,
        names: Vec<String>,
    }

    impl Drop for Topics {
        fn drop(&mut self) {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            let _ = crate::simulate::delete_topics(&self.brokers, &names);
        }
    }

    /// A fresh topic of `partitions` and its one-partition dead-letter topic, both deleted when
    /// the returned guard drops.
    fn scratch_topics(brokers: &str, partitions: i32) -> (String, String, Topics) {
        let topic = unique("wattflow-test");
        let dead = format!("{topic}{DEAD_LETTER_SUFFIX}");
        let guard = Topics {
            brokers: brokers.to_owned(),
            names: vec![topic.clone(), dead.clone()],
        };
        ensure_topic(brokers, &topic, partitions).unwrap();
        ensure_topic(brokers, &dead, 1).unwrap();
        (topic, dead, guard)
    }

    /// What `group` has committed for partitions `0..partitions` of `topic`.
    fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> TopicPartitionList {
        let checker: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut ask = TopicPartitionList::new();
        for p in 0..partitions {
            ask.add_partition(topic, p);
        }
        retry_transient(Duration::from_secs(30), |left| {
            checker.committed_offsets(ask.clone(), left)
        })
        .unwrap()
    }

    struct Run {
        readings: Vec<(Reading, Time, isize)>,
        rejected: Vec<Rejection>,
        stats: Arc<KafkaStats>,
    }

    /// Runs the source alone on `workers` workers until it exits for idleness.
    fn run(config: &KafkaSourceConfig, workers: usize) -> Run {
        run_until(config, workers, Arc::new(AtomicBool::new(false)))
    }

    /// Runs the source alone on `workers` workers until it exits for idleness or `stop` rises.
    fn run_until(config: &KafkaSourceConfig, workers: usize, stop: Arc<AtomicBool>) -> Run {
        let config = Arc::new(config.clone());
        let stats = Arc::new(KafkaStats::default());
        let readings = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (c, s, r, j) = (
            Arc::clone(&config),
            Arc::clone(&stats),
            Arc::clone(&readings),
            Arc::clone(&rejected),
        );
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let (c, s, r, j) = (c.clone(), s.clone(), r.clone(), j.clone());
            let stop = Arc::clone(&stop);
            worker.dataflow::<Time, _, _>(move |scope| {
                let durable = ProbeHandle::new();
                let streams =
                    kafka_source(scope, c, s, durable.clone(), durable.clone(), stop, None)
                        .expect("source starts");
                streams
                    .readings
                    .inner
                    .inspect(move |x: &(Reading, Time, isize)| r.lock().unwrap().push(*x))
                    .probe_with(&durable);
                streams
                    .rejected
                    .inspect(move |x: &Rejection| j.lock().unwrap().push(x.clone()))
                    .probe_with(&durable);
            });
        })
        .expect("timely starts");
        for result in guards.join() {
            result.expect("worker ran");
        }
        let readings = std::mem::take(&mut *readings.lock().unwrap());
        let rejected = std::mem::take(&mut *rejected.lock().unwrap());
        Run {
            readings,
            rejected,
            stats,
        }
    }

    fn test_config(brokers: &str, topic: &str, group: &str) -> KafkaSourceConfig {
        KafkaSourceConfig {
            group_id: group.to_owned(),
            lateness_ms: 60_000,
            idle_timeout: Duration::from_millis(500),
            exit_when_idle: Some(Duration::from_millis(1500)),
            ..KafkaSourceConfig::new(brokers, topic, group)
        }
    }

    /// Reads every message of partition 0 of `topic` (until `want` came or 30 s passed).
    fn read_all(brokers: &str, topic: &str, want: usize) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(m.payload().unwrap_or(&[]).to_vec()),
                Some(Err(e)) => eprintln!("read_all {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// A worker without broker: no consumer, no dead-letter producer.
    fn bare_worker(partitions: &[i32], index: usize, stats: &Arc<KafkaStats>) -> Worker {
        let config = KafkaSourceConfig {
            dead_letter_topic: None,
            lateness_ms: 60_000,
            ..KafkaSourceConfig::new("unused:9092", "t", DEFAULT_GROUP_ID)
        };
        let now = Instant::now();
        Worker::new(
            Arc::new(config),
            Arc::clone(stats),
            ProbeHandle::new(),
            index,
            None,
            partitions
                .iter()
                .map(|&p| PartitionState::new(p, Offset::Beginning, i64::MIN, now))
                .collect(),
        )
    }

    fn message(ts: i64) -> Vec<u8> {
        let mut r = Generator::new(GeneratorConfig::default()).reading(1, ts, 1);
        r.ts = ts;
        crate::format::json::render_message(&r).into_bytes()
    }

    fn feed(w: &mut Worker, partition: i32, offset: i64, ts: i64) {
        w.now = Instant::now();
        w.handle(partition, offset, None, Some(&message(ts)), ts);
    }

    #[test]
    fn transient_broker_errors_are_retried_within_the_budget_and_others_are_not() {
        let not_coordinator = || RdKafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator);
        // Fails twice while the coordinator loads, then answers.
        let mut calls = 0;
        let answer = retry_transient(Duration::from_secs(5), |left| {
            assert!(left <= Duration::from_secs(5));
            calls += 1;
            if calls < 3 {
                Err(not_coordinator())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(answer.unwrap(), 3);

        // A permanent error is returned at once.
        let mut calls = 0;
        let answer: KafkaResult<()> = retry_transient(Duration::from_secs(5), |_| {
            calls += 1;
            Err(RdKafkaError::MetadataFetch(
                RDKafkaErrorCode::GroupAuthorizationFailed,
            ))
        });
        assert!(answer.is_err());
        assert_eq!(calls, 1);

        // A transient error that outlasts the budget is returned once the budget is spent.
        let start = Instant::now();
        let mut calls = 0;
        let answer: KafkaResult<()> = retry_transient(Duration::from_millis(300), |_| {
            calls += 1;
            Err(not_coordinator())
        });
        assert!(matches!(
            answer.unwrap_err().rdkafka_error_code(),
            Some(RDKafkaErrorCode::NotCoordinator)
        ));
        assert!(calls >= 2, "retried {calls} times");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn lateness_is_judged_per_partition_and_against_the_capability() {
        let stats = Arc::new(KafkaStats::default());
        let mut w = bare_worker(&[0, 2], 0, &stats);
        let t = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
        feed(&mut w, 0, 0, t);
        feed(&mut w, 0, 1, t + 120_000);
        feed(&mut w, 0, 2, t + 90_000); // within the lateness: counts
        feed(&mut w, 0, 3, t + 30_000); // behind max - lateness: too late
        feed(&mut w, 2, 0, t); // partition 2 has its own watermark
        assert_eq!(w.readings.len(), 4);
        assert_eq!(w.rejected.len(), 1);
        assert!(matches!(w.rejected[0].reason, RejectReason::TooLate { .. }));
        assert_eq!(
            w.rejected[0].origin,
            Origin {
                source: 0,
                position: 3
            }
        );
        // The capability follows the partition furthest behind.
        assert_eq!(w.target(), (t - 60_000) as Time);
        w.cap = w.target();
        // Behind the capability is too late even on a partition whose own watermark allows it.
        feed(&mut w, 2, 1, t - 61_000);
        assert_eq!(w.rejected.len(), 2);
        // Emitted at the capability, never after the reading's own time.
        feed(&mut w, 2, 2, t - 60_000);
        let (r, time, _) = w.readings.last().copied().unwrap();
        assert_eq!(time, w.cap);
        assert!(time as i64 <= r.ts);
        // From the future: refused before it can move a watermark.
        w.handle(2, 3, None, Some(&message(t + 3_600_000)), t);
        assert!(matches!(
            w.rejected.last().map(|j| &j.reason),
            Some(RejectReason::FromTheFuture { .. })
        ));
        assert_eq!(w.partitions[1].max_ts, t);
        // Bad payloads are refused with their position.
        w.handle(0, 4, None, Some(b"{}"), t);
        w.handle(0, 5, None, None, t);
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 5);
        assert_eq!(stats.messages.load(Ordering::Relaxed), 10);
        assert_eq!(w.partitions[0].next_offset, Some(6));
    }

    #[test]
    fn idle_partitions_stop_holding_the_capability() {
        let stats = Arc::new(KafkaStats::default());
        let mut w = bare_worker(&[0, 2], 0, &stats);
        let t = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
        // Nothing read yet: held at the start.
        assert_eq!(w.target(), 0);
        feed(&mut w, 0, 0, t);
        assert_eq!(w.target(), 0, "partition 2 may still bring older readings");
        w.partitions[1].idle = true;
        assert_eq!(w.target(), (t - 60_000) as Time);
        // All idle: the largest watermark of this and the other workers.
        w.partitions[0].idle = true;
        assert_eq!(w.target(), (t - 60_000) as Time);
        stats.publish(1, t + 10_000);
        stats.publish(0, 5);
        assert_eq!(w.target(), (t + 10_000) as Time);
        // A worker without partitions follows the others.
        let lonely = bare_worker(&[], 2, &stats);
        assert_eq!(lonely.target(), (t + 10_000) as Time);
        assert_eq!(stats.watermark(), 5);
        assert_eq!(stats.worker_watermarks(), vec![(0, 5), (1, t + 10_000)]);
    }

    #[test]
    fn undelivered_dead_letters_hold_the_commit_and_are_read_again_after_a_restart() {
        let Some(brokers) =
            broker("undelivered_dead_letters_hold_the_commit_and_are_read_again_after_a_restart")
        else {
            return;
        };
        let (topic, dead, _cleanup) = scratch_topics(&brokers, 1);

        let start = naive_to_ms(2024, 3, 10, 12, 0, 0).unwrap();
        let generator = Generator::new(GeneratorConfig::default());
        let mut producer = ReadingProducer::new(&brokers, &topic).unwrap();
        for s in 0..60 {
            assert!(producer.send(&generator.reading(1, start + s * 1000, 1)));
        }
        // Two refusals, one of them larger than a dead letter keeps.
        let huge = vec![b'x'; DEAD_LETTER_RECORD_BYTES + 1000];
        assert!(producer.send_raw(b"household-1", b"not json either"));
        assert!(producer.send_raw(b"household-1", &huge));
        producer.flush(Duration::from_secs(30)).unwrap();

        // First run: the dead-letter topic cannot be written (its name is invalid).
        let group = unique("group");
        let mut config = test_config(&brokers, &topic, &group);
        config.dead_letter_topic = Some("not a valid topic name!".to_owned());
        config
            .properties
            .push(("message.timeout.ms".to_owned(), "3000".to_owned()));
        let first = run(&config, 1);
        assert_eq!(first.readings.len(), 60, "valid readings still flow");
        assert_eq!(first.rejected.len(), 2, "refusals still on the stream");
        assert_eq!(first.stats.dead_letters.load(Ordering::Relaxed), 0);
        assert!(first.stats.dead_letter_failures.load(Ordering::Relaxed) >= 2);
        assert_eq!(first.stats.dead_letters_pending.load(Ordering::Relaxed), 2);
        assert_eq!(first.stats.committed_offsets.load(Ordering::Relaxed), 0);
        let committed = committed(&brokers, &group, &topic, 1);
        assert_eq!(
            committed.find_partition(&topic, 0).map(|e| e.offset()),
            Some(Offset::Invalid),
            "nothing committed past an undelivered refusal"
        );

        // Restarted in the same group with a working dead-letter topic: everything is read
        // again and both refusals are delivered, the large one cut to its first bytes.
        config.dead_letter_topic = Some(dead.clone());
        let second = run(&config, 1);
        assert_eq!(second.readings.len(), 60);
        assert_eq!(second.stats.dead_letters.load(Ordering::Relaxed), 2);
        assert_eq!(second.stats.dead_letters_pending.load(Ordering::Relaxed), 0);
        assert!(second.stats.committed_offsets.load(Ordering::Relaxed) >= 1);
        let letters = read_all(&brokers, &dead, 2);
        assert_eq!(letters.len(), 2);
        let large: Vec<serde_json::Value> = letters
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .filter(|v: &serde_json::Value| v["record_bytes"].is_u64())
            .collect();
        assert_eq!(large.len(), 1);
        assert_eq!(large[0]["record_bytes"], huge.len());
        assert_eq!(
            large[0]["record"].as_str().map(str::len),
            Some(DEAD_LETTER_RECORD_BYTES)
        );
        assert_eq!(large[0]["offset"], 61);
    }

    #[test]
    fn commits_keep_every_open_day_readable() {
        let stats = Arc::new(KafkaStats::default());
        let mut w = bare_worker(&[1], 1, &stats);
        let day2 = naive_to_ms(2024, 3, 11, 0, 0, 0).unwrap();
        for (offset, ts) in [(7, day2 - 30_000), (8, day2 - 10_000), (9, day2 + 5_000)] {
            feed(&mut w, 1, offset, ts);
        }
        w.handle(1, 10, None, Some(b"junk"), day2);
        // Nothing final yet: read again from the first reading of the first open day.
        w.cap = (day2 - 20_000) as Time;
        let floor1 = Granularity::Day.window_start(day2 - 1);
        assert_eq!(w.plan_commit(false), (floor1, vec![(0, 1, 7)]));
        w.partitions[0].committed = Some((7, floor1));
        assert_eq!(w.plan_commit(false), (floor1, vec![]));
        assert_eq!(w.plan_commit(true), (floor1, vec![(0, 1, 7)]));
        // 10 March is final: from the first reading of 11 March, which becomes the floor.
        w.cap = (day2 + 1_000) as Time;
        assert_eq!(w.plan_commit(false), (day2, vec![(0, 1, 9)]));
        assert_eq!(w.partitions[0].days.len(), 1);
        // Everything final: from the next offset.
        w.cap = (day2 + DAY_MS) as Time;
        assert_eq!(w.plan_commit(false), (day2 + DAY_MS, vec![(0, 1, 11)]));
        assert_eq!(parse_floor("wattflow:floor=-5"), Some(-5));
        assert_eq!(parse_floor("other"), None);
    }

    #[test]
    fn unreachable_brokers_fail_fast_and_clearly() {
        // No broker needed: nothing listens on port 1.
        let config = Arc::new(KafkaSourceConfig::new(
            "127.0.0.1:1",
            "readings",
            DEFAULT_GROUP_ID,
        ));
        let stats = Arc::new(KafkaStats::default());
        let started = Instant::now();
        let result = open_worker(&config, &stats, ProbeHandle::new(), 0, 1);
        assert!(matches!(result, Err(KafkaError::Unreachable { .. })));
        assert!(started.elapsed() < METADATA_TIMEOUT + Duration::from_secs(5));
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("127.0.0.1:1"), "{message}");
    }

    #[test]
    fn missing_topic_is_a_clear_error() {
        let Some(brokers) = broker("missing_topic_is_a_clear_error") else {
            return;
        };
        let config = Arc::new(KafkaSourceConfig::new(
            brokers,
            unique("no-such-topic"),
            "g",
        ));
        let stats = Arc::new(KafkaStats::default());
        let result = open_worker(&config, &stats, ProbeHandle::new(), 0, 1);
        assert!(
            matches!(result, Err(KafkaError::MissingTopic { .. })),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn readings_arrive_once_refusals_are_dead_lettered_and_offsets_committed() {
        let Some(brokers) =
            broker("readings_arrive_once_refusals_are_dead_lettered_and_offsets_committed")
        else {
            return;
        };
        let (topic, dead, _cleanup) = scratch_topics(&brokers, 3);

        // Three households, one reading a second across midnight.
        let day2 = naive_to_ms(2024, 3, 11, 0, 0, 0).unwrap();
        let start = day2 - 5 * 60_000;
        let generator = Generator::new(GeneratorConfig::default());
        let mut expected = Vec::new();
        for s in 0..600 {
            for h in 1..=3 {
                expected.push(generator.reading(h, start + s * 1000, 1));
            }
        }
        let mut producer = ReadingProducer::new(&brokers, &topic).unwrap();
        for r in &expected {
            assert!(producer.send(r));
        }
        // Five bad messages, after the good ones.
        let mut no_voltage: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&crate::format::json::render_message(&expected[0])).unwrap();
        no_voltage.remove("voltage");
        let mut absurd = expected[1];
        absurd.values[crate::model::Measure::Voltage.index()] = 9_000_000;
        let mut future = expected[2];
        future.ts = wall_clock_ms() + DAY_MS;
        let mut late = expected[0];
        late.ts = start - 12 * 3_600_000;
        let absurd = crate::format::json::render_message(&absurd);
        let future = crate::format::json::render_message(&future);
        let late = crate::format::json::render_message(&late);
        let no_voltage = serde_json::Value::Object(no_voltage).to_string();
        let bad: [(&str, &str); 5] = [
            ("household-1", "this is not json"),
            ("household-1", &no_voltage),
            ("household-2", &absurd),
            ("household-3", &future),
            ("household-1", &late),
        ];
        for (key, payload) in bad {
            assert!(producer.send_raw(key.as_bytes(), payload.as_bytes()));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        assert_eq!(producer.counts().delivered.load(Ordering::Relaxed), 1805);

        // First run, two workers over three partitions.
        let group = unique("group");
        let config = test_config(&brokers, &topic, &group);
        let first = run(&config, 2);
        let got: Vec<(MeterId, i64)> = first
            .readings
            .iter()
            .map(|(r, _, _)| (r.meter, r.ts))
            .collect();
        let distinct: BTreeSet<_> = got.iter().copied().collect();
        assert_eq!(got.len(), expected.len(), "every reading exactly once");
        assert_eq!(
            distinct,
            expected
                .iter()
                .map(|r| (r.meter, r.ts))
                .collect::<BTreeSet<_>>()
        );
        for (r, t, d) in &first.readings {
            assert_eq!(*d, 1);
            assert!(*t as i64 <= r.ts, "emitted at {t}, after its ts {}", r.ts);
            let want =
                generator.reading(r.meter.as_str()[10..].parse().unwrap(), r.ts, r.interval_s);
            assert_eq!(r.values, want.values);
        }
        let stats = &first.stats;
        assert_eq!(stats.messages.load(Ordering::Relaxed), 1805);
        assert_eq!(stats.readings.load(Ordering::Relaxed), 1800);
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 5);
        assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 5);
        let mut kinds: Vec<&str> = first
            .rejected
            .iter()
            .map(|j| match &j.reason {
                RejectReason::Undecodable(_) => "undecodable",
                RejectReason::Absurd { .. } => "absurd",
                RejectReason::FromTheFuture { .. } => "future",
                RejectReason::TooLate { .. } => "late",
                _ => "other",
            })
            .collect();
        kinds.sort_unstable();
        assert_eq!(
            kinds,
            ["absurd", "future", "late", "undecodable", "undecodable"]
        );

        // The dead-letter topic holds the same five, with reasons and positions.
        let letters = read_all(&brokers, &dead, 5);
        assert_eq!(letters.len(), 5);
        for letter in &letters {
            let v: serde_json::Value = serde_json::from_slice(letter).unwrap();
            assert_eq!(v["topic"], topic.as_str());
            assert!(v["reason"].as_str().is_some_and(|s| !s.is_empty()));
            assert!(v["partition"].as_i64().is_some() && v["offset"].as_i64().is_some());
            assert!(v["record"].as_str().is_some());
        }
        assert!(letters
            .iter()
            .any(|l| String::from_utf8_lossy(l).contains("this is not json")));

        // Committed: per partition, the first offset of the day still open (11 March), with
        // its start as the restart floor.
        let mut first_open: BTreeMap<i32, i64> = BTreeMap::new();
        for (r, _, _) in &first.readings {
            if r.ts >= day2 {
                let e = first_open
                    .entry(r.origin.kafka_partition().unwrap())
                    .or_insert(i64::MAX);
                *e = (*e).min(r.origin.position as i64);
            }
        }
        let committed = committed(&brokers, &group, &topic, 3);
        for (&p, &offset) in &first_open {
            let e = committed.find_partition(&topic, p).unwrap();
            assert_eq!(e.offset(), Offset::Offset(offset), "partition {p}");
            assert_eq!(parse_floor(e.metadata()), Some(day2), "partition {p}");
        }
        assert!(first.stats.committed_offsets.load(Ordering::Relaxed) >= first_open.len() as u64);

        // A restart in the same group reads again exactly the readings of the open day.
        let second = run(&config, 1);
        let again: BTreeSet<(MeterId, i64)> = second
            .readings
            .iter()
            .map(|(r, _, _)| (r.meter, r.ts))
            .collect();
        assert_eq!(second.readings.len(), again.len());
        assert_eq!(
            again,
            expected
                .iter()
                .filter(|r| r.ts >= day2)
                .map(|r| (r.meter, r.ts))
                .collect::<BTreeSet<_>>()
        );
        assert_eq!(second.rejected.len(), 5, "{:?}", second.rejected);
    }

    #[test]
    fn simulator_live_and_from_file_reach_the_source() {
        let Some(brokers) = broker("simulator_live_and_from_file_reach_the_source") else {
            return;
        };
        // Live: three households for about two seconds.
        let live_topic = unique("wattflow-sim-live");
        let file_topic = unique("wattflow-sim-file");
        let _cleanup = Topics {
            brokers: brokers.clone(),
            names: vec![live_topic.clone(), file_topic.clone()],
        };
        let stop = AtomicBool::new(false);
        let summary = simulate(
            &SimulatorConfig {
                households: 3,
                duration: Some(Duration::from_millis(2_500)),
                partitions: 2,
                ..SimulatorConfig::new(&brokers, &live_topic)
            },
            &stop,
        )
        .unwrap();
        assert!(
            summary.sent >= 6 && summary.sent.is_multiple_of(3),
            "{summary:?}"
        );
        assert_eq!(summary.produced, summary.sent);
        assert_eq!(summary.failed, 0);
        // No exit on idleness: the stop flag ends it, after everything was read.
        let stop_later = Arc::new(AtomicBool::new(false));
        let raise = Arc::clone(&stop_later);
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            raise.store(true, Ordering::Relaxed);
        });
        let group = unique("g");
        let config = KafkaSourceConfig {
            exit_when_idle: None,
            ..test_config(&brokers, &live_topic, &group)
        };
        let live = run_until(&config, 2, stop_later);
        raiser.join().unwrap();
        assert_eq!(live.readings.len() as u64, summary.sent);
        assert!(live.rejected.is_empty(), "{:?}", live.rejected);
        // Its last commit went through.
        assert!(live.stats.committed_offsets.load(Ordering::Relaxed) >= 1);

        // From a file: one synthetic day of UCI minutes, as fast as possible.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.txt");
        let written = Generator::new(GeneratorConfig {
            days: 1,
            ..GeneratorConfig::default()
        })
        .write_uci(std::fs::File::create(&path).unwrap())
        .unwrap();
        let summary = simulate(
            &SimulatorConfig {
                from_file: Some(path),
                ..SimulatorConfig::new(&brokers, &file_topic)
            },
            &stop,
        )
        .unwrap();
        assert_eq!(summary.missing, written.missing);
        assert_eq!(summary.sent, written.rows - written.missing);
        assert_eq!(summary.produced, summary.sent);
        let replayed = run(&test_config(&brokers, &file_topic, &unique("g")), 2);
        assert_eq!(replayed.readings.len() as u64, summary.sent);
        assert!(replayed.readings.iter().all(|(r, _, _)| r.interval_s == 60));
        assert!(replayed.rejected.is_empty(), "{:?}", replayed.rejected);
    }
}
