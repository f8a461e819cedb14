//! One worker's share of a topic: its consumer, its partitions, and how each message is judged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::dataflow::ProbeHandle;

use super::config::*;
use super::ends::EndQueries;
use super::offsets::{retry_transient, PartitionState};
use super::stats::KafkaStats;
use crate::format::json::{check_future, parse_message};
use crate::model::{Granularity, Origin, Reading, RejectReason};
use crate::sink::dead_letter::DEAD_LETTER_RECORD_BYTES;
use crate::source::handover::SwitchTimes;
use crate::source::Rejection;
use crate::time::format_iso;
use crate::Time;

/// Counts commit results (asynchronous commits report through the consumer's poll).
pub(super) struct SourceContext {
    stats: Arc<KafkaStats>,
    /// Set when an asynchronous commit failed: the next commit sends every offset again.
    commit_failed: AtomicBool,
}

impl ClientContext for SourceContext {
    /// librdkafka's statistics (every [`STATISTICS_INTERVAL_MS`]): the lag of each partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for topic in statistics.topics.values() {
            for (&partition, p) in &topic.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.stats.set_lag(partition, p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Reaching the end of a partition is how the source learns it is caught up, not a fault.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            // Counted: the workers take every end they saw as unknown again (see
            // `Worker::note_consumer_errors`).
            self.stats.consumer_errors.fetch_add(1, Ordering::Relaxed);
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

/// Everything one worker's source owns.
pub(super) struct Worker {
    pub(super) config: Arc<KafkaSourceConfig>,
    pub(super) stats: Arc<KafkaStats>,
    pub(super) durable: ProbeHandle<Time>,
    pub(super) index: usize,
    pub(super) partitions: Vec<PartitionState>,
    pub(super) started: Instant,
    pub(super) last_commit: Instant,
    /// The capability's time, mirrored for the final commit after the capabilities are gone.
    pub(super) cap: Time,
    pub(super) readings: Vec<(Reading, Time, isize)>,
    pub(super) rejected: Vec<Rejection>,
    /// The clock at the start of the current activation (one read for all its messages).
    pub(super) now: Instant,
    /// Switch times of the hand-over from history: readings before them are covered.
    pub(super) switch: SwitchTimes,
    /// Partitions that have seen a covered reading (logged once each).
    covered_logged: Vec<i32>,
    /// The watermark every worker of the source (of every process) last sent.
    pub(super) peer_watermarks: BTreeMap<usize, i64>,
    /// [`KafkaStats::consumer_errors`] when this worker last looked.
    seen_errors: u64,
    /// When this worker last polled the consumer.
    last_polled: Instant,
    /// Questions to the broker about where partitions end.
    ends: EndQueries,
}

impl Worker {
    /// A worker over `partitions`, its clocks started now.
    pub(super) fn new(
        config: Arc<KafkaSourceConfig>,
        stats: Arc<KafkaStats>,
        durable: ProbeHandle<Time>,
        index: usize,
        partitions: Vec<PartitionState>,
    ) -> Worker {
        let now = Instant::now();
        let ends = EndQueries::new(Arc::clone(&config));
        Worker {
            config,
            stats,
            durable,
            index,
            partitions,
            started: now,
            last_commit: now,
            cap: 0,
            readings: Vec::new(),
            rejected: Vec::new(),
            now,
            switch: SwitchTimes::default(),
            covered_logged: Vec::new(),
            peer_watermarks: BTreeMap::new(),
            seen_errors: 0,
            last_polled: now,
            ends,
        }
    }

    /// Called before polling at `self.now`. A partition is idle after `idle_timeout` of
    /// polling without a message; time spent not polling (paused for the sinks' budget, held
    /// by flow control) does not count: the fetcher may not have delivered what arrived
    /// meanwhile, so after a gap of more than half the idle timeout every quiet timer starts
    /// again.
    pub(super) fn polling(&mut self) {
        if self.now.duration_since(self.last_polled) > self.config.idle_timeout / 2 {
            for p in &mut self.partitions {
                p.last_message = p.last_message.max(self.now);
            }
        }
        self.last_polled = self.now;
    }

    /// Forgets where every partition's end is (see [`Worker::note_consumer_errors`]).
    pub(super) fn forget_ends(&mut self) {
        let now = Instant::now();
        for p in &mut self.partitions {
            p.eof = false;
            p.idle = false;
            p.end_unknown = true;
            p.end_forgotten = now;
        }
    }

    /// After consumer trouble (a broker down, a connection cut: counted in
    /// [`KafkaStats::consumer_errors`]) no partition is known to be at its end any more: while
    /// the broker is out of reach the topic may be filling behind a partition that looked
    /// caught up. Such a partition must not count as idle (that would let the capability jump
    /// to the other partitions' watermark and make its backlog too late) until a message, an
    /// end-of-partition event or the broker itself ([`Worker::recheck_ends`]) says where its
    /// end is.
    pub(super) fn note_consumer_errors(&mut self) {
        let errors = self.stats.consumer_errors.load(Ordering::Relaxed);
        if errors == self.seen_errors {
            return;
        }
        self.seen_errors = errors;
        self.forget_ends();
    }

    /// Asks the broker where every quiet partition whose end became unknown ends (at most once
    /// per idle timeout each, on another thread: [`super::ends`]), and takes an answer asked
    /// after the end was forgotten: a partition with nothing after its next offset is at its
    /// end again. One that never gets a message after the trouble would otherwise never be idle
    /// again.
    pub(super) fn recheck_ends<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let timeout = self.config.idle_timeout;
        let now = Instant::now();
        for p in &mut self.partitions {
            if !p.end_unknown || p.eof || p.last_message.elapsed() < timeout {
                continue;
            }
            if let Some((asked, low, high)) = self.ends.answer(p.partition) {
                // Nothing read yet and no position: the partition is read from its start (an
                // empty partition, never to get a message, is at its end at once).
                let position = p.next_offset.or_else(|| {
                    let list = consumer.position().ok()?;
                    match list
                        .find_partition(&self.config.topic, p.partition)?
                        .offset()
                    {
                        rdkafka::Offset::Offset(n) => Some(n),
                        _ => None,
                    }
                });
                if asked >= p.end_forgotten && position.unwrap_or(low) >= high {
                    p.eof = true;
                    p.end_unknown = false;
                    continue;
                }
            }
            if p.end_asked.is_none_or(|t| now.duration_since(t) >= timeout) {
                p.end_asked = Some(now);
                self.ends.ask(p.partition);
            }
        }
    }

    /// Refuses one message: on the `rejected` stream (to the dead-letter sink) at the current
    /// time, remembered by its partition until that time is durable (see `plan_commit`).
    fn reject(
        &mut self,
        index: usize,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: RejectReason,
    ) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        let p = &mut self.partitions[index];
        p.refused.push_back((self.cap, offset));
        let kept = &payload[..payload.len().min(DEAD_LETTER_RECORD_BYTES)];
        self.rejected.push(Rejection {
            origin: Origin::kafka(p.partition, offset),
            reason,
            record: String::from_utf8_lossy(kept).into_owned(),
            bytes: payload.len() as u64,
            // A key is an id: a longer one is kept only in part, like the payload.
            key: key.map(|k| k[..k.len().min(DEAD_LETTER_RECORD_BYTES)].to_vec()),
        });
    }

