//! Offsets: where each partition starts, what a restart must read again, and retrying the
//! requests a fresh or busy cluster refuses for a moment.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::Offset;

use crate::source::progress::LatenessWatermark;
use crate::Time;

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

/// One partition a worker reads.
pub(super) struct PartitionState {
    pub(super) partition: i32,
    /// `max(restart floor, largest event time delivered - lateness)`.
    pub(super) lateness: LatenessWatermark,
    /// When the last message (or the start) was seen.
    pub(super) last_message: Instant,
    /// Reached the end of the partition since its last message.
    pub(super) eof: bool,
    /// Counted idle at the last full drain of the queue.
    pub(super) idle: bool,
    /// The consumer reported trouble (a broker unreachable, a connection cut) since the end was
    /// last seen: `eof` is no longer known to hold, the end is asked of the broker again.
    pub(super) end_unknown: bool,
    /// When the end was last forgotten ([`super::worker::Worker::forget_ends`]): only an
    /// answer of the broker asked after it tells where the end is.
    pub(super) end_forgotten: Instant,
    /// When the end was last asked of the broker.
    pub(super) end_asked: Option<Instant>,
    /// Offset of the next message to read, once one was read.
    pub(super) next_offset: Option<i64>,
    /// First offset of a delivered reading, per day start (ms), for days not yet final.
    pub(super) days: BTreeMap<i64, i64>,
    /// Refused messages not yet known durable (their dead letter): `(emit time, offset)`.
    pub(super) refused: VecDeque<(Time, i64)>,
    /// Last committed `(offset, floor)`.
    pub(super) committed: Option<(i64, i64)>,
    /// Readings before this instant are in durable windows (see `reread_until`).
    pub(super) skip_below: i64,
    /// Messages before this offset were read by the run that made the last commit: one of them
    /// below `skip_below` is a re-read, skipped; a later one is too late.
    pub(super) reread_until: i64,
}

impl PartitionState {
    /// A partition starting at `offset`, refusing readings before `floor` (restart floor)
    /// unless they are re-reads of messages before `read` (then they are skipped).
    pub(super) fn new(
        partition: i32,
        offset: Offset,
        lateness_ms: i64,
        floor: i64,
        read: Option<i64>,
        now: Instant,
    ) -> PartitionState {
        let start = match offset {
            Offset::Offset(n) => Some(n),
            _ => None,
        };
        PartitionState {
            partition,
            lateness: LatenessWatermark::new(lateness_ms, floor),
            last_message: now,
            eof: false,
            idle: false,
            end_unknown: false,
            end_forgotten: now,
            end_asked: None,
            next_offset: start,
            days: BTreeMap::new(),
            refused: VecDeque::new(),
            // A resumed partition need not commit again what it was resumed from.
            committed: start.filter(|_| floor != i64::MIN).map(|n| (n, floor)),
            skip_below: floor,
            reread_until: read.unwrap_or(i64::MIN),
        }
    }
}
