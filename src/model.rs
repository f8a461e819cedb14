//! The data model: readings, window keys and the aggregates that merge them.
//!
//! Every measure travels through the graph as an exact integer in thousandths of the dataset's
//! unit (W, W, mV, mA, mWh, mWh, mWh): the UCI file has exactly three decimals, so sums, minimums
//! and maximums are exact, results compare for equality, and merging order (one worker or many,
//! history path or live path) cannot change a single bit. Floats appear only when a view row is
//! finalised ([`Aggregate::finish`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time;

/// Fixed-point scale of per-reading power factors: rounded to 1e-9 so that window averages
/// are exact sums of integers (the same bits on any number of workers), yet within 5e-10 of
/// the float computation.
pub const PF_SCALE: f64 = 1e9;

/// Number of measures a reading carries.
pub const MEASURES: usize = 7;

/// The numeric columns of a view row after `meter` and `window_start`, in the view
/// contract's order: `samples`, `covered_seconds`, then `<measure>_{sum,min,max,avg}` for each
/// [`Measure`] in file order, then `active_energy_wh`, `unmetered_wh`, `power_factor_avg`. The
/// Parquet and Cassandra views and the serving layer all name their columns from here.
pub fn value_columns() -> &'static [String] {
    static COLUMNS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut cols = vec!["samples".to_owned(), "covered_seconds".to_owned()];
        for m in Measure::ALL {
            for stat in ["sum", "min", "max", "avg"] {
                cols.push(format!("{}_{stat}", m.name()));
            }
        }
        for c in ["active_energy_wh", "unmetered_wh", "power_factor_avg"] {
            cols.push(c.to_owned());
        }
        cols
    });
    &COLUMNS
}

/// The seven measures of the UCI data set, in file order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Measure {
    /// Household global minute-averaged active power, kW (thousandths: W).
    GlobalActivePower = 0,
    /// Household global minute-averaged reactive power, kW (thousandths: W).
    GlobalReactivePower = 1,
    /// Minute-averaged voltage, V (thousandths: mV).
    Voltage = 2,
    /// Household global minute-averaged current intensity, A (thousandths: mA).
    GlobalIntensity = 3,
    /// Kitchen sub-meter, Wh of active energy in the interval (thousandths: mWh).
    SubMetering1 = 4,
    /// Laundry-room sub-meter, Wh in the interval.
    SubMetering2 = 5,
    /// Water-heater and air-conditioner sub-meter, Wh in the interval.
    SubMetering3 = 6,
}

impl Measure {
    /// All measures in file order.
    pub const ALL: [Measure; MEASURES] = [
        Measure::GlobalActivePower,
        Measure::GlobalReactivePower,
        Measure::Voltage,
        Measure::GlobalIntensity,
        Measure::SubMetering1,
        Measure::SubMetering2,
        Measure::SubMetering3,
    ];

    /// Column name in views and messages (`global_active_power`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Measure::GlobalActivePower => "global_active_power",
            Measure::GlobalReactivePower => "global_reactive_power",
            Measure::Voltage => "voltage",
            Measure::GlobalIntensity => "global_intensity",
            Measure::SubMetering1 => "sub_metering_1",
            Measure::SubMetering2 => "sub_metering_2",
            Measure::SubMetering3 => "sub_metering_3",
        }
    }

    /// Position in [`Reading::values`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Largest meter id, in bytes, that fits inline.
pub const METER_ID_MAX: usize = 31;

/// A meter (household) id: a short string stored inline, so readings are `Copy` and never allocate.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeterId {
    len: u8,
    bytes: [u8; METER_ID_MAX],
}

/// A meter id that is empty, too long or not printable ASCII/UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid meter id {0:?}: 1 to 31 bytes of letters, digits, '-', '_', '.', ':' or '/'")]
pub struct InvalidMeterId(pub String);

