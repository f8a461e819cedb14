//! The serving layer's query: one answer over both views, and how fresh it is.
//!
//! # The merge rule
//! A view's answer for `(meter, granularity, [from, to))` is the rows of the **batch view**
//! (Parquet, [`BatchViews`]) whose window starts before the view's sealed high-water mark
//! `H`, followed by the rows of the **speed view** ([`SpeedViews`]: Cassandra, or the
//! in-process [`MemoryViews`]) whose window starts at or after `H`:
//!
//! ```text
//!   from ─────────────── H ─────────────── to
//!   │ batch rows (sealed,  │ speed rows (latest │
//!   │ final, authoritative)│ value, may change) │
//! ```
//!
//! `H` is the end of the newest window in the files the view's `_manifest.json` lists (for
//! the meter's bucket when a partition has several files, see
//! [`BatchViews::sealed_through`]). Every window before `H` is sealed and in those files, so
//! the batch side is complete there (a window it lacks had no readings, and the speed view's
//! copy of it, if any, is not used); after `H` nothing is sealed in the files yet, so the
//! speed side is the only source. The two sides never overlap and leave no gap, and a window
//! present in both comes from the batch view. With no batch file, `H` is the start of time
//! and every row comes from the speed view; with no speed view (`serve --views DIR` alone),
//! windows after `H` are simply absent.
//!
//! Every row carries its [`Source`]. Times are ms since the epoch in the views' time basis:
//! naive local time (the UCI file), or UTC instants when the pipeline ran with a time zone
//! (then the [`Calendar`] given to [`Views`] must be that zone, for window ends and for
//! parsing query times).
//!
//! # Freshness
//! [`Freshness::newest_reading_ms`] is the end of the time the newest row's readings cover,
//! `min(window_start + covered_seconds, window_end)`: exact when that window's readings are
//! contiguous from its start (live sensors and the UCI file both are), a lower bound
//! otherwise. [`Freshness::age_ms`] is the calendar's clock ([`Calendar::now_ms`]) minus it.
//! The answer also says where the batch side ends (`H`) and how many rows came from each side.
//!
//! # Cost
//! The batch side reads only the files of the meter's bucket and, in them, only the row
//! groups whose `window_start` statistics overlap the range (a month of one meter's minutes is
//! one row group); footers are cached ([`batch`]). The speed side asks the store for exactly
//! `[max(from, H), to)`. Answers are capped at [`Views::max_rows`] windows: a range that could
//! hold more is refused before anything is read ([`QueryError::TooManyRows`]).

pub mod batch;
pub mod insights;
pub mod row;
pub mod speed;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

pub use batch::BatchViews;
pub use row::{value_columns, MeasureValues, Source, ViewRow};
#[cfg(feature = "cassandra")]
pub use speed::CassandraSpeedViews;
pub use speed::{MemoryViews, NoSpeedViews, SpeedViews};

use crate::model::Granularity;
use crate::time::{self, Calendar};

/// Default [`Views::max_rows`]: a month of minutes (44,640) or five years of hours fit.
pub const DEFAULT_MAX_ROWS: usize = 50_000;

/// Earliest instant a query may name: 0001-01-01.
pub const MIN_QUERY_MS: i64 = -62_135_596_800_000;
/// Latest instant a query may name: 9999-12-31T23:59:59.999.
pub const MAX_QUERY_MS: i64 = 253_402_300_799_999;

/// A view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A batch-view file or manifest could not be read.
    #[error("batch view {path}: {message}")]
    Batch {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The speed-view store failed.
    #[error("speed view: {0}")]
    Speed(String),
}

/// A query that cannot be answered as asked, or a view that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `from` is not before `to`, or one of them is outside the years 1–9999.
    #[error("the range [{from_ms}, {to_ms}) is empty or outside the years 1-9999")]
    BadRange {
        /// Start, ms.
        from_ms: i64,
        /// End, ms.
        to_ms: i64,
    },
    /// The range could hold more windows than an answer may have.
    #[error("the range could hold {windows} {granularity} windows, more than the cap of {cap}: narrow it or pick a coarser granularity")]
    TooManyRows {
        /// Windows the range could hold.
        windows: u64,
        /// The granularity asked for.
        granularity: Granularity,
        /// [`Views::max_rows`].
        cap: usize,
    },
    /// A projection named a column the views do not have.
    #[error("no column {0} in the views (see serve::value_columns)")]
    UnknownColumn(String),
    /// A view could not be read.
    #[error(transparent)]
    View(#[from] ServeError),
}

