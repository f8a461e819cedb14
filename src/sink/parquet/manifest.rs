//! `_manifest.json`: per granularity, the files of the view, their rows and samples, and the
//! sealed high-water mark. Updated as soon as files are durable (a batch of files that finished
//! close together at once), before their windows count as durable for the source positions, so
//! after a crash it lists no file that is not on disk, and a file on disk that it does not list
//! yet is rewritten by the resumed run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::{At, ParquetSinkError};
use super::writer::write_durably;
use super::MANIFEST_FILE;
use crate::model::Granularity;
use crate::time::format_iso;

/// Serializes the manifest updates of this process (the writer threads of all workers).
static MANIFEST_LOCK: Mutex<()> = Mutex::new(());

/// One written file, as recorded in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Path relative to the granularity folder.
    pub path: String,
    /// Rows (windows) in the file.
    pub rows: u64,
    /// Σ samples over the rows.
    pub samples: u64,
    /// First window start, naive ISO-8601.
    pub first_window: String,
    /// Last window start.
    pub last_window: String,
    /// End of the last window, ms since the epoch.
    pub last_window_end_ms: i64,
}

/// `_manifest.json` of one granularity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `minute`, `hour` or `day`.
    pub granularity: String,
    /// Windows ending at or before this instant are sealed and final in the view (ms).
    pub sealed_through_ms: i64,
    /// The same, naive ISO-8601.
    pub sealed_through: String,
    /// Rows over all files.
    pub rows: u64,
    /// Readings over all rows.
    pub samples: u64,
    /// Files per partition (meter buckets, `part-<bucket>.parquet`).
    #[serde(default = "one_bucket")]
    pub buckets: u32,
    /// Files, sorted by path.
    pub partitions: Vec<PartitionEntry>,
}

fn one_bucket() -> u32 {
    1
}

/// Refuses to write views of `buckets` files per partition into `out` when a manifest there
/// records another number: the meters would then be in two files of a partition.
pub fn check_buckets(out: &Path, buckets: u32) -> Result<(), ParquetSinkError> {
    for g in Granularity::ALL {
        if let Some(m) = read_manifest(out, g) {
            if m.buckets != buckets {
                return Err(ParquetSinkError::Buckets {
                    manifest: out.join(g.name()).join(MANIFEST_FILE),
                    found: m.buckets,
                    wanted: buckets,
                });
            }
        }
    }
    Ok(())
}

/// Reads a granularity's manifest, if there is one.
pub fn read_manifest(out: &Path, granularity: Granularity) -> Option<Manifest> {
    let text = std::fs::read_to_string(out.join(granularity.name()).join(MANIFEST_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Merges `written` files into the granularity's manifest (entries for rewritten partitions
/// are replaced, others kept) and writes it through a temporary file, synced before and
/// after the rename. Updates of one process are serialized.
pub fn update_manifest(
    out: &Path,
    granularity: Granularity,
    buckets: u32,
    written: &[PartitionEntry],
) -> Result<Manifest, ParquetSinkError> {
    let _one_at_a_time = MANIFEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // And one process at a time: the processes of a cluster share the manifests.
    let dir = out.join(granularity.name());
    std::fs::create_dir_all(&dir).at(&dir)?;
    let lock_path = dir.join(".manifest.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    let mut by_path: BTreeMap<String, PartitionEntry> = read_manifest(out, granularity)
        .map(|m| {
            m.partitions
                .into_iter()
                .map(|p| (p.path.clone(), p))
                .collect()
        })
        .unwrap_or_default();
    for entry in written {
        by_path.insert(entry.path.clone(), entry.clone());
    }
    let partitions: Vec<PartitionEntry> = by_path.into_values().collect();
    let sealed_through_ms = partitions
        .iter()
        .map(|p| p.last_window_end_ms)
        .max()
        .unwrap_or(0);
    let manifest = Manifest {
        granularity: granularity.name().to_owned(),
        sealed_through_ms,
        sealed_through: format_iso(sealed_through_ms),
        rows: partitions.iter().map(|p| p.rows).sum(),
        samples: partitions.iter().map(|p| p.samples).sum(),
        buckets,
        partitions,
    };
    let text = serde_json::to_string_pretty(&manifest).at(&dir.join(MANIFEST_FILE))? + "\n";
    write_durably(&dir, MANIFEST_FILE, text.as_bytes())?;
    Ok(manifest)
}
