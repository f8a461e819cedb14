//! Why writing a batch view failed. Every error names the file or folder it is about; a failed
//! write never leaves a partial file in place (see the writer's docs).

use std::path::{Path, PathBuf};

/// Why writing a batch view failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetSinkError {
    /// A file or folder of the view could not be created, read, written, synced or renamed.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: FileFault,
    },
    /// The view was written with another number of files per partition: the meters would then
    /// be in two files of a partition.
    #[error(
        "{}: the view was written with {found} file(s) per partition (buckets = {found}); this \
         run asks for {wanted}: use the same number, or another output folder",
        .manifest.display()
    )]
    Buckets {
        /// The manifest that records the other number.
        manifest: PathBuf,
        /// The number it records.
        found: u32,
        /// The number this run asks for.
        wanted: u32,
    },
    /// The zstd compression level is out of range.
    #[error("Parquet zstd level {level}: {source}")]
    Compression {
        /// The level asked for.
        level: i32,
        /// Parquet's refusal.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The writer thread was gone when a partition was handed to it: the partitions it had
    /// open cannot be written whole any more, so the run fails rather than call them durable.
    #[error("the Parquet writer thread stopped: the partitions it had open were not written")]
    WriterStopped,
    /// A writer thread panicked (found when the sink waits for it at the end).
    #[error("a Parquet writer thread panicked")]
    WriterPanicked,
}

/// What went wrong with one file of a view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileFault {
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Parquet could not encode or decode the file.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow could not build or read a batch of it.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A manifest could not be encoded.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The file in place holds other columns than this version writes.
    #[error("holds other columns than this version writes: move it away to rewrite the view")]
    OtherSchema,
    /// Rows reached the file out of file order: a bug.
    #[error("rows out of file order (a bug: please report it)")]
    OutOfOrder,
}

/// Names the file an error is about: `result.at(path)?` (for io, parquet, arrow and JSON
/// errors, and [`FileFault`]s).
pub trait At<T> {
    /// The error, if any, as a [`ParquetSinkError::File`] about `path`.
    fn at(self, path: &Path) -> Result<T, ParquetSinkError>;
}

impl<T, E: Into<FileFault>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, ParquetSinkError> {
        self.map_err(|e| ParquetSinkError::File {
            path: path.to_path_buf(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_file_and_keeps_its_cause() {
        let missing = std::fs::File::open("/nonexistent/wattflow/part-0.parquet")
            .at(Path::new("/nonexistent/wattflow/part-0.parquet"));
        let e = missing.unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/wattflow/part-0.parquet: "));
        assert!(matches!(
            &e,
            ParquetSinkError::File { source: FileFault::Io(io), .. }
                if io.kind() == std::io::ErrorKind::NotFound
        ));
        assert!(std::error::Error::source(&e).is_some());
        let fault: Result<(), FileFault> = Err(FileFault::OutOfOrder);
        let e = fault.at(Path::new("x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x: rows out of file order (a bug: please report it)"
        );
    }
}
