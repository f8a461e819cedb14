//! Parquet history files with the UCI columns (`Date`, `Time` or a `Datetime`, the seven
//! measures, optionally `Meter`), as the Kaggle copies and `pandas.to_parquet` write them.
//!
//! Every cell is rendered to its shortest exact text (floats print their shortest round-trip
//! form, so a `234.84` double reads back as exactly 234,840 mV) and handed to the same
//! [`TextFormat`] parser as the text files: one set of validation rules for every format.
//! Nulls in every measure mark a missing minute, like `?` in the text file. Row groups are
//! dealt to workers round-robin; a row's position is its 1-based row number in the file.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::format::text::{DateCache, TextFormat};
use crate::model::Origin;
use crate::source::file::{Chunk, ChunkReader, FileSourceConfig, ParquetFault, SourceError};
use crate::time::{self, format_iso};

fn perr(path: &Path, e: impl Into<ParquetFault>) -> SourceError {
    SourceError::Parquet {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| perr(path, e))
}

fn format_for(
    path: &Path,
    builder: &ParquetRecordBatchReaderBuilder<File>,
    config: &FileSourceConfig,
) -> Result<TextFormat, SourceError> {
    let header: Vec<&str> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    TextFormat::from_header(
        header.join(";").as_bytes(),
        config.default_meter,
        config.interval_s,
        config.limits,
    )
    .map_err(|e| perr(path, e))
}

/// Checks that `path` is a readable Parquet file with the needed columns.
pub fn check(path: &Path, config: &FileSourceConfig) -> Result<(), SourceError> {
    let builder = open_builder(path)?;
    format_for(path, &builder, config).map(|_| ())
}

