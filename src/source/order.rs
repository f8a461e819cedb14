//! File order that every worker agrees on: how "too late" is judged the same way whatever the
//! number of workers reading a file.
//!
//! A history file is cut into chunks by a rule that does not depend on the worker count (text:
//! [`crate::source::file::FileSourceConfig::chunk_bytes`] aligned to line starts; gzip: read
//! whole by one worker; Parquet: its row groups). Chunk `k` of an input has a *maximum*
//! `M(k)`: the largest event time of its rows that can count (parsed, not before the restart
//! floor, before the switch to live). The *prefix* `P(k)` is the largest of `M(0) .. M(k-1)`.
//!
//! A row of chunk `k` is too late when its time is before `max(P(k), earlier rows of chunk
//! k) - lateness`: exactly what one worker reading the whole file in order would decide, so the
//! views and the refusals are the same for any `--workers`, in order or not. (A row refused as
//! late is behind a maximum already, so it never moves a prefix: `P` needs the maxima only.)
//!
//! Workers read their chunks in parallel and broadcast each chunk's maximum as soon as it is
//! parsed; every worker keeps a [`FileOrder`] of the maxima it has heard of. A parsed chunk
//! waits until the maxima of all earlier chunks are known, then is judged and emitted. The
//! source's capability for an input is `P(next chunk) - lateness` (as far as the worker knows:
//! `P` after its last judged chunk), which is not after any reading it will still emit, and
//! only grows with the file order. So the worker holding the least capability never waits for
//! the graph to drain (its earlier batches are all before it), and it waits on the maxima only
//! for chunks of workers whose capabilities are no greater: the wait always ends.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// The chunk maxima a worker has heard of, per input; see the module docs.
#[derive(Debug, Default)]
pub struct FileOrder {
    inputs: HashMap<u32, InputOrder>,
    /// Inputs a worker could not read to their end: nobody waits on their maxima.
    failed: HashSet<u32>,
}

/// The chunk number a worker broadcasts for an input it failed to read (see
/// [`FileOrder::record`]).
pub const FAILED_CHUNK: u64 = u64::MAX;

#[derive(Debug)]
struct InputOrder {
    /// Chunk index of `prefix[0]`.
    base: u64,
    /// `prefix[i]` is `P(base + i)`; the last is the prefix of the first chunk whose maximum is
    /// not known yet.
    prefix: VecDeque<i64>,
    /// Maxima heard of beyond the known prefix.
    ahead: BTreeMap<u64, i64>,
}

impl Default for InputOrder {
    fn default() -> Self {
        InputOrder {
            base: 0,
            prefix: VecDeque::from([i64::MIN]),
            ahead: BTreeMap::new(),
        }
    }
}

impl InputOrder {
    /// Chunks `0 .. known()` have known maxima.
    fn known(&self) -> u64 {
        self.base + self.prefix.len() as u64 - 1
    }
}

impl FileOrder {
    /// Records that chunk `chunk` of `input` has maximum `max` (`i64::MIN`: no row that
    /// counts). Hearing of a chunk twice changes nothing. Chunk [`FAILED_CHUNK`] says the input
    /// failed (its error fails the run): see [`FileOrder::failed`].
    pub fn record(&mut self, input: u32, chunk: u64, max: i64) {
        if chunk == FAILED_CHUNK {
            self.failed.insert(input);
            return;
        }
        let order = self.inputs.entry(input).or_default();
        if chunk < order.known() {
            return;
        }
        order.ahead.insert(chunk, max);
        while let Some(max) = order.ahead.remove(&order.known()) {
            let last = *order.prefix.back().expect("a prefix is never empty");
            order.prefix.push_back(last.max(max));
        }
    }

    /// `P(chunk)`, the largest event time of the chunks before `chunk`, once all of their
    /// maxima are known (`i64::MIN` for the first chunk, or when none has a row that counts).
    /// `None` while one is missing, or if `chunk` was forgotten.
    pub fn prefix(&self, input: u32, chunk: u64) -> Option<i64> {
        if chunk == 0 {
            return Some(i64::MIN);
        }
        let order = self.inputs.get(&input)?;
        let i = chunk.checked_sub(order.base)?;
        order.prefix.get(usize::try_from(i).ok()?).copied()
    }

    /// Forgets the prefixes of the chunks before `chunk` of `input` (this worker will not ask
    /// for them again), so the record stays as long as the chunks in flight, not the file.
    pub fn forget_before(&mut self, input: u32, chunk: u64) {
        let Some(order) = self.inputs.get_mut(&input) else {
            return;
        };
        while order.base < chunk && order.prefix.len() > 1 {
            order.prefix.pop_front();
            order.base += 1;
        }
    }

    /// Some worker failed to read `input`: the maxima of its later chunks will never come,
    /// and chunks waiting on them are dropped (the run fails with that worker's error).
    pub fn failed(&self, input: u32) -> bool {
        self.failed.contains(&input)
    }

    /// How many chunks of `input`, from the first, have known maxima.
    pub fn known(&self, input: u32) -> u64 {
        self.inputs.get(&input).map_or(0, InputOrder::known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_known_once_every_earlier_maximum_is() {
        let mut order = FileOrder::default();
        assert_eq!(order.prefix(0, 0), Some(i64::MIN));
        assert_eq!(order.prefix(0, 1), None);
        // Heard out of order: chunk 2 first, then 0, then 1.
        order.record(0, 2, 500);
        assert_eq!(order.known(0), 0);
        assert_eq!(order.prefix(0, 3), None);
        order.record(0, 0, 100);
        assert_eq!(order.prefix(0, 1), Some(100));
        assert_eq!(order.prefix(0, 2), None);
        // A chunk with no row that counts keeps the prefix.
        order.record(0, 1, i64::MIN);
        assert_eq!(order.known(0), 3);
        assert_eq!(order.prefix(0, 2), Some(100));
        assert_eq!(order.prefix(0, 3), Some(500));
        // A smaller maximum later never lowers the prefix.
        order.record(0, 3, 200);
        assert_eq!(order.prefix(0, 4), Some(500));
        // Hearing twice changes nothing; inputs are separate.
        order.record(0, 0, 9_999);
        assert_eq!(order.prefix(0, 1), Some(100));
        assert_eq!(order.prefix(1, 1), None);
        assert!(!order.failed(0));
        order.record(1, FAILED_CHUNK, i64::MIN);
        assert!(order.failed(1) && !order.failed(0));
        assert_eq!(order.known(1), 0);
    }

    #[test]
    fn forgotten_prefixes_are_gone_and_the_rest_stay() {
        let mut order = FileOrder::default();
        for k in 0..10 {
            order.record(7, k, k as i64 * 10);
        }
        order.forget_before(7, 6);
        assert_eq!(order.prefix(7, 5), None);
        assert_eq!(order.prefix(7, 6), Some(50));
        assert_eq!(order.prefix(7, 10), Some(90));
        // The first chunk's prefix needs no record.
        assert_eq!(order.prefix(7, 0), Some(i64::MIN));
        // Forgetting past what is known keeps the last prefix.
        order.forget_before(7, 100);
        assert_eq!(order.prefix(7, 10), Some(90));
        assert_eq!(order.known(7), 10);
        order.record(7, 10, 5);
        assert_eq!(order.prefix(7, 11), Some(90));
    }
}
