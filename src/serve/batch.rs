//! Reading the batch views back: the files a granularity's manifest lists, pruned to the row
//! groups whose `window_start` range overlaps the query.
//!
//! Only the files in `_manifest.json` are read: a file is listed once it is durable and its
//! windows sealed, so a file being rewritten by a resumed run (on disk, not yet listed) is
//! never half-read. Each file's footer (row groups and their `window_start` statistics) is
//! loaded once and kept while the file's size and modification time stay the same; the
//! manifest is looked at again (one `stat`) on every query, so a running pipeline's new files
//! appear at once.
//!
//! A row group is read `meter` and `window_start` first (a row filter), the other columns
//! only for the rows they select. The decoded rows of one meter in one row group are then
//! kept (up to [`DEFAULT_CACHE_ROWS`] rows in all, oldest dropped first, re-read when the
//! file changes), so the dashboard's repeated and overlapping queries decode nothing again:
//! a file's rows never change while its size and modification time stay the same.
//!
//! A reader that needs a few columns of many rows (the insights read a year of minutes for
//! the baseload) asks [`BatchViews::rows_projected`]: only those columns are decompressed
//! and decoded (the others are `NaN` in the rows), rows already kept are used, and nothing
//! is added to the cache, which such a scan would only flush.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter,
};
use parquet::file::statistics::Statistics;

use super::row::{MeasureValues, Source, ViewRow};
use super::ServeError;
use crate::model::{Granularity, Measure, MeterId, MEASURES};
use crate::sink::parquet::{bucket_of, read_manifest, Manifest, MANIFEST_FILE};

/// The batch views under one output folder (`<dir>/minute`, `<dir>/hour`, `<dir>/day`).
#[derive(Debug)]
pub struct BatchViews {
    dir: PathBuf,
    cache: Mutex<BTreeMap<Granularity, Arc<Indexed>>>,
    rows: Mutex<RowCache>,
}

/// Rows per [`BatchViews`] kept decoded by default (about 350 bytes each: some 90 MiB).
pub const DEFAULT_CACHE_ROWS: usize = 1 << 18;

type GroupKey = (PathBuf, usize, String);

/// One meter's decoded rows of recently read row groups, dropped oldest first past a budget
/// of rows. A file that changed (its size or modification time) is read again.
#[derive(Debug, Default)]
struct RowCache {
    budget: usize,
    used: usize,
    groups: std::collections::HashMap<GroupKey, (Option<Stamp>, Arc<Vec<ViewRow>>)>,
    order: std::collections::VecDeque<GroupKey>,
}

impl RowCache {
    fn get(&self, key: &GroupKey, stamp: Option<Stamp>) -> Option<Arc<Vec<ViewRow>>> {
        let (s, rows) = self.groups.get(key)?;
        (*s == stamp).then(|| Arc::clone(rows))
    }

    fn put(&mut self, key: GroupKey, stamp: Option<Stamp>, rows: Arc<Vec<ViewRow>>) {
        if rows.len() > self.budget {
            return;
        }
        if let Some((_, old)) = self.groups.remove(&key) {
            self.used -= old.len();
            self.order.retain(|k| k != &key);
        }
        while self.used + rows.len() > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, old)) = self.groups.remove(&oldest) {
                self.used -= old.len();
            }
        }
        self.used += rows.len();
        self.order.push_back(key.clone());
        self.groups.insert(key, (stamp, rows));
    }
}

/// A granularity's manifest and the footers of its files.
#[derive(Debug)]
struct Indexed {
    stamp: Option<Stamp>,
    manifest: Option<Manifest>,
    files: Vec<Arc<FileIndex>>,
}

