//! [`KafkaStats`]: the counters of a Kafka source, shared by the workers of a process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::config::wall_clock_ms;
#[cfg(doc)]
use super::config::BACKLOG_AGE_MS;

/// Counters of a Kafka source, shared by all workers of the process.
#[derive(Debug)]
pub struct KafkaStats {
    /// Messages consumed.
    pub messages: AtomicU64,
    /// Valid readings emitted.
    pub readings: AtomicU64,
    /// Messages refused (undecodable, implausible, from the future, too late).
    pub rejected: AtomicU64,
    /// Payload bytes consumed.
    pub bytes: AtomicU64,
    /// Readings that start before their meter's switch time: covered by history, counted here
    /// and not aggregated again (see [`crate::source::handover`]).
    pub covered: AtomicU64,
    /// Wall clock (ms since the epoch) minus the Kafka timestamp of the newest message read:
    /// how far behind real time the source is (0 before the first message).
    pub behind_ms: std::sync::atomic::AtomicI64,
    /// Readings read again after a restart whose windows were already durable: skipped.
    pub already_durable: AtomicU64,
    /// Set once the history of a hand-over is read and the source follows the topic (at once
    /// without history).
    pub following: std::sync::atomic::AtomicBool,
    /// Offsets are committed only for windows ending at or before this instant (ms; the
    /// pipeline's last checkpoint, so its progress file is never behind the commits);
    /// `i64::MAX`: no limit.
    pub commit_limit: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Raised by a sink that cannot make its output durable (undeliverable dead letters): from
    /// then on no offset is committed, so a restart reads again what was not made durable.
    pub hold_commits: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
    /// Times a worker paused its partitions because the sinks were over their budget.
    pub pauses: AtomicU64,
    /// Workers whose partitions are paused now.
    pub paused_workers: AtomicU64,
    watermarks: Mutex<BTreeMap<usize, i64>>,
    lags: Mutex<BTreeMap<i32, i64>>,
}

impl Default for KafkaStats {
    fn default() -> Self {
        KafkaStats {
            messages: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            behind_ms: Default::default(),
            already_durable: AtomicU64::new(0),
            following: Default::default(),
            commit_limit: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX)),
            hold_commits: Default::default(),
            committed_offsets: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            backlog_seen_ms: Default::default(),
            last_message_ms: Default::default(),
            pauses: AtomicU64::new(0),
            paused_workers: AtomicU64::new(0),
            watermarks: Mutex::new(BTreeMap::new()),
            lags: Mutex::new(BTreeMap::new()),
        }
    }
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

    /// Per partition read by this process, the messages between the next one to read and the
    /// end of the partition, as last seen (updated about once a second).
    pub fn partition_lags(&self) -> Vec<(i32, i64)> {
        let lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        lags.iter().map(|(&p, &l)| (p, l)).collect()
    }

    pub(super) fn set_lag(&self, partition: i32, lag: i64) {
        let mut lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        lags.insert(partition, lag.max(0));
    }

    pub(super) fn publish(&self, worker: usize, watermark: i64) {
        self.registry().insert(worker, watermark);
    }

    pub(super) fn largest_other(&self, worker: usize) -> Option<i64> {
        self.registry()
            .iter()
            .filter(|(&w, _)| w != worker)
            .map(|(_, &t)| t)
            .max()
    }
}
