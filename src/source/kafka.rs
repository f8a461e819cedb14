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
//! published by the other workers, of every process: each worker sends its watermark, when it
//! changes, on a data-only output that is broadcast and looped back into the source one ms
//! later (an input connected to no output, so the loop holds no frontier back). A process
//! whose partitions are all idle therefore follows the busy ones instead of holding the
//! cluster's frontier where it is. The capability never moves backwards; a reading that later
//! arrives on an idle partition behind it is too late.
//!
//! Being at the end is only known while the broker answers: after consumer trouble (a broker
//! down, a connection cut; librdkafka reports it as an error) no partition counts as at its
//! end, so none is idle, until a message, an end-of-partition event or a watermark query to
//! the broker says so again. Otherwise a cut longer than the idle timeout would let the
//! capability jump to the furthest partition's watermark, and the backlog the others
//! accumulated meanwhile would be refused as too late when the connection returns. For the
//! same reason pausing forgets every end, and the idle timeout only counts time spent polling
//! (a worker paused or held by flow control for a while starts its quiet timers again).
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
//! flow-control probe (an [`InFlight`] window, see [`kafka_source`]); each partition judges
//! lateness with a [`LatenessWatermark`](crate::source::progress::LatenessWatermark), as each
//! history input does. The rest waits in librdkafka's bounded prefetch
//! queue and then in Kafka.

mod config;
mod ends;
mod offsets;
mod stats;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::collection::vec::Collection as VecCollection;
use differential_dataflow::AsCollection;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{ConnectLoop, Feedback};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::progress::Antichain;

pub use config::*;
pub use offsets::{is_transient, retry_transient};
pub use stats::KafkaStats;
pub use worker::check_topic;

use crate::model::Reading;
pub use crate::source::handover::Handover;
use crate::source::handover::SwitchTimes;
use crate::source::progress::InFlight;
use crate::source::{Rejection, SourceOperator};
use crate::time::format_iso;
use crate::Time;
use worker::open_worker;