/// What tells a file changed: its length and modification time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// One file of a view: its bucket, end of its last window, footer and row-group ranges.
#[derive(Debug)]
struct FileIndex {
    path: PathBuf,
    stamp: Option<Stamp>,
    /// The meter bucket of `part-<bucket>.parquet`.
    bucket: u32,
    last_window_end_ms: i64,
    metadata: ArrowReaderMetadata,
    /// Per row group, the smallest and largest `window_start` (`None`: no statistics, always read).
    groups: Vec<Option<(i64, i64)>>,
    /// The meters in the file, loaded on first use.
    meters: Mutex<Option<Arc<BTreeSet<String>>>>,
}

fn bucket_of_path(path: &str) -> u32 {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_prefix("part-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> ServeError {
    ServeError::Batch {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl FileIndex {
    fn load(path: PathBuf, bucket: u32, last_window_end_ms: i64) -> Result<FileIndex, ServeError> {
        let stamp = Stamp::of(&path);
        let file = File::open(&path).map_err(|e| parquet_error(&path, e))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| parquet_error(&path, e))?;
        let column = metadata
            .schema()
            .index_of("window_start")
            .map_err(|e| parquet_error(&path, e))?;
        let groups = metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| match rg.column(column).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(&a), Some(&b)) => Some((a, b)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok(FileIndex {
            path,
            stamp,
            bucket,
            last_window_end_ms,
            metadata,
            groups,
            meters: Mutex::new(None),
        })
    }

    fn open(&self) -> Result<ParquetRecordBatchReaderBuilder<File>, ServeError> {
        let file = File::open(&self.path).map_err(|e| parquet_error(&self.path, e))?;
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file,
            self.metadata.clone(),
        ))
    }

    fn meters(&self) -> Result<Arc<BTreeSet<String>>, ServeError> {
        let mut cached = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &*cached {
            return Ok(Arc::clone(m));
        }
        let builder = self.open()?;
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            std::iter::once("meter"),
        );
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| parquet_error(&self.path, e))?;
        let mut meters = BTreeSet::new();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_error(&self.path, e))?;
            let column = batch.column(0).as_string::<i32>();
            for i in 0..column.len() {
                if !meters.contains(column.value(i)) {
                    meters.insert(column.value(i).to_owned());
                }
            }
        }
        let meters = Arc::new(meters);
        *cached = Some(Arc::clone(&meters));
        Ok(meters)
    }
}

/// Column positions of a view file's schema, or of the projection read from it (`None`: the
/// column was not read).
struct Columns {
    window_start: usize,
    samples: usize,
    covered: usize,
    /// Per measure: sum, min, max, avg.
    measures: [[Option<usize>; 4]; MEASURES],
    energy: Option<usize>,
    unmetered: Option<usize>,
    power_factor: Option<usize>,
}

impl Columns {
    /// The positions in `batch`; with `all`, every column of the contract must be there.
    fn of(batch: &RecordBatch, path: &Path, all: bool) -> Result<Columns, ServeError> {
        let schema = batch.schema();
        let missing = |name: &str| parquet_error(path, format!("no column {name}"));
        let find = |name: &str| schema.index_of(name).map_err(|_| missing(name));
        let value = |name: &str| match schema.index_of(name) {
            Ok(i) => Ok(Some(i)),
            Err(_) if !all => Ok(None),
            Err(_) => Err(missing(name)),
        };
        let mut measures = [[None; 4]; MEASURES];
        for m in Measure::ALL {
            for (j, stat) in ["sum", "min", "max", "avg"].iter().enumerate() {
                measures[m.index()][j] = value(&format!("{}_{stat}", m.name()))?;
            }
        }
        Ok(Columns {
            window_start: find("window_start")?,
            samples: find("samples")?,
            covered: find("covered_seconds")?,
            measures,
            energy: value("active_energy_wh")?,
            unmetered: value("unmetered_wh")?,
            power_factor: value("power_factor_avg")?,
        })
    }
}

/// The columns every row needs, whatever else is projected.
const KEY_COLUMNS: [&str; 4] = ["meter", "window_start", "samples", "covered_seconds"];

