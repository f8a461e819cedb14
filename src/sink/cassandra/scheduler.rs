//! Which change is written when: routing by window, the per-granularity dirty queues, retries
//! with jittered back-off, bounded in-flight writes, and the capabilities that make the
//! durability frontier.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use timely::dataflow::operators::{Capability, InputCapability};
use tokio::sync::OwnedSemaphorePermit;

use crate::hash::FxMap;
use crate::model::{Aggregate, WindowKey};
use crate::{time, Time};

use super::{
    is_retryable, upsert_values_in, CassandraSinkConfig, CassandraStats, DriverError, Shared,
    QUIET_RETRIES,
};

/// Spreads windows over sink workers with a stable hash of `(meter, granularity, start)`.
pub(super) fn window_hash(key: &WindowKey) -> u64 {
    splitmix(
        key.meter.stable_hash() ^ splitmix(key.start as u64 ^ ((key.granularity as u64) << 62)),
    )
}

pub(super) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The backoff before retry `attempt`: `base` ±20 %, spread by the row's write timestamp so
/// that writes failing together do not come back together.
pub(super) fn jittered(base: Duration, write_ts: i64, attempt: u32) -> Duration {
    let h = splitmix(write_ts as u64 ^ ((attempt as u64) << 48));
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.8 + 0.4 * unit)
}

/// Rows handed to one write task: one upsert, or an unlogged batch of them.
pub(super) struct Write {
    pub(super) rows: Vec<(WindowKey, Aggregate)>,
    pub(super) write_ts: i64,
    /// Sequence number of the oldest change each row makes durable.
    pub(super) first_seqs: Vec<u64>,
}

/// A changed window waiting to be written: its latest value.
pub(super) struct Dirty {
    pub(super) key: WindowKey,
    pub(super) agg: Aggregate,
    /// Sequence number of the first change not yet written.
    pub(super) first_seq: u64,
    /// When that change arrived.
    pub(super) since: Instant,
}

/// Changed windows of one granularity in the order they became dirty (so `first_seq` ascends),
/// addressable by an absolute position so a newer value can replace a queued one in place.
#[derive(Default)]
pub(super) struct DirtyQueue {
    /// Absolute position of `items[0]`.
    pub(super) base: u64,
    pub(super) items: VecDeque<Dirty>,
}

impl DirtyQueue {
    pub(super) fn push(&mut self, dirty: Dirty) -> u64 {
        self.items.push_back(dirty);
        self.base + self.items.len() as u64 - 1
    }

    pub(super) fn get_mut(&mut self, position: u64) -> Option<&mut Dirty> {
        let i = position.checked_sub(self.base)?;
        self.items.get_mut(usize::try_from(i).ok()?)
    }

    pub(super) fn pop(&mut self) -> Option<Dirty> {
        let d = self.items.pop_front()?;
        self.base += 1;
        Some(d)
    }
}

/// Wakes the sink operator from the write tasks.
pub(super) struct Waker {
    pub(super) activator: timely::scheduling::activate::SyncActivator,
    /// Set by the operator while writes wait for permits: the next task to finish wakes it.
    pub(super) armed: AtomicBool,
    /// `first_seq` of the writes finished since the operator last looked.
    pub(super) finished: std::sync::Mutex<Vec<u64>>,
    /// Rows Cassandra refused for good since the operator last looked: never durable.
    pub(super) refused: std::sync::Mutex<Vec<(WindowKey, DriverError)>>,
}

impl Waker {
    pub(super) fn finish(&self, first_seqs: &[u64], refused: Vec<(WindowKey, DriverError)>) {
        self.finished
            .lock()
            .expect("waker lock")
            .extend_from_slice(first_seqs);
        if !refused.is_empty() {
            self.refused.lock().expect("waker lock").extend(refused);
            // The operator must hear of a refusal whether or not it waits for a permit.
            self.armed.store(true, Ordering::Release);
        }
        if self.armed.swap(false, Ordering::AcqRel) {
            // Fails only when the worker is gone; then there is nobody to wake.
            let _ = self.activator.activate();
        }
    }
}

