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
//! file, even right after a crash; the manifest is updated as files are made durable ([`manifest`]).
//!
//! # When a partition is written
//! Updates are routed to workers by partition and meter bucket ([`ParquetSinkConfig::buckets`]),
//! and applied per window as they arrive. A window is sealed once the sink's input frontier
//! passes its end: every update of a window carries a time before the window's end, so from
//! then on its value is final. Sealed windows leave the open partition in file order
//! (`(window_start, meter)`: the windows of a granularity tile time, so the order in which
//! they seal is the order of their starts) and go to the partition's file a row group of
//! [`ROW_GROUP_ROWS`] at a time; when the frontier passes the partition's end, the last row
//! group is written and the file is renamed into place. When the input ends, what remains is
//! written.
//!
//! # Memory
//! Per open partition (granularity, month or year, bucket): its unsealed windows (about one
//! per meter and granularity, more while late data is accepted: at most meters × (lateness /
//! window length + 1)), fewer than [`ROW_GROUP_ROWS`] sealed windows, and the row groups in
//! flight to the writer thread (at most four jobs queued and one being encoded). A window row
//! takes about 280 bytes (key, aggregate, index), so a row group about 35 MiB, and the sink's
//! memory does not grow with the length of the history nor, beyond the open windows, with the
//! number of meters. Measured (`benchmarks/README.md`): 100,000 meters over 6 hours, 36 million
//! readings, peak RSS 2.3 GiB for the whole `run` with the default 10-minute lateness (the open
//! windows of the aggregation and of this sink: about 2 KiB per open minute window); the sink
//! before streaming held the whole month and needed more than 24 GiB.
//!
//! # Durability
//! The writer thread encodes; a second thread syncs each finished file, renames it into place
//! and, for the files that finished close together, syncs their folders and updates the
//! manifests once ([`writer`]); only then is a partition's capability released. A failed write
//! is a [`ParquetSinkError`] naming its file: the partition keeps its capability until the
//! input ends, and the run then fails with the error. Given a [`Halt`], the sink also stops the
//! run at once: commits and checkpoints are held first, so nothing past the failed file's
//! windows is committed even when the capability goes with the end of the input (a Kafka run
//! would otherwise commit its whole topic at its end, and a rerun find nothing to rewrite).
//!
//! # Durability frontier
//! The sink's one output carries no data. It holds, for every partition kept in memory or being
//! written, the time of the partition's earliest update, and lets it go once the file is
//! durable: its frontier passes a time once every window updated at or before it is in a file.
//! A pipeline commits its source positions by this frontier (with the other sinks').
//!
//! # Encoding
//! zstd level 1; dictionaries only for `meter` (the numeric columns are high-cardinality and
//! gain nothing from them); a row group every [`ROW_GROUP_ROWS`] rows, so a file's bytes depend
//! only on its rows (a month of one meter is one row group). `_sum`, `_min`, `_max` are exact
//! `DECIMAL(18,3)`; averages and derived values are doubles.

pub mod error;
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

pub use error::{At, FileFault, ParquetSinkError};
pub use layout::{
    partition_bounds, partition_bounds_in, partition_of, partition_of_in, view_batch,
    view_batch_for, view_schema, view_schema_for,
};
pub use manifest::{check_buckets, read_manifest, update_manifest, Manifest, PartitionEntry};
pub use writer::{clean_debris, merge_sorted_files, write_partition, FileSummary, PartitionFile};

use crate::error::Halt;
use crate::hash::FxMap;
use crate::model::{Aggregate, Granularity, MeterId, WindowKey};
use crate::time::Calendar;
use crate::Time;
use writer::{PartKey, PartitionWriter, WriteJob};

/// zstd level used for the views.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Name of the per-granularity manifest.
pub const MANIFEST_FILE: &str = "_manifest.json";
/// Name of the data file of each partition with one meter bucket (the default).
pub const PART_FILE: &str = "part-0.parquet";
/// Rows in a row group of a view file (the last of a file may hold fewer). A month of one
/// meter's minutes (44,640) fits in one; with many meters the sink writes a partition a row
/// group at a time as its windows seal, so it never holds more than this many sealed rows of
/// it (about 35 MiB, see the module docs).
pub const ROW_GROUP_ROWS: usize = 1 << 17;

