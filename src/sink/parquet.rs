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
//! partitions a run does not touch are left as they are). Files are written durably under a
//! hidden temporary name and renamed into place ([`writer`]), so a reader never sees half a
//! file, even right after a crash; the manifest is updated after every file ([`manifest`]).
//!
//! # When a partition is written
//! Updates are routed to workers by partition, consolidated per window, and kept until the
//! sink's input frontier passes the partition's end: every update of a window carries a time
//! before the window's end, so from then on the partition is final and is written once. When
//! the input ends, what remains is written. Memory is one open partition per granularity and
//! meter group (a month of minutes), not the history.
//!
//! # Durability frontier
//! The sink's one output carries no data. It holds, for every partition kept in memory or being
//! written, the time of the partition's earliest update, and lets it go once the file is
//! durable: its frontier passes a time once every window updated at or before it is in a file.
//! A pipeline commits its source positions by this frontier (with the other sinks').
//!
//! # Encoding
//! zstd level 1; dictionaries only for `meter` (the numeric columns are high-cardinality and
//! gain nothing from them); one row group per file. `_sum`, `_min`, `_max` are exact
//! `DECIMAL(18,3)`; averages and derived values are doubles.

pub mod layout;
pub mod manifest;
pub mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;

pub use layout::{
    partition_bounds, partition_bounds_in, partition_of, partition_of_in, view_batch,
    view_batch_for, view_schema, view_schema_for,
};
pub use manifest::{read_manifest, update_manifest, Manifest, PartitionEntry};
pub use writer::{clean_debris, write_partition};

use crate::hash::FxMap;
use crate::model::{Aggregate, Granularity, MeterId, WindowKey};
use crate::Time;
use writer::PartitionWriter;

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
    /// The calendar of partitions and of `window_start` (default: naive local time).
    pub calendar: crate::time::Calendar,
}

impl ParquetSinkConfig {
    /// Defaults for `out`.
    pub fn new(out: impl Into<PathBuf>) -> ParquetSinkConfig {
        ParquetSinkConfig {
            out: out.into(),
            zstd_level: DEFAULT_ZSTD_LEVEL,
            calendar: crate::time::Calendar::Naive,
        }
    }
}

/// Counters of the Parquet sink, shared by every worker (read them from any thread).
#[derive(Debug, Default)]
pub struct ParquetStats {
    /// Windows written, by [`Granularity`] index (minute, hour, day).
    pub windows_written: [std::sync::atomic::AtomicU64; 3],
    /// Partition files written.
    pub files_written: std::sync::atomic::AtomicU64,
    /// Time to encode and write one partition file.
    pub write_seconds: crate::metrics::Histogram,
}

/// What the sink wrote in this run, per granularity; filled by all workers.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Files written in this run.
    pub written: BTreeMap<Granularity, Vec<PartitionEntry>>,
    /// Write errors.
    pub errors: Vec<String>,
}