impl MeterId {
    /// Makes a meter id from text; see [`InvalidMeterId`] for what is refused.
    pub fn new(id: &str) -> Result<MeterId, InvalidMeterId> {
        let ok = !id.is_empty()
            && id.len() <= METER_ID_MAX
            && id.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')
            });
        if !ok {
            return Err(InvalidMeterId(id.to_owned()));
        }
        let mut bytes = [0u8; METER_ID_MAX];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Ok(MeterId {
            len: id.len() as u8,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is admitted by `new`.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// A stable 64-bit hash (FNV-1a), identical on every worker and process.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &self.bytes[..self.len as usize] {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

impl fmt::Debug for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a reading came from: the index of its source in the run and its position there
/// (line number for text files, row for Parquet, offset for Kafka).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Origin {
    /// Index of the source (file, topic partition) in the run's list of sources.
    pub source: u32,
    /// Line (1-based), row or offset within the source.
    pub position: u64,
}

/// [`Origin::source`] values with this bit set are Kafka partitions (the partition in the low
/// bits, see [`Origin::kafka`]); the others index the run's history files.
pub const KAFKA_ORIGIN: u32 = 1 << 31;

/// [`Origin::source`] of the in-process simulated sensors ([`Origin::sensor`]; the household
/// in [`Origin::position`]).
pub const SENSOR_ORIGIN: u32 = 1 << 30;

impl Origin {
    /// The origin of the message at `offset` of Kafka partition `partition`.
    pub fn kafka(partition: i32, offset: i64) -> Origin {
        Origin {
            source: KAFKA_ORIGIN | (partition.max(0) as u32 & !KAFKA_ORIGIN),
            position: offset.max(0) as u64,
        }
    }

    /// The Kafka partition this origin names, if it is one.
    pub fn kafka_partition(&self) -> Option<i32> {
        (self.source & KAFKA_ORIGIN != 0).then_some((self.source & !KAFKA_ORIGIN) as i32)
    }

    /// The origin of a reading of simulated household `household` (the in-process sensors).
    pub fn sensor(household: u32) -> Origin {
        Origin {
            source: SENSOR_ORIGIN,
            position: household as u64,
        }
    }

    /// Whether this origin is a simulated in-process sensor.
    pub fn is_sensor(&self) -> bool {
        self.source == SENSOR_ORIGIN
    }

    /// The index of the history file this origin names, if it is one.
    pub fn file_index(&self) -> Option<usize> {
        (self.source & (KAFKA_ORIGIN | SENSOR_ORIGIN) == 0).then_some(self.source as usize)
    }
}

/// One reading of one meter over one interval.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reading {
    /// The household meter.
    pub meter: MeterId,
    /// Start of the interval, ms since the Unix epoch (naive local time written as if UTC).
    pub ts: i64,
    /// Length of the interval in seconds (60 for the UCI history, 1 for live sensors).
    pub interval_s: u32,
    /// The seven measures in thousandths, indexed by [`Measure::index`].
    pub values: [i32; MEASURES],
    /// Where the reading came from, for error reports.
    pub origin: Origin,
}

/// Bounds a reading must respect to be believed; beyond them it is rejected as absurd.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest plausible household power (active or reactive), in W.
    pub max_power_w: i32,
    /// Voltage range, in mV.
    pub voltage_mv: (i32, i32),
    /// Largest plausible current, in mA.
    pub max_current_ma: i32,
    /// Longest interval a reading may cover, in seconds.
    pub max_interval_s: u32,
}

/// Default [`Limits::max_power_w`]: 100 kW, several times a large house's connection.
pub const DEFAULT_MAX_POWER_W: i32 = 100_000;
/// Default [`Limits::voltage_mv`]: 0 to 500 V (a mains supply outside is a broken sensor).
pub const DEFAULT_VOLTAGE_MV: (i32, i32) = (0, 500_000);
/// Default [`Limits::max_current_ma`]: 500 A.
pub const DEFAULT_MAX_CURRENT_MA: i32 = 500_000;
/// Default [`Limits::max_interval_s`]: one hour.
pub const DEFAULT_MAX_INTERVAL_S: u32 = 3_600;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_power_w: DEFAULT_MAX_POWER_W,
            voltage_mv: DEFAULT_VOLTAGE_MV,
            max_current_ma: DEFAULT_MAX_CURRENT_MA,
            max_interval_s: DEFAULT_MAX_INTERVAL_S,
        }
    }
}