/// Where and how to write the batch views.
#[derive(Clone, Debug)]
pub struct ParquetSinkConfig {
    /// Output folder; each granularity gets a sub-folder.
    pub out: PathBuf,
    /// zstd compression level.
    pub zstd_level: i32,
    /// The calendar of partitions and of `window_start` (default: naive local time).
    pub calendar: crate::time::Calendar,
    /// Files per partition (default 1): meters are spread over `part-0.parquet` …
    /// `part-<buckets − 1>.parquet` by a hash of their id, and each bucket of a partition is
    /// written by one worker, so with many meters the encoding spreads over the workers. It
    /// does not depend on the number of workers or processes, so neither do the files; a view
    /// must keep the number it was first written with.
    pub buckets: u32,
}

impl ParquetSinkConfig {
    /// Defaults for `out`.
    pub fn new(out: impl Into<PathBuf>) -> ParquetSinkConfig {
        ParquetSinkConfig {
            out: out.into(),
            zstd_level: DEFAULT_ZSTD_LEVEL,
            calendar: crate::time::Calendar::Naive,
            buckets: 1,
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
    pub errors: Vec<ParquetSinkError>,
}

/// A window of a partition, `(meter, start)`, and its value (`None`: retracted to nothing).
pub(crate) type Row = ((MeterId, i64), Option<Aggregate>);

/// Windows of an open partition that are not yet in its file.
pub(crate) struct OpenPartition {
    /// The number the writer knows this partition by.
    id: u64,
    end: i64,
    /// Unsealed windows in arrival order (which is window order for a replay, so a file needs
    /// no sort), with an index by key; `None` for a window retracted to nothing.
    rows: Vec<Row>,
    index: FxMap<(MeterId, i64), u32>,
    /// Sealed windows in file order, waiting for a whole row group (all `Some`).
    sealed: Vec<Row>,
    /// The earliest window start among `rows` (`i64::MAX` when empty).
    earliest: i64,
    /// Look for sealed windows among `rows` only once it holds this many.
    next_check: usize,
}

impl OpenPartition {
    fn new(id: u64, end: i64, expected: usize) -> OpenPartition {
        OpenPartition {
            id,
            end,
            rows: Vec::with_capacity(expected.min(ROW_GROUP_ROWS)),
            index: FxMap::default(),
            sealed: Vec::new(),
            earliest: i64::MAX,
            next_check: 0,
        }
    }

    /// Whether scanning `rows` for sealed windows is worth it at frontier `f`: some window has
    /// ended, there are enough windows for a row group, and `rows` has grown enough since the
    /// last scan (by half of what it kept) to pay for the scan.
    fn worth_sealing(&self, granularity: Granularity, f: i64, calendar: &Calendar) -> bool {
        self.rows.len() + self.sealed.len() >= ROW_GROUP_ROWS
            && self.rows.len() >= self.next_check
            && self.earliest != i64::MAX
            && calendar.window(granularity, self.earliest).1 <= f
    }

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
                self.earliest = self.earliest.min(key.1);
            }
            None => {}
        }
    }

    /// Moves the windows that end at or before `through` (all of them with `None`) from
    /// `rows` to `sealed`. No update of those can come any more (every update of a window
    /// carries a time before its end), and every window sealed before ends before them: the
    /// windows of a granularity tile time, so `sealed` stays in file order.
    fn seal(&mut self, granularity: Granularity, through: Option<i64>, calendar: &Calendar) {
        let is_sealed = |start: i64| match through {
            None => true,
            Some(f) => calendar.window(granularity, start).1 <= f,
        };
        let order = |((meter, start), _): &Row| (*start, *meter);
        if through.is_none()
            && self.sealed.is_empty()
            && self.rows.iter().all(|(_, agg)| agg.is_some())
            && self.rows.is_sorted_by_key(order)
        {
            // A replay's partition, sealed whole: its windows came in file order.
            self.sealed = std::mem::take(&mut self.rows);
            self.index.clear();
            self.earliest = i64::MAX;
            return;
        }
        let mut done = Vec::new();
        // In place: the unsealed windows stay where they are, in arrival order.
        self.rows.retain(|&((meter, start), agg)| {
            if !is_sealed(start) {
                return true;
            }
            if agg.is_some() {
                done.push(((meter, start), agg));
            }
            false
        });
        if !done.is_sorted_by_key(order) {
            done.sort_unstable_by_key(order);
        }
        if self.sealed.is_empty() {
            self.sealed = done;
        } else {
            self.sealed.append(&mut done);
        }
        self.index.clear();
        self.earliest = i64::MAX;
        for (i, (key, _)) in self.rows.iter().enumerate() {
            self.index.insert(*key, i as u32);
            self.earliest = self.earliest.min(key.1);
        }
        let open = self.rows.len();
        self.next_check = open + open / 2;
    }

    /// The next whole row group of sealed windows; with `last`, also the rest.
    fn row_group(&mut self, last: bool) -> Option<Vec<Row>> {
        if self.sealed.len() > ROW_GROUP_ROWS {
            let rest = self.sealed.split_off(ROW_GROUP_ROWS);
            Some(std::mem::replace(&mut self.sealed, rest))
        } else if self.sealed.len() == ROW_GROUP_ROWS || (last && !self.sealed.is_empty()) {
            Some(std::mem::take(&mut self.sealed))
        } else {
            None
        }
    }
}