    /// Parses, checks and sorts one message into `readings` or `rejected`.
    pub(super) fn handle(
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
        if payload.len() > self.config.max_message_bytes {
            let reason = RejectReason::TooLong {
                bytes: payload.len() as u64,
                limit: self.config.max_message_bytes as u64,
            };
            return self.reject(i, offset, key, payload, reason);
        }
        let parsed = parse_message(payload, &self.config.limits, origin)
            .and_then(|r| check_future(&r, now_ms, self.config.future_skew_ms).map(|()| r));
        let reading = match parsed {
            Ok(r) => r,
            Err(reason) => return self.reject(i, offset, key, payload, reason),
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
        {
            let p = &self.partitions[i];
            if reading.ts < p.skip_below && offset < p.reread_until {
                // Read again after a restart: its windows are durable already.
                self.stats.already_durable.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let cap = self.cap;
        let p = &mut self.partitions[i];
        if let Err(bar) = p
            .lateness
            .admit(reading.ts, cap.min(i64::MAX as Time) as i64)
        {
            let reason = RejectReason::TooLate {
                ts: format_iso(reading.ts),
                watermark: format_iso(bar),
            };
            return self.reject(i, offset, key, payload, reason);
        }
        p.days
            .entry(self.config.calendar.day_start(reading.ts))
            .or_insert(offset);
        self.readings.push((reading, cap, 1));
    }

    /// Where the capability should be, from the partitions' watermarks and idleness.
    pub(super) fn target(&self) -> Time {
        let active = self
            .partitions
            .iter()
            .filter(|p| !p.idle)
            .map(|p| p.lateness.watermark())
            .min();
        let target = match active {
            Some(t) => t,
            None => {
                let own = self.partitions.iter().map(|p| p.lateness.watermark()).max();
                let others = self
                    .peer_watermarks
                    .iter()
                    .filter(|(&w, _)| w != self.index)
                    .map(|(_, &t)| t)
                    .max();
                let other = others.or_else(|| self.stats.largest_other(self.index));
                own.max(other).unwrap_or(i64::MIN)
            }
        };
        target.max(0) as Time
    }

    /// What to commit: the restart floor and, per partition `(index, partition, offset, read)`,
    /// the first offset a restart must read again (and the next offset to read now), leaving out unchanged ones unless `force`.
    /// Forgets the days that are final.
    pub(super) fn plan_commit(&mut self, force: bool) -> (i64, Vec<(usize, i32, i64, i64)>) {
        // Windows ending at or before `frontier` are final at the sinks. Once the probe is
        // empty (the graph finished), what this worker reached counts, so the open days of its
        // partitions are read again after a restart rather than written partially.
        let frontier = (self
            .durable
            .with_frontier(|f| f.iter().min().copied())
            .unwrap_or(self.cap)
            .min(i64::MAX as Time) as i64)
            .min(self.stats.commit_limit.load(Ordering::SeqCst));
        let floor = self.config.calendar.day_start(frontier);
        let mut planned = Vec::new();
        for (i, p) in self.partitions.iter_mut().enumerate() {
            let Some(next) = p.next_offset else { continue };
            let calendar = &self.config.calendar;
            p.days
                .retain(|&day, _| calendar.window(Granularity::Day, day).1 > frontier);
            // A refusal is durable once its dead letter is: when the frontier passed its time.
            while p
                .refused
                .front()
                .is_some_and(|&(t, _)| (t.min(i64::MAX as Time) as i64) < frontier)
            {
                p.refused.pop_front();
            }
            let first_refused = p.refused.iter().map(|&(_, o)| o).min();
            let offset = p
                .days
                .values()
                .min()
                .copied()
                .into_iter()
                .chain(first_refused)
                .min()
                .unwrap_or(next)
                .min(next);
            if force || p.committed != Some((offset, floor)) {
                planned.push((i, p.partition, offset, next));
            }
        }
        (floor, planned)
    }

    /// Commits, per partition, the first offset that a restart must read again: no offset
    /// past a reading whose windows are not yet durable, nor past a refusal whose dead letter
    /// is not yet delivered (both are behind the `durable` probe).
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<SourceContext>, mode: CommitMode) {
        self.last_commit = Instant::now();
        if self.stats.hold_commits.load(Ordering::SeqCst) {
            return;
        }
        // The last commit, and any commit after a failed one, sends every offset.
        let force = matches!(mode, CommitMode::Sync)
            || consumer
                .context()
                .commit_failed
                .swap(false, Ordering::Relaxed);
        let (floor, planned) = self.plan_commit(force);
        let mut tpl = TopicPartitionList::new();
        for &(_, partition, offset, read) in &planned {
            if let Err(e) =
                tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
            {
                tracing::warn!("cannot prepare the commit of partition {partition}: {e}");
                return;
            }
            if let Some(mut elem) = tpl.find_partition(&self.config.topic, partition) {
                elem.set_metadata(metadata(floor, read));
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
                for (i, _, offset, _) in planned {
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
    pub(super) fn may_exit(&self) -> bool {
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
pub(super) fn topic_partitions<C: ConsumerContext>(
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
/// errors [`kafka_source`](super::kafka_source) would return, without building anything.
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

/// Opens the worker's consumer and assigns it its partitions at their start offsets. All the waiting (bounded by [`METADATA_TIMEOUT`]) happens here.
pub(super) fn open_worker(
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
            // Partition lags for the metrics (see `SourceContext::stats`).
            ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
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
        let mut starts: BTreeMap<i32, (Offset, i64, Option<i64>)> = BTreeMap::new();
        let mut uncommitted = Vec::new();
        for &p in &mine {
            match committed.find_partition(&config.topic, p) {
                Some(e) if matches!(e.offset(), Offset::Offset(_)) => {
                    let (floor, read) = parse_metadata(e.metadata()).unwrap_or((i64::MIN, None));
                    starts.insert(p, (e.offset(), floor, read));
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
                    starts.insert(p, (o, i64::MIN, None));
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
                        starts.insert(p, (o, i64::MIN, None));
                    }
                }
            }
        }
        let now = Instant::now();
        let resume = config.resume_floor.unwrap_or(i64::MIN);
        for (p, (offset, floor, read)) in starts {
            let floor = floor.max(resume);
            assignment
                .add_partition_offset(&config.topic, p, offset)
                .map_err(|source| KafkaError::Assign {
                    topic: config.topic.clone(),
                    source: Box::new(source),
                })?;
            partitions.push(PartitionState::new(
                p,
                offset,
                config.lateness_ms,
                floor,
                read,
                now,
            ));
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|source| KafkaError::Assign {
            topic: config.topic.clone(),
            source: Box::new(source),
        })?;

    let worker = Worker::new(
        Arc::clone(config),
        Arc::clone(stats),
        durable,
        index,
        partitions,
    );
    Ok((worker, consumer))
}