/// Appends the exact text of `array[row]` to `out`; `?` for null.
fn push_cell(out: &mut String, array: &dyn Array, row: usize) {
    if array.is_null(row) {
        out.push('?');
        return;
    }
    let _ = match array.data_type() {
        DataType::Utf8 => write!(out, "{}", array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write!(out, "{}", array.as_string::<i64>().value(row)),
        DataType::Utf8View => write!(out, "{}", array.as_string_view().value(row)),
        DataType::Float64 => write!(out, "{}", array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => write!(out, "{}", array.as_primitive::<Float32Type>().value(row)),
        DataType::Int8 => write!(out, "{}", array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write!(out, "{}", array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write!(out, "{}", array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write!(out, "{}", array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => write!(out, "{}", array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => write!(out, "{}", array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => write!(out, "{}", array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => write!(out, "{}", array.as_primitive::<UInt64Type>().value(row)),
        DataType::Decimal128(_, _) => write!(
            out,
            "{}",
            array
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .value_as_string(row)
        ),
        DataType::Date32 => write!(
            out,
            "{}",
            time::format_date(array.as_primitive::<Date32Type>().value(row) as i64 * time::DAY_MS)
        ),
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => {
                    let secs = array.as_primitive::<TimestampSecondType>().value(row);
                    match secs.checked_mul(1000) {
                        Some(ms) => ms,
                        // Left as text the timestamp parser refuses, with the value in it.
                        None => {
                            let _ = write!(out, "{secs} s: beyond the representable times");
                            return;
                        }
                    }
                }
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row) / 1000
                }
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(row) / 1_000_000
                }
            };
            write!(out, "{}", format_iso(ms))
        }
        other => write!(out, "<unsupported type {other}>"),
    };
}

/// A worker's row groups of a Parquet file.
pub struct ParquetShare {
    index: u32,
    path: PathBuf,
    format: TextFormat,
    /// (row group, first row number of the group, its share of the file's bytes), this
    /// worker's only.
    groups: Vec<(usize, u64, u64)>,
    next: usize,
    dates: DateCache,
}

impl ParquetShare {
    /// Opens worker `worker`'s row groups (of `peers`) of input `index`.
    pub fn open(
        index: u32,
        path: &Path,
        config: &FileSourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<ParquetShare, SourceError> {
        let builder = open_builder(path)?;
        let format = format_for(path, &builder, config)?;
        let file_len = std::fs::metadata(path)
            .map_err(|source| SourceError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
        let mut first_row = 1u64;
        let mut groups = Vec::new();
        for (i, rg) in builder.metadata().row_groups().iter().enumerate() {
            if i % peers == worker {
                // The file's bytes, shared out by rows (column-chunk sizes need not add up to it).
                let share = file_len * rg.num_rows().max(0) as u64 / total_rows;
                groups.push((i, first_row, share));
            }
            first_row += rg.num_rows() as u64;
        }
        Ok(ParquetShare {
            index,
            path: path.to_owned(),
            format,
            groups,
            next: 0,
            dates: DateCache::default(),
        })
    }

    fn push_batch(&mut self, batch: &RecordBatch, first_row: u64, chunk: &mut Chunk) {
        let mut line = String::with_capacity(128);
        for row in 0..batch.num_rows() {
            line.clear();
            for (c, column) in batch.columns().iter().enumerate() {
                if c > 0 {
                    line.push(';');
                }
                push_cell(&mut line, column.as_ref(), row);
            }
            let origin = Origin {
                source: self.index,
                position: first_row + row as u64,
            };
            let outcome = self
                .format
                .parse_line(line.as_bytes(), origin, &mut self.dates);
            chunk.push_line(outcome, origin, line.as_bytes());
        }
    }
}

impl ChunkReader for ParquetShare {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, SourceError> {
        let Some(&(group, first_row, compressed)) = self.groups.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let reader = open_builder(&self.path)?
            .with_row_groups(vec![group])
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| perr(&self.path, e))?;
        // Progress in bytes of the file.
        let mut chunk = Chunk {
            index: group as u64,
            bytes: compressed,
            ..Chunk::default()
        };
        let mut row = first_row;
        for batch in reader {
            let batch = batch.map_err(|e| perr(&self.path, e))?;
            self.push_batch(&batch, row, &mut chunk);
            row += batch.num_rows() as u64;
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::{open_share, FileSourceConfig};
    use arrow_array::{Float64Array, TimestampSecondArray};
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    #[test]
    fn second_timestamps_too_large_for_milliseconds_are_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secs.parquet");
        let ok = 1_166_289_840i64; // 2006-12-16T17:24:00
                                   // × 1000 wraps (mod 2^64) to exactly `ok`'s instant: it must be refused, not read as
                                   // a second reading of 2006-12-16T17:24:00. (125 × 2^64 is a multiple of 1000.)
        let wraps: i64 = 2_305_843_010_379_983_792;
        assert_eq!(wraps.wrapping_mul(1000), ok * 1000);
        let mut columns: Vec<(&str, arrow_array::ArrayRef)> = vec![(
            "Datetime",
            Arc::new(TimestampSecondArray::from(vec![ok, wraps])),
        )];
        for m in crate::model::Measure::ALL {
            columns.push((m.name(), Arc::new(Float64Array::from(vec![1.0, 1.0]))));
        }
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let config = FileSourceConfig::new(vec![path]);
        let mut share = open_share(0, &config, 0, 1).unwrap().unwrap();
        let chunk = share.next_chunk().unwrap().unwrap();
        assert_eq!(chunk.readings.len(), 1);
        assert_eq!(chunk.readings[0].ts, ok * 1000);
        assert_eq!(chunk.rejected.len(), 1);
        let refused = &chunk.rejected[0];
        assert_eq!(refused.origin.position, 2);
        assert!(
            matches!(
                refused.reason,
                crate::model::RejectReason::BadTimestamp { .. }
            ),
            "{:?}",
            refused.reason
        );
        assert!(
            refused.record.contains(&wraps.to_string()),
            "{}",
            refused.record
        );
    }
}