/// Sends `rows` (one upsert, or an unlogged batch of them), retrying retryable failures
/// forever with backoff; returns the error no retry can fix.
async fn send(
    shared: &Shared,
    stats: &CassandraStats,
    rows: &[(WindowKey, Aggregate)],
    write_ts: i64,
) -> Result<(), ExecutionError> {
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values = Vec::with_capacity(rows.len());
    for (key, agg) in rows {
        let view = shared.view(key.granularity);
        let (with_pf, row) = upsert_values_in(&shared.calendar, key, agg, write_ts, view.ttl_s);
        batch.append_statement(if with_pf {
            view.with_pf.clone()
        } else {
            view.without_pf.clone()
        });
        values.push(row);
    }
    // Every row carries its own write timestamp: the batch can be applied any number of times.
    batch.set_is_idempotent(true);
    let (first_key, _) = &rows[0];
    let mut delay = shared.retry_initial;
    let mut attempt = 0u32;
    loop {
        let result = match (&batch.statements[..], &values[..]) {
            ([BatchStatement::PreparedStatement(statement)], [row]) => shared
                .session
                .execute_unpaged(statement, row)
                .await
                .map(|_| ()),
            _ => shared.session.batch(&batch, &values).await.map(|_| ()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if is_retryable(&e) => {
                attempt = attempt.saturating_add(1);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                let wait = jittered(delay, write_ts, attempt);
                if attempt > QUIET_RETRIES {
                    tracing::warn!(
                        meter = %first_key.meter, granularity = %first_key.granularity,
                        window_start = first_key.start, rows = rows.len(), attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e, "Cassandra upsert failed; retrying"
                    );
                } else {
                    tracing::debug!(
                        meter = %first_key.meter, window_start = first_key.start,
                        rows = rows.len(), attempt, error = %e, "Cassandra upsert failed; retrying"
                    );
                }
                tokio::time::sleep(wait).await;
                delay = delay.saturating_mul(2).min(shared.retry_max);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes one row or one unlogged batch of rows (see [`send`]). A batch refused for good
/// (too large for the cluster's `batch_size_fail_threshold`, or holding one bad row) is sent
/// again row by row; a row refused for good is reported to the operator and never counted
/// as durable.
pub(super) async fn write_rows(
    shared: Arc<Shared>,
    stats: Arc<CassandraStats>,
    waker: Arc<Waker>,
    permit: OwnedSemaphorePermit,
    write: Write,
) {
    let rows = write.rows.len() as u64;
    let started = Instant::now();
    let acknowledged = |stats: &CassandraStats, n: u64| {
        stats.write_seconds.observe(started.elapsed());
        stats.rows_written.fetch_add(n, Ordering::Relaxed);
        stats
            .last_ack_unix_us
            .fetch_max(time::now_unix_us() as u64, Ordering::Relaxed);
    };
    let mut done = Vec::with_capacity(write.rows.len());
    let mut refused = Vec::new();
    match send(&shared, &stats, &write.rows, write.write_ts).await {
        Ok(()) => {
            acknowledged(&stats, rows);
            done.extend_from_slice(&write.first_seqs);
        }
        Err(e) if write.rows.len() > 1 => {
            stats.split_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                rows, error = %e,
                "Cassandra refused a batch for good; sending its rows one by one"
            );
            for (row, &seq) in write.rows.iter().zip(&write.first_seqs) {
                match send(&shared, &stats, std::slice::from_ref(row), write.write_ts).await {
                    Ok(()) => {
                        acknowledged(&stats, 1);
                        done.push(seq);
                    }
                    Err(e) => refused.push((row.0, Box::new(e) as DriverError)),
                }
            }
        }
        Err(e) => refused.push((write.rows[0].0, Box::new(e) as DriverError)),
    }
    stats
        .write_errors
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    stats.in_flight.fetch_sub(rows, Ordering::Relaxed);
    // Free the permit before waking, so the woken operator can use it.
    drop(permit);
    waker.finish(&done, refused);
}

/// A time whose updates have all arrived, held until they are durable.
pub(super) struct Completed {
    /// Held for its effect on the output frontier; dropped when durable.
    pub(super) _cap: Option<Capability<Time>>,
    /// Largest sequence number of any change at this time or before.
    pub(super) last_seq: u64,
}

/// A capability for `time` on output 0, from the capability of the message carrying it.
pub(super) fn hold(cap: &InputCapability<Time>, time: Time) -> Option<Capability<Time>> {
    if cap.stamp().iter().any(|s| *s <= time) {
        Some(cap.delayed(&time, 0))
    } else {
        // A record earlier than its message (not produced by wattflow's operators): hold the
        // message's own time, or nothing for a message that makes no progress claims.
        cap.retain_least(0)
    }
}

/// The write scheduler of one sink worker: dirty windows, writes in flight, held times.
pub(super) struct Scheduler {
    pub(super) delays: [Duration; 3],
    pub(super) backlog_delay: Duration,
    /// Whether the input is catching up (then every delay is at least `backlog_delay`).
    pub(super) backlogged: bool,
    /// Sequence number of the last change received.
    pub(super) seq: u64,
    /// Queue position of every dirty window, by window.
    pub(super) positions: FxMap<WindowKey, u64>,
    /// Indexed by `Granularity as usize`.
    pub(super) queues: [DirtyQueue; 3],
    /// `first_seq` of every write sent and not yet finished.
    pub(super) in_flight: std::collections::BTreeSet<u64>,
    /// Times with updates whose input is not complete yet: capability and last change.
    pub(super) open: BTreeMap<Time, (Option<Capability<Time>>, u64)>,
    /// Complete times in time order, not yet durable.
    pub(super) completed: VecDeque<Completed>,
    /// This worker's share of [`CassandraSinkConfig::max_queued_rows`]: with as many rows
    /// queued, the oldest is due whatever its delay.
    pub(super) share: usize,
}

impl Scheduler {
    pub(super) fn new(config: &CassandraSinkConfig) -> Scheduler {
        Scheduler {
            backlog_delay: config.backlog_delay,
            backlogged: false,
            delays: [config.minute_delay, config.hour_delay, config.day_delay],
            seq: 0,
            positions: FxMap::default(),
            queues: Default::default(),
            in_flight: Default::default(),
            open: BTreeMap::new(),
            completed: VecDeque::new(),
            share: config.max_queued_rows.max(1),
        }
    }

    /// Records the new value of a window; returns whether it replaced a queued value.
    pub(super) fn change(&mut self, key: WindowKey, agg: Aggregate, now: Instant) -> bool {
        self.seq += 1;
        let queue = &mut self.queues[key.granularity as usize];
        if let Some(dirty) = self.positions.get(&key).and_then(|p| queue.get_mut(*p)) {
            // Readings are insert-only and every change adds at least one, so of two values
            // of a window the one with more samples is the newer, whatever order they came in.
            if agg.samples >= dirty.agg.samples {
                dirty.agg = agg;
            }
            return true;
        }
        let position = queue.push(Dirty {
            key,
            agg,
            first_seq: self.seq,
            since: now,
        });
        self.positions.insert(key, position);
        false
    }

    /// Moves the times the input frontier has passed to `completed`.
    pub(super) fn complete(
        &mut self,
        frontier: &timely::progress::frontier::AntichainRef<'_, Time>,
    ) {
        while let Some(entry) = self.open.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let (cap, last_seq) = entry.remove();
            let last_seq = last_seq.max(self.completed.back().map_or(0, |c| c.last_seq));
            self.completed.push_back(Completed {
                _cap: cap,
                last_seq,
            });
        }
    }

    /// The oldest dirty window that is due: its delay has passed, it is sealed (its end is
    /// at or behind the input frontier, `sealed_before`), the input has ended (`None`), or the
    /// queues hold this worker's [`Scheduler::share`] of rows.
    pub(super) fn next_due(&mut self, now: Instant, sealed_before: Option<Time>) -> Option<Dirty> {
        let sealed_before = if self.positions.len() >= self.share {
            None
        } else {
            sealed_before
        };
        let mut best: Option<usize> = None;
        for (g, queue) in self.queues.iter().enumerate() {
            let Some(front) = queue.items.front() else {
                continue;
            };
            let due = match sealed_before {
                None => true,
                Some(f) => {
                    now.duration_since(front.since) >= self.delay(g)
                        || front
                            .key
                            .start
                            .saturating_add(front.key.granularity.len_ms())
                            <= f.min(i64::MAX as Time) as i64
                }
            };
            let older = best.is_none_or(|b| {
                self.queues[b].items.front().map(|d| d.first_seq) > Some(front.first_seq)
            });
            if due && older {
                best = Some(g);
            }
        }
        let dirty = self.queues[best?].pop()?;
        self.positions.remove(&dirty.key);
        Some(dirty)
    }

    /// The delay of granularity index `g` now.
    pub(super) fn delay(&self, g: usize) -> Duration {
        if self.backlogged {
            self.delays[g].max(self.backlog_delay)
        } else {
            self.delays[g]
        }
    }

    /// When the oldest not-yet-due window becomes due, if any is waiting.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(g, q)| q.items.front().map(|d| d.since + self.delay(g)))
            .min()
    }

    /// Releases the capabilities of the completed times whose changes are all written.
    pub(super) fn release(&mut self) {
        let pending = self
            .queues
            .iter()
            .filter_map(|q| q.items.front().map(|d| d.first_seq))
            .chain(self.in_flight.first().copied())
            .min()
            .unwrap_or(u64::MAX);
        while self.completed.front().is_some_and(|c| c.last_seq < pending) {
            self.completed.pop_front();
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.queues.iter().all(|q| q.items.is_empty()) && self.in_flight.is_empty()
    }
}