/// Why a reading or a record was refused. Carried to the dead-letter output with the record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The record does not have the expected number of fields.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// Fields the header announced.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// A field is not a number with at most three decimals.
    #[error("field {field}: {text:?} is not a number with at most 3 decimals")]
    BadNumber {
        /// Column name.
        field: String,
        /// The offending text (shortened).
        text: String,
    },
    /// The date or time does not parse or does not exist.
    #[error("bad date/time {text:?}: {why}")]
    BadTimestamp {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// Some but not all measures are missing (`?`).
    #[error("some measures are missing ('?') and others are not")]
    PartiallyMissing,
    /// A measure is negative.
    #[error("{field} is negative ({value})")]
    Negative {
        /// Measure name.
        field: String,
        /// Value in the measure's unit.
        value: String,
    },
    /// A measure is beyond the configured [`Limits`].
    #[error("{field} = {value} is beyond the plausible limit {limit}")]
    Absurd {
        /// Measure name.
        field: String,
        /// Value in the measure's unit.
        value: String,
        /// The limit it broke.
        limit: String,
    },
    /// The interval length is zero or too long.
    #[error("interval of {0} s is not in 1..={max}", max = DEFAULT_MAX_INTERVAL_S)]
    BadInterval(u32),
    /// The meter id is not acceptable.
    #[error("{0}")]
    BadMeter(String),
    /// Another reading with the same meter and timestamp was already counted.
    #[error("duplicate reading for meter {meter} at {ts}")]
    Duplicate {
        /// The meter.
        meter: String,
        /// The timestamp, ISO-8601 naive.
        ts: String,
    },
    /// The reading is older than the watermark minus the allowed lateness: its window is sealed.
    #[error(
        "too late: reading at {ts} is behind the watermark {watermark} (allowed lateness exceeded)"
    )]
    TooLate {
        /// The reading's timestamp.
        ts: String,
        /// The watermark it missed.
        watermark: String,
    },
    /// The reading is further in the future than the allowed clock skew.
    #[error("from the future: reading at {ts} is more than {skew_s} s ahead of {now}")]
    FromTheFuture {
        /// The reading's timestamp.
        ts: String,
        /// Reference time.
        now: String,
        /// Allowed skew in seconds.
        skew_s: u64,
    },
    /// The record could not be decoded at all (not UTF-8, not JSON, unreadable row group...).
    #[error("undecodable record: {0}")]
    Undecodable(String),
    /// The line or message is longer than the source's size limit; only its first bytes are
    /// kept for the dead letter.
    #[error("record of {bytes} bytes is longer than the limit of {limit} bytes")]
    TooLong {
        /// The record's length in bytes (a line's, with its line ending).
        bytes: u64,
        /// The limit it broke.
        limit: u64,
    },
}

impl RejectReason {
    /// Every [`RejectReason::kind`], for metrics labels.
    pub const KINDS: [&'static str; 13] = [
        "field_count",
        "bad_number",
        "bad_timestamp",
        "partially_missing",
        "negative",
        "absurd",
        "bad_interval",
        "bad_meter",
        "duplicate",
        "too_late",
        "from_the_future",
        "undecodable",
        "too_long",
    ];

