//! Speed views: every change of every window, upserted into Cassandra (or ScyllaDB).
//!
//! One concern per file: the settings, defaults, errors and counters
//! (`cassandra/config.rs`); the tables and their CQL (`schema.rs`); the connection and reading a
//! view back (`session.rs`); which change is written when (`scheduler.rs`); and here, the
//! timely operator that ties them to the dataflow ([`cassandra_sink`]).
//!
//! # Tables
//! One table per granularity in one keyspace (`wattflow` by default), created at start-up if
//! missing (every statement is `IF NOT EXISTS`, so [`connect`] is idempotent):
//! ```text
//! minute_view | hour_view | day_view
//!   meter text, bucket int, window_start timestamp, samples bigint, covered_seconds bigint,
//!   <measure>_sum, <measure>_min, <measure>_max, <measure>_avg double   (the 7 measures)
//!   active_energy_wh double, unmetered_wh double, power_factor_avg double,
//!   PRIMARY KEY ((meter, bucket), window_start)
//! ```
//! The columns are those of the batch view contract (DESIGN.md), so a serving layer can merge
//! both. `bucket` keeps partitions bounded ([`bucket_of`]): a minute partition holds one day of a
//! meter (1,440 rows), an hour partition one month (≤ 744), a day partition one year (≤ 366).
//! `_sum`, `_min` and `_max` are the exact thousandths divided by 1000 (the nearest double);
//! averages and derived values are the doubles of [`Aggregate::finish`].
//!
//! # Writes
//! [`cassandra_sink`] routes updates to workers by window and keeps, per worker, a *dirty
//! queue* per granularity: each changed window once, with its latest value (the last `+` of its
//! `−old, +new` pairs, read in arrival order; `−` records are otherwise ignored, as readings are
//! insert-only and a row is never deleted). Every change adds a reading, so the latest value is
//! also the one with the most samples, and a waiting value is only replaced by one with as many or
//! more: the view stays right even if two changes of a window were handed over out of order
//! (timely's `for_each_stamp` sorts an activation's messages by time, unstably, so two changes at
//! one time could swap: this sink reads its input with `for_each`). A change to a window already
//! waiting replaces the waiting value in place
//! (counted in [`CassandraStats::coalesced`]), so the queue never holds more than the open
//! windows, whatever the input rate. Changes are taken as they arrive, before their time is
//! complete, so with the window operator's eager folding a reading reaches Cassandra within one
//! round trip of its arrival.
//!
//! A window is written once it is *due*: its first unwritten change is older than the
//! granularity's delay ([`CassandraSinkConfig::minute_delay`], 0 by default;
//! [`CassandraSinkConfig::hour_delay`], 10 s; [`CassandraSinkConfig::day_delay`], 60 s), or it is
//! sealed (the input frontier has reached its end), or the input has ended. Only the head of each
//! queue is examined, so a sealed window behind a younger one waits at most that one's delay.
//! Among due heads the one with the oldest change goes first, as far as the in-flight permits
//! allow. So:
//! - when Cassandra keeps up, every change of a minute row is written at once, and an hour or
//!   day row at most once per its delay, its changes meanwhile merged into one write (a
//!   per-second meter changes its three windows every second: written as they change, the
//!   hour and day rows would double the load for views that a few seconds of lag do not hurt);
//! - while the input catches up on a backlog ([`cassandra_sink_paced`]), every row waits at least
//!   [`CassandraSinkConfig::backlog_delay`] (30 s): those changes are history, and writing each
//!   of them would spend Cassandra on values overwritten a moment later;
//! - when it does not keep up, the queues fill up to the open windows and every row is
//!   rewritten, oldest change first, as often as Cassandra allows: the views lag, but the pipeline keeps its input
//!   rate and memory stays bounded (the lag is the number of open windows over the upsert rate).
//!
//! # Batches
//! Due rows are sent [`CassandraSinkConfig::batch_rows`] at a time (16 by default) as one
//! `UNLOGGED BATCH` of the prepared upserts: on a node where most of the CPU goes to handling
//! requests, this cuts the cost of a row several times over, for the client too. The rows of a
//! batch belong to different partitions; an unlogged batch gives no atomicity, which is not
//! needed (each row is an idempotent upsert with its own write timestamp). 16 rows are about
//! 16 KiB, below Cassandra's default `batch_size_fail_threshold` (50 KiB) but above its warning
//! thresholds (`batch_size_warn_threshold`, 5 KiB; `unlogged_batch_across_partitions_warn_threshold`,
//! 10): raise those (as `scripts/services.sh` does) or the node logs a warning per batch. On a
//! large cluster, where a batch's coordinator forwards rows to other replicas, smaller batches
//! (or 1) spread the load better.
//!
//! Every upsert is a prepared `INSERT ... USING TIMESTAMP ?` (plus `AND TTL ?` for minute rows
//! when [`CassandraSinkConfig::minute_ttl`] is set). When a window has no power factor (P and Q
//! were zero throughout) a second prepared statement without that column is used, so no null,
//! hence no tombstone, is ever written. (A window's power factor can appear later but never
//! disappear: its weight only grows.)
//!
//! Write timestamps are client-side microseconds since the epoch, taken from the wall clock
//! when a window's value is handed to the writer (a window's newer value is only handed over
//! after its older one, as a window waits in the queue once), made strictly increasing per
//! process ([`next_write_timestamp`]) and kept across retries: a
//! retried stale write always loses to a newer write of the same row, whatever the order in
//! which they reach Cassandra.
//!
//! # Memory budget
//! The queues of one process hold at most about [`CassandraSinkConfig::max_queued_rows`]
//! rows: a worker whose queues hold its share (the budget over the workers) writes its oldest
//! row at once, whatever its delay. [`CassandraStats::queued`] plus
//! [`CassandraStats::in_flight`] is the process's use of the budget
//! ([`CassandraStats::over_budget`]); a pipeline's Kafka source pauses its partitions while it
//! is used up, so a Cassandra that is down or slow stops consumption instead of filling memory.
//!
//! # Durability frontier and back-pressure
//! The sink's one output carries no data: its frontier is the pipeline's *durability frontier*.
//! Each change gets a sequence number; a complete input time is held (a capability) until every
//! change at or before it has been acknowledged by Cassandra, itself or through a newer value of
//! its window (or has failed for good, see below). A Kafka source commits the offsets of a time
//! once this frontier has passed it. Input is never refused: back-pressure on the source comes
//! from its own flow control, while the dirty queues absorb a slow Cassandra.
//!
//! Requests run on a tokio runtime owned by [`CassandraViews`], at most
//! [`CassandraSinkConfig::max_in_flight`] at once per process (a semaphore); the rest wait in
//! the operator, which is woken when a permit frees while writes wait for one, and otherwise polls
//! every [`POLL_INTERVAL`] while writes are pending.
//!
//! # Failures
//! Timeouts, unavailable or overloaded nodes and lost connections (Cassandra restarting) are
//! retried forever with exponential backoff from [`CassandraSinkConfig::retry_initial`] to
//! [`CassandraSinkConfig::retry_max`] (±20 % jitter), each retry after the first
//! [`QUIET_RETRIES`] logged as a warning: nothing is lost, the capability is simply held longer.
//! A batch refused for good as a whole (larger than the cluster's
//! `batch_size_fail_threshold`, or holding one row that cannot be written) is sent again row by
//! row ([`CassandraStats::split_batches`]). A row refused for good (an invalid query, a schema
//! changed under us) is counted in [`CassandraStats::write_errors`] and is **never counted as
//! durable**: its time is held, so no Kafka offset past it is committed. Given a [`Halt`]
//! ([`cassandra_sink_paced`]), the sink stops the run with [`CassandraError::Refused`] (commits
//! held first) and then lets its times go so the graph can finish; once any part of the run has
//! failed so, the sink lets go the same way. Without one ([`cassandra_sink`]) the time stays
//! held and the durability frontier stops there.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::StreamVec;

