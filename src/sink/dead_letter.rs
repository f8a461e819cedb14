//! The one dead-letter path: every refusal of every source and of the window operator.
//!
//! ```text
//!  refusals ─ exchange: file origins → worker 0, Kafka origins by partition ─> DeadLetterSink ─ durable ─>
//!                                                 │ history records: <out>/rejected.csv
//!                                                 └ Kafka records:   the dead-letter topic
//! ```
//!
//! A refused history row is appended to the dead-letter file (`file,line,reason,record`,
//! RFC 4180 quoting by the `csv` crate's writer); a refused Kafka message, or a
//! Kafka reading the window operator refused (a duplicate), becomes a JSON letter on the
//! dead-letter topic ([`letter`]), keyed like the message.
//!
//! # Durability
//! The sink's output carries no data: its frontier is held at a time until every letter of that
//! time has been acknowledged by the broker, so a Kafka source that commits by the durability
//! frontier never commits past a refusal whose letter could still be lost. A letter that failed
//! for a reason a retry can outlive (broker away, timeout) is sent again with backoff; pending
//! letters are bounded by [`DeadLetterConfig::max_pending_bytes`]. A letter that can never be
//! delivered (the topic does not exist or may not be written, the letter is too large for the
//! broker) or a pending budget exceeded is a fatal [`DeadLetterError`]: it is logged, recorded in `errors`,
//! and `stop` is raised, so the pipeline ends with a clear error instead of stalling silently;
//! nothing is committed past the refusals it could not deliver, and a restart reads them again.
//!
//! # Size
//! A letter keeps at most [`DEAD_LETTER_RECORD_BYTES`] of the refused message *after* JSON
//! escaping (control characters grow six-fold when escaped), so a letter always fits the
//! broker's default 1 MiB message limit; `record_bytes` gives the size of a longer message.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::StreamVec;

use crate::error::Halt;
use crate::source::Rejection;
use crate::Time;

/// Why the dead-letter path failed: the pipeline stops (see the module docs), committing
/// nothing past the refusals it could not keep.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The dead-letter file could not be opened, written or synced.
    #[error("{}: {source}", .path.display())]
    File {
        /// The dead-letter file.
        path: PathBuf,
        /// The file system's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The dead-letter producer could not be created.
    #[cfg(feature = "kafka")]
    #[error("dead-letter producer for {topic}: {source}")]
    Producer {
        /// The dead-letter topic.
        topic: String,
        /// librdkafka's refusal.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A letter can never be delivered (the topic is missing or may not be written, the
    /// letter is too large for the broker).
    #[cfg(feature = "kafka")]
    #[error(
        "dead letters cannot be written to topic {topic}: {source} (stopping; nothing is \
         committed past the undelivered refusals, a restart reads them again)"
    )]
    Undeliverable {
        /// The dead-letter topic.
        topic: String,
        /// The broker's refusal.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Letters kept failing for longer than [`DeadLetterConfig::deadline`].
    #[cfg(feature = "kafka")]
    #[error(
        "dead letters for topic {topic} have failed for {deadline:?} ({source}): stopping; \
         nothing is committed past the undelivered refusals, a restart reads them again"
    )]
    Deadline {
        /// The dead-letter topic.
        topic: String,
        /// How long they may fail.
        deadline: std::time::Duration,
        /// The last failure.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The letters waiting for the broker exceed [`DeadLetterConfig::max_pending_bytes`].
    #[error(
        "dead letters for {topic} waiting for the broker exceed {limit} bytes: the dead-letter \
         topic is not keeping up (stopping; nothing is committed past them)"
    )]
    Backlog {
        /// The dead-letter topic.
        topic: String,
        /// The budget.
        limit: usize,
    },
    /// The producer's queue stayed full however long the sink waited.
    #[error("the dead-letter producer's queue for {topic} stayed full")]
    QueueFull {
        /// The dead-letter topic.
        topic: String,
    },
}