    /// A short, stable name of the reason's kind (`too_late`, `duplicate`, ...), the
    /// `reason` label of `wattflow_rejected_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::FieldCount { .. } => "field_count",
            RejectReason::BadNumber { .. } => "bad_number",
            RejectReason::BadTimestamp { .. } => "bad_timestamp",
            RejectReason::PartiallyMissing => "partially_missing",
            RejectReason::Negative { .. } => "negative",
            RejectReason::Absurd { .. } => "absurd",
            RejectReason::BadInterval(_) => "bad_interval",
            RejectReason::BadMeter(_) => "bad_meter",
            RejectReason::Duplicate { .. } => "duplicate",
            RejectReason::TooLate { .. } => "too_late",
            RejectReason::FromTheFuture { .. } => "from_the_future",
            RejectReason::Undecodable(_) => "undecodable",
            RejectReason::TooLong { .. } => "too_long",
        }
    }
}

fn thousandths_text(v: i64) -> String {
    let mut out = String::with_capacity(16);
    write_thousandths(&mut out, v);
    out
}

/// Appends `v` thousandths as a decimal with exactly three decimals (`-1.050`) to `out`.
pub fn write_thousandths(out: &mut String, v: i64) {
    use std::fmt::Write;
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    // Writing into a String cannot fail.
    let _ = write!(out, "{sign}{}.{:03}", a / 1000, a % 1000);
}

impl Reading {
    /// Checks the reading against `limits`: no negative measure, nothing absurd, a sane interval.
    pub fn validate(&self, limits: &Limits) -> Result<(), RejectReason> {
        if self.interval_s == 0 || self.interval_s > limits.max_interval_s {
            return Err(RejectReason::BadInterval(self.interval_s));
        }
        for m in Measure::ALL {
            let v = self.values[m.index()];
            if v < 0 {
                return Err(RejectReason::Negative {
                    field: m.name().to_owned(),
                    value: thousandths_text(v as i64),
                });
            }
        }
        let absurd = |m: Measure, limit: i64| RejectReason::Absurd {
            field: m.name().to_owned(),
            value: thousandths_text(self.values[m.index()] as i64),
            limit: thousandths_text(limit),
        };
        for m in [Measure::GlobalActivePower, Measure::GlobalReactivePower] {
            if self.values[m.index()] > limits.max_power_w {
                return Err(absurd(m, limits.max_power_w as i64));
            }
        }
        let v = self.values[Measure::Voltage.index()];
        if v < limits.voltage_mv.0 || v > limits.voltage_mv.1 {
            return Err(absurd(Measure::Voltage, limits.voltage_mv.1 as i64));
        }
        if self.values[Measure::GlobalIntensity.index()] > limits.max_current_ma {
            return Err(absurd(
                Measure::GlobalIntensity,
                limits.max_current_ma as i64,
            ));
        }
        // A sub-meter cannot see more energy than the house's largest plausible power over the interval.
        let max_sub_mwh = limits.max_power_w as i64 * self.interval_s as i64 * 1000 / 3600;
        for m in [
            Measure::SubMetering1,
            Measure::SubMetering2,
            Measure::SubMetering3,
        ] {
            if self.values[m.index()] as i64 > max_sub_mwh {
                return Err(absurd(m, max_sub_mwh));
            }
        }
        Ok(())
    }

    /// Power factor of the reading in billionths, `P / sqrt(P² + Q²)`, or `None` when both are zero.
    ///
    /// Computed once per reading and rounded to an integer so that window averages stay exact.
    pub fn power_factor_billionths(&self) -> Option<i64> {
        let p = self.values[Measure::GlobalActivePower.index()] as f64;
        let q = self.values[Measure::GlobalReactivePower.index()] as f64;
        let s = (p * p + q * q).sqrt();
        if s == 0.0 {
            None
        } else {
            Some((p / s * PF_SCALE).round() as i64)
        }
    }
}

/// Window granularities: calendar minute, hour and day of the data's naive local time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One minute.
    Minute,
    /// One clock hour.
    Hour,
    /// One calendar day.
    Day,
}