/// Why [`choose_meter`] could not choose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterChoiceError {
    /// The named meter is not in the views.
    #[error("unknown meter {0:?}")]
    Unknown(String),
    /// No meter was named and the views hold none.
    #[error("the views hold no meter yet")]
    NoMeter,
    /// No meter was named and the views hold this many.
    #[error("a meter must be named: the views hold {0} meters")]
    Ambiguous(usize),
}

/// The meter a request names among `known` (each item's meter given by `meter_of`), or the
/// only one when it names none: the rule the CLI and the HTTP API share. An unknown name is
/// shown by at most 64 characters.
pub fn choose_meter<'a, T>(
    known: &'a [T],
    meter_of: impl Fn(&T) -> &str,
    given: Option<&str>,
) -> Result<&'a T, MeterChoiceError> {
    match (given, known) {
        (Some(m), _) => known
            .iter()
            .find(|k| meter_of(k) == m)
            .ok_or_else(|| MeterChoiceError::Unknown(m.chars().take(64).collect())),
        (None, [only]) => Ok(only),
        (None, []) => Err(MeterChoiceError::NoMeter),
        (None, many) => Err(MeterChoiceError::Ambiguous(many.len())),
    }
}

/// How fresh an answer is.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Freshness {
    /// End of the time the newest row's readings cover (module docs), ms; `None` with no row.
    pub newest_reading_ms: Option<i64>,
    /// The calendar's clock minus `newest_reading_ms`, ms.
    pub age_ms: Option<i64>,
    /// The batch view's sealed high-water mark for the meter (`H`), ms; `None` with no file.
    pub batch_sealed_through_ms: Option<i64>,
    /// Rows from the batch view.
    pub batch_rows: usize,
    /// Rows from the speed view.
    pub speed_rows: usize,
}

/// A meter's extent over both views ([`Views::extent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The meter.
    pub meter: String,
    /// Start of its first day window, ms.
    pub first_day_ms: i64,
    /// Start of its last day window, ms.
    pub last_day_ms: i64,
    /// End of the time its newest readings cover, ms.
    pub newest_reading_ms: i64,
}

/// One query: a meter's windows of one granularity starting in `[from_ms, to_ms)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The meter.
    pub meter: String,
    /// Window length.
    pub granularity: Granularity,
    /// First window start included, ms.
    pub from_ms: i64,
    /// First window start excluded, ms.
    pub to_ms: i64,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Batch rows, then speed rows, in window order.
    pub rows: Vec<ViewRow>,
    /// How fresh it is.
    pub freshness: Freshness,
}

/// Both views of a pipeline, queried as one.
pub struct Views {
    batch: BatchViews,
    speed: Arc<dyn SpeedViews>,
    calendar: Calendar,
    max_rows: usize,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("batch", &self.batch.dir())
            .field("speed", &self.speed.describe())
            .field("calendar", &self.calendar.name())
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

impl Views {
    /// The batch views under `dir` and the given speed views, in the naive calendar, with the
    /// default row cap.
    pub fn new(dir: impl Into<PathBuf>, speed: Arc<dyn SpeedViews>) -> Views {
        Views {
            batch: BatchViews::open(dir),
            speed,
            calendar: Calendar::Naive,
            max_rows: DEFAULT_MAX_ROWS,
        }
    }

    /// The calendar the views were written in (the pipeline's `--time-zone`).
    pub fn with_calendar(mut self, calendar: Calendar) -> Views {
        self.calendar = calendar;
        self
    }

    /// The most windows one answer may hold.
    pub fn with_max_rows(mut self, max_rows: usize) -> Views {
        self.max_rows = max_rows.max(1);
        self
    }

    /// The batch side.
    pub fn batch(&self) -> &BatchViews {
        &self.batch
    }

    /// The speed side.
    pub fn speed(&self) -> &Arc<dyn SpeedViews> {
        &self.speed
    }