/// File name of the dead-letter file inside the output folder.
pub const REJECTED_FILE: &str = "rejected.csv";
/// Most bytes of a refused message a letter keeps, counted after JSON escaping.
pub const DEAD_LETTER_RECORD_BYTES: usize = 256 * 1024;
/// Default [`DeadLetterConfig::max_pending_bytes`]: letters waiting for the broker.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 << 20;
/// Default [`DeadLetterConfig::deadline`]: how long letters may keep failing.
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest prefix of `text` whose JSON string escaping takes at most `budget` bytes, and
/// whether it is all of `text`.
pub fn escaped_prefix(text: &str, budget: usize) -> (&str, bool) {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let width = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + width > budget {
            return (&text[..i], false);
        }
        used += width;
    }
    (text, true)
}

/// The JSON letter of a refused Kafka record: `reason`, `kind` (the reason's kind), `topic`,
/// `partition`, `offset`, `record` (the message as text, cut to [`DEAD_LETTER_RECORD_BYTES`]
/// after escaping) and, when cut, `record_bytes` (the message's size).
pub fn letter(r: &Rejection, topic: &str) -> Vec<u8> {
    let (record, whole) = escaped_prefix(&r.record, DEAD_LETTER_RECORD_BYTES);
    let mut body = serde_json::json!({
        "reason": r.reason.to_string(),
        "kind": r.reason.kind(),
        "topic": topic,
        "partition": r.origin.kafka_partition(),
        "offset": r.origin.position,
        "record": record,
    });
    let size = r.bytes.max(r.record.len() as u64);
    if !whole || size > record.len() as u64 {
        body["record_bytes"] = size.into();
    }
    body.to_string().into_bytes()
}

/// The dead-letter file: `file,line,reason,record` rows, one per refused history record.
struct DeadLetterFile {
    out: csv::Writer<File>,
    /// `(file, line)` of the records already in the file, when resuming (never written twice).
    already: std::collections::HashSet<(String, u64)>,
}