impl Granularity {
    /// All granularities, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// Window length in ms.
    pub const fn len_ms(self) -> i64 {
        match self {
            Granularity::Minute => 60_000,
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }

    /// Start of the window holding `ts`.
    #[inline]
    pub const fn window_start(self, ts: i64) -> i64 {
        ts.div_euclid(self.len_ms()) * self.len_ms()
    }

    /// Name used in paths and tables (`minute`, `hour`, `day`).
    pub const fn name(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// Parses `minute`, `hour` or `day`.
    pub fn parse(s: &str) -> Option<Granularity> {
        Granularity::ALL.into_iter().find(|g| g.name() == s)
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one window of one meter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowKey {
    /// The meter.
    pub meter: MeterId,
    /// Window length.
    pub granularity: Granularity,
    /// Window start, ms since the epoch.
    pub start: i64,
}

impl WindowKey {
    /// The window of `granularity` holding `reading`.
    #[inline]
    pub fn of(reading: &Reading, granularity: Granularity) -> WindowKey {
        WindowKey {
            meter: reading.meter,
            granularity,
            start: granularity.window_start(reading.ts),
        }
    }

    /// End of the window (exclusive), ms since the epoch.
    #[inline]
    pub fn end(&self) -> i64 {
        self.start + self.granularity.len_ms()
    }
}

/// Sum, minimum, maximum and time-weighted sum of one measure over a window.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeasureStats {
    /// Σ value (thousandths).
    pub sum: i64,
    /// Smallest value.
    pub min: i32,
    /// Largest value.
    pub max: i32,
    /// Σ value · interval_s, for the time-weighted average.
    pub wsum: i64,
}

impl MeasureStats {
    const EMPTY: MeasureStats = MeasureStats {
        sum: 0,
        min: i32::MAX,
        max: i32::MIN,
        wsum: 0,
    };
}

/// The aggregate of the readings of one window: a commutative semigroup under [`Aggregate::merge`]
/// (with [`Aggregate::EMPTY`] as identity), so partial aggregates can be merged in any order
/// and grouping and still give the same bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Aggregate {
    /// Number of readings.
    pub samples: u64,
    /// Σ interval_s: seconds of the window covered by readings.
    pub covered_s: u64,
    /// Per-measure statistics, indexed by [`Measure::index`].
    pub measures: [MeasureStats; MEASURES],
    /// Σ power factor (billionths) · interval_s over readings with a defined power factor.
    pub pf_wsum: i64,
    /// Σ interval_s over readings with a defined power factor.
    pub pf_weight: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate::EMPTY
    }
}

impl Aggregate {
    /// The identity of [`Aggregate::merge`]: no readings.
    pub const EMPTY: Aggregate = Aggregate {
        samples: 0,
        covered_s: 0,
        measures: [MeasureStats::EMPTY; MEASURES],
        pf_wsum: 0,
        pf_weight: 0,
    };

    /// The aggregate of a single reading.
    #[inline]
    pub fn of(r: &Reading) -> Aggregate {
        let mut a = Aggregate::EMPTY;
        a.add(r);
        a
    }

    /// Folds one reading in.
    #[inline]
    pub fn add(&mut self, r: &Reading) {
        let w = r.interval_s as i64;
        self.samples += 1;
        self.covered_s += r.interval_s as u64;
        for (s, &v) in self.measures.iter_mut().zip(r.values.iter()) {
            s.sum += v as i64;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
            s.wsum += v as i64 * w;
        }
        if let Some(pf) = r.power_factor_billionths() {
            self.pf_wsum += pf * w;
            self.pf_weight += r.interval_s as u64;
        }
    }

    /// Merges another partial aggregate in (associative and commutative).
    #[inline]
    pub fn merge(&mut self, o: &Aggregate) {
        self.samples += o.samples;
        self.covered_s += o.covered_s;
        for (s, t) in self.measures.iter_mut().zip(o.measures.iter()) {
            s.sum += t.sum;
            s.min = s.min.min(t.min);
            s.max = s.max.max(t.max);
            s.wsum += t.wsum;
        }
        self.pf_wsum += o.pf_wsum;
        self.pf_weight += o.pf_weight;
    }

