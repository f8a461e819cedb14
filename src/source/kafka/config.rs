//! How to read a topic: [`KafkaSourceConfig`], its defaults, and why a source cannot start.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError as RdKafkaError;

use crate::model::Limits;

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
/// Default [`KafkaSourceConfig::max_message_bytes`]: 64 KiB, some 250 times a reading.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default number of emitted batch times a worker may have ahead of the flow-control probe.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 4;
/// How long start-up waits for metadata and committed offsets before reporting the brokers unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often consumed offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a finished source waits for the sinks to make everything durable before its last commit.
pub const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Delay before polling again after a poll that found nothing.
pub const EMPTY_POLL_DELAY: Duration = Duration::from_millis(5);
/// A message older than this (by its Kafka timestamp) when read means the source is catching up.
pub const BACKLOG_AGE_MS: i64 = 2_000;
/// How often librdkafka reports its statistics (partition lags), ms.
pub const STATISTICS_INTERVAL_MS: &str = "5000";
/// Prefix of the commit metadata that carries the restart floor.
pub(super) const FLOOR_PREFIX: &str = "wattflow:floor=";

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
    /// Topic for refused messages (default `<topic>.rejected`), written by the pipeline's
    /// dead-letter sink ([`crate::sink::dead_letter`]); `None` only counts them. No topic is
    /// created: it must exist, or the broker must create topics on first use.
    pub dead_letter_topic: Option<String>,
    /// Plausibility bounds; readings beyond them are refused.
    pub limits: Limits,
    /// Most messages a worker takes per activation (default [`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// Longest message payload parsed (default [`DEFAULT_MAX_MESSAGE_BYTES`]); a longer one is
    /// refused as [`crate::model::RejectReason::TooLong`] and dead-lettered in part.
    pub max_message_bytes: usize,
    /// Most emitted batch times a worker may have ahead of the flow-control probe (default
    /// [`DEFAULT_BATCHES_IN_FLIGHT`]; see [`kafka_source`](super::kafka_source)).
    pub batches_in_flight: usize,
    /// When set, a worker finishes once every partition it reads has reached its end and been
    /// idle this long (a worker without partitions: this long after start). For tests and
    /// benchmarks; a live pipeline leaves it `None` and runs until stopped.
    pub exit_when_idle: Option<Duration>,
    /// Readings that start before this instant are in windows already durable in the views
    /// (a pipeline resuming after a crash sets it from its progress file): a message read
    /// again below it is skipped ([`crate::source::kafka::KafkaStats::already_durable`]), a
    /// message that was never read is too late. `None`: only the commit metadata's floor.
    pub resume_floor: Option<i64>,
    /// The readings' time basis: naive local time (checked against this machine's local
    /// clock for readings from the future) or UTC instants in a zone, whose local days group
    /// the offsets a restart reads again.
    pub calendar: crate::time::Calendar,
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
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            batches_in_flight: DEFAULT_BATCHES_IN_FLIGHT,
            exit_when_idle: None,
            resume_floor: None,
            calendar: crate::time::Calendar::Naive,
            properties: Vec::new(),
        }
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

pub(super) fn client_config(config: &KafkaSourceConfig, own: &[(&str, &str)]) -> ClientConfig {
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

pub(super) fn wall_clock_ms() -> i64 {
    crate::time::now_unix_ms()
}

#[cfg(test)]
pub(super) fn parse_floor(metadata: &str) -> Option<i64> {
    parse_metadata(metadata).map(|(floor, _)| floor)
}

/// The commit metadata of a partition: `wattflow:floor=<ms>;read=<offset>`, the restart floor
/// and the offset the committing run had read up to (older commits carry the floor only).
pub(super) fn parse_metadata(metadata: &str) -> Option<(i64, Option<i64>)> {
    let rest = metadata.strip_prefix(FLOOR_PREFIX)?;
    let (floor, read) = match rest.split_once(";read=") {
        Some((f, r)) => (f, r.parse().ok()),
        None => (rest, None),
    };
    Some((floor.parse().ok()?, read))
}

/// The commit metadata for `floor` and the offset read up to (see [`parse_metadata`]).
pub(super) fn metadata(floor: i64, read: i64) -> String {
    format!("{FLOOR_PREFIX}{floor};read={read}")
}