    /// The calendar of the views.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The row cap.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// The meters of either view.
    pub fn meters(&self) -> Result<BTreeSet<String>, ServeError> {
        let mut meters = self.batch.meters()?;
        meters.extend(self.speed.meters()?);
        Ok(meters)
    }

    /// A meter's extent over both views: its first and last day windows and the end of the
    /// time its newest readings cover; `None` when neither view has a row of it. The speed
    /// side is asked from the batch mark on (or for the last ten years without batch files)
    /// up to two days past the clock. A speed view may hold a window's coarser rows back
    /// longer than its finer ones (the Cassandra sink writes a day row at most once a minute,
    /// an hour row every 10 s), so the newest reading is taken from the speed view's newest
    /// hour and minute rows too, and a meter with hour rows but no day row yet has an extent.
    pub fn extent(&self, meter: &str) -> Result<Option<Extent>, ServeError> {
        let day = Granularity::Day;
        let sealed = self.batch.sealed_through(day, meter)?;
        let mut days = match sealed {
            Some(h) => self.batch.rows(day, meter, MIN_QUERY_MS, h)?,
            None => Vec::new(),
        };
        let now = self.calendar.now_ms();
        let from = sealed.unwrap_or(now.saturating_sub(3653 * 86_400_000));
        let to = now.max(from).saturating_add(2 * 86_400_000);
        days.extend(self.speed.rows(day, meter, from, to)?);
        let mut first = days.first().map(|d| d.window_start);
        let mut last = days.last().map(|d| d.window_start);
        let mut newest = days.last().map(|d| self.covered_until(day, d));
        // Finer speed rows from the newest day (or hour) on.
        let mut after = last.map_or(from, |l| l.max(from));
        for g in [Granularity::Hour, Granularity::Minute] {
            let Some(row) = self.speed.rows(g, meter, after, to)?.pop() else {
                continue;
            };
            let start = self.calendar.day_start(row.window_start);
            first.get_or_insert(start);
            last = last.max(Some(start));
            newest = newest.max(Some(self.covered_until(g, &row)));
            after = row.window_start;
        }
        let (Some(first_day_ms), Some(last_day_ms), Some(newest_reading_ms)) =
            (first, last, newest)
        else {
            return Ok(None);
        };
        Ok(Some(Extent {
            meter: meter.to_owned(),
            first_day_ms,
            last_day_ms,
            newest_reading_ms,
        }))
    }

    /// The most windows of `granularity` that can start in `[from_ms, to_ms)` (a local day is
    /// at least 23 hours long).
    pub fn windows_in(granularity: Granularity, from_ms: i64, to_ms: i64) -> u64 {
        let shortest = match granularity {
            Granularity::Day => 23 * 3_600_000,
            g => g.len_ms(),
        };
        // Window starts are at least `shortest` apart, so a half-open span holds at most
        // ⌈span / shortest⌉ of them.
        let span = (to_ms as i128 - from_ms as i128).max(0);
        let shortest = shortest as i128;
        ((span + shortest - 1) / shortest).min(u64::MAX as i128) as u64
    }

    /// Checks a query's range and size without reading anything.
    pub fn check(&self, q: &Query) -> Result<(), QueryError> {
        let in_years = |t: i64| (MIN_QUERY_MS..=MAX_QUERY_MS).contains(&t);
        if q.from_ms >= q.to_ms || !in_years(q.from_ms) || !in_years(q.to_ms) {
            return Err(QueryError::BadRange {
                from_ms: q.from_ms,
                to_ms: q.to_ms,
            });
        }
        let windows = Views::windows_in(q.granularity, q.from_ms, q.to_ms);
        if windows > self.max_rows as u64 {
            return Err(QueryError::TooManyRows {
                windows,
                granularity: q.granularity,
                cap: self.max_rows,
            });
        }
        Ok(())
    }

    /// Answers a query by the merge rule (module docs).
    pub fn query(&self, q: &Query) -> Result<Answer, QueryError> {
        self.answer(q, None)
    }

