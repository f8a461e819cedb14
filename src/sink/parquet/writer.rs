//! Writing partition files durably: encode to a hidden temporary file, `fsync` it, rename it
//! into place, `fsync` the folder; on a thread of its own so the worker keeps aggregating.
//!
//! A reader (DuckDB's `read_parquet('<out>/minute/**/*.parquet')`, Spark, Trino) never sees a
//! partial file: temporaries are named `.part-0.parquet.<pid>.tmp`, hidden and not ending in
//! `.parquet`, and [`clean_debris`] removes those a crash left behind.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::layout::{partition_of_in, view_batch_for, writer_properties};
use super::manifest::{update_manifest, PartitionEntry};
use super::{OpenPartition, ParquetSinkConfig, ParquetStats, SinkReport, PART_FILE};
use crate::model::{Aggregate, Granularity, WindowKey};
use crate::time::format_iso;
use crate::time::Calendar;

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` through a hidden temporary file, synced before the rename and
/// the folder synced after it: the file is either the old one or the whole new one, even
/// after a crash or a power loss.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.join(name).display());
    std::fs::create_dir_all(dir).map_err(|e| ctx(&e))?;
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
    result.map_err(|e| ctx(&e))
}

/// Writes `rows` (already sorted) to `dir/part-0.parquet` durably (see the module docs),
/// keeping the windows of the file already there that `rows` does not hold
/// ([`merge_with_existing`]). On an error (a full disk) the temporary file is removed and the
/// old file, if any, stays. Returns the batch written.
pub fn write_partition(
    dir: &Path,
    rows: &[(WindowKey, &Aggregate)],
    zstd_level: i32,
    calendar: &Calendar,
) -> Result<RecordBatch, String> {
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.join(PART_FILE).display());
    let batch = view_batch_for(calendar, rows).map_err(|e| ctx(&e))?;
    let batch = merge_with_existing(&dir.join(PART_FILE), batch)?;
    write_batch(dir, &batch, zstd_level)?;
    Ok(batch)
}

/// The order of rows in a file: `(window_start, meter)` with meters in [`MeterId`]'s order
/// (length, then bytes), as the sink sorts them.
fn row_order(start: i64, meter: &str) -> (i64, usize, &[u8]) {
    (start, meter.len(), meter.as_bytes())
}

/// `new` (sorted) with the rows of the existing file at `path` whose windows `new` does not
/// hold, in file order: rewriting a partition never replaces it by less (a run that covers part
/// of a month keeps the rest of the month). Only the key columns are read when the new rows
/// cover every old window.
pub fn merge_with_existing(path: &Path, new: RecordBatch) -> Result<RecordBatch, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    if !path.is_file() {
        return Ok(new);
    }
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let open = || {
        let file = File::open(path).map_err(|e| ctx(&e))?;
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| ctx(&e))
    };
    let builder = open()?;
    let schema = new.schema();
    if builder.schema().fields() != schema.fields() {
        return Err(ctx(
            &"holds other columns than this version writes: move it away to rewrite the view",
        ));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0, 1]);
    let mut old_keys: Vec<(String, i64)> = Vec::new();
    for batch in builder.with_projection(mask).build().map_err(|e| ctx(&e))? {
        let batch = batch.map_err(|e| ctx(&e))?;
        let meters = batch.column(0).as_string::<i32>();
        let starts = batch.column(1).as_primitive::<TimestampMillisecondType>();
        for i in 0..batch.num_rows() {
            old_keys.push((meters.value(i).to_owned(), starts.value(i)));
        }
    }
    let new_meters = new.column(0).as_string::<i32>();
    let new_starts = new.column(1).as_primitive::<TimestampMillisecondType>();
    // Merge the two sorted key lists: (batch, row) of every row of the result.
    let mut order = Vec::with_capacity(new.num_rows() + old_keys.len());
    let (mut i, mut j) = (0, 0);
    let mut kept_old = 0;
    while i < new.num_rows() || j < old_keys.len() {
        let new_key =
            (i < new.num_rows()).then(|| row_order(new_starts.value(i), new_meters.value(i)));
        let old_key = old_keys.get(j).map(|(m, s)| row_order(*s, m));
        match (new_key, old_key) {
            (Some(n), Some(o)) if n == o => {
                order.push((0, i));
                i += 1;
                j += 1;
            }
            (Some(n), Some(o)) if o < n => {
                order.push((1, j));
                kept_old += 1;
                j += 1;
            }
            (Some(_), _) => {
                order.push((0, i));
                i += 1;
            }
            (None, Some(_)) => {
                order.push((1, j));
                kept_old += 1;
                j += 1;
            }
            (None, None) => break,
        }
    }
    if kept_old == 0 {
        return Ok(new);
    }
    let batches: Vec<RecordBatch> = open()?
        .build()
        .map_err(|e| ctx(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| ctx(&e))?;
    let old = arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| ctx(&e))?;
    arrow_select::interleave::interleave_record_batch(&[&new, &old], &order).map_err(|e| ctx(&e))
}

/// Writes `batch` to `dir/part-0.parquet` durably.
fn write_batch(dir: &Path, batch: &RecordBatch, zstd_level: i32) -> Result<(), String> {
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.join(PART_FILE).display());
    std::fs::create_dir_all(dir).map_err(|e| ctx(&e))?;
    let tmp = dir.join(format!(".{PART_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| ctx(&e))?;
        let handle = file.try_clone().map_err(|e| ctx(&e))?;
        let mut writer =
            ArrowWriter::try_new(file, batch.schema(), Some(writer_properties(zstd_level)?))
                .map_err(|e| ctx(&e))?;
        writer.write(batch).map_err(|e| ctx(&e))?;
        writer.close().map_err(|e| ctx(&e))?;
        handle.sync_all().map_err(|e| ctx(&e))?;
        std::fs::rename(&tmp, dir.join(PART_FILE)).map_err(|e| ctx(&e))?;
        sync_dir(dir).map_err(|e| ctx(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// Encodes one sealed partition and writes it; `None` when it holds no row.
fn flush(
    config: &ParquetSinkConfig,
    granularity: Granularity,
    partition_start: i64,
    part: OpenPartition,
) -> Result<Option<PartitionEntry>, String> {
    let (_, _, name) = partition_of_in(&config.calendar, granularity, partition_start);
    drop(part.index);
    let mut rows: Vec<(WindowKey, &Aggregate)> = part
        .rows
        .iter()
        .filter_map(|&((meter, start), ref agg)| {
            agg.as_ref().map(|agg| {
                (
                    WindowKey {
                        meter,
                        granularity,
                        start,
                    },
                    agg,
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let order = |k: &WindowKey| (k.start, k.meter);
    if !rows.is_sorted_by_key(|(k, _)| order(k)) {
        rows.sort_unstable_by_key(|(k, _)| order(k));
    }
    let dir = config.out.join(granularity.name()).join(&name);
    let written = write_partition(&dir, &rows, config.zstd_level, &config.calendar)?;
    let starts = written
        .column(1)
        .as_primitive::<arrow_array::types::TimestampMillisecondType>();
    let samples = written
        .column(2)
        .as_primitive::<arrow_array::types::Int64Type>();
    let first = starts.value(0);
    let last = starts.value(written.num_rows() - 1);
    Ok(Some(PartitionEntry {
        path: format!("{name}/{PART_FILE}"),
        rows: written.num_rows() as u64,
        samples: samples.iter().flatten().map(|s| s as u64).sum(),
        first_window: format_iso(first),
        last_window: format_iso(last),
        last_window_end_ms: config.calendar.window(granularity, last).1,
    }))
}

/// Writes one partition, records it in `report` and in the granularity's manifest.
pub(super) fn write_and_report(
    config: &ParquetSinkConfig,
    report: &Mutex<SinkReport>,
    stats: &ParquetStats,
    granularity: Granularity,
    partition_start: i64,
    part: OpenPartition,
) {
    let started = std::time::Instant::now();
    let result = flush(config, granularity, partition_start, part).and_then(|entry| {
        if let Some(entry) = &entry {
            update_manifest(&config.out, granularity, std::slice::from_ref(entry))?;
        }
        Ok(entry)
    });
    if let Ok(Some(entry)) = &result {
        use std::sync::atomic::Ordering::Relaxed;
        stats.write_seconds.observe(started.elapsed());
        stats.windows_written[granularity as usize].fetch_add(entry.rows, Relaxed);
        stats.files_written.fetch_add(1, Relaxed);
    }
    let mut report = report.lock().expect("report lock");
    match result {
        Ok(Some(entry)) => report.written.entry(granularity).or_default().push(entry),
        Ok(None) => {}
        Err(e) => report.errors.push(e),
    }
}

/// Sealed partitions waiting for the writer thread; two at most, so a slow disk slows the
/// dataflow down instead of filling memory.
const WRITE_QUEUE: usize = 2;

/// A partition handed to the writer, with the number the sink knows it by.
pub(super) type WriteJob = (u64, Granularity, i64, OpenPartition);

/// Encodes and writes sealed partitions on a thread of its own, so the worker goes on
/// parsing and aggregating meanwhile (Parquet encoding is about half of a replay's work).
/// Each finished job's number goes to `done` and the sink is woken. Dropping the writer waits
/// for the queued partitions to be written.
pub(super) struct PartitionWriter {
    queue: Option<std::sync::mpsc::SyncSender<WriteJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    stats: Arc<ParquetStats>,
    done: Arc<Mutex<Vec<u64>>>,
}

impl PartitionWriter {
    pub(super) fn start(
        config: Arc<ParquetSinkConfig>,
        report: Arc<Mutex<SinkReport>>,
        stats: Arc<ParquetStats>,
        done: Arc<Mutex<Vec<u64>>>,
        wake: timely::scheduling::SyncActivator,
    ) -> PartitionWriter {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<WriteJob>(WRITE_QUEUE);
        let (c, r, s, d) = (
            Arc::clone(&config),
            Arc::clone(&report),
            Arc::clone(&stats),
            Arc::clone(&done),
        );
        let thread = std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || {
                for (id, granularity, start, part) in jobs {
                    write_and_report(&c, &r, &s, granularity, start, part);
                    d.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                    // Fails only when the worker is gone; then there is nobody to wake.
                    let _ = wake.activate();
                }
            });
        let (queue, thread) = match thread {
            Ok(thread) => (Some(queue), Some(thread)),
            // No thread to be had: write on the worker itself.
            Err(_) => (None, None),
        };
        PartitionWriter {
            queue,
            thread,
            config,
            report,
            stats,
            done,
        }
    }

    pub(super) fn write(&mut self, job: WriteJob) {
        let job = match &self.queue {
            Some(queue) => match queue.send(job) {
                Ok(()) => return,
                // The writer thread is gone (it panicked): write here instead.
                Err(std::sync::mpsc::SendError(job)) => {
                    self.queue = None;
                    job
                }
            },
            None => job,
        };
        let (id, g, start, part) = job;
        write_and_report(&self.config, &self.report, &self.stats, g, start, part);
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                self.report
                    .lock()
                    .expect("report lock")
                    .errors
                    .push("the Parquet writer thread panicked".into());
            }
        }
    }
}
