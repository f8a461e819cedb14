//! One row of an answer: a window of one meter with the batch view contract's columns, and
//! the view it came from.

use serde::Serialize;

pub use crate::model::value_columns;
use crate::model::{Aggregate, Granularity, Measure, MEASURES};

/// The view a row of an answer was read from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The batch view (Parquet): a sealed window, final.
    Batch,
    /// The speed view (Cassandra or the embedded store): the window's latest value, which can
    /// still change while the window is open.
    Speed,
}

impl Source {
    /// `batch` or `speed`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Batch => "batch",
            Source::Speed => "speed",
        }
    }
}

/// Sum, minimum, maximum and time-weighted average of one measure over a window, in the
/// dataset's unit (kW, V, A, Wh).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct MeasureValues {
    /// Σ value.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Time-weighted average.
    pub avg: f64,
}

/// One window of one meter, with the columns of the batch view contract (DESIGN.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewRow {
    /// The meter.
    pub meter: String,
    /// Window start, ms since the epoch in the views' time basis (naive local time, or a UTC
    /// instant when the views follow a time zone).
    pub window_start: i64,
    /// Readings in the window.
    pub samples: i64,
    /// Seconds of the window covered by readings.
    pub covered_seconds: i64,
    /// Per measure, indexed by [`Measure::index`].
    pub measures: [MeasureValues; MEASURES],
    /// Active energy, Wh.
    pub active_energy_wh: f64,
    /// Active energy no sub-meter saw, Wh.
    pub unmetered_wh: f64,
    /// Time-weighted average power factor; `None` when P and Q were zero throughout.
    pub power_factor_avg: Option<f64>,
    /// Where the row was read from.
    pub source: Source,
}

impl ViewRow {
    /// The row of a window's aggregate, as both views write it.
    pub fn of(meter: &str, window_start: i64, agg: &Aggregate, source: Source) -> ViewRow {
        let f = agg.finish();
        let mut measures = [MeasureValues::default(); MEASURES];
        for (v, m) in measures.iter_mut().zip(f.measures.iter()) {
            *v = MeasureValues {
                sum: m.sum as f64 / 1000.0,
                min: m.min as f64 / 1000.0,
                max: m.max as f64 / 1000.0,
                avg: m.avg,
            };
        }
        ViewRow {
            meter: meter.to_owned(),
            window_start,
            samples: f.samples.min(i64::MAX as u64) as i64,
            covered_seconds: f.covered_s.min(i64::MAX as u64) as i64,
            measures,
            active_energy_wh: f.active_energy_wh,
            unmetered_wh: f.unmetered_wh,
            power_factor_avg: f.power_factor_avg,
            source,
        }
    }

    /// A measure's values.
    pub fn measure(&self, m: Measure) -> &MeasureValues {
        &self.measures[m.index()]
    }

    /// The value of a numeric column by its contract name (`voltage_avg`, `samples`, ...);
    /// `None` for an unknown name or a missing power factor.
    pub fn value(&self, column: &str) -> Option<f64> {
        let i = value_columns().iter().position(|c| c == column)?;
        if i + 1 == value_columns().len() {
            // The power factor, the last column, may be missing.
            return self.power_factor_avg;
        }
        Some(self.value_at(i))
    }

    /// The numeric values in [`value_columns`] order (`NaN` for a missing power factor).
    pub fn values(&self) -> Vec<f64> {
        (0..value_columns().len())
            .map(|i| self.value_at(i))
            .collect()
    }

    /// The value of the `i`-th of [`value_columns`] (`NaN` for a missing power factor or an
    /// index past the end): [`ViewRow::value`] without the name lookup, for writers of many
    /// rows.
    pub fn value_at(&self, i: usize) -> f64 {
        const MEASURE_COLUMNS: usize = 2 + 4 * MEASURES;
        match i {
            0 => self.samples as f64,
            1 => self.covered_seconds as f64,
            2..MEASURE_COLUMNS => {
                let v = &self.measures[(i - 2) / 4];
                [v.sum, v.min, v.max, v.avg][(i - 2) % 4]
            }
            MEASURE_COLUMNS => self.active_energy_wh,
            _ if i == MEASURE_COLUMNS + 1 => self.unmetered_wh,
            _ if i == MEASURE_COLUMNS + 2 => self.power_factor_avg.unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// End of the row's window in `calendar` (exclusive).
    pub fn window_end(&self, calendar: &crate::time::Calendar, granularity: Granularity) -> i64 {
        calendar.window(granularity, self.window_start).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MeterId, Origin, Reading};

    #[test]
    fn a_rows_values_are_the_finished_aggregates_in_contract_units() {
        let r = Reading {
            meter: MeterId::new("m1").unwrap(),
            ts: 0,
            interval_s: 60,
            values: [4216, 418, 234_840, 18_400, 0, 1000, 17_000],
            origin: Origin::default(),
        };
        let row = ViewRow::of("m1", 0, &Aggregate::of(&r), Source::Speed);
        assert_eq!(row.value("global_active_power_sum"), Some(4.216));
        assert_eq!(row.value("voltage_max"), Some(234.84));
        assert_eq!(row.value("sub_metering_3_min"), Some(17.0));
        assert_eq!(row.value("samples"), Some(1.0));
        assert_eq!(row.value("voltage_median"), None);
        assert_eq!(row.value("nonsense"), None);
        // 4.216 kW for a minute = 70.27 Wh; minus 18 Wh of sub-meters.
        assert!((row.active_energy_wh - 4216.0 * 60.0 / 3600.0).abs() < 1e-9);
        assert!((row.unmetered_wh - (4216.0 * 60.0 / 3600.0 - 18.0)).abs() < 1e-9);
        assert_eq!(row.values().len(), value_columns().len());
        for (name, v) in value_columns().iter().zip(row.values()) {
            assert_eq!(row.value(name), Some(v), "{name}");
        }
    }
}
