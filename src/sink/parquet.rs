//! Batch views: sealed windows as Hive-partitioned Parquet, one dataset per granularity.
//!
//! # Layout (the batch view contract of DESIGN.md)
//! ```text
//! <out>/minute/month=2006-12/part-0.parquet     one file per calendar month
//! <out>/hour/year=2006/part-0.parquet           one file per year
//! <out>/day/year=2006/part-0.parquet            one file per year
//! <out>/<granularity>/_manifest.json            sealed high-water mark, row counts, files
//! ```
//! Rows are sorted by `(window_start, meter)`; file names are deterministic, so a second run
//! over the same input replaces files instead of adding to them (dynamic partition overwrite:
//! partitions a run does not touch are left as they are). Files are written under a hidden
//! temporary name and renamed into place, so a reader never sees half a file.
//!
//! # When a partition is written
//! Updates are routed to workers by partition, consolidated per window, and kept until the
//! sink's input frontier passes the partition's end: every update of a window carries a time
//! before the window's end, so from then on the partition is final and is written once. When
//! the input ends, what remains is written. Memory is one open partition per granularity and
//! meter group (a month of minutes), not the history.
//!
//! # Encoding
//! zstd level 1; dictionaries only for `meter` (the numeric columns are high-cardinality and
//! gain nothing from them); one row group per file. `_sum`, `_min`, `_max` are exact
//! `DECIMAL(18,3)`; averages and derived values are doubles.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{Decimal128Builder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::hash::FxMap;
use crate::model::{Aggregate, Granularity, Measure, MeterId, WindowKey};
use crate::time::{self, format_iso};
use crate::Time;

/// zstd level used for the views.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Name of the per-granularity manifest.
pub const MANIFEST_FILE: &str = "_manifest.json";
/// Name of the data file in each partition.
pub const PART_FILE: &str = "part-0.parquet";

/// Where and how to write the batch views.
#[derive(Clone, Debug)]
pub struct ParquetSinkConfig {
    /// Output folder; each granularity gets a sub-folder.
    pub out: PathBuf,
    /// zstd compression level.
    pub zstd_level: i32,
}

