//! Where windows go and how a file is laid out: Hive partitions, the Arrow schema of the
//! batch view contract, record batches and writer settings.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Decimal128Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::model::{Aggregate, Granularity, Measure, WindowKey};
use crate::time::{self, Calendar};

/// Hive partition of a window in the naive calendar: `(first instant, end)`.
pub fn partition_bounds(granularity: Granularity, start: i64) -> (i64, i64) {
    partition_bounds_in(&Calendar::Naive, granularity, start)
}

/// Hive partition of a window in `calendar` (local months and years): `(first instant, end)`.
pub fn partition_bounds_in(
    calendar: &Calendar,
    granularity: Granularity,
    start: i64,
) -> (i64, i64) {
    match (calendar, granularity) {
        (Calendar::Naive, Granularity::Minute) => time::month_bounds(start),
        (Calendar::Naive, _) => time::year_bounds(start),
        (_, Granularity::Minute) => calendar.month_bounds(start),
        (_, _) => calendar.year_bounds(start),
    }
}

/// Hive partition of a window: `(first instant, end, folder name)`.
pub fn partition_of(granularity: Granularity, start: i64) -> (i64, i64, String) {
    partition_of_in(&Calendar::Naive, granularity, start)
}

/// [`partition_of`] in `calendar`: the folder is named after the local month or year.
pub fn partition_of_in(
    calendar: &Calendar,
    granularity: Granularity,
    start: i64,
) -> (i64, i64, String) {
    let (a, b) = partition_bounds_in(calendar, granularity, start);
    let date = calendar.format_date(a);
    let name = match granularity {
        Granularity::Minute => format!("month={}", &date[..7]),
        Granularity::Hour | Granularity::Day => format!("year={}", &date[..4]),
    };
    (a, b, name)
}

/// The Arrow schema of the views: `window_start` a naive timestamp.
pub fn view_schema() -> SchemaRef {
    view_schema_for(&Calendar::Naive)
}

/// The Arrow type of `window_start`: naive, or a UTC instant (`TIMESTAMP WITH TIME ZONE` to
/// DuckDB and Spark) when the views follow a time zone.
pub fn window_start_type(calendar: &Calendar) -> DataType {
    let zone = calendar.is_zoned().then(|| "UTC".into());
    DataType::Timestamp(TimeUnit::Millisecond, zone)
}

/// The Arrow schema of the views in `calendar`.
pub fn view_schema_for(calendar: &Calendar) -> SchemaRef {
    let mut fields = vec![
        Field::new("meter", DataType::Utf8, false),
        Field::new("window_start", window_start_type(calendar), false),
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

/// Builds a record batch of view rows, in the given order (naive `window_start`).
pub fn view_batch(
    rows: &[(WindowKey, &Aggregate)],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    view_batch_for(&Calendar::Naive, rows)
}

/// Builds a record batch of view rows in `calendar`'s schema, in the given order.
pub fn view_batch_for(
    calendar: &Calendar,
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
        Arc::new(match calendar.is_zoned() {
            true => TimestampMillisecondArray::from(starts).with_timezone("UTC"),
            false => TimestampMillisecondArray::from(starts),
        }),
        Arc::new(samples.finish()),
        Arc::new(covered.finish()),
    ];
    for (stats, mut avg) in sums.into_iter().zip(avgs) {
        for values in stats {
            // The vector becomes the array's buffer as it is: no copy.
            let decimals = Decimal128Array::from(values).with_precision_and_scale(18, 3)?;
            columns.push(Arc::new(decimals));
        }
        columns.push(Arc::new(avg.finish()));
    }
    columns.push(Arc::new(energy.finish()));
    columns.push(Arc::new(unmetered.finish()));
    columns.push(Arc::new(pf.finish()));
    RecordBatch::try_new(view_schema_for(calendar), columns)
}

/// Writer settings: timestamps and counts delta-encoded (near zero bits a row); dictionary only
/// for `meter`. (Measured on the UCI minute view: delta-encoding the decimals or
/// byte-stream-splitting the doubles made the files larger and no faster.)
pub(super) fn writer_properties(
    zstd_level: i32,
) -> Result<WriterProperties, super::error::ParquetSinkError> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|source| {
        super::error::ParquetSinkError::Compression {
            level: zstd_level,
            source,
        }
    })?;
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