impl DeadLetterFile {
    /// Creates the file (truncating it), or with `append` opens it for appending and reads
    /// which records it holds.
    fn open(path: &std::path::Path, append: bool) -> std::io::Result<DeadLetterFile> {
        std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))?;
        let mut already = std::collections::HashSet::new();
        let exists = path.is_file() && std::fs::metadata(path)?.len() > 0;
        if append && exists {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path)?;
            for record in reader.records() {
                // A line cut by a crash mid-write is the only kind that fails: skip it.
                let Ok(record) = record else { continue };
                if let (Some(file), Some(line)) = (record.get(0), record.get(1)) {
                    if let Ok(line) = line.parse() {
                        already.insert((file.to_owned(), line));
                    }
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        let mut out = csv::WriterBuilder::new().from_writer(file);
        if !(append && exists) {
            out.write_record(["file", "line", "reason", "record"])?;
        }
        Ok(DeadLetterFile { out, already })
    }

    /// Appends one record; `false` when the file held it already.
    fn write(&mut self, source: &str, r: &Rejection) -> std::io::Result<bool> {
        if !self.already.is_empty()
            && self
                .already
                .contains(&(source.to_owned(), r.origin.position))
        {
            return Ok(false);
        }
        self.out.write_record([
            source,
            &r.origin.position.to_string(),
            &r.reason.to_string(),
            &r.record,
        ])?;
        Ok(true)
    }

    /// Flushes and syncs what was written.
    fn sync(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

/// Where refusals go.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterConfig {
    /// The dead-letter file of history refusals (`None`: they are only counted).
    pub file: Option<PathBuf>,
    /// Names of the history inputs that [`crate::model::Origin::file_index`] indexes.
    pub sources: Vec<String>,
    /// Append to an existing dead-letter file instead of starting it anew, skipping the
    /// records it already holds (a run resuming after a crash).
    pub append: bool,
    /// The dead-letter topic of Kafka refusals (`None`: they are only counted).
    #[cfg(feature = "kafka")]
    pub kafka: Option<KafkaDeadLetters>,
    /// Most bytes of letters waiting for the broker before the pipeline stops.
    pub max_pending_bytes: usize,
    /// How long letters may keep failing (a broker away, a topic that cannot be written)
    /// before the pipeline stops with an error.
    pub deadline: std::time::Duration,
}

impl DeadLetterConfig {
    /// No destination yet, the default limits.
    pub fn new() -> DeadLetterConfig {
        DeadLetterConfig {
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            deadline: DEFAULT_DEADLINE,
            ..DeadLetterConfig::default()
        }
    }
}

/// The dead-letter topic of a Kafka source.
#[cfg(feature = "kafka")]
#[derive(Clone, Debug)]
pub struct KafkaDeadLetters {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The topic the refused messages came from (named in each letter).
    pub source_topic: String,
    /// The dead-letter topic (it must exist or be auto-created by the broker).
    pub topic: String,
    /// Extra librdkafka properties (TLS, SASL), as for the source.
    pub properties: Vec<(String, String)>,
}

/// Counters of the dead-letter path, shared by every worker.
#[derive(Debug, Default)]
pub struct DeadLetterStats {
    /// Records written to the dead-letter file.
    pub file_records: AtomicU64,
    /// Letters the broker acknowledged.
    pub letters: AtomicU64,
    /// Failed attempts to deliver a letter (each is sent again unless the failure is fatal).
    pub letter_failures: AtomicU64,
    /// Letters sent and not yet acknowledged.
    pub pending: AtomicU64,
    /// Refusals only counted (no file or topic configured for their origin).
    pub counted_only: AtomicU64,
}

/// Writes every refusal to its dead-letter destination (see the module docs) and returns the
/// durability frontier of the letters.
///
/// A fatal error (see the module docs) stops the run through `halt` (the Kafka source commits
/// nothing once its commits are held, so the refusals that were not delivered are read again
/// after a restart), and the sink then lets go of its times so the graph can finish; so does a
/// fatal error of another part of the run.
pub fn dead_letter_sink<'scope>(
    refusals: StreamVec<'scope, Time, Rejection>,
    config: Arc<DeadLetterConfig>,
    stats: Arc<DeadLetterStats>,
    halt: Halt,
) -> StreamVec<'scope, Time, ()> {
    let scope = refusals.scope();
    let worker = scope.index();
    let mut builder = OperatorBuilder::new("DeadLetterSink".to_owned(), scope);
    let pact = Exchange::new(|r: &Rejection| match r.origin.kafka_partition() {
        Some(p) => p as u64,
        None => 0,
    });
    let mut input = builder.new_input(refusals, pact);
    let (output, durable) = builder.new_output::<Vec<()>>();
    let activator = scope.activator_for(builder.operator_info().address);
    let fail = {
        let halt = halt.clone();
        move |error: DeadLetterError| halt.fail(error)
    };

    let mut file: Option<DeadLetterFile> = None;
    if worker == 0 {
        if let Some(path) = &config.file {
            match DeadLetterFile::open(path, config.append) {
                Ok(f) => file = Some(f),
                Err(source) => fail(DeadLetterError::File {
                    path: path.clone(),
                    source,
                }),
            }
        }
    }
    // Times with records written to the file, held until the file is synced.
    let mut file_held: std::collections::BTreeMap<
        Time,
        timely::dataflow::operators::Capability<Time>,
    > = Default::default();
    #[cfg(feature = "kafka")]
    let mut letters = config
        .kafka
        .as_ref()
        .map(|k| {
            kafka::Letters::new(
                k,
                config.max_pending_bytes,
                config.deadline,
                Arc::clone(&stats),
            )
        })
        .transpose()
        .unwrap_or_else(|e| {
            fail(e);
            None
        });

    builder.build(move |initial_capabilities| {
        drop(initial_capabilities);
        // Never used to send: kept so the output exists for as long as the operator.
        let _output = output;
        let path = config.file.clone();
        move |frontiers| {
            input.for_each(|cap, data| {
                for r in data.drain(..) {
                    match r.origin.kafka_partition() {
                        None => match file.as_mut() {
                            Some(w) => {
                                let source = match r.origin.file_index() {
                                    _ if r.origin.is_sensor() => "sensors",
                                    Some(i) => config.sources.get(i).map_or("?", String::as_str),
                                    None => "?",
                                };
                                match w.write(source, &r) {
                                    Ok(true) => {
                                        stats.file_records.fetch_add(1, Ordering::Relaxed);
                                        if let Some(&time) = cap.least() {
                                            file_held
                                                .entry(time)
                                                .or_insert_with(|| cap.delayed(&time, 0));
                                        }
                                    }
                                    // Written by the run this one resumes.
                                    Ok(false) => {}
                                    Err(source) => {
                                        file = None;
                                        fail(DeadLetterError::File {
                                            path: path.clone().unwrap_or_default(),
                                            source,
                                        });
                                    }
                                }
                            }
                            None => {
                                stats.counted_only.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Some(_) => {
                            #[cfg(feature = "kafka")]
                            if let Some(l) = letters.as_mut() {
                                let Some(&time) = cap.least() else { continue };
                                if let Err(e) = l.send(&r, time, &cap) {
                                    fail(e);
                                }
                                continue;
                            }
                            let _ = &cap;
                            stats.counted_only.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            let frontier = frontiers[0].frontier();
            if !file_held.is_empty() {
                // Records are durable before their times are let go.
                if let Some(w) = file.as_mut() {
                    if let Err(source) = w.sync() {
                        file = None;
                        fail(DeadLetterError::File {
                            path: path.clone().unwrap_or_default(),
                            source,
                        });
                    }
                }
                file_held.retain(|time, _| frontier.less_equal(time));
            }
            if frontier.is_empty() {
                file.take();
            }
            #[cfg(feature = "kafka")]
            if let Some(l) = letters.as_mut() {
                if let Err(e) = l.progress(&frontier) {
                    fail(e);
                }
                if halt.held() {
                    // Commits are held: let the graph finish.
                    letters = None;
                } else if l.pending() > 0 {
                    activator.activate_after(std::time::Duration::from_millis(10));
                }
            }
            let _ = &activator;
        }
    });
    durable
}

#[cfg(feature = "kafka")]
mod kafka {
    //! The dead-letter topic: letters in flight, per time, until the broker acknowledges them.

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rdkafka::client::ClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
    use timely::dataflow::operators::{Capability, InputCapability};
    use timely::progress::frontier::AntichainRef;

    use super::{letter, DeadLetterError, DeadLetterStats, KafkaDeadLetters};
    use crate::source::Rejection;
    use crate::Time;

    /// First wait before a failed letter is sent again; it doubles up to [`RETRY_MAX`].
    const RETRY_INITIAL: Duration = Duration::from_millis(100);
    const RETRY_MAX: Duration = Duration::from_secs(5);

    /// A letter on its way: the time it belongs to, and what to send again if it fails.
    struct Pending {
        time: Time,
        key: Option<Vec<u8>>,
        body: Vec<u8>,
    }

    /// Delivery results, collected by the producer's callbacks for the operator to handle.
    struct Context {
        delivered: Mutex<Vec<(Time, usize)>>,
        failed: Mutex<Vec<(Box<Pending>, KafkaError)>>,
    }

    impl ClientContext for Context {}

    impl ProducerContext for Context {
        type DeliveryOpaque = Box<Pending>;

        fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
            match result {
                Ok(_) => self
                    .delivered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((pending.time, pending.body.len())),
                Err((e, _)) => self
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((pending, e.clone())),
            }
        }
    }

    /// Whether no retry can deliver a letter that failed with `e`.
    fn is_permanent(e: &KafkaError) -> bool {
        matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidRecord
            )
        )
    }

    pub(super) struct Letters {
        producer: BaseProducer<Context>,
        config: KafkaDeadLetters,
        stats: Arc<DeadLetterStats>,
        max_pending_bytes: usize,
        /// Per time: its capability and the letters of that time not yet acknowledged.
        held: BTreeMap<Time, (Capability<Time>, u64)>,
        /// Failed letters waiting to be sent again, with when.
        retry: VecDeque<(Instant, Box<Pending>)>,
        backoff: Duration,
        pending: u64,
        pending_bytes: usize,
        deadline: Duration,
        /// Since when letters fail without one getting through.
        failing_since: Option<Instant>,
    }

    impl Letters {
        pub(super) fn new(
            config: &KafkaDeadLetters,
            max_pending_bytes: usize,
            deadline: Duration,
            stats: Arc<DeadLetterStats>,
        ) -> Result<Letters, DeadLetterError> {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &config.brokers)
                .set("linger.ms", "5")
                .set("acks", "all")
                .set("compression.type", "lz4")
                .set("message.timeout.ms", "30000");
            for (k, v) in &config.properties {
                c.set(k, v);
            }
            let producer = c
                .create_with_context(Context {
                    delivered: Mutex::new(Vec::new()),
                    failed: Mutex::new(Vec::new()),
                })
                .map_err(|source| DeadLetterError::Producer {
                    topic: config.topic.clone(),
                    source,
                })?;
            Ok(Letters {
                producer,
                config: config.clone(),
                stats,
                max_pending_bytes,
                held: BTreeMap::new(),
                retry: VecDeque::new(),
                backoff: RETRY_INITIAL,
                pending: 0,
                pending_bytes: 0,
                deadline,
                failing_since: None,
            })
        }

        pub(super) fn pending(&self) -> u64 {
            self.pending
        }

        /// Sends the letter of `r`, refused at `time`, holding `time` until it is delivered.
        pub(super) fn send(
            &mut self,
            r: &Rejection,
            time: Time,
            cap: &InputCapability<Time>,
        ) -> Result<(), DeadLetterError> {
            let body = letter(r, &self.config.source_topic);
            self.pending_bytes += body.len();
            if self.pending_bytes > self.max_pending_bytes {
                return Err(DeadLetterError::Backlog {
                    topic: self.config.topic.clone(),
                    limit: self.max_pending_bytes,
                });
            }
            let entry = self
                .held
                .entry(time)
                .or_insert_with(|| (cap.delayed(&time, 0), 0));
            entry.1 += 1;
            self.pending += 1;
            self.stats.pending.store(self.pending, Ordering::Relaxed);
            self.enqueue(Box::new(Pending {
                time,
                key: r.key.clone(),
                body,
            }))
        }

        fn enqueue(&mut self, pending: Box<Pending>) -> Result<(), DeadLetterError> {
            let mut pending = pending;
            for _ in 0..1000 {
                let record = BaseRecord::with_opaque_to(&self.config.topic, pending);
                let (body, key) = {
                    let p: &Pending = &record.delivery_opaque;
                    (p.body.clone(), p.key.clone())
                };
                let mut record = record.payload(&body);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                match self.producer.send(record) {
                    Ok(()) => return Ok(()),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        pending = back.delivery_opaque;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, back)) if !is_permanent(&e) => {
                        self.stats.letter_failures.fetch_add(1, Ordering::Relaxed);
                        self.failing_since.get_or_insert_with(Instant::now);
                        self.retry
                            .push_back((Instant::now() + self.backoff, back.delivery_opaque));
                        return Ok(());
                    }
                    Err((e, _)) => return Err(self.fatal(e)),
                }
            }
            Err(DeadLetterError::QueueFull {
                topic: self.config.topic.clone(),
            })
        }

        fn fatal(&self, source: KafkaError) -> DeadLetterError {
            DeadLetterError::Undeliverable {
                topic: self.config.topic.clone(),
                source,
            }
        }

        /// Handles delivery reports, sends failed letters again when due, and releases the
        /// times whose letters are all delivered and whose input is complete.
        pub(super) fn progress(
            &mut self,
            frontier: &AntichainRef<'_, Time>,
        ) -> Result<(), DeadLetterError> {
            self.producer.poll(Duration::ZERO);
            let delivered =
                std::mem::take(&mut *self.producer.context().delivered.lock().expect("lock"));
            let failed = std::mem::take(&mut *self.producer.context().failed.lock().expect("lock"));
            for (time, bytes) in delivered {
                self.stats.letters.fetch_add(1, Ordering::Relaxed);
                self.pending -= 1;
                self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                self.failing_since = None;
                if let Some(entry) = self.held.get_mut(&time) {
                    entry.1 -= 1;
                }
                self.backoff = RETRY_INITIAL;
            }
            for (pending, e) in failed {
                self.stats.letter_failures.fetch_add(1, Ordering::Relaxed);
                if is_permanent(&e) {
                    return Err(self.fatal(e));
                }
                if self
                    .stats
                    .letter_failures
                    .load(Ordering::Relaxed)
                    .is_power_of_two()
                {
                    tracing::warn!(
                        "dead letter for {} not delivered ({e}); sending it again",
                        self.config.topic
                    );
                }
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.deadline {
                    return Err(DeadLetterError::Deadline {
                        topic: self.config.topic.clone(),
                        deadline: self.deadline,
                        source: e,
                    });
                }
                self.retry
                    .push_back((Instant::now() + self.backoff, pending));
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
            let now = Instant::now();
            while self.retry.front().is_some_and(|(at, _)| *at <= now) {
                let (_, pending) = self.retry.pop_front().expect("front");
                self.enqueue(pending)?;
            }
            self.held
                .retain(|time, (_, left)| *left > 0 || frontier.less_equal(time));
            self.stats.pending.store(self.pending, Ordering::Relaxed);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, RejectReason};

    fn rejection(record: String) -> Rejection {
        Rejection {
            origin: Origin::kafka(3, 17),
            reason: RejectReason::Undecodable("bad".into()),
            bytes: record.len() as u64,
            record,
            key: None,
        }
    }

    #[test]
    fn a_letter_fits_its_budget_after_escaping_whatever_the_record() {
        // Control characters escape to six bytes each: a budget on the raw text would let
        // the letter grow six-fold past the broker's limit.
        for record in [
            "\u{1}".repeat(DEAD_LETTER_RECORD_BYTES),
            "\"".repeat(DEAD_LETTER_RECORD_BYTES),
            "é".repeat(DEAD_LETTER_RECORD_BYTES),
            "x".repeat(2 * DEAD_LETTER_RECORD_BYTES),
        ] {
            let l = letter(&rejection(record.clone()), "t");
            assert!(
                l.len() < DEAD_LETTER_RECORD_BYTES + 1024,
                "letter of {} bytes",
                l.len()
            );
            let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
            assert_eq!(v["record_bytes"], record.len());
            assert!(record.starts_with(v["record"].as_str().unwrap()));
            assert_eq!(v["partition"], 3);
            assert_eq!(v["offset"], 17);
            assert_eq!(v["kind"], "undecodable");
        }
        let small = letter(&rejection("{\"a\":1}".into()), "t");
        let v: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(v["record"], "{\"a\":1}");
        assert!(v.get("record_bytes").is_none());
    }

    #[test]
    fn escaped_prefix_counts_json_escapes() {
        assert_eq!(escaped_prefix("abc", 2), ("ab", false));
        assert_eq!(escaped_prefix("a\u{1}b", 6), ("a", false));
        assert_eq!(escaped_prefix("a\u{1}b", 8), ("a\u{1}b", true));
        assert_eq!(escaped_prefix("\"x", 3), ("\"x", true));
        assert_eq!(escaped_prefix("é", 1), ("", false));
    }
}
