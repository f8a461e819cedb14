//! Checking what a system wrote, independently of what it says it wrote.
//!
//! Row counts of the `minute/`, `hour/` and `day/` views come from the Parquet footers of every
//! `*.parquet` file below each folder (Hive-partitioned or not). The day view is also read in
//! full (it is small) for two totals that every system must agree on: Σ `samples` (the number
//! of readings) and Σ `global_active_power_sum`.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Serialize;

/// The three granularities of the batch views, in the order they are reported.
pub const GRANULARITIES: [&str; 3] = ["minute", "hour", "day"];

/// What one system's views hold, as read back from its Parquet files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewCounts {
    /// Rows of the minute view.
    pub minute: u64,
    /// Rows of the hour view.
    pub hour: u64,
    /// Rows of the day view.
    pub day: u64,
    /// Σ `samples` over the day view: the readings that made it into the views.
    pub day_samples: u64,
    /// Σ `global_active_power_sum` over the day view, kW-minutes.
    pub day_active_power: f64,
}

impl ViewCounts {
    /// Rows of one granularity's view.
    pub fn rows(&self, granularity: &str) -> u64 {
        match granularity {
            "minute" => self.minute,
            "hour" => self.hour,
            _ => self.day,
        }
    }
}

/// Reads back the views under `out` (`out/minute`, `out/hour`, `out/day`).
pub fn views(out: &Path) -> Result<ViewCounts> {
    let mut rows = [0u64; 3];
    for (g, count) in GRANULARITIES.iter().zip(rows.iter_mut()) {
        let files = parquet_files(&out.join(g))?;
        if files.is_empty() {
            bail!("no Parquet file under {}", out.join(g).display());
        }
        for file in files {
            let reader = SerializedFileReader::new(
                File::open(&file).with_context(|| file.display().to_string())?,
            )
            .with_context(|| format!("reading the footer of {}", file.display()))?;
            *count += reader.metadata().file_metadata().num_rows() as u64;
        }
    }
    let (day_samples, day_active_power) = day_totals(&out.join("day"))?;
    Ok(ViewCounts {
        minute: rows[0],
        hour: rows[1],
        day: rows[2],
        day_samples,
        day_active_power,
    })
}

fn day_totals(dir: &Path) -> Result<(u64, f64)> {
    let (mut samples, mut power) = (0u64, 0f64);
    for file in parquet_files(dir)? {
        let builder = ParquetRecordBatchReaderBuilder::try_new(
            File::open(&file).with_context(|| file.display().to_string())?,
        )?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["samples", "global_active_power_sum"],
        );
        for batch in builder.with_projection(mask).build()? {
            let batch = batch.with_context(|| file.display().to_string())?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .with_context(|| format!("{} has no column {name}", file.display()))
            };
            samples += sum_integers(&column("samples")?)
                .with_context(|| format!("{}: samples", file.display()))?;
            power += sum_numbers(&column("global_active_power_sum")?)
                .with_context(|| format!("{}: global_active_power_sum", file.display()))?;
        }
    }
    Ok((samples, power))
}

fn sum_integers(a: &ArrayRef) -> Result<u64> {
    let total = match a.data_type() {
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .map(|v| v as u64)
            .sum(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().iter().flatten().sum(),
        DataType::Int32 => a
            .as_primitive::<Int32Type>()
            .iter()
            .flatten()
            .map(|v| v as u64)
            .sum(),
        DataType::UInt32 => a
            .as_primitive::<UInt32Type>()
            .iter()
            .flatten()
            .map(u64::from)
            .sum(),
        other => bail!("unexpected type {other}"),
    };
    Ok(total)
}

fn sum_numbers(a: &ArrayRef) -> Result<f64> {
    let total = match a.data_type() {
        DataType::Float64 => a.as_primitive::<Float64Type>().iter().flatten().sum(),
        DataType::Decimal128(_, scale) => {
            let exact: i128 = a.as_primitive::<Decimal128Type>().iter().flatten().sum();
            exact as f64 / 10f64.powi(i32::from(*scale))
        }
        other => bail!("unexpected type {other}"),
    };
    Ok(total)
}

/// Every `*.parquet` file below `dir`, recursively, sorted; hidden and temporary files skipped.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