use crate::error::Halt;
use crate::model::{Aggregate, WindowKey};
use crate::Time;

mod config;
mod scheduler;
mod schema;
mod session;
#[cfg(test)]
mod tests;

pub use config::*;
use scheduler::*;
pub use schema::*;
pub use session::*;

/// The update stream the sink consumes: `((window, aggregate), time, diff)` with `−old, +new`
/// per change of a window, as produced by the window aggregation operator.
pub type UpdateStream<'scope> = StreamVec<'scope, Time, ((WindowKey, Aggregate), Time, isize)>;

/// Writes every change of the window aggregates to the Cassandra speed views and returns the
/// durability frontier: a data-less stream whose frontier passes a time once every change of
/// that time (or a newer value of its window) has been acknowledged (see the module docs).
///
/// `stats` may be shared with other sinks and read at any time.
pub fn cassandra_sink<'scope>(
    updates: UpdateStream<'scope>,
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
) -> StreamVec<'scope, Time, ()> {
    cassandra_sink_paced(updates, views, stats, Arc::new(|| false), None)
}

/// [`cassandra_sink`], told by `backlogged` whether its input is catching up on a backlog (for
/// example [`crate::source::kafka::KafkaStats::backlogged`]): while it is, every row waits at
/// least [`CassandraSinkConfig::backlog_delay`], so a window's many changes during a catch-up
/// become a few writes and Cassandra's capacity goes to the values that last.
///
/// With `halt`, a row Cassandra refuses for good stops the run (see the module docs).
pub fn cassandra_sink_paced<'scope>(
    updates: UpdateStream<'scope>,
    views: Arc<CassandraViews>,
    stats: Arc<CassandraStats>,
    backlogged: Arc<dyn Fn() -> bool + Send + Sync>,
    halt: Option<Halt>,
) -> StreamVec<'scope, Time, ()> {
    let scope = updates.scope();
    let peers = scope.peers();
    let mut builder = OperatorBuilder::new("CassandraViewSink".to_owned(), scope);
    let pact =
        Exchange::new(|((key, _), _, _): &((WindowKey, Aggregate), Time, isize)| window_hash(key));
    let mut input = builder.new_input(updates, pact);
    let (output, durable) = builder.new_output::<Vec<()>>();
    let address = builder.operator_info().address;
    let activator = scope.activator_for(Rc::clone(&address));
    let waker = Arc::new(Waker {
        activator: scope.worker().sync_activator_for(address.to_vec()),
        armed: AtomicBool::new(false),
        finished: std::sync::Mutex::new(Vec::new()),
        refused: std::sync::Mutex::new(Vec::new()),
    });

    builder.build(move |initial_capabilities| {
        drop(initial_capabilities);
        // Never used to send: kept so the output exists for as long as the operator.
        let _output = output;
        let mut sched = Scheduler::new(views.config());
        sched.share = (views.config().max_queued_rows / peers).max(1);
        // This worker's part of `stats.queued`, the process's sum.
        let mut published_queued = 0u64;
        let batch_rows = views.config().batch_rows.max(1);
        let mut finished = Vec::new();
        move |frontiers| {
            let now = Instant::now();
            // In arrival order (`for_each`, not `for_each_stamp`, which sorts the messages
            // of an activation by time, unstably: two changes of one window at one time
            // could swap). The window's producer sends its changes in order on one channel.
            input.for_each(|cap, data| {
                for ((key, agg), time, diff) in data.drain(..) {
                    // The `+` of a change comes after its `−`, so the last `+` is the window's
                    // latest value (and `change` keeps the larger of two values anyway).
                    if diff <= 0 {
                        continue;
                    }
                    if sched.change(key, agg, now) {
                        stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    let seq = sched.seq;
                    sched
                        .open
                        .entry(time)
                        .or_insert_with(|| (hold(&cap, time), 0))
                        .1 = seq;
                }
            });
            let frontier = frontiers[0].frontier();
            sched.complete(&frontier);
            sched.backlogged = backlogged();

            // Send what is due, oldest change first, in batches, as far as the permits go.
            let sealed_before = frontier.first().copied();
            loop {
                let Ok(permit) = Arc::clone(&views.permits).try_acquire_owned() else {
                    waker.armed.store(true, Ordering::Release);
                    break;
                };
                let mut write = Write {
                    rows: Vec::new(),
                    write_ts: next_write_timestamp(),
                    first_seqs: Vec::new(),
                };
                while write.rows.len() < batch_rows {
                    let Some(dirty) = sched.next_due(now, sealed_before) else {
                        break;
                    };
                    sched.in_flight.insert(dirty.first_seq);
                    write.first_seqs.push(dirty.first_seq);
                    write.rows.push((dirty.key, dirty.agg));
                }
                if write.rows.is_empty() {
                    break;
                }
                stats
                    .in_flight
                    .fetch_add(write.rows.len() as u64, Ordering::Relaxed);
                views.handle.spawn(write_rows(
                    Arc::clone(&views.shared),
                    Arc::clone(&stats),
                    Arc::clone(&waker),
                    permit,
                    write,
                ));
            }

            std::mem::swap(
                &mut finished,
                &mut *waker.finished.lock().expect("waker lock"),
            );
            for seq in finished.drain(..) {
                sched.in_flight.remove(&seq);
            }
            // A refused row stays in flight: its time is never released as durable.
            let refused = std::mem::take(&mut *waker.refused.lock().expect("waker lock"));
            for (key, source) in refused {
                let error = CassandraError::Refused {
                    granularity: key.granularity.to_string(),
                    meter: key.meter.to_string(),
                    window_start: views.shared.calendar.format(key.start),
                    source,
                };
                match &halt {
                    Some(halt) => halt.fail(error),
                    None => tracing::error!("{error}; its time is held"),
                }
            }
            if halt.as_ref().is_some_and(Halt::held) {
                // The run is stopping and commits are held: let the graph finish.
                sched.open.clear();
                sched.completed.clear();
            }
            sched.release();
            let queued = sched.positions.len() as u64;
            if queued >= published_queued {
                stats
                    .queued
                    .fetch_add(queued - published_queued, Ordering::Relaxed);
            } else {
                stats
                    .queued
                    .fetch_sub(published_queued - queued, Ordering::Relaxed);
            }
            published_queued = queued;

            if !sched.in_flight.is_empty() {
                activator.activate_after(POLL_INTERVAL);
            } else if let Some(at) = sched.next_wake() {
                activator.activate_after(at.saturating_duration_since(now).max(POLL_INTERVAL));
            }
            debug_assert!(!sched.is_idle() || sched.completed.is_empty());
        }
    });
    durable
}
