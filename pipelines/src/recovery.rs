//! Crash recovery: killed at any moment (SIGKILL included) and started again with the same
//! command, a pipeline resumes and ends with the views an uninterrupted run would have made.
//!
//! # What is kept, and where
//! - `<out>/_progress.json` ([`Checkpoint`]): the **resume floor** `S` (every window that ends
//!   by `S` is durable in every view: the Parquet files and their manifests, the Cassandra
//!   rows, the dead letters), whether the run completed, and a fingerprint of what it read
//!   and how. It is written durably (temporary file, `fsync`, rename) by [`checkpoint`], an
//!   operator after the sinks' durability frontiers: `S` is the start of the day holding that
//!   frontier, so no window crosses it (windows nest in days).
//! - Kafka offsets, committed under the consumer group with their own floor
//!   ([`wattflow::source::kafka`]); commits are held at `S` (`KafkaStats::commit_limit`), so the
//!   progress file is never behind the offsets.
//!
//! # Resuming
//! A run whose output holds a checkpoint of an incomplete run with the same fingerprint
//! resumes from its floor `S`: history readings before `S` are skipped (they are still parsed,
//! for the hand-over's switch times), Kafka readings before `S` that were read before are
//! skipped, and whatever starts at or after `S` is read again, so every window from `S` on is
//! rebuilt whole by every source. Files are rewritten keeping the windows the run does not
//! produce, and the dead-letter file is appended to, without the records it already holds. A
//! completed run, a changed input or changed settings start afresh. Temporary files a crash
//! left behind are removed at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use wattflow::error::Halt;
use wattflow::sink::parquet::writer::write_durably;
use wattflow::sink::parquet::{At, ParquetSinkError};
use wattflow::time::{format_iso, Calendar};
use wattflow::Time;

/// Name of the progress file in the output folder.
pub const PROGRESS_FILE: &str = "_progress.json";
/// Version of the progress file's format.
pub const PROGRESS_VERSION: u32 = 1;

/// `<out>/_progress.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`PROGRESS_VERSION`].
    pub version: u32,
    /// What the run read and how (see [`fingerprint`]).
    pub fingerprint: String,
    /// The run ended by itself: a new run starts afresh.
    pub complete: bool,
    /// Every window ending at or before this instant (ms) is durable in every view.
    pub resume_from_ms: Option<i64>,
    /// The same, ISO-8601.
    pub resume_from: Option<String>,
}

impl Checkpoint {
    /// The checkpoint of a run that has made nothing durable yet.
    pub fn start(fingerprint: &str) -> Checkpoint {
        Checkpoint {
            version: PROGRESS_VERSION,
            fingerprint: fingerprint.to_owned(),
            complete: false,
            resume_from_ms: None,
            resume_from: None,
        }
    }

    /// The same run, durable up to `floor`.
    pub fn at(&self, floor: i64) -> Checkpoint {
        Checkpoint {
            resume_from_ms: Some(floor),
            resume_from: Some(format_iso(floor)),
            ..self.clone()
        }
    }

    /// Where a run with `fingerprint` resumes from this checkpoint: `Some(floor)` (possibly
    /// `i64::MIN`: nothing was durable) when it was an incomplete run of the same pipeline.
    pub fn resume_for(&self, fingerprint: &str) -> Option<i64> {
        (self.version == PROGRESS_VERSION && !self.complete && self.fingerprint == fingerprint)
            .then(|| self.resume_from_ms.unwrap_or(i64::MIN))
    }
}

/// Reads `<out>/_progress.json`, if there is a readable one.
pub fn read(out: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(out.join(PROGRESS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `<out>/_progress.json` durably.
pub fn write(out: &Path, checkpoint: &Checkpoint) -> Result<(), ParquetSinkError> {
    let text = serde_json::to_string_pretty(checkpoint).at(&out.join(PROGRESS_FILE))? + "\n";
    write_durably(out, PROGRESS_FILE, text.as_bytes())
}

/// A stable fingerprint (FNV-1a of the text) of `parts`: the inputs (path, size, modification
/// time) and every setting that changes the views.
pub fn fingerprint(parts: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The identity of an input file for the fingerprint: path, size, modification time.
pub fn file_identity(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let modified = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}|{size}|{modified}", path.display())
}

/// Writes the progress file as the durability frontier `durable` advances (worker 0 only,
/// when the floor moved to a later day: a few times per partition file in a replay, once a
/// day of event time live), then lets Kafka commit up to the new floor through
/// `commit_limit`. Once `halt`'s commits are held (a sink failed: something behind the
/// frontier may not be durable), the floor moves no more.
pub fn checkpoint(
    durable: StreamVec<'_, Time, ()>,
    calendar: Calendar,
    out: PathBuf,
    start: Checkpoint,
    commit_limit: Arc<AtomicI64>,
    halt: Halt,
    workers_per_process: usize,
) {
    let worker = durable.scope().index();
    let peers = durable.scope().peers();
    let mut written = start.resume_from_ms.unwrap_or(i64::MIN);
    durable.sink(Local, "Checkpoint", move |(input, frontier)| {
        input.for_each(|_, _| {});
        let Some(&f) = frontier.frontier().first() else {
            return;
        };
        if halt.held() {
            return;
        }
        let floor = calendar.day_start(f.min(i64::MAX as Time) as i64);
        if worker != 0 {
            // Another process of a cluster (its first worker): Kafka commits follow the floor
            // process 0 has written, read back from the shared progress file.
            if floor > written && worker % workers_per_process.clamp(1, peers) == 0 {
                if let Some(durable) = read(&out).and_then(|c| c.resume_from_ms) {
                    written = floor.min(durable);
                    commit_limit.fetch_max(written, Ordering::SeqCst);
                }
            }
            return;
        }
        if floor > written {
            match write(&out, &start.at(floor)) {
                Ok(()) => {
                    written = floor;
                    commit_limit.fetch_max(floor, Ordering::SeqCst);
                }
                Err(e) => halt.fail(e),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_resumes_only_an_incomplete_run_of_the_same_pipeline() {
        let c = Checkpoint::start("abc");
        assert_eq!(c.resume_for("abc"), Some(i64::MIN));
        assert_eq!(c.at(86_400_000).resume_for("abc"), Some(86_400_000));
        assert_eq!(c.resume_for("other"), None);
        let done = Checkpoint {
            complete: true,
            ..c.at(5)
        };
        assert_eq!(done.resume_for("abc"), None);
    }

    #[test]
    fn checkpoints_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_none());
        let c = Checkpoint::start("f").at(1_166_227_200_000);
        write(dir.path(), &c).unwrap();
        assert_eq!(read(dir.path()), Some(c));
    }

    #[test]
    fn fingerprints_change_with_any_part() {
        let a = fingerprint(&["x".into(), "y".into()]);
        assert_eq!(a, fingerprint(&["x".into(), "y".into()]));
        assert_ne!(a, fingerprint(&["xy".into()]));
        assert_ne!(a, fingerprint(&["x".into(), "z".into()]));
    }
}