/// Streams returned by [`kafka_source`].
pub struct KafkaStreams<'scope> {
    /// Valid readings, at their worker's watermark (never later than their `ts`).
    pub readings: VecCollection<'scope, Time, Reading>,
    /// Refused messages; [`Origin::kafka_partition`](crate::model::Origin::kafka_partition)
    /// and `origin.position` give the partition and offset.
    pub rejected: StreamVec<'scope, Time, Rejection>,
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
/// `backpressure`, when given, is asked before every poll: while it says the sinks are over
/// their memory budget (e.g. [`crate::sink::cassandra::CassandraStats::over_budget`]) the
/// worker reads nothing and pauses its partitions, so librdkafka stops fetching too
/// ([`KafkaStats::pauses`], [`KafkaStats::paused_workers`]); they resume when it says no.
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
    backpressure: Option<Backpressure>,
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
    // Connected to the outputs: while history is read, this input's frontier holds ours.
    let mut ends_input = handover.map(|h| {
        worker.switch = SwitchTimes::new(h.rule);
        builder.new_input(h.ends, timely::dataflow::channels::pact::Pipeline)
    });
    // Created after `ends_input`, which must stay input 0.
    // Every worker's watermark, for all of them (of every process): a worker whose partitions
    // are all idle moves up to the most advanced, so it never holds the frontier back. Sent at
    // the worker's capability, looped back one ms later into an input connected to no output.
    let (watermarks_out, watermarks) = builder.new_output::<Vec<(usize, i64)>>();
    let mut watermarks_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(usize, i64)>>>::from(watermarks_out);
    let (loop_handle, looped) = scope.feedback::<Vec<(usize, i64)>>(1);
    let mut peers_input = builder.new_input_connection(
        looped,
        timely::dataflow::channels::pact::Pipeline,
        Vec::<(usize, Antichain<Time>)>::new(),
    );
    watermarks.broadcast().connect_loop(loop_handle);
    let mut sent_watermark = i64::MIN;
    let mut history_done = ends_input.is_none();
    if history_done {
        stats.following.store(true, Ordering::SeqCst);
    }

    builder.build_reschedule(move |capabilities| {
        let mut caps = Some(capabilities);
        let mut in_flight = InFlight::new(worker.config.batches_in_flight);
        let mut paused = false;
        // The Kafka timestamp of the newest message read (ms since the epoch).
        let mut newest_read_ms: Option<i64> = None;
        let mut finished_at: Option<Instant> = None;
        let mut done = false;
        move |frontiers| {
            // Drained even when done: a message left on an input would hold the graph open.
            peers_input.for_each(|_, data| {
                for (w, t) in data.drain(..) {
                    worker.peer_watermarks.insert(w, t);
                }
            });
            if done {
                return false;
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
                        worker.stats.following.store(true, Ordering::SeqCst);
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
                let held = worker.stats.hold_commits.load(Ordering::SeqCst);
                if held || worker.durable.done() || waited >= FINAL_COMMIT_WAIT {
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
            let pressed = backpressure.as_ref().is_some_and(|over| over());
            if pressed != paused {
                pause_partitions(&consumer, &worker, pressed);
                paused = pressed;
                // Paused, the fetcher stops: where each end is must be learnt again.
                worker.forget_ends();
            }
            let blocked = in_flight.blocked(now, &flow) || pressed;
            let mut taken = 0usize;
            let mut drained = false;
            let mut behind = false;
            let mut lag_ms = i64::MIN;
            if !blocked {
                let now_ms = worker.config.calendar.now_ms();
                // Kafka timestamps are UTC instants, whatever the readings' time basis.
                let wall_ms = wall_clock_ms();
                worker.now = Instant::now();
                worker.polling();
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
                                behind |= wall_ms - at > BACKLOG_AGE_MS;
                                lag_ms = wall_ms - at;
                                newest_read_ms = Some(at);
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
                                s.end_unknown = false;
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
                // Nothing waiting: caught up, unless the broker is out of reach, when what is
                // waiting is unknown and the newest message read only grows older.
                let behind = match newest_read_ms {
                    Some(at) if worker.partitions.iter().any(|p| p.end_unknown) => {
                        (wall_clock_ms() - at).max(0)
                    }
                    _ => 0,
                };
                worker.stats.behind_ms.store(behind, Ordering::Relaxed);
            }
            if behind {
                worker
                    .stats
                    .backlog_seen_ms
                    .store(wall_clock_ms(), Ordering::Relaxed);
            }
            if !worker.readings.is_empty() {
                in_flight.sent(now);
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
            worker.note_consumer_errors();
            if drained {
                worker.recheck_ends(&consumer);
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
            let published = worker.cap.min(i64::MAX as Time) as i64;
            worker.stats.publish(worker.index, published);
            if published != sent_watermark {
                sent_watermark = published;
                watermarks_out
                    .activate()
                    .session(&current[2])
                    .give((worker.index, published));
            }
            if worker.last_commit.elapsed() >= COMMIT_INTERVAL {
                worker.commit(&consumer, CommitMode::Async);
            }
            if (drained && worker.may_exit()) || stop.load(Ordering::Relaxed) {
                caps = None;
                if paused {
                    pause_partitions(&consumer, &worker, false);
                }
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

/// Asked by a Kafka source whether its sinks are over their memory budget (see
/// [`kafka_source`]).
pub type Backpressure = Arc<dyn Fn() -> bool + Send + Sync>;

/// Pauses (or resumes) the partitions a worker reads.
fn pause_partitions(
    consumer: &rdkafka::consumer::BaseConsumer<worker::SourceContext>,
    worker: &worker::Worker,
    pause: bool,
) {
    let mut list = rdkafka::TopicPartitionList::new();
    for p in &worker.partitions {
        list.add_partition(&worker.config.topic, p.partition);
    }
    let result = if pause {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    if pause {
        worker.stats.pauses.fetch_add(1, Ordering::Relaxed);
        worker.stats.paused_workers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            topic = %worker.config.topic,
            partitions = worker.partitions.len(),
            "the sinks are over their memory budget: pausing consumption"
        );
    } else {
        worker.stats.paused_workers.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(topic = %worker.config.topic, "resuming consumption");
    }
    if let Err(e) = result {
        tracing::warn!(
            "Kafka consumer of {}: pause/resume: {e}",
            worker.config.topic
        );
    }
}