/// The bucket of `meter` among `buckets` (see [`ParquetSinkConfig::buckets`]): a hash of its
/// id that does not depend on the process, the platform or the number of workers.
pub fn bucket_of(meter: &MeterId, buckets: u32) -> u32 {
    use std::hash::Hasher;
    if buckets <= 1 {
        return 0;
    }
    let mut h = crate::hash::FxHasher::default();
    h.write(meter.as_str().as_bytes());
    // The high bits mix best.
    ((h.finish() >> 32) % buckets as u64) as u32
}

/// The file of a meter bucket in a partition folder: `part-<bucket>.parquet`.
pub fn part_file(bucket: u32) -> String {
    format!("part-{bucket}.parquet")
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
/// this process) and in each granularity's manifest; a failed write also stops the run through
/// `halt`, when given.
///
/// Updates are applied as they arrive: the aggregation operator sends the `−old, +new` of a
/// window in time order over one channel, and timely channels keep order, so the last `+` of a
/// window is its value. (Insert a consolidation in between and this no longer holds.)
pub fn parquet_sink<'scope>(
    updates: StreamVec<'scope, Time, ((WindowKey, Aggregate), Time, isize)>,
    config: Arc<ParquetSinkConfig>,
    report: Arc<Mutex<SinkReport>>,
    stats: Arc<ParquetStats>,
    halt: Option<Halt>,
) -> StreamVec<'scope, Time, ()> {
    let scope = updates.scope();
    let mut builder = OperatorBuilder::new("ParquetViewSink".to_owned(), scope);
    let (calendar, buckets) = (config.calendar.clone(), config.buckets.max(1));
    let pact = Exchange::new(
        move |((k, _), _, _): &((WindowKey, Aggregate), Time, isize)| {
            let (start, _) = partition_bounds_in(&calendar, k.granularity, k.start);
            let bucket = bucket_of(&k.meter, buckets) as u64;
            (start as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ k.granularity as u64
                ^ bucket.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
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
        let mut open: FxMap<PartKey, (OpenPartition, Capability<Time>)> = FxMap::default();
        // Partitions handed to the writer, by number, until their file is durable.
        let mut writing: FxMap<u64, Capability<Time>> = FxMap::default();
        // Partitions whose file could not be written: held until the input ends, so nothing
        // downstream takes them for durable (the run then fails with the error).
        let mut failed: Vec<Capability<Time>> = Vec::new();
        let mut next_id = 0u64;
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
                    let (pstart, pend) = match last {
                        Some((g, a, b))
                            if g == key.granularity && a <= key.start && key.start < b =>
                        {
                            (a, b)
                        }
                        _ => {
                            let (a, b) =
                                partition_bounds_in(&config.calendar, key.granularity, key.start);
                            last = Some((key.granularity, a, b));
                            (a, b)
                        }
                    };
                    let bucket = bucket_of(&key.meter, buckets);
                    let part_key = (key.granularity, pstart, bucket);
                    let (part, held) = open.entry(part_key).or_insert_with(|| {
                        // One meter's windows: growth copies big rows, so start at the likely size.
                        let expected = ((pend - pstart) / key.granularity.len_ms()) as usize;
                        next_id += 1;
                        (
                            OpenPartition::new(next_id, pend, expected),
                            hold(&cap, time),
                        )
                    });
                    if time < *held.time() {
                        *held = hold(&cap, time);
                    }
                    part.apply((key.meter, key.start), agg, diff);
                }
            });
            let frontier = frontiers[0].frontier().first().map(|&f| f as i64);
            let Some(w) = writer.as_mut() else { return };
            // Whole partitions that are sealed, and row groups of those still open.
            let mut ready = Vec::new();
            for (key, (part, _)) in open.iter_mut() {
                match frontier {
                    Some(f) if part.end > f => {
                        if part.worth_sealing(key.0, f, &config.calendar) {
                            part.seal(key.0, Some(f), &config.calendar);
                            while let Some(rows) = part.row_group(false) {
                                let (id, key) = (part.id, *key);
                                w.write(WriteJob::Rows { id, key, rows });
                            }
                        }
                    }
                    _ => ready.push(*key),
                }
            }
            ready.sort();
            for key in ready {
                let (mut part, cap) = open.remove(&key).expect("ready partition");
                part.seal(key.0, None, &config.calendar);
                while let Some(rows) = part.row_group(true) {
                    w.write(WriteJob::Rows {
                        id: part.id,
                        key,
                        rows,
                    });
                }
                writing.insert(part.id, cap);
                w.write(WriteJob::Close { id: part.id, key });
            }
            if frontier.is_none() {
                // Every partition is handed over: wait for the files before the operator retires,
                // so whoever runs the graph finds them written when it completes.
                writer.take();
            }
            for (id, durable) in
                std::mem::take(&mut *done.lock().unwrap_or_else(|e| e.into_inner()))
            {
                if let Some(cap) = writing.remove(&id) {
                    if !durable {
                        failed.push(cap);
                        // Stop now: a failed file is not retried, and nothing after its
                        // windows may be committed, even once the input ends.
                        if let Some(halt) = &halt {
                            let report = report.lock().unwrap_or_else(|e| e.into_inner());
                            match report.errors.last() {
                                Some(e) => halt.stop_for(e),
                                None => halt.stop_for(&"a batch view file was not written"),
                            }
                        }
                    }
                }
            }
            if frontier.is_none() {
                failed.clear();
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
    fn buckets_spread_meters_evenly_and_the_same_way_every_time() {
        let mut counts = [0u32; 4];
        for i in 0..1000 {
            let meter = MeterId::new(&format!("household-{i}")).unwrap();
            let b = bucket_of(&meter, 4);
            assert_eq!(b, bucket_of(&meter, 4));
            counts[b as usize] += 1;
            assert_eq!(bucket_of(&meter, 1), 0);
        }
        assert!(
            counts.iter().all(|&c| (150..=350).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn an_open_partition_seals_its_windows_in_file_order() {
        let minute = |i: u32| time::naive_to_ms(2007, 1, 1, 0, i, 0).unwrap();
        let agg = |v: i32| {
            Aggregate::of(&Reading {
                meter: MeterId::new("x").unwrap(),
                ts: 0,
                interval_s: 60,
                values: [v, 0, 230_000, 0, 0, 0, 0],
                origin: Origin::default(),
            })
        };
        let (a, bb) = (MeterId::new("bb").unwrap(), MeterId::new("a").unwrap());
        let mut part = OpenPartition::new(1, minute(59), 60);
        // Arrival order is not file order; one window is retracted to nothing.
        for (m, i, v) in [
            (a, 1, 1),
            (bb, 1, 2),
            (bb, 0, 3),
            (a, 0, 4),
            (a, 2, 5),
            (bb, 2, 6),
        ] {
            part.apply((m, minute(i)), agg(v), 1);
        }
        part.apply((a, minute(0)), agg(4), -1);
        part.seal(Granularity::Minute, Some(minute(2)), &Calendar::Naive);
        let keys: Vec<(i64, MeterId)> = part.sealed.iter().map(|((m, s), _)| (*s, *m)).collect();
        assert_eq!(keys, vec![(minute(0), bb), (minute(1), bb), (minute(1), a)]);
        assert_eq!(part.rows.len(), 2, "minute 2 is still open");
        assert_eq!(
            part.row_group(false).map(|r| r.len()),
            None,
            "not a whole row group"
        );
        // A later update of an open window still lands in it.
        part.apply((a, minute(2)), agg(5), -1);
        part.apply((a, minute(2)), agg(7), 1);
        part.seal(Granularity::Minute, None, &Calendar::Naive);
        let rows = part.row_group(true).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[4].0 .0, a);
        assert_eq!(rows[4].1, Some(agg(7)));
        assert!(part.row_group(true).is_none());

        // In file order and sealed whole (a replay): the rows go as they are.
        let mut part = OpenPartition::new(2, minute(59), 60);
        for i in 0..3 {
            for m in [bb, a] {
                part.apply((m, minute(i)), agg(i as i32), 1);
            }
        }
        part.seal(Granularity::Minute, None, &Calendar::Naive);
        let rows = part.row_group(true).unwrap();
        let keys: Vec<(i64, MeterId)> = rows.iter().map(|((m, s), _)| (*s, *m)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 6);
    }

    #[test]
    fn a_partition_is_written_a_row_group_at_a_time_while_it_is_still_open() {
        use timely::dataflow::operators::{Input, Probe};
        use timely::dataflow::{InputHandle, ProbeHandle};

        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(ParquetSinkConfig::new(dir.path()));
        let month = dir.path().join("minute").join("month=2007-01");
        let report = Arc::new(Mutex::new(SinkReport::default()));
        let (c, r) = (Arc::clone(&config), Arc::clone(&report));
        let (m, meters, minutes) = (month.clone(), 200u32, 700u32);
        timely::execute_directly(move |worker| {
            let mut input = InputHandle::<Time, _>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Time, _, _>(|scope| {
                let updates = scope.input_from(&mut input);
                parquet_sink(updates, c, r, Arc::new(ParquetStats::default()), None)
                    .probe_with(&probe);
            });
            let t0 = time::naive_to_ms(2007, 1, 1, 0, 0, 0).unwrap();
            for minute in 0..minutes {
                let ts = t0 + minute as i64 * 60_000;
                input.advance_to(ts as Time);
                for meter in 0..meters {
                    let reading = Reading {
                        meter: MeterId::new(&format!("m{meter}")).unwrap(),
                        ts,
                        interval_s: 60,
                        values: [
                            1_000 + ((meter * 7 + minute * 13) % 5_000) as i32,
                            0,
                            230_000,
                            0,
                            0,
                            0,
                            0,
                        ],
                        origin: Origin::default(),
                    };
                    let key = WindowKey::of(&reading, Granularity::Minute);
                    input.send(((key, Aggregate::of(&reading)), ts as Time, 1));
                }
            }
            // Every window has ended, the month has not: more than a row group is sealed.
            input.advance_to((t0 + minutes as i64 * 60_000) as Time);
            let temporary = || {
                std::fs::read_dir(&m).ok().and_then(|entries| {
                    entries.flatten().find_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                        name.ends_with(".tmp").then_some(size)
                    })
                })
            };
            let started = std::time::Instant::now();
            while temporary().is_none_or(|size| size < 10_000) {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(30),
                    "no row group was written while the month was open"
                );
                worker.step();
            }
            assert!(
                !m.join(PART_FILE).exists(),
                "the file is not visible before it is whole"
            );
            drop(input);
            while !probe.done() {
                worker.step();
            }
        });
        assert!(report.lock().unwrap().errors.is_empty());
        let file = std::fs::File::open(month.join(PART_FILE)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let rows = reader.metadata().file_metadata().num_rows() as usize;
        assert_eq!(rows, 200 * 700);
        assert_eq!(
            reader.metadata().num_row_groups(),
            rows.div_ceil(ROW_GROUP_ROWS)
        );
        let leftovers = std::fs::read_dir(&month).unwrap().count();
        assert_eq!(leftovers, 1, "only the file: no temporary left");
    }

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
            1,
            &[
                e("year=2006/part-0.parquet", 10, 5),
                e("year=2007/part-0.parquet", 20, 9),
            ],
        )
        .unwrap();
        let m = update_manifest(
            dir.path(),
            Granularity::Hour,
            1,
            &[e("year=2007/part-0.parquet", 30, 12)],
        )
        .unwrap();
        assert_eq!(m.rows, 40);
        assert_eq!(m.sealed_through_ms, 12);
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(read_manifest(dir.path(), Granularity::Hour).unwrap(), m);
    }
}
