//! The fatal errors of a running graph, collected from every worker for the end of the run.
//!
//! Bad records never fail a run: they are refused and dead-lettered. What fails it is a part of
//! the graph that cannot go on (an input file vanishing mid-run, a view that cannot be written,
//! a dead-letter path that cannot keep its refusals). The operator that meets such an error
//! pushes it to the run's [`RunErrors`] and lets its times go, so the graph can finish; the
//! pipeline then fails with every error it collected, each naming what it is about.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sink::dead_letter::DeadLetterError;
use crate::source::file::SourceError;

/// One fatal error of a running graph; see the module docs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A history input could not be read any further.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The Kafka source could not start.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Kafka(#[from] crate::source::kafka::KafkaError),
    /// A batch view (or the progress file beside it) could not be written.
    #[cfg(feature = "parquet")]
    #[error(transparent)]
    Parquet(#[from] crate::sink::parquet::ParquetSinkError),
    /// The dead-letter path could not keep a refusal.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// A speed view could not be written.
    #[cfg(feature = "cassandra")]
    #[error(transparent)]
    Cassandra(#[from] crate::sink::cassandra::CassandraError),
}

/// How an operator that meets a fatal error stops the run: commits stop first (nothing may be
/// committed, nor checkpointed, past what was not made durable), then the error is logged and
/// recorded, then the sources are told to stop. Clones share the flags and the list.
#[derive(Clone, Debug, Default)]
pub struct Halt {
    /// Where the error goes.
    pub errors: RunErrors,
    /// Raised to end the sources gracefully.
    pub stop: Arc<AtomicBool>,
    /// Raised before anything else: no offset commit or checkpoint may follow.
    pub hold_commits: Arc<AtomicBool>,
}

impl Halt {
    /// Stops the run for `error` (see the type's docs).
    pub fn fail(&self, error: impl Into<RunError>) {
        self.hold_commits.store(true, Ordering::SeqCst);
        let error = error.into();
        tracing::error!("{error}");
        self.errors.push(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the run for an error that its operator reports itself (a sink with a report of
    /// its own, such as the batch views'): as [`Halt::fail`], without recording it here.
    pub fn stop_for(&self, error: &dyn std::fmt::Display) {
        self.hold_commits.store(true, Ordering::SeqCst);
        tracing::error!("{error}");
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a fatal error has held the commits.
    pub fn held(&self) -> bool {
        self.hold_commits.load(Ordering::SeqCst)
    }
}

/// The fatal errors of one run, shared by every worker and operator (clones share the list).
#[derive(Clone, Debug, Default)]
pub struct RunErrors(Arc<Mutex<Vec<RunError>>>);

impl RunErrors {
    /// An empty list.
    pub fn new() -> RunErrors {
        RunErrors::default()
    }

    /// Records `error`.
    pub fn push(&self, error: impl Into<RunError>) {
        self.lock().push(error.into());
    }

    /// No error so far.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The errors so far, in the order they came; the list is then empty.
    pub fn take(&self) -> Vec<RunError> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RunError>> {
        // A worker that panicked holding the lock left the list whole: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_list_and_take_empties_it() {
        let errors = RunErrors::new();
        let other = errors.clone();
        assert!(errors.is_empty());
        other.push(SourceError::Io {
            path: "/gone.txt".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert!(!errors.is_empty());
        let taken = errors.take();
        assert_eq!(taken.len(), 1);
        assert!(matches!(taken[0], RunError::Source(SourceError::Io { .. })));
        assert!(taken[0].to_string().starts_with("/gone.txt: "));
        assert!(other.is_empty());
    }
}