/// The rows of a partition not yet written: in arrival order (which is window order for a
/// replay, so writing needs no sort and reads memory sequentially) with an index by key.
pub(crate) struct OpenPartition {
    end: i64,
    pub(crate) rows: Vec<((MeterId, i64), Option<Aggregate>)>,
    pub(crate) index: FxMap<(MeterId, i64), u32>,
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

/// A capability for `time` from the capability of the message carrying it (a record is never
/// earlier than its message when it comes from wattflow's operators).
fn hold(cap: &InputCapability<Time>, time: Time) -> Capability<Time> {
    match cap.least() {
        Some(&least) if least <= time => cap.delayed(&time, 0),
        _ => cap.delayed(cap.least().expect("a message has a time"), 0),
    }
}

/// Writes the window updates of `updates` as batch views and returns the durability frontier
/// (see the module docs). What was written is recorded in `report` (shared by the workers of
/// this process) and in each granularity's manifest.
///
/// Updates are applied as they arrive: the aggregation operator sends the `−old, +new` of a
/// window in time order over one channel, and timely channels keep order, so the last `+` of a
/// window is its value. (Insert a consolidation in between and this no longer holds.)
pub fn parquet_sink<'scope>(
    updates: StreamVec<'scope, Time, ((WindowKey, Aggregate), Time, isize)>,
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    stats: Arc<ParquetStats>,
) -> StreamVec<'scope, Time, ()> {
    let scope = updates.scope();
    let mut builder = OperatorBuilder::new("ParquetViewSink".to_owned(), scope);
    let calendar = config.calendar.clone();
    let pact = Exchange::new(
        move |((k, _), _, _): &((WindowKey, Aggregate), Time, isize)| {
            let (start, _) = partition_bounds_in(&calendar, k.granularity, k.start);
            (start as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.granularity as u64
        },
    );
    let mut input = builder.new_input(updates, pact);
    let (output, durable) = builder.new_output::<Vec<()>>();
    let address = builder.operator_info().address;
    let wake = scope.worker().sync_activator_for(address.to_vec());

    builder.build(move |initial_capabilities| {
        drop(initial_capabilities);
        // Never used to send: kept so the output exists for as long as the operator.
        let _output = output;
        // Open partitions, each with the capability of its earliest update.
        let mut open: FxMap<(Granularity, i64), (OpenPartition, Capability<Time>)> =
            FxMap::default();
        // Partitions handed to the writer, by job number, until their file is durable.
        let mut writing: FxMap<u64, Capability<Time>> = FxMap::default();
        let mut next_job = 0u64;
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut writer = Some(PartitionWriter::start(
            Arc::clone(&config),
            Arc::clone(&report),
            Arc::clone(&stats),
            Arc::clone(&done),
            wake,
        ));
        move |frontiers| {
            // The last partition looked up: consecutive updates almost always share it.
            let mut last: Option<(Granularity, i64, i64)> = None;
            input.for_each(|cap, data| {
                for ((key, agg), time, diff) in data.drain(..) {
                    let pstart = match last {
                        Some((g, a, b))
                            if g == key.granularity && a <= key.start && key.start < b =>
                        {
                            a
                        }
                        _ => {
                            let (a, b) =
                                partition_bounds_in(&config.calendar, key.granularity, key.start);
                            last = Some((key.granularity, a, b));
                            a
                        }
                    };
                    let (part, held) = open.entry((key.granularity, pstart)).or_insert_with(|| {
                        let end =
                            partition_bounds_in(&config.calendar, key.granularity, key.start).1;
                        // One meter's windows: growth copies big rows, so start at the likely size.
                        let expected = ((end - pstart) / key.granularity.len_ms()) as usize;
                        let part = OpenPartition {
                            end,
                            rows: Vec::with_capacity(expected),
                            index: FxMap::default(),
                        };
                        (part, hold(&cap, time))
                    });
                    if time < *held.time() {
                        *held = hold(&cap, time);
                    }
                    part.apply((key.meter, key.start), agg, diff);
                }
            });
            let frontier = frontiers[0].frontier();
            let sealed = |p: &OpenPartition| match frontier.first() {
                Some(&f) => p.end <= f as i64,
                None => true,
            };
            let mut ready: Vec<(Granularity, i64)> = open
                .iter()
                .filter(|(_, (p, _))| sealed(p))
                .map(|(k, _)| *k)
                .collect();
            ready.sort();
            for key in ready {
                let (part, cap) = open.remove(&key).expect("ready partition");
                let job = next_job;
                next_job += 1;
                writing.insert(job, cap);
                if let Some(w) = writer.as_mut() {
                    w.write((job, key.0, key.1, part));
                }
            }
            if frontier.is_empty() {
                // Every partition is handed over: wait for the files before the operator retires,
                // so whoever runs the graph finds them written when it completes.
                writer.take();
            }
            for job in std::mem::take(&mut *done.lock().unwrap_or_else(|e| e.into_inner())) {
                writing.remove(&job);
            }
        }
    });
    durable
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, Reading};
    use crate::time;

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