impl BatchViews {
    /// The views under `dir` (which may not exist yet: then every view is empty).
    pub fn open(dir: impl Into<PathBuf>) -> BatchViews {
        BatchViews {
            dir: dir.into(),
            cache: Mutex::new(BTreeMap::new()),
            rows: Mutex::new(RowCache {
                budget: DEFAULT_CACHE_ROWS,
                ..RowCache::default()
            }),
        }
    }

    /// Keeps at most `rows` decoded rows (0: none; every query decodes what it reads).
    pub fn with_cache_rows(self, rows: usize) -> BatchViews {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).budget = rows;
        self
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The granularity's manifest and file footers, reloaded if the manifest changed.
    fn indexed(&self, granularity: Granularity) -> Result<Arc<Indexed>, ServeError> {
        let manifest_path = self.dir.join(granularity.name()).join(MANIFEST_FILE);
        let stamp = Stamp::of(&manifest_path);
        let old = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&granularity).cloned()
        };
        if let Some(old) = &old {
            if old.stamp == stamp {
                return Ok(Arc::clone(old));
            }
        }
        let manifest = match stamp {
            None => None,
            Some(_) => Some(read_manifest(&self.dir, granularity).ok_or_else(|| {
                parquet_error(
                    &manifest_path,
                    "unreadable manifest (not the JSON of a view manifest)",
                )
            })?),
        };
        let mut files = Vec::new();
        if let Some(m) = &manifest {
            let reuse: BTreeMap<&Path, &Arc<FileIndex>> = old
                .iter()
                .flat_map(|o| o.files.iter())
                .map(|f| (f.path.as_path(), f))
                .collect();
            for entry in &m.partitions {
                let path = self.dir.join(granularity.name()).join(&entry.path);
                let file = match reuse.get(path.as_path()) {
                    Some(f) if f.stamp == Stamp::of(&path) => Arc::clone(f),
                    _ => Arc::new(FileIndex::load(
                        path,
                        bucket_of_path(&entry.path),
                        entry.last_window_end_ms,
                    )?),
                };
                files.push(file);
            }
        }
        let indexed = Arc::new(Indexed {
            stamp,
            manifest,
            files,
        });
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(granularity, Arc::clone(&indexed));
        Ok(indexed)
    }

    /// The granularity's manifest, if the view has one.
    pub fn manifest(&self, granularity: Granularity) -> Result<Option<Manifest>, ServeError> {
        Ok(self.indexed(granularity)?.manifest.clone())
    }

    /// The sealed high-water mark of `meter`'s windows in a view: every window of the meter
    /// that ends at or before it is final and in the view's files (absent ones had no
    /// readings). With one file per partition it is the manifest's `sealed_through`; with
    /// several meter buckets, that of the files of the meter's bucket, since the buckets of a
    /// partition are written one after the other. `None` when the view has no file.
    pub fn sealed_through(
        &self,
        granularity: Granularity,
        meter: &str,
    ) -> Result<Option<i64>, ServeError> {
        let indexed = self.indexed(granularity)?;
        let Some(manifest) = &indexed.manifest else {
            return Ok(None);
        };
        let buckets = manifest.buckets.max(1);
        let bucket = match MeterId::new(meter) {
            Ok(id) => bucket_of(&id, buckets),
            Err(_) => return Ok(None),
        };
        Ok(indexed
            .files
            .iter()
            .filter(|f| buckets == 1 || f.bucket == bucket)
            .map(|f| f.last_window_end_ms)
            .max())
    }

    /// The meters with rows in the day view.
    pub fn meters(&self) -> Result<BTreeSet<String>, ServeError> {
        let indexed = self.indexed(Granularity::Day)?;
        let mut out = BTreeSet::new();
        for f in &indexed.files {
            out.extend(f.meters()?.iter().cloned());
        }
        Ok(out)
    }

    /// `meter`'s rows of a view whose window starts in `[from_ms, to_ms)`, in window order,
    /// reading only the row groups whose `window_start` range overlaps it.
    pub fn rows(
        &self,
        granularity: Granularity,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ViewRow>, ServeError> {
        self.read(granularity, meter, from_ms, to_ms, None)
    }

    /// [`BatchViews::rows`] with only the value `columns` decoded (contract names, e.g.
    /// `global_active_power_avg`; `window_start`, `samples` and `covered_seconds` always).
    /// Rows the cache keeps are used whole, and nothing is added to it (see the module
    /// docs); in the rows read here the other values are `NaN` (no power factor).
    pub fn rows_projected(
        &self,
        granularity: Granularity,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
        columns: &[&str],
    ) -> Result<Vec<ViewRow>, ServeError> {
        self.read(granularity, meter, from_ms, to_ms, Some(columns))
    }

    fn read(
        &self,
        granularity: Granularity,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
        projection: Option<&[&str]>,
    ) -> Result<Vec<ViewRow>, ServeError> {
        let mut out = Vec::new();
        if from_ms >= to_ms {
            return Ok(out);
        }
        let indexed = self.indexed(granularity)?;
        let buckets = indexed.manifest.as_ref().map_or(1, |m| m.buckets.max(1));
        let bucket = MeterId::new(meter).map(|id| bucket_of(&id, buckets)).ok();
        for file in &indexed.files {
            if buckets > 1 && Some(file.bucket) != bucket {
                continue;
            }
            let groups: Vec<usize> = file
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.is_none_or(|(a, b)| a < to_ms && b >= from_ms))
                .map(|(i, _)| i)
                .collect();
            let caching = self.rows.lock().unwrap_or_else(|e| e.into_inner()).budget > 0;
            if !caching {
                if !groups.is_empty() {
                    read_groups(file, groups, meter, from_ms, to_ms, projection, &mut out)?;
                }
                continue;
            }
            // Whole row groups of the meter, decoded once and kept.
            for g in groups {
                let key = (file.path.clone(), g, meter.to_owned());
                let cached = self
                    .rows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key, file.stamp);
                let rows = match cached {
                    Some(rows) => rows,
                    // A projection reads what it needs, and keeps nothing.
                    None if projection.is_some() => {
                        read_groups(file, vec![g], meter, from_ms, to_ms, projection, &mut out)?;
                        continue;
                    }
                    None => {
                        let mut rows = Vec::new();
                        read_groups(file, vec![g], meter, i64::MIN, i64::MAX, None, &mut rows)?;
                        let rows = Arc::new(rows);
                        self.rows.lock().unwrap_or_else(|e| e.into_inner()).put(
                            key,
                            file.stamp,
                            Arc::clone(&rows),
                        );
                        rows
                    }
                };
                let a = rows.partition_point(|r| r.window_start < from_ms);
                let b = rows.partition_point(|r| r.window_start < to_ms);
                out.extend_from_slice(&rows[a..b]);
            }
        }
        out.sort_by_key(|r| r.window_start);
        Ok(out)
    }
}