    /// True when no reading was folded in.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Active energy over the window in mWh·3.6 = W·s (exact): Σ P·interval.
    pub fn active_energy_ws(&self) -> i64 {
        self.measures[Measure::GlobalActivePower.index()].wsum
    }

    /// Finalises the aggregate into view values, in the dataset's units.
    pub fn finish(&self) -> Finished {
        let covered = self.covered_s.max(1) as f64;
        let mut measures = [FinishedMeasure::default(); MEASURES];
        for (f, s) in measures.iter_mut().zip(self.measures.iter()) {
            *f = FinishedMeasure {
                sum: s.sum,
                min: s.min as i64,
                max: s.max as i64,
                avg: s.wsum as f64 / covered / 1000.0,
            };
        }
        let active_energy_wh = self.active_energy_ws() as f64 / 3600.0;
        let sub_mwh: i64 = [
            Measure::SubMetering1,
            Measure::SubMetering2,
            Measure::SubMetering3,
        ]
        .iter()
        .map(|m| self.measures[m.index()].sum)
        .sum();
        // Both terms in mWh·3.6 to subtract exactly before the one division.
        let unmetered_wh = (self.active_energy_ws() as f64 - sub_mwh as f64 * 3.6) / 3600.0;
        let power_factor_avg = if self.pf_weight == 0 {
            None
        } else {
            Some(self.pf_wsum as f64 / self.pf_weight as f64 / PF_SCALE)
        };
        Finished {
            samples: self.samples,
            covered_s: self.covered_s,
            measures,
            active_energy_wh,
            unmetered_wh,
            power_factor_avg,
        }
    }
}

/// One measure of a finished window. `sum`, `min` and `max` stay exact thousandths (a
/// `DECIMAL(18,3)` in Parquet); `avg` is a double in the measure's unit.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct FinishedMeasure {
    /// Σ value, thousandths.
    pub sum: i64,
    /// Minimum, thousandths.
    pub min: i64,
    /// Maximum, thousandths.
    pub max: i64,
    /// Time-weighted average, in the measure's unit.
    pub avg: f64,
}

/// A window's view values, as written to the batch and speed views.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Finished {
    /// Readings in the window.
    pub samples: u64,
    /// Seconds covered by readings.
    pub covered_s: u64,
    /// Per-measure values.
    pub measures: [FinishedMeasure; MEASURES],
    /// Active energy, Wh.
    pub active_energy_wh: f64,
    /// Active energy not seen by the three sub-meters, Wh (may be slightly negative from rounding in the source).
    pub unmetered_wh: f64,
    /// Time-weighted average power factor; `None` when P and Q were zero throughout.
    pub power_factor_avg: Option<f64>,
}

/// Formats a thousandths value as a decimal with three places.
pub fn format_thousandths(v: i64) -> String {
    thousandths_text(v)
}