impl ParquetSinkConfig {
    /// Defaults for `out`.
    pub fn new(out: impl Into<PathBuf>) -> ParquetSinkConfig {
        ParquetSinkConfig {
            out: out.into(),
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// Hive partition of a window: `(first instant, end)`.
pub fn partition_bounds(granularity: Granularity, start: i64) -> (i64, i64) {
    match granularity {
        Granularity::Minute => time::month_bounds(start),
        Granularity::Hour | Granularity::Day => time::year_bounds(start),
    }
}

/// Hive partition of a window: `(first instant, end, folder name)`.
pub fn partition_of(granularity: Granularity, start: i64) -> (i64, i64, String) {
    let (a, b) = partition_bounds(granularity, start);
    let name = match granularity {
        Granularity::Minute => format!("month={}", &time::format_date(a)[..7]),
        Granularity::Hour | Granularity::Day => format!("year={}", &time::format_date(a)[..4]),
    };
    (a, b, name)
}

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
    /// Files, sorted by path.
    pub partitions: Vec<PartitionEntry>,
}

/// What the sink wrote in this run, per granularity; filled by all workers.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Files written in this run.
    pub written: BTreeMap<Granularity, Vec<PartitionEntry>>,
    /// Write errors.
    pub errors: Vec<String>,
}

/// The Arrow schema of the views.
pub fn view_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("meter", DataType::Utf8, false),
        Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("samples", DataType::Int64, false),
        Field::new("covered_seconds", DataType::Int64, false),
    ];
    for m in Measure::ALL {
        for stat in ["sum", "min", "max"] {
            fields.push(Field::new(
                format!("{}_{stat}", m.name()),
                DataType::Decimal128(18, 3),
                false,
            ));
        }
        fields.push(Field::new(
            format!("{}_avg", m.name()),
            DataType::Float64,
            false,
        ));
    }
    fields.push(Field::new("active_energy_wh", DataType::Float64, false));
    fields.push(Field::new("unmetered_wh", DataType::Float64, false));
    fields.push(Field::new("power_factor_avg", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

/// Builds a record batch of view rows, in the given order.
pub fn view_batch(
    rows: &[(WindowKey, &Aggregate)],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut meter = StringBuilder::with_capacity(n, n * 12);
    let mut starts = Vec::with_capacity(n);
    let mut samples = Int64Builder::with_capacity(n);
    let mut covered = Int64Builder::with_capacity(n);
    let mut sums: Vec<[Vec<i128>; 3]> = (0..Measure::ALL.len())
        .map(|_| {
            [
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            ]
        })
        .collect();
    let mut avgs: Vec<Float64Builder> = (0..Measure::ALL.len())
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    let mut energy = Float64Builder::with_capacity(n);
    let mut unmetered = Float64Builder::with_capacity(n);
    let mut pf = Float64Builder::with_capacity(n);
    for (key, agg) in rows {
        let f = agg.finish();
        meter.append_value(key.meter.as_str());
        starts.push(key.start);
        samples.append_value(f.samples as i64);
        covered.append_value(f.covered_s as i64);
        for (i, fm) in f.measures.iter().enumerate() {
            sums[i][0].push(fm.sum as i128);
            sums[i][1].push(fm.min as i128);
            sums[i][2].push(fm.max as i128);
            avgs[i].append_value(fm.avg);
        }
        energy.append_value(f.active_energy_wh);
        unmetered.append_value(f.unmetered_wh);
        pf.append_option(f.power_factor_avg);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(meter.finish()),
        Arc::new(TimestampMillisecondArray::from(starts)),
        Arc::new(samples.finish()),
        Arc::new(covered.finish()),
    ];
    for (stats, mut avg) in sums.into_iter().zip(avgs) {
        for values in stats {
            let mut b = Decimal128Builder::with_capacity(n).with_precision_and_scale(18, 3)?;
            b.append_slice(&values);
            columns.push(Arc::new(b.finish()));
        }
        columns.push(Arc::new(avg.finish()));
    }
    columns.push(Arc::new(energy.finish()));
    columns.push(Arc::new(unmetered.finish()));
    columns.push(Arc::new(pf.finish()));
    RecordBatch::try_new(view_schema(), columns)
}

/// Writer settings: timestamps and counts delta-encoded (near zero bits a row); dictionary only
/// for `meter`. (Measured on the UCI minute view: delta-encoding the decimals or
/// byte-stream-splitting the doubles made the files larger and no faster.)
fn writer_properties(zstd_level: i32) -> Result<WriterProperties, String> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| e.to_string())?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("meter"), true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(None);
    for field in view_schema().fields() {
        let encoding = match field.data_type() {
            DataType::Int64 | DataType::Timestamp(_, _) => Encoding::DELTA_BINARY_PACKED,
            _ => continue,
        };
        props = props.set_column_encoding(ColumnPath::from(field.name().as_str()), encoding);
    }
    Ok(props.build())
}

/// Writes `rows` (already sorted) to `dir/part-0.parquet` through a temporary file.
pub fn write_partition(
    dir: &Path,
    rows: &[(WindowKey, &Aggregate)],
    zstd_level: i32,
) -> Result<(), String> {
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| ctx(&e))?;
    let tmp = dir.join(format!(".{PART_FILE}.{}.tmp", std::process::id()));
    let batch = view_batch(rows).map_err(|e| ctx(&e))?;
    let file = File::create(&tmp).map_err(|e| ctx(&e))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(writer_properties(zstd_level)?))
            .map_err(|e| ctx(&e))?;
    writer.write(&batch).map_err(|e| ctx(&e))?;
    writer.close().map_err(|e| ctx(&e))?;
    std::fs::rename(&tmp, dir.join(PART_FILE)).map_err(|e| ctx(&e))?;
    Ok(())
}

/// The rows of a partition not yet written: in arrival order (which is window order for a
/// replay, so writing needs no sort and reads memory sequentially) with an index by key.
struct OpenPartition {
    end: i64,
    rows: Vec<((MeterId, i64), Option<Aggregate>)>,
    index: FxMap<(MeterId, i64), u32>,
}

impl OpenPartition {
    fn apply(&mut self, key: (MeterId, i64), agg: Aggregate, diff: isize) {
        match self.index.get(&key) {
            Some(&i) => {
                let row = &mut self.rows[i as usize].1;
                if diff > 0 {
                    *row = Some(agg);
                } else if *row == Some(agg) {
                    *row = None;
                }
            }
            None if diff > 0 => {
                self.index.insert(key, self.rows.len() as u32);
                self.rows.push((key, Some(agg)));
            }
            None => {}
        }
    }
}