/// Reads `meter`'s rows with a window start in `[from_ms, to_ms)` from row groups of a file:
/// the meter and window_start columns first, the others (all, or the key columns and
/// `projection`) only for the rows they select. Rows come in file order, which is window
/// order within a meter.
fn read_groups(
    file: &FileIndex,
    groups: Vec<usize>,
    meter: &str,
    from_ms: i64,
    to_ms: i64,
    projection: Option<&[&str]>,
    out: &mut Vec<ViewRow>,
) -> Result<(), ServeError> {
    let mut builder = file.open()?.with_row_groups(groups);
    if let Some(columns) = projection {
        let names = KEY_COLUMNS.iter().chain(columns.iter()).copied();
        let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), names);
        builder = builder.with_projection(mask);
    }
    let mask = parquet::arrow::ProjectionMask::columns(
        builder.parquet_schema(),
        ["meter", "window_start"],
    );
    let wanted = meter.to_owned();
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let (meters, starts) = (batch.column(0), batch.column(1));
        let meters = meters.as_string_opt::<i32>();
        let starts = starts.as_primitive_opt::<TimestampMillisecondType>();
        let (Some(meters), Some(starts)) = (meters, starts) else {
            return Err(arrow_schema::ArrowError::SchemaError(
                "meter must be text and window_start a millisecond timestamp".into(),
            ));
        };
        Ok((0..batch.num_rows())
            .map(|i| {
                let t = starts.value(i);
                Some(t >= from_ms && t < to_ms && meters.value(i) == wanted)
            })
            .collect::<BooleanArray>())
    });
    let reader = builder
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .with_batch_size(8192)
        .build()
        .map_err(|e| parquet_error(&file.path, e))?;
    let mut columns = None;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_error(&file.path, e))?;
        let c = match &columns {
            Some(c) => c,
            None => columns.insert(Columns::of(&batch, &file.path, projection.is_none())?),
        };
        read_rows(&batch, c, meter, out);
    }
    Ok(())
}