/// Formats a reading's timestamp as naive ISO-8601 (`2006-12-16T17:24:00`).
pub fn format_ts(ts: i64) -> String {
    time::format_iso(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts: i64, p: i32, q: i32) -> Reading {
        Reading {
            meter: MeterId::new("m1").unwrap(),
            ts,
            interval_s: 60,
            values: [p, q, 234_840, 18_400, 0, 1_000, 17_000],
            origin: Origin::default(),
        }
    }

    #[test]
    fn meter_ids_are_validated_and_round_trip() {
        assert_eq!(MeterId::new("household-1").unwrap().as_str(), "household-1");
        assert!(MeterId::new("").is_err());
        assert!(MeterId::new(&"x".repeat(32)).is_err());
        assert!(MeterId::new("a b").is_err());
        assert_eq!(MeterId::new(&"x".repeat(31)).unwrap().as_str().len(), 31);
    }

    #[test]
    fn merge_is_associative_and_commutative() {
        let rs: Vec<Reading> = (0..6)
            .map(|i| reading(i * 60_000, 1000 + i as i32 * 37, 100 * i as i32))
            .collect();
        let mut all = Aggregate::EMPTY;
        rs.iter().for_each(|r| all.add(r));
        let mut left = Aggregate::EMPTY;
        rs[..2].iter().for_each(|r| left.add(r));
        let mut right = Aggregate::EMPTY;
        rs[2..].iter().rev().for_each(|r| right.add(r));
        let mut merged = right;
        merged.merge(&left);
        assert_eq!(merged, all);
        let mut with_empty = all;
        with_empty.merge(&Aggregate::EMPTY);
        assert_eq!(with_empty, all);
    }

    #[test]
    fn finish_gives_units_and_derived_values() {
        let a = Aggregate::of(&reading(0, 4_216, 418));
        let f = a.finish();
        assert_eq!(f.samples, 1);
        assert_eq!(f.measures[0].sum, 4_216);
        assert!((f.measures[0].avg - 4.216).abs() < 1e-12);
        // 4.216 kW for one minute = 70.2666.. Wh; unmetered = that - 18 Wh.
        assert!((f.active_energy_wh - 4216.0 / 60.0).abs() < 1e-9);
        assert!((f.unmetered_wh - (4216.0 / 60.0 - 18.0)).abs() < 1e-9);
        let pf = f.power_factor_avg.unwrap();
        let expect = 4.216 / (4.216f64.powi(2) + 0.418f64.powi(2)).sqrt();
        assert!((pf - expect).abs() < 1e-6, "{pf} vs {expect}");
        assert_eq!(
            Aggregate::of(&reading(0, 0, 0)).finish().power_factor_avg,
            None
        );
    }

    #[test]
    fn time_weighted_average_weights_by_interval() {
        let mut a = Aggregate::of(&reading(0, 1_000, 0));
        let mut short = reading(60_000, 4_000, 0);
        short.interval_s = 20;
        a.add(&short);
        // (1 kW * 60 s + 4 kW * 20 s) / 80 s = 1.75 kW
        assert!((a.finish().measures[0].avg - 1.75).abs() < 1e-12);
    }

    #[test]
    fn validation_rejects_negative_absurd_and_bad_intervals() {
        let limits = Limits::default();
        assert!(reading(0, 1, 1).validate(&limits).is_ok());
        let mut r = reading(0, -5, 1);
        assert!(matches!(
            r.validate(&limits),
            Err(RejectReason::Negative { .. })
        ));
        r = reading(0, 200_000, 1);
        assert!(matches!(
            r.validate(&limits),
            Err(RejectReason::Absurd { .. })
        ));
        r = reading(0, 1, 1);
        r.values[Measure::Voltage.index()] = 900_000;
        assert!(matches!(
            r.validate(&limits),
            Err(RejectReason::Absurd { .. })
        ));
        r = reading(0, 1, 1);
        r.values[Measure::SubMetering3.index()] = 2_000_000; // 2 kWh in one minute
        assert!(matches!(
            r.validate(&limits),
            Err(RejectReason::Absurd { .. })
        ));
        r = reading(0, 1, 1);
        r.interval_s = 0;
        assert_eq!(r.validate(&limits), Err(RejectReason::BadInterval(0)));
    }

    #[test]
    fn windows_are_calendar_aligned() {
        let ts = time::naive_to_ms(2006, 12, 16, 17, 24, 30).unwrap();
        let r = reading(ts, 1, 1);
        assert_eq!(
            WindowKey::of(&r, Granularity::Minute).start,
            time::naive_to_ms(2006, 12, 16, 17, 24, 0).unwrap()
        );
        assert_eq!(
            WindowKey::of(&r, Granularity::Hour).start,
            time::naive_to_ms(2006, 12, 16, 17, 0, 0).unwrap()
        );
        let day = WindowKey::of(&r, Granularity::Day);
        assert_eq!(day.start, time::naive_to_ms(2006, 12, 16, 0, 0, 0).unwrap());
        assert_eq!(day.end(), time::naive_to_ms(2006, 12, 17, 0, 0, 0).unwrap());
    }
}