/// Writes the window updates of `updates` as batch views; see the module docs.
/// What was written is recorded in `report` (shared by the workers of this process).
///
/// Updates are applied as they arrive: the aggregation operator sends the `−old, +new` of a
/// window in time order over one channel, and timely channels keep order, so the last `+` of a
/// window is its value. (Insert a consolidation in between and this no longer holds.)
pub fn parquet_sink(
    updates: StreamVec<'_, Time, ((WindowKey, Aggregate), Time, isize)>,
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
) {
    let mut open: FxMap<(Granularity, i64), OpenPartition> = FxMap::default();
    let mut writer = Some(PartitionWriter::start(
        Arc::clone(&config),
        Arc::clone(&report),
    ));
    let pact = Exchange::new(|((k, _), _, _): &((WindowKey, Aggregate), Time, isize)| {
        let (start, _) = partition_bounds(k.granularity, k.start);
        (start as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.granularity as u64
    });
    updates.sink(pact, "ParquetViewSink", move |(input, frontier)| {
        // The last partition looked up: consecutive updates almost always share it.
        let mut last: Option<(Granularity, i64, i64)> = None;
        input.for_each(|_, data| {
            for ((key, agg), _time, diff) in data.drain(..) {
                let pstart = match last {
                    Some((g, a, b)) if g == key.granularity && a <= key.start && key.start < b => a,
                    _ => {
                        let (a, b) = partition_bounds(key.granularity, key.start);
                        last = Some((key.granularity, a, b));
                        a
                    }
                };
                let part = open.entry((key.granularity, pstart)).or_insert_with(|| {
                    let end = partition_bounds(key.granularity, key.start).1;
                    // One meter's windows: growth copies big rows, so start at the likely size.
                    let expected = ((end - pstart) / key.granularity.len_ms()) as usize;
                    OpenPartition {
                        end,
                        rows: Vec::with_capacity(expected),
                        index: FxMap::default(),
                    }
                });
                part.apply((key.meter, key.start), agg, diff);
            }
        });
        let frontier = frontier.frontier();
        let sealed = |p: &OpenPartition| match frontier.first() {
            Some(&f) => p.end <= f as i64,
            None => true,
        };
        let mut ready: Vec<(Granularity, i64)> = open
            .iter()
            .filter(|(_, p)| sealed(p))
            .map(|(k, _)| *k)
            .collect();
        ready.sort();
        for key in ready {
            let part = open.remove(&key).expect("ready partition");
            match writer.as_mut() {
                Some(w) => w.write(key.0, key.1, part),
                None => write_and_report(&config, &report, key.0, key.1, part),
            }
        }
        if frontier.is_empty() {
            // Every partition is handed over: wait for the files before the operator retires,
            // so whoever runs the graph finds them written when it completes.
            writer.take();
        }
    });
}

fn write_and_report(
    config: &ParquetSinkConfig,
    report: &Mutex<SinkReport>,
    granularity: Granularity,
    partition_start: i64,
    part: OpenPartition,
) {
    let result = flush(config, granularity, partition_start, part);
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

type WriteJob = (Granularity, i64, OpenPartition);

/// Encodes and writes sealed partitions on a thread of its own, so the worker goes on
/// parsing and aggregating meanwhile (Parquet encoding is about half of a replay's work).
/// Dropping it waits for the queued partitions to be written.
struct PartitionWriter {
    queue: Option<std::sync::mpsc::SyncSender<WriteJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
}

impl PartitionWriter {
    fn start(config: Arc<ParquetSinkConfig>, report: Arc<Mutex<SinkReport>>) -> PartitionWriter {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<WriteJob>(WRITE_QUEUE);
        let (c, r) = (Arc::clone(&config), Arc::clone(&report));
        let thread = std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || {
                for (granularity, start, part) in jobs {
                    write_and_report(&c, &r, granularity, start, part);
                }
            });
        match thread {
            Ok(thread) => PartitionWriter {
                queue: Some(queue),
                thread: Some(thread),
                config,
                report,
            },
            // No thread to be had: write on the worker itself.
            Err(_) => PartitionWriter {
                queue: None,
                thread: None,
                config,
                report,
            },
        }
    }

    fn write(&mut self, granularity: Granularity, start: i64, part: OpenPartition) {
        match &self.queue {
            Some(queue) => {
                if let Err(std::sync::mpsc::SendError(job)) = queue.send((granularity, start, part))
                {
                    // The writer thread is gone (it panicked): write here instead.
                    self.queue = None;
                    write_and_report(&self.config, &self.report, job.0, job.1, job.2);
                }
            }
            None => write_and_report(&self.config, &self.report, granularity, start, part),
        }
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

fn flush(
    config: &ParquetSinkConfig,
    granularity: Granularity,
    partition_start: i64,
    part: OpenPartition,
) -> Result<Option<PartitionEntry>, String> {
    let (_, _, name) = partition_of(granularity, partition_start);
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
    write_partition(&dir, &rows, config.zstd_level)?;
    let first = rows.first().expect("non-empty").0;
    let last = rows.last().expect("non-empty").0;
    Ok(Some(PartitionEntry {
        path: format!("{name}/{PART_FILE}"),
        rows: rows.len() as u64,
        samples: rows.iter().map(|(_, a)| a.samples).sum(),
        first_window: format_iso(first.start),
        last_window: format_iso(last.start),
        last_window_end_ms: last.end(),
    }))
}

/// Reads a granularity's manifest, if there is one.
pub fn read_manifest(out: &Path, granularity: Granularity) -> Option<Manifest> {
    let text = std::fs::read_to_string(out.join(granularity.name()).join(MANIFEST_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Merges this run's files into the granularity's manifest (entries for rewritten partitions
/// are replaced, others kept) and writes it through a temporary file.
pub fn update_manifest(
    out: &Path,
    granularity: Granularity,
    written: &[PartitionEntry],
) -> Result<Manifest, String> {
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
        partitions,
    };
    let dir = out.join(granularity.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(MANIFEST_FILE))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, Reading};

    #[test]
    fn partitions_follow_calendar_months_and_years() {
        let ts = time::naive_to_ms(2008, 2, 29, 13, 5, 0).unwrap();
        let (a, b, name) = partition_of(Granularity::Minute, ts);
        assert_eq!(name, "month=2008-02");
        assert_eq!(a, time::naive_to_ms(2008, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(b, time::naive_to_ms(2008, 3, 1, 0, 0, 0).unwrap());
        let (a, b, name) = partition_of(Granularity::Hour, ts);
        assert_eq!(name, "year=2008");
        assert_eq!(a, time::naive_to_ms(2008, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(b, time::naive_to_ms(2009, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(partition_of(Granularity::Day, ts).2, "year=2008");
    }

    #[test]
    fn batch_has_the_contract_columns_and_exact_decimals() {
        let r = Reading {
            meter: MeterId::new("h1").unwrap(),
            ts: 0,
            interval_s: 60,
            values: [4_216, 418, 234_840, 18_400, 0, 1_000, 17_000],
            origin: Origin::default(),
        };
        let key = WindowKey::of(&r, Granularity::Minute);
        let agg = Aggregate::of(&r);
        let batch = view_batch(&[(key, &agg)]).unwrap();
        assert_eq!(batch.num_columns(), 4 + 7 * 4 + 3);
        let schema = batch.schema();
        for name in [
            "meter",
            "window_start",
            "samples",
            "global_active_power_sum",
            "sub_metering_3_max",
            "voltage_avg",
            "active_energy_wh",
            "unmetered_wh",
            "power_factor_avg",
        ] {
            assert!(schema.field_with_name(name).is_ok(), "{name}");
        }
        let sum = batch
            .column_by_name("global_active_power_sum")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Decimal128Array>()
            .unwrap();
        assert_eq!(sum.value_as_string(0), "4.216");
    }

    #[test]
    fn manifest_merges_runs_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = |path: &str, rows, end| PartitionEntry {
            path: path.into(),
            rows,
            samples: rows,
            first_window: String::new(),
            last_window: String::new(),
            last_window_end_ms: end,
        };
        update_manifest(
            dir.path(),
            Granularity::Hour,
            &[
                e("year=2006/part-0.parquet", 10, 5),
                e("year=2007/part-0.parquet", 20, 9),
            ],
        )
        .unwrap();
        let m = update_manifest(
            dir.path(),
            Granularity::Hour,
            &[e("year=2007/part-0.parquet", 30, 12)],
        )
        .unwrap();
        assert_eq!(m.rows, 40);
        assert_eq!(m.sealed_through_ms, 12);
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(read_manifest(dir.path(), Granularity::Hour).unwrap(), m);
    }
}
