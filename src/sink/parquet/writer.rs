//! Writing partition files durably: row groups are encoded into a hidden temporary file on a
//! thread of its own (so the worker keeps aggregating); a second thread syncs the finished file,
//! renames it into place, syncs the folder and updates the manifest (the settler), so the
//! encoding never waits for the disk.
//!
//! A reader (DuckDB's `read_parquet('<out>/minute/**/*.parquet')`, Spark, Trino) never sees a
//! partial file: temporaries are named `.part-0.parquet.<pid>.tmp`, hidden and not ending in
//! `.parquet`, and [`clean_debris`] removes those a crash left behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;

use super::error::{At, FileFault, ParquetSinkError};
use super::layout::{partition_of_in, view_batch_for, view_schema_for, writer_properties};
use super::manifest::{update_manifest, PartitionEntry};
use super::{part_file, ParquetSinkConfig, ParquetStats, SinkReport, PART_FILE};
use crate::hash::FxMap;
use crate::model::{Aggregate, Granularity, WindowKey};
use crate::time::format_iso;
use crate::time::Calendar;

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` through a hidden temporary file, synced before the rename and
/// the folder synced after it: the file is either the old one or the whole new one, even
/// after a crash or a power loss.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ParquetSinkError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.at(&path)
}

/// What a finished partition file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Rows (windows).
    pub rows: u64,
    /// Σ samples over the rows.
    pub samples: u64,
    /// Start of the first window (ms).
    pub first: i64,
    /// Start of the last window (ms).
    pub last: i64,
}

impl FileSummary {
    fn add(&mut self, batch: &RecordBatch) {
        use arrow_array::types::{Int64Type, TimestampMillisecondType};
        let n = batch.num_rows();
        if n == 0 {
            return;
        }
        let starts = batch.column(1).as_primitive::<TimestampMillisecondType>();
        if self.rows == 0 {
            self.first = starts.value(0);
        }
        self.last = starts.value(n - 1);
        self.rows += n as u64;
        let samples = batch.column(2).as_primitive::<Int64Type>();
        self.samples += samples.values().iter().map(|&s| s as u64).sum::<u64>();
    }
}

/// The order of rows in a file: `(window_start, meter)` with meters in [`MeterId`]'s order
/// (length, then bytes), as the sink sorts them.
///
/// [`MeterId`]: crate::model::MeterId
fn row_order(start: i64, meter: &str) -> (i64, usize, &[u8]) {
    (start, meter.len(), meter.as_bytes())
}

/// One partition file being written: row groups are appended to a hidden temporary file as
/// the sink seals them, and [`PartitionFile::finish`] makes it the partition's file. Memory is
/// the row group being encoded, not the partition.
///
/// The bytes of the file depend only on the sequence of rows and on where the row groups
/// break; the sink breaks them every [`ROW_GROUP_ROWS`] rows, so the same windows give the
/// same file however they arrived (in one piece, in many, or merged with a file already
/// there).
///
/// [`ROW_GROUP_ROWS`]: super::ROW_GROUP_ROWS
pub struct PartitionFile {
    dir: PathBuf,
    file_name: String,
    tmp: PathBuf,
    calendar: Calendar,
    zstd_level: i32,
    writer: Option<ArrowWriter<File>>,
    handle: File,
    summary: FileSummary,
}

impl PartitionFile {
    /// Starts `dir/file_name` (created on [`PartitionFile::finish`]).
    pub fn create(
        dir: &Path,
        file_name: &str,
        zstd_level: i32,
        calendar: &Calendar,
    ) -> Result<PartitionFile, ParquetSinkError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).at(&tmp)?;
        let handle = file.try_clone().at(&tmp)?;
        let props = writer_properties(zstd_level)?;
        let writer = ArrowWriter::try_new(file, view_schema_for(calendar), Some(props));
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).at(&dir.join(file_name));
            }
        };
        Ok(PartitionFile {
            dir: dir.to_path_buf(),
            file_name: file_name.to_owned(),
            tmp,
            calendar: calendar.clone(),
            zstd_level,
            writer: Some(writer),
            handle,
            summary: FileSummary::default(),
        })
    }

    /// The file in place, as errors name it.
    fn path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// Appends `rows` as one row group. They must be in file order (`(window_start, meter)`)
    /// and after every row appended before.
    pub fn append(&mut self, rows: &[(WindowKey, &Aggregate)]) -> Result<(), ParquetSinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let after_last = self.summary.rows == 0 || rows[0].0.start >= self.summary.last;
        let in_order = rows.is_sorted_by(|(a, _), (b, _)| (a.start, a.meter) < (b.start, b.meter));
        if !after_last || !in_order {
            return Err(FileFault::OutOfOrder).at(&self.path());
        }
        let batch = view_batch_for(&self.calendar, rows).at(&self.path())?;
        let writer = self
            .writer
            .as_mut()
            .expect("an unfinished file has a writer");
        let written = writer.write(&batch).and_then(|()| writer.flush());
        written.at(&self.path())?;
        self.summary.add(&batch);
        Ok(())
    }

    /// Closes and syncs the file, keeps the windows of the file already in place that this
    /// one does not hold ([`merge_sorted_files`]), and renames the result into place; the
    /// folder is synced after. Returns what the file holds, `None` when no row was appended
    /// (then nothing is written and a file in place stays as it is).
    pub fn finish(self) -> Result<Option<FileSummary>, ParquetSinkError> {
        let dir = self.dir.clone();
        let summary = self.finish_unsynced()?;
        if summary.is_some() {
            sync_dir(&dir).at(&dir)?;
        }
        Ok(summary)
    }

    /// [`PartitionFile::finish`] without syncing the folder after the rename: the caller
    /// syncs it (once for several files) before it takes the file for durable. The file itself
    /// is synced before the rename, so a crash never leaves a partial file in place.
    fn finish_unsynced(mut self) -> Result<Option<FileSummary>, ParquetSinkError> {
        self.close()?;
        self.install()
    }

    /// Writes the file's footer (the temporary file is then a whole Parquet file, neither
    /// synced nor in place). Costs CPU, not waiting: [`PartitionFile::install`] does that.
    fn close(&mut self) -> Result<(), ParquetSinkError> {
        if let Some(writer) = self.writer.take() {
            if self.summary.rows > 0 {
                writer.close().at(&self.path())?;
            }
        }
        Ok(())
    }

    /// Syncs a closed file, merges it with the file in place, and renames it into place
    /// (without syncing the folder); `None` when it holds no row.
    fn install(self) -> Result<Option<FileSummary>, ParquetSinkError> {
        debug_assert!(self.writer.is_none(), "closed first");
        if self.summary.rows == 0 {
            return Ok(None);
        }
        self.handle.sync_all().at(&self.tmp)?;
        let target = self.dir.join(&self.file_name);
        let mut summary = self.summary;
        let mut from = self.tmp.clone();
        if target.is_file() {
            let merged = self.dir.join(format!(
                ".{}.{}.merge.tmp",
                self.file_name,
                std::process::id()
            ));
            let result =
                merge_sorted_files(&self.tmp, &target, &merged, self.zstd_level, &self.calendar);
            match result {
                Ok(Some(s)) => {
                    summary = s;
                    from = merged;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = std::fs::remove_file(&merged);
                    return Err(e);
                }
            }
        }
        std::fs::rename(&from, &target).at(&target)?;
        Ok(Some(summary))
    }
}

impl Drop for PartitionFile {
    fn drop(&mut self) {
        // Finished or abandoned: no temporary file stays behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `rows` (sorted) to `dir/part-0.parquet` durably, in row groups of
/// [`ROW_GROUP_ROWS`](super::ROW_GROUP_ROWS), keeping the windows of the file already there that
/// `rows` does not hold. On an error (a full disk) the temporary file is removed and the old
/// file, if any, stays.
pub fn write_partition(
    dir: &Path,
    rows: &[(WindowKey, &Aggregate)],
    zstd_level: i32,
    calendar: &Calendar,
) -> Result<Option<FileSummary>, ParquetSinkError> {
    let mut file = PartitionFile::create(dir, PART_FILE, zstd_level, calendar)?;
    for group in rows.chunks(super::ROW_GROUP_ROWS) {
        file.append(group)?;
    }
    file.finish()
}

/// Reads a file's row groups in order, one row at a time.
struct Cursor {
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
    /// Counts the batches read, so a chunk knows when the cursor moved on to another one.
    generation: u64,
    /// The file, as errors name it.
    path: PathBuf,
}

impl Cursor {
    fn open(path: &Path, keys_only: bool, schema: &SchemaRef) -> Result<Cursor, ParquetSinkError> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use parquet::arrow::ProjectionMask;
        let file = File::open(path).at(path)?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .at(path)?
            .with_batch_size(8192);
        if builder.schema().fields() != schema.fields() {
            return Err(FileFault::OtherSchema).at(path);
        }
        if keys_only {
            let mask = ProjectionMask::roots(builder.parquet_schema(), [0, 1]);
            builder = builder.with_projection(mask);
        }
        let mut cursor = Cursor {
            batches: builder.build().at(path)?,
            batch: None,
            row: 0,
            generation: 0,
            path: path.to_path_buf(),
        };
        cursor.next_batch().at(path)?;
        Ok(cursor)
    }

    fn next_batch(&mut self) -> Result<(), arrow_schema::ArrowError> {
        self.batch = None;
        self.row = 0;
        for batch in self.batches.by_ref() {
            let batch = batch?;
            if batch.num_rows() > 0 {
                self.batch = Some(batch);
                self.generation += 1;
                break;
            }
        }
        Ok(())
    }

    fn key(&self) -> Option<(i64, usize, &[u8])> {
        use arrow_array::types::TimestampMillisecondType;
        let batch = self.batch.as_ref()?;
        let meter = batch.column(0).as_string::<i32>().value(self.row);
        let start = batch.column(1).as_primitive::<TimestampMillisecondType>();
        Some(row_order(start.value(self.row), meter))
    }

    fn advance(&mut self) -> Result<(), ParquetSinkError> {
        self.row += 1;
        if self
            .batch
            .as_ref()
            .is_some_and(|b| self.row >= b.num_rows())
        {
            self.next_batch().at(&self.path)?;
        }
        Ok(())
    }
}

/// Which file the next row of a merge comes from.
enum Pick {
    /// The same window in both: the new row replaces the old one.
    Both,
    New,
    Old,
    Done,
}

fn pick(new: &Cursor, old: &Cursor) -> Pick {
    match (new.key(), old.key()) {
        (Some(n), Some(o)) if n == o => Pick::Both,
        (Some(n), Some(o)) if o < n => Pick::Old,
        (Some(_), _) => Pick::New,
        (None, Some(_)) => Pick::Old,
        (None, None) => Pick::Done,
    }
}

/// The rows of one output row group, as (batch, row) references into the batches they come from.
#[derive(Default)]
struct Chunk {
    batches: Vec<RecordBatch>,
    /// For each side, the generation of its cursor's batch and where it is in `batches`.
    current: [Option<(u64, usize)>; 2],
    order: Vec<(usize, usize)>,
}

impl Chunk {
    fn take(&mut self, side: usize, cursor: &Cursor) {
        let index = match self.current[side] {
            Some((generation, i)) if generation == cursor.generation => i,
            _ => {
                self.batches.push(
                    cursor
                        .batch
                        .clone()
                        .expect("a cursor with a key has a batch"),
                );
                self.current[side] = Some((cursor.generation, self.batches.len() - 1));
                self.batches.len() - 1
            }
        };
        self.order.push((index, cursor.row));
    }

    fn write(
        &mut self,
        writer: &mut ArrowWriter<File>,
        schema: &SchemaRef,
        summary: &mut FileSummary,
    ) -> Result<(), FileFault> {
        if self.order.is_empty() {
            return Ok(());
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let batch = arrow_select::interleave::interleave_record_batch(&refs, &self.order)
            .and_then(|b| RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()))?;
        writer.write(&batch)?;
        writer.flush()?;
        summary.add(&batch);
        *self = Chunk::default();
        Ok(())
    }
}

/// Merges two files in file order into `out`: the rows of `new`, and the rows of `old` whose
/// windows `new` does not hold, in row groups of [`ROW_GROUP_ROWS`](super::ROW_GROUP_ROWS).
/// Returns `None`, writing nothing, when `new` holds every window of `old` (a first pass reads
/// only the key columns); otherwise `out` is written and synced. Memory is a row group of each.
/// So rewriting a partition never replaces it by less: a run that covers part of a month
/// keeps the rest of the month.
pub fn merge_sorted_files(
    new: &Path,
    old: &Path,
    out: &Path,
    zstd_level: i32,
    calendar: &Calendar,
) -> Result<Option<FileSummary>, ParquetSinkError> {
    let schema = view_schema_for(calendar);
    // Pass 1, keys only: is any old window missing from the new file?
    let (mut n, mut o) = (
        Cursor::open(new, true, &schema)?,
        Cursor::open(old, true, &schema)?,
    );
    let keeps_old = loop {
        match pick(&n, &o) {
            Pick::Both => {
                n.advance()?;
                o.advance()?;
            }
            Pick::New => n.advance()?,
            Pick::Old => break true,
            Pick::Done => break false,
        }
    };
    if !keeps_old {
        return Ok(None);
    }
    // Pass 2: the merge.
    let (mut n, mut o) = (
        Cursor::open(new, false, &schema)?,
        Cursor::open(old, false, &schema)?,
    );
    let file = File::create(out).at(out)?;
    let handle = file.try_clone().at(out)?;
    let mut writer = ArrowWriter::try_new(
        file,
        Arc::clone(&schema),
        Some(writer_properties(zstd_level)?),
    )
    .at(out)?;
    let mut chunk = Chunk::default();
    let mut summary = FileSummary::default();
    loop {
        match pick(&n, &o) {
            Pick::Both => {
                chunk.take(0, &n);
                n.advance()?;
                o.advance()?;
            }
            Pick::New => {
                chunk.take(0, &n);
                n.advance()?;
            }
            Pick::Old => {
                chunk.take(1, &o);
                o.advance()?;
            }
            Pick::Done => break,
        }
        if chunk.order.len() == super::ROW_GROUP_ROWS {
            chunk.write(&mut writer, &schema, &mut summary).at(out)?;
        }
    }
    chunk.write(&mut writer, &schema, &mut summary).at(out)?;
    writer.close().at(out)?;
    handle.sync_all().at(out)?;
    Ok(Some(summary))
}

/// Removes the hidden temporary files (`.*.tmp`) a killed run left under `out`; returns how
/// many. Called when a pipeline starts.
pub fn clean_debris(out: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A partition of a view: granularity, first instant, and meter bucket.
pub(crate) type PartKey = (Granularity, i64, u32);

/// Work for the writer: the row groups of a partition as the sink seals them, then its end.
pub(super) enum WriteJob {
    /// Sealed rows of partition `id`, in file order: one row group.
    Rows {
        id: u64,
        key: PartKey,
        rows: Vec<super::Row>,
    },
    /// Partition `id` is complete: make its file durable and record it.
    Close { id: u64, key: PartKey },
}

/// A partition file in the making, or why it could not be made.
struct Open {
    file: Result<PartitionFile, ParquetSinkError>,
    /// Time spent encoding and writing it so far.
    busy: Duration,
}

/// A partition whose rows are all encoded: its closed file (`None`: no row, no file) or the
/// error that stopped it, on its way to the [`Settler`].
struct Closed {
    id: u64,
    key: PartKey,
    file: Result<Option<PartitionFile>, ParquetSinkError>,
    busy: Duration,
}

/// The partition files a writer is encoding.
struct Files {
    config: Arc<ParquetSinkConfig>,
    open: FxMap<u64, Open>,
}

impl Files {
    /// Does one job; returns the partition it completed.
    fn handle(&mut self, job: WriteJob) -> Option<Closed> {
        match job {
            WriteJob::Rows { id, key, rows } => {
                let started = Instant::now();
                let open = self.open.entry(id).or_insert_with(|| {
                    let (dir, _) = folder(&self.config, key);
                    let file = PartitionFile::create(
                        &dir,
                        &part_file(key.2),
                        self.config.zstd_level,
                        &self.config.calendar,
                    );
                    Open {
                        file,
                        busy: Duration::ZERO,
                    }
                });
                if let Ok(file) = &mut open.file {
                    let granularity = key.0;
                    let refs: Vec<(WindowKey, &Aggregate)> = rows
                        .iter()
                        .filter_map(|&((meter, start), ref agg)| {
                            let key = WindowKey {
                                meter,
                                granularity,
                                start,
                            };
                            agg.as_ref().map(|agg| (key, agg))
                        })
                        .collect();
                    if let Err(e) = file.append(&refs) {
                        // Dropping the file removes its temporary.
                        open.file = Err(e);
                    }
                }
                open.busy += started.elapsed();
                None
            }
            WriteJob::Close { id, key } => {
                let started = Instant::now();
                let Some(open) = self.open.remove(&id) else {
                    // No row in this partition: no file.
                    return Some(Closed {
                        id,
                        key,
                        file: Ok(None),
                        busy: Duration::ZERO,
                    });
                };
                let file = open.file.and_then(|mut f| f.close().map(|()| Some(f)));
                Some(Closed {
                    id,
                    key,
                    file,
                    busy: open.busy + started.elapsed(),
                })
            }
        }
    }
}

fn folder(config: &ParquetSinkConfig, key: PartKey) -> (PathBuf, String) {
    let (g, start, _) = key;
    let (_, _, name) = partition_of_in(&config.calendar, g, start);
    (config.out.join(g.name()).join(&name), name)
}

/// Puts closed files in place and makes them durable, and reports them.
///
/// Each file is synced and renamed into place as it comes, but taken for durable in batches
/// ([`Settler::settle`]): the folders are synced and the manifests updated once for the files
/// that came close together, instead of two `fsync`s of the folder and two of the manifest per
/// file. It runs on a thread of its own, so the encoding never waits for the disk.
struct Settler {
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    stats: Arc<ParquetStats>,
    /// Partitions in place since the last settle: number, granularity, file (if any), time.
    finished: Vec<(u64, Granularity, Option<PartitionEntry>, Duration)>,
    /// Folders to sync before the finished files are durable.
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl Settler {
    /// Puts `closed` in place; returns it at once if it failed (the error is in the report).
    fn install(&mut self, closed: Closed) -> Option<(u64, bool)> {
        let started = Instant::now();
        let Closed {
            id,
            key,
            file,
            busy,
        } = closed;
        let (dir, name) = folder(&self.config, key);
        match file.and_then(|f| f.map_or(Ok(None), PartitionFile::install)) {
            Ok(summary) => {
                let entry = summary.map(|summary| PartitionEntry {
                    path: format!("{name}/{}", part_file(key.2)),
                    rows: summary.rows,
                    samples: summary.samples,
                    first_window: format_iso(summary.first),
                    last_window: format_iso(summary.last),
                    last_window_end_ms: self.config.calendar.window(key.0, summary.last).1,
                });
                if entry.is_some() {
                    self.dirs.insert(dir);
                }
                self.finished
                    .push((id, key.0, entry, busy + started.elapsed()));
                None
            }
            Err(e) => {
                let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
                report.errors.push(e);
                Some((id, false))
            }
        }
    }

    /// Makes the files put in place since the last call durable (their folders synced, the
    /// manifests updated) and returns their partition numbers, each with whether its file is
    /// durable (an error is in the report otherwise).
    fn settle(&mut self) -> Vec<(u64, bool)> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.finished.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let mut result: Result<(), ParquetSinkError> = Ok(());
        for dir in std::mem::take(&mut self.dirs) {
            if result.is_ok() {
                result = sync_dir(&dir).at(&dir);
            }
        }
        let finished = std::mem::take(&mut self.finished);
        let buckets = self.config.buckets.max(1);
        for g in Granularity::ALL {
            let entries: Vec<PartitionEntry> = finished
                .iter()
                .filter(|(_, fg, _, _)| *fg == g)
                .filter_map(|(_, _, e, _)| e.clone())
                .collect();
            if result.is_ok() && !entries.is_empty() {
                result = update_manifest(&self.config.out, g, buckets, &entries).map(|_| ());
            }
        }
        let settle_time = started.elapsed() / finished.len().max(1) as u32;
        let ok = result.is_ok();
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = result {
            report.errors.push(e);
        }
        finished
            .into_iter()
            .map(|(id, g, entry, busy)| {
                if let (true, Some(entry)) = (ok, entry) {
                    self.stats.write_seconds.observe(busy + settle_time);
                    self.stats.windows_written[g as usize].fetch_add(entry.rows, Relaxed);
                    self.stats.files_written.fetch_add(1, Relaxed);
                    report.written.entry(g).or_default().push(entry);
                }
                (id, ok)
            })
            .collect()
    }

    /// Installs what comes from `closed` and settles once nothing has come for
    /// [`SETTLE_IDLE`], and at the latest [`SETTLE_AFTER`] after the first unsettled file;
    /// `done` gets the partitions as they become durable. Returns when `closed` is.
    fn run(mut self, closed: Receiver<Closed>, done: impl Fn(Vec<(u64, bool)>)) {
        let mut unsettled_since: Option<Instant> = None;
        loop {
            let next = match unsettled_since {
                None => closed.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => {
                    let left = SETTLE_AFTER.saturating_sub(since.elapsed());
                    closed.recv_timeout(left.min(SETTLE_IDLE))
                }
            };
            match next {
                Ok(c) => {
                    if let Some(failed) = self.install(c) {
                        done(vec![failed]);
                    }
                    if !self.finished.is_empty() && unsettled_since.is_none() {
                        unsettled_since = Some(Instant::now());
                    }
                    if unsettled_since.is_some_and(|t| t.elapsed() >= SETTLE_AFTER) {
                        done(self.settle());
                        unsettled_since = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    done(self.settle());
                    unsettled_since = None;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        done(self.settle());
    }
}

/// Files are made durable once no other has come for this long...
const SETTLE_IDLE: Duration = Duration::from_millis(20);
/// ... and at the latest this long after the first of them was put in place.
const SETTLE_AFTER: Duration = Duration::from_millis(500);

/// Jobs waiting for the writer thread; a few row groups at most, so a slow disk slows the
/// dataflow down instead of filling memory. (A partition is at least two jobs, its rows and its
/// end. Measured on W1 against 104dbd9, 24 rounds: a queue of 4 made the worker wait on the
/// writer, per-round ratio 1.07; 8 gave 0.97 for 4 MiB more peak RSS.)
const WRITE_QUEUE: usize = 8;

/// Encodes sealed row groups on a thread of its own, so the worker goes on parsing and
/// aggregating meanwhile (Parquet encoding is about half of a replay's work), and makes the
/// files durable on another ([`Settler`]), so the encoding never waits for `fsync`. The number
/// of each partition done goes to `done`, with whether its file is durable, and the sink is
/// woken. Dropping the writer waits for the queued jobs to be done.
pub(super) struct PartitionWriter {
    queue: Option<SyncSender<WriteJob>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The files, when there are no threads (or they are gone).
    here: Option<(Files, Settler)>,
    report: Arc<Mutex<SinkReport>>,
    done: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl PartitionWriter {
    pub(super) fn start(
        config: Arc<ParquetSinkConfig>,
        report: Arc<Mutex<SinkReport>>,
        stats: Arc<ParquetStats>,
        done: Arc<Mutex<Vec<(u64, bool)>>>,
        wake: timely::scheduling::SyncActivator,
    ) -> PartitionWriter {
        let parts = || {
            let files = Files {
                config: Arc::clone(&config),
                open: FxMap::default(),
            };
            let settler = Settler {
                config: Arc::clone(&config),
                report: Arc::clone(&report),
                stats: Arc::clone(&stats),
                finished: Vec::new(),
                dirs: Default::default(),
            };
            (files, settler)
        };
        let (mut files, settler) = parts();
        let (queue, jobs) = std::sync::mpsc::sync_channel::<WriteJob>(WRITE_QUEUE);
        let (to_settler, closed) = std::sync::mpsc::channel::<Closed>();
        let d = Arc::clone(&done);
        let settling = std::thread::Builder::new()
            .name("parquet-sync".into())
            .spawn(move || {
                settler.run(closed, |finished| {
                    if !finished.is_empty() {
                        d.lock().unwrap_or_else(|e| e.into_inner()).extend(finished);
                        // Fails only when the worker is gone; then there is nobody to wake.
                        let _ = wake.activate();
                    }
                })
            });
        let encoding = settling.and_then(|settling| {
            std::thread::Builder::new()
                .name("parquet-writer".into())
                .spawn(move || {
                    for job in jobs {
                        if let Some(closed) = files.handle(job) {
                            // Fails only if the settler is gone; the error is reported then.
                            let _ = to_settler.send(closed);
                        }
                    }
                })
                .map(|encoding| vec![encoding, settling])
        });
        match encoding {
            Ok(threads) => PartitionWriter {
                queue: Some(queue),
                threads,
                here: None,
                report,
                done,
            },
            // No threads to be had: write on the worker itself.
            Err(_) => PartitionWriter {
                queue: None,
                threads: Vec::new(),
                here: Some(parts()),
                report,
                done,
            },
        }
    }

    pub(super) fn write(&mut self, job: WriteJob) {
        let job = match &self.queue {
            Some(queue) => match queue.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let Some((files, settler)) = &mut self.here else {
            // The writer thread is gone (it panicked, with the files it had open): the
            // partition cannot be written whole any more.
            if self.queue.take().is_some() {
                let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
                report.errors.push(ParquetSinkError::WriterStopped);
            }
            if let WriteJob::Close { id, .. } = job {
                self.done
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, false));
            }
            return;
        };
        let mut done = Vec::new();
        if let Some(closed) = files.handle(job) {
            done.extend(settler.install(closed));
            done.extend(settler.settle());
        }
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(done);
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        self.queue.take();
        // The encoder first: when it ends, the settler's channel closes and it settles.
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                self.report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .errors
                    .push(ParquetSinkError::WriterPanicked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MeterId, Origin, Reading};

    /// `n` minute windows of `meters` meters from 2007-01-01, in file order.
    fn windows(n: usize, meters: usize, value: i32) -> Vec<(WindowKey, Aggregate)> {
        let t0 = crate::time::naive_to_ms(2007, 1, 1, 0, 0, 0).unwrap();
        (0..n)
            .map(|i| {
                let meter = MeterId::new(&format!("m{}", i % meters)).unwrap();
                let r = Reading {
                    meter,
                    ts: t0 + (i / meters) as i64 * 60_000,
                    interval_s: 60,
                    values: [value + i as i32, 418, 234_840, 18_400, 0, 1_000, 17_000],
                    origin: Origin::default(),
                };
                (WindowKey::of(&r, Granularity::Minute), Aggregate::of(&r))
            })
            .collect()
    }

    fn refs(rows: &[(WindowKey, Aggregate)]) -> Vec<(WindowKey, &Aggregate)> {
        rows.iter().map(|(k, a)| (*k, a)).collect()
    }

    fn sorted(mut rows: Vec<(WindowKey, Aggregate)>) -> Vec<(WindowKey, Aggregate)> {
        rows.sort_by_key(|(k, _)| (k.start, k.meter));
        rows
    }

    fn row_groups(path: &Path) -> usize {
        let file = File::open(path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        reader.metadata().num_row_groups()
    }

    #[test]
    fn a_file_appended_a_row_group_at_a_time_is_the_file_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sorted(windows(super::super::ROW_GROUP_ROWS + 5_000, 7, 1_000));
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_partition(&a, &refs(&rows), 1, &Calendar::Naive).unwrap();
        let mut file = PartitionFile::create(&b, PART_FILE, 1, &Calendar::Naive).unwrap();
        let (head, tail) = rows.split_at(super::super::ROW_GROUP_ROWS);
        file.append(&refs(head)).unwrap();
        file.append(&refs(tail)).unwrap();
        let summary = file.finish().unwrap().unwrap();
        assert_eq!(summary.rows, rows.len() as u64);
        assert_eq!(summary.first, rows[0].0.start);
        assert_eq!(summary.last, rows.last().unwrap().0.start);
        let (fa, fb) = (a.join(PART_FILE), b.join(PART_FILE));
        assert_eq!(row_groups(&fa), 2);
        assert!(std::fs::read(&fa).unwrap() == std::fs::read(&fb).unwrap());
        // No temporary is left beside it.
        let names: Vec<_> = std::fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(PART_FILE)]);
    }

    #[test]
    fn rows_out_of_order_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sorted(windows(100, 3, 1_000));
        let mut file = PartitionFile::create(dir.path(), PART_FILE, 1, &Calendar::Naive).unwrap();
        file.append(&refs(&rows[50..])).unwrap();
        assert!(file.append(&refs(&rows[..50])).is_err());
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn rewriting_keeps_the_old_windows_the_new_rows_do_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let all = sorted(windows(3 * 40_000, 2, 1_000));
        // The old file holds the first two thirds; the new rows the last two thirds, with
        // other values where they overlap.
        let old = &all[..80_000];
        let new: Vec<_> = sorted(windows(3 * 40_000, 2, 5_000))[40_000..].to_vec();
        write_partition(dir.path(), &refs(old), 1, &Calendar::Naive).unwrap();
        let summary = write_partition(dir.path(), &refs(&new), 1, &Calendar::Naive)
            .unwrap()
            .unwrap();
        assert_eq!(summary.rows, 120_000);
        // Exactly the file written at once from the merged rows.
        let mut merged = all[..40_000].to_vec();
        merged.extend(new.iter().cloned());
        let fresh = tempfile::tempdir().unwrap();
        write_partition(fresh.path(), &refs(&merged), 1, &Calendar::Naive).unwrap();
        let (got, want) = (dir.path().join(PART_FILE), fresh.path().join(PART_FILE));
        assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap());
        assert_eq!(row_groups(&got), 1);
        // New rows that hold every old window replace the file outright.
        write_partition(dir.path(), &refs(&all[40_000..]), 1, &Calendar::Naive).unwrap();
        let summary = write_partition(dir.path(), &refs(&all), 1, &Calendar::Naive)
            .unwrap()
            .unwrap();
        assert_eq!(summary.rows, all.len() as u64);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(PART_FILE)],
            "no temporary left"
        );
    }
}