    /// [`Views::query`] for a reader that needs only some value `columns` of the rows (names
    /// of [`value_columns`]): the batch side decodes only those (see
    /// [`BatchViews::rows_projected`]), so a scan of many rows costs a fraction. Other values
    /// may be `NaN`; speed rows are whole.
    pub fn query_columns(&self, q: &Query, columns: &[&str]) -> Result<Answer, QueryError> {
        if let Some(unknown) = columns
            .iter()
            .find(|c| !value_columns().iter().any(|v| v == *c))
        {
            return Err(QueryError::UnknownColumn((*unknown).to_owned()));
        }
        self.answer(q, Some(columns))
    }

    fn answer(&self, q: &Query, projection: Option<&[&str]>) -> Result<Answer, QueryError> {
        self.check(q)?;
        let sealed = self.batch.sealed_through(q.granularity, &q.meter)?;
        let mark = sealed.unwrap_or(i64::MIN);
        let mut rows = if mark > q.from_ms {
            let to = mark.min(q.to_ms);
            match projection {
                None => self.batch.rows(q.granularity, &q.meter, q.from_ms, to)?,
                Some(columns) => {
                    self.batch
                        .rows_projected(q.granularity, &q.meter, q.from_ms, to, columns)?
                }
            }
        } else {
            Vec::new()
        };
        let batch_rows = rows.len();
        if mark < q.to_ms {
            let mut speed =
                self.speed
                    .rows(q.granularity, &q.meter, mark.max(q.from_ms), q.to_ms)?;
            // A store may hand back rows of the edges; keep the rule exact whatever it does.
            speed.retain(|r| r.window_start >= mark && r.window_start < q.to_ms);
            speed.sort_by_key(|r| r.window_start);
            speed.dedup_by_key(|r| r.window_start);
            rows.extend(speed);
        }
        let speed_rows = rows.len() - batch_rows;
        let newest_reading_ms = rows
            .iter()
            .map(|r| self.covered_until(q.granularity, r))
            .max();
        let now = self.calendar.now_ms();
        Ok(Answer {
            rows,
            freshness: Freshness {
                newest_reading_ms,
                age_ms: newest_reading_ms.map(|t| now.saturating_sub(t)),
                batch_sealed_through_ms: sealed,
                batch_rows,
                speed_rows,
            },
        })
    }

    /// End of the time a row's readings cover (see "Freshness").
    fn covered_until(&self, granularity: Granularity, row: &ViewRow) -> i64 {
        let end = row.window_end(&self.calendar, granularity);
        row.window_start
            .saturating_add(row.covered_seconds.saturating_mul(1000))
            .min(end)
    }
}

/// Parses a query time: `YYYY-MM-DD` (the local midnight), a local date-time without offset
/// (`2007-01-01T06:30[:00[.000]]`, `T` or a space), or RFC 3339 with an offset (`…Z`,
/// `…+01:00`). In a zone, local times are read in it and an offset gives the instant; the
/// naive calendar has no zone, so there an offset is ignored and the written clock time used
/// (the UCI file's times are the household's wall clock).
pub fn parse_time(text: &str, calendar: &Calendar) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty time".into());
    }
    let (civil, offset) = split_offset(t);
    if let Some(naive) = time::parse_iso(civil) {
        return match (offset, calendar) {
            (None, _) | (Some(_), Calendar::Naive) => Ok(calendar.from_local(naive)),
            (Some(_), Calendar::Zoned(_)) => t
                .parse::<jiff::Timestamp>()
                .map(|ts| ts.as_millisecond())
                .map_err(|e| format!("{t:?} is not an RFC 3339 time: {e}")),
        };
    }
    Err(format!(
        "{t:?} is not a date (YYYY-MM-DD) or a time (RFC 3339, e.g. 2007-01-01T06:30:00Z)"
    ))
}

/// Splits a trailing `Z` or `±hh:mm` off a date-time.
fn split_offset(t: &str) -> (&str, Option<&str>) {
    if let Some(civil) = t.strip_suffix(['Z', 'z']) {
        return (civil, Some("Z"));
    }
    // An offset follows the time part: look after the `T` (a date's own `-` are not one).
    if let Some(tpos) = t.find(['T', 't', ' ']) {
        if let Some(i) = t[tpos..].rfind(['+', '-']) {
            return (&t[..tpos + i], Some(&t[tpos + i..]));
        }
    }
    (t, None)
}

#[cfg(test)]
mod tests;