/// A numeric column as doubles (decimals divided by their scale; `NaN` for nulls, and for
/// every row of a column that was not read).
fn doubles(batch: &RecordBatch, column: Option<usize>) -> Vec<f64> {
    let n = batch.num_rows();
    let Some(column) = column else {
        return vec![f64::NAN; n];
    };
    let array = batch.column(column);
    let mut out: Vec<f64> = match array.data_type() {
        arrow_schema::DataType::Decimal128(_, scale) => {
            let div = 10f64.powi(*scale as i32);
            let a = array.as_primitive::<Decimal128Type>();
            a.values().iter().map(|&v| v as f64 / div).collect()
        }
        arrow_schema::DataType::Float64 => array.as_primitive::<Float64Type>().values().to_vec(),
        arrow_schema::DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        _ => vec![f64::NAN; n],
    };
    if array.null_count() > 0 {
        for (i, v) in out.iter_mut().enumerate() {
            if array.is_null(i) {
                *v = f64::NAN;
            }
        }
    }
    out
}

fn integers(batch: &RecordBatch, column: usize) -> Vec<i64> {
    match batch.column(column).as_primitive_opt::<Int64Type>() {
        Some(a) => a.values().to_vec(),
        None => vec![0; batch.num_rows()],
    }
}

/// The rows of a batch the row filter selected (all of `meter`, in the range).
fn read_rows(batch: &RecordBatch, c: &Columns, meter: &str, out: &mut Vec<ViewRow>) {
    let Some(starts) = batch
        .column(c.window_start)
        .as_primitive_opt::<TimestampMillisecondType>()
    else {
        return;
    };
    let samples = integers(batch, c.samples);
    let covered = integers(batch, c.covered);
    let measures: Vec<[Vec<f64>; 4]> = c
        .measures
        .iter()
        .map(|cols| cols.map(|col| doubles(batch, col)))
        .collect();
    let energy = doubles(batch, c.energy);
    let unmetered = doubles(batch, c.unmetered);
    let pf = doubles(batch, c.power_factor);
    out.reserve(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut values = [MeasureValues::default(); MEASURES];
        for (v, cols) in values.iter_mut().zip(measures.iter()) {
            *v = MeasureValues {
                sum: cols[0][i],
                min: cols[1][i],
                max: cols[2][i],
                avg: cols[3][i],
            };
        }
        out.push(ViewRow {
            meter: meter.to_owned(),
            window_start: starts.value(i),
            samples: samples[i],
            covered_seconds: covered[i],
            measures: values,
            active_energy_wh: energy[i],
            unmetered_wh: unmetered[i],
            power_factor_avg: Some(pf[i]).filter(|v| !v.is_nan()),
            source: Source::Batch,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_bucket_is_read_from_its_name() {
        assert_eq!(bucket_of_path("month=2006-12/part-0.parquet"), 0);
        assert_eq!(bucket_of_path("year=2007/part-13.parquet"), 13);
        assert_eq!(bucket_of_path("year=2007/other.parquet"), 0);
    }
}
