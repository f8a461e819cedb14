//! File replay: history files (UCI text, gzip'd text, CSV, Parquet) into a timely graph.
//!
//! # How the work is shared
//! A plain text file is cut into chunks of [`FileSourceConfig::chunk_bytes`] aligned to line
//! starts, dealt round-robin to the workers (chunk `k` to worker `k mod peers`), so every worker
//! parses while all of them advance through time together and the global frontier never lags
//! more than a chunk or so. Every worker counts the newlines of the chunks before its own, so
//! rejected lines still carry their true line number. A gzip'd file cannot be split: it goes
//! whole to one worker. Parquet row groups are dealt like chunks.
//!
//! # Watermarks
//! "Too late" is judged against the input's file order, never against what one worker happened
//! to read, so the same input gives the same views and the same refusals for any number of
//! workers (see [`crate::source::order`]): chunks are cut the same way whatever the worker
//! count, every chunk's largest event time is broadcast to all workers, and a row of chunk `k`
//! is too late when it is more than the allowed lateness behind the largest time of the rows
//! before it in the file (chunks `0..k` and the earlier rows of its own chunk). A worker judges
//! a chunk once the maxima of every earlier chunk of its input are known; it holds its
//! capability at the least watermark of its unfinished inputs and reads next from the input
//! that is furthest behind, so several files covering the same period (several households) are
//! merged in time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use differential_dataflow::collection::vec::Collection as VecCollection;
use differential_dataflow::AsCollection;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::error::RunErrors;
use crate::format::text::{DateCache, HeaderError, Line, TextFormat};
use crate::model::{Limits, MeterId, Origin, Reading, RejectReason};
use crate::source::handover::HistoryEnds;
use crate::source::order::{FileOrder, FAILED_CHUNK};
use crate::source::progress::InFlight;
use crate::source::{Rejection, SourceOperator};
use crate::time::format_iso;
use crate::Time;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;

/// Default meter id for files without a `Meter` column.
pub const DEFAULT_METER: &str = "household-1";
/// Default interval covered by one row of a history file: the UCI file has one row a minute.
pub const DEFAULT_INTERVAL_S: u32 = 60;
/// Default allowed lateness: a row may come this much after a later one and still count.
pub const DEFAULT_LATENESS_MS: i64 = 10 * 60 * 1000;
/// Default chunk size for splitting text files between workers.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Default [`FileSourceConfig::max_line_bytes`]: 64 KiB, several hundred times a UCI line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// How to read history files.
#[derive(Clone, Debug)]
pub struct FileSourceConfig {
    /// Input files, in order; a reading's [`Origin::source`] indexes this list.
    pub inputs: Vec<PathBuf>,
    /// Meter for files without a `Meter` column.
    pub default_meter: MeterId,
    /// Interval one row covers, in seconds.
    pub interval_s: u32,
    /// Plausibility bounds; rows beyond them are refused.
    pub limits: Limits,
    /// Allowed lateness in ms.
    pub lateness_ms: i64,
    /// Chunk size when splitting text files between workers.
    pub chunk_bytes: usize,
    /// Longest line (with its line ending) a text file may have. A longer body line is
    /// refused ([`RejectReason::TooLong`], with its line number) and only its first bytes are
    /// kept, so input without newlines (or a gzip bomb) cannot exhaust memory; a longer header
    /// fails the input.
    pub max_line_bytes: usize,
    /// A fixed hand-over instant (see [`crate::source::handover`]): readings starting at or
    /// after it are left to the live source, counted in [`SourceStats::after_switch`], and do
    /// not move the watermark. `None`: every reading counts.
    pub switch_at: Option<i64>,
    /// Resuming after a crash: readings that start before this instant are in windows already
    /// durable in the views; they are skipped (counted in [`SourceStats::already_durable`]),
    /// though their ends still count for the hand-over. `None`: a fresh run.
    pub resume_from: Option<i64>,
    /// The files' timestamps are naive local time; in a zone they become UTC instants.
    pub calendar: crate::time::Calendar,
}

impl FileSourceConfig {
    /// A configuration with the defaults for `inputs`.
    pub fn new(inputs: Vec<PathBuf>) -> FileSourceConfig {
        FileSourceConfig {
            inputs,
            default_meter: MeterId::new(DEFAULT_METER).expect("valid default meter"),
            interval_s: DEFAULT_INTERVAL_S,
            limits: Limits::default(),
            lateness_ms: DEFAULT_LATENESS_MS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            switch_at: None,
            resume_from: None,
            calendar: crate::time::Calendar::Naive,
        }
    }
}

/// Counters of a replay, shared by all workers of the process.
#[derive(Debug)]
pub struct SourceStats {
    /// Data rows read (valid, missing and rejected).
    pub rows: AtomicU64,
    /// Valid readings emitted.
    pub readings: AtomicU64,
    /// Rows the source marks as missing (`?`).
    pub missing: AtomicU64,
    /// Rows refused by the source (malformed, absurd, too late).
    pub rejected: AtomicU64,
    /// Valid readings at or after a fixed switch instant, left to the live source
    /// ([`FileSourceConfig::switch_at`]).
    pub after_switch: AtomicU64,
    /// Valid readings skipped when resuming: their windows are durable already
    /// ([`FileSourceConfig::resume_from`]).
    pub already_durable: AtomicU64,
    /// Bytes of the input files consumed (compressed bytes for gzip, column-chunk bytes for
    /// Parquet), the unit of `total_bytes`.
    pub bytes: AtomicU64,
    /// Total size of the input files, for progress bars.
    pub total_bytes: AtomicU64,
    /// The watermark (ms) of the most advanced worker (`i64::MIN` before the first chunk).
    pub watermark: std::sync::atomic::AtomicI64,
}

impl Default for SourceStats {
    fn default() -> Self {
        SourceStats {
            rows: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            after_switch: AtomicU64::new(0),
            already_durable: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            watermark: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

impl SourceStats {
    /// Adds a chunk's rows, missing, rejected and bytes (readings are counted as emitted).
    fn add(&self, chunk: &Chunk) {
        self.rows.fetch_add(chunk.rows, Ordering::Relaxed);
        self.missing.fetch_add(chunk.missing, Ordering::Relaxed);
        self.rejected
            .fetch_add(chunk.rejected.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(chunk.bytes, Ordering::Relaxed);
    }
}

/// A file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The header is not one we can read.
    #[error("{path}: line 1: {source}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        source: HeaderError,
    },
    /// A Parquet file that cannot be decoded, or lacks the needed columns.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: ParquetFault,
    },
}

/// What is wrong with a Parquet history file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetFault {
    /// The file cannot be decoded.
    #[cfg(feature = "parquet")]
    #[error(transparent)]
    Decode(#[from] parquet::errors::ParquetError),
    /// A batch of it cannot be read.
    #[cfg(feature = "parquet")]
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Its columns are not ones we can read.
    #[error("columns: {0}")]
    Columns(#[from] HeaderError),
    /// This build cannot read Parquet.
    #[error("this build has no Parquet support (feature `parquet`)")]
    Unsupported,
}

/// What one chunk of input held.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The chunk's place in its input, from 0: the same for any worker count (see
    /// [`crate::source::order`]).
    pub index: u64,
    /// Valid readings, in file order.
    pub readings: Vec<Reading>,
    /// Refused rows.
    pub rejected: Vec<Rejection>,
    /// Rows marked missing.
    pub missing: u64,
    /// Data rows in the chunk (blank lines excluded).
    pub rows: u64,
    /// Bytes consumed.
    pub bytes: u64,
}

impl Chunk {
    /// Sorts one parsed line into the chunk.
    pub fn push_line(&mut self, outcome: Line, origin: Origin, raw: &[u8]) {
        match outcome {
            Line::Blank => return,
            Line::Reading(r) => self.readings.push(r),
            Line::Missing => self.missing += 1,
            Line::Rejected(reason) => {
                self.rejected
                    .push(Rejection::new(origin, reason, record_text(raw)))
            }
        }
        self.rows += 1;
    }
}

/// A record as text for the dead-letter file: line ending removed, shortened past 512 bytes.
pub fn record_text(raw: &[u8]) -> String {
    let mut raw = raw;
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    let s = String::from_utf8_lossy(&raw[..raw.len().min(512)]);
    s.into_owned()
}

/// One worker's share of one input, read chunk by chunk.
pub trait ChunkReader {
    /// The next chunk, or `None` at the end of this worker's share.
    fn next_chunk(&mut self) -> Result<Option<Chunk>, SourceError>;
}

/// What a file holds, from its first bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Delimited text.
    Text,
    /// Gzip-compressed delimited text.
    GzipText,
    /// Apache Parquet.
    Parquet,
}

/// Detects the kind of `path` from its magic bytes.
pub fn detect_kind(path: &Path) -> Result<FileKind, SourceError> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let n = f.read(&mut head).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => FileKind::GzipText,
        b"PAR1" => FileKind::Parquet,
        _ => FileKind::Text,
    })
}

/// Checks every input before a run starts: it exists, and its header (or schema) is usable.
/// Returns the total size of the plain inputs, for progress reporting.
pub fn check_inputs(config: &FileSourceConfig) -> Result<u64, SourceError> {
    let mut total = 0;
    for path in &config.inputs {
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        match detect_kind(path)? {
            FileKind::Text | FileKind::GzipText => {
                read_header(&mut *open_text(path)?, path, config)?;
                total += meta.len();
            }
            FileKind::Parquet => {
                #[cfg(feature = "parquet")]
                crate::format::parquet::check(path, config)?;
                #[cfg(not(feature = "parquet"))]
                return Err(SourceError::Parquet {
                    path: path.clone(),
                    source: ParquetFault::Unsupported,
                });
                #[allow(unreachable_code)]
                {
                    total += meta.len();
                }
            }
        }
    }
    Ok(total)
}

/// Reads one line (through its `\n`) into `buf`, keeping at most `max` bytes of it, and returns
/// the line's whole length (0 at the end of the input). The rest of a longer line is read past,
/// not kept: memory stays bounded whatever the input.
pub fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<u64> {
    buf.clear();
    let mut total = 0u64;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        let (take, ended) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        total += take as u64;
        if ended {
            return Ok(total);
        }
    }
}

/// Reads and checks the header line of a text input: its parser and the header's length.
fn read_header(
    reader: &mut dyn BufRead,
    path: &Path,
    config: &FileSourceConfig,
) -> Result<(TextFormat, u64), SourceError> {
    let header_error = |source| SourceError::Header {
        path: path.to_owned(),
        source,
    };
    let mut header = Vec::new();
    let len = read_line_bounded(reader, &mut header, config.max_line_bytes).map_err(|source| {
        SourceError::Io {
            path: path.to_owned(),
            source,
        }
    })?;
    if len > config.max_line_bytes as u64 {
        return Err(header_error(HeaderError::TooLong {
            limit: config.max_line_bytes,
        }));
    }
    let format = TextFormat::from_header(
        &header,
        config.default_meter,
        config.interval_s,
        config.limits,
    )
    .map_err(header_error)?;
    Ok((format, len))
}

/// Bytes consumed from a file, shared between a [`CountingReader`] and its owner.
type ByteCounter = std::rc::Rc<std::cell::Cell<u64>>;

/// Counts the bytes read through it, so progress is measured in bytes of the file on disk
/// (compressed bytes for gzip), the same unit as the progress total.
struct CountingReader<R> {
    inner: R,
    count: ByteCounter,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Opens a text file (plain or gzip'd) for line reading; the counter follows the bytes of the
/// file itself that have been consumed.
fn open_text_counted(path: &Path) -> Result<(Box<dyn BufRead>, ByteCounter), SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_owned(),
        source,
    };
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    let file = CountingReader {
        inner: File::open(path).map_err(io)?,
        count: std::rc::Rc::clone(&count),
    };
    let reader: Box<dyn BufRead> = match detect_kind(path)? {
        FileKind::GzipText => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        )),
        _ => Box::new(BufReader::with_capacity(1 << 20, file)),
    };
    Ok((reader, count))
}

/// Opens a text file, plain or gzip'd (by its magic bytes), for reading lines.
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead>, SourceError> {
    open_text_counted(path).map(|(reader, _)| reader)
}

/// Opens worker `worker`'s share (of `peers`) of input number `index`; `None` if it has none.
pub fn open_share(
    index: u32,
    config: &FileSourceConfig,
    worker: usize,
    peers: usize,
) -> Result<Option<Box<dyn ChunkReader>>, SourceError> {
    let path = &config.inputs[index as usize];
    match detect_kind(path)? {
        FileKind::Text => Ok(Some(Box::new(TextShare::open(
            index, path, config, worker, peers,
        )?))),
        FileKind::GzipText => {
            if index as usize % peers != worker {
                return Ok(None);
            }
            Ok(Some(Box::new(StreamShare::open(index, path, config)?)))
        }
        FileKind::Parquet => {
            #[cfg(feature = "parquet")]
            {
                Ok(Some(Box::new(crate::format::parquet::ParquetShare::open(
                    index, path, config, worker, peers,
                )?)))
            }
            #[cfg(not(feature = "parquet"))]
            Err(SourceError::Parquet {
                path: path.clone(),
                source: ParquetFault::Unsupported,
            })
        }
    }
}

/// A worker's chunks of a plain text file, read with positioned reads (no mmap: the resident
/// memory of a replay stays the size of a few chunks, whatever the size of the file).
struct TextShare {
    index: u32,
    path: PathBuf,
    file: File,
    len: u64,
    format: TextFormat,
    body_start: u64,
    chunk_bytes: u64,
    max_line: u64,
    next_chunk: u64,
    peers: u64,
    /// The last forward scan for a line start: from this position, the first line start found.
    /// A chunk boundary inside the same long line is answered from it, not scanned again.
    scanned: (u64, u64),
    /// Newlines counted so far: position and the line number of the line starting there.
    counted_to: u64,
    line_at_counted: u64,
    dates: DateCache,
    buf: Vec<u8>,
}

/// Extra bytes read past a chunk's nominal end to finish its last line.
const TAIL_BYTES: u64 = 16 * 1024;

impl TextShare {
    fn open(
        index: u32,
        path: &Path,
        config: &FileSourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<TextShare, SourceError> {
        let io = |source| SourceError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (format, body_start) = read_header(&mut BufReader::new(&file), path, config)?;
        Ok(TextShare {
            index,
            path: path.to_owned(),
            file,
            len,
            format,
            body_start,
            chunk_bytes: config.chunk_bytes.max(1) as u64,
            max_line: config.max_line_bytes as u64,
            next_chunk: worker as u64,
            peers: peers as u64,
            scanned: (u64::MAX, u64::MAX),
            counted_to: body_start,
            line_at_counted: 2,
            dates: DateCache::default(),
            buf: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads `[from, to)` into `buf` (shorter at the end of the file).
    fn read_at(&mut self, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<(), SourceError> {
        use std::os::unix::fs::FileExt;
        let to = to.min(self.len);
        buf.resize(to.saturating_sub(from) as usize, 0);
        self.file.read_exact_at(buf, from).map_err(|e| self.io(e))
    }

    /// First line start at or after `pos`, reading forward as far as needed.
    fn line_start_at_or_after(&mut self, pos: u64) -> Result<u64, SourceError> {
        if pos <= self.body_start {
            return Ok(self.body_start);
        }
        let mut from = pos - 1;
        let (scanned_from, found) = self.scanned;
        if (scanned_from..found).contains(&from) {
            return Ok(found);
        }
        let scan_start = from;
        let mut probe = Vec::new();
        let mut found = self.len;
        while from < self.len {
            self.read_at(from, from + TAIL_BYTES, &mut probe)?;
            if let Some(i) = memchr::memchr(b'\n', &probe) {
                found = from + i as u64 + 1;
                break;
            }
            from += probe.len() as u64;
        }
        self.scanned = (scan_start, found);
        Ok(found)
    }

    /// Counts newlines in `[self.counted_to, to)`.
    fn count_lines_to(&mut self, to: u64) -> Result<(), SourceError> {
        let mut block = Vec::new();
        while self.counted_to < to {
            let end = to.min(self.counted_to + (4 << 20));
            self.read_at(self.counted_to, end, &mut block)?;
            self.line_at_counted += memchr::memchr_iter(b'\n', &block).count() as u64;
            self.counted_to = end;
        }
        Ok(())
    }
}

impl ChunkReader for TextShare {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, SourceError> {
        let nominal = self.body_start + self.next_chunk * self.chunk_bytes;
        if nominal >= self.len {
            return Ok(None);
        }
        let start = self.line_start_at_or_after(nominal)?;
        let end = self.line_start_at_or_after(nominal + self.chunk_bytes)?;
        let index = self.next_chunk;
        self.next_chunk += self.peers;
        // Count the lines of the chunks between the last one and this one.
        self.count_lines_to(start)?;
        let mut buf = std::mem::take(&mut self.buf);
        // A line longer than the limit is not read whole: past the chunk and one line's worth
        // of bytes, the line still open runs to `end` (the next line start after the chunk)
        // and is refused from its first bytes.
        self.read_at(
            start,
            end.min(start + self.chunk_bytes + self.max_line + 1),
            &mut buf,
        )?;
        let mut line_no = self.line_at_counted;
        let mut chunk = Chunk {
            index,
            bytes: end - start,
            ..Chunk::default()
        };
        chunk.readings.reserve(buf.len() / 64);
        let mut pos = 0;
        while pos < buf.len() {
            let (line_end, whole) = match memchr::memchr(b'\n', &buf[pos..]) {
                Some(i) => (pos + i + 1, i as u64 + 1),
                None => (buf.len(), end - start - pos as u64),
            };
            let line = &buf[pos..line_end];
            let origin = Origin {
                source: self.index,
                position: line_no,
            };
            let outcome = if whole > self.max_line {
                Line::Rejected(RejectReason::TooLong {
                    bytes: whole,
                    limit: self.max_line,
                })
            } else {
                self.format.parse_line(line, origin, &mut self.dates)
            };
            chunk.push_line(outcome, origin, line);
            line_no += 1;
            pos = line_end;
        }
        self.buf = buf;
        self.counted_to = end;
        self.line_at_counted = line_no;
        Ok(Some(chunk))
    }
}

/// A text stream that cannot be split (gzip): read by one worker, line by line.
struct StreamShare {
    index: u32,
    path: PathBuf,
    reader: Box<dyn BufRead>,
    /// Bytes of the file (compressed) consumed so far, and as of the last chunk.
    consumed: ByteCounter,
    reported: u64,
    format: TextFormat,
    chunk_bytes: usize,
    max_line: usize,
    line_no: u64,
    /// Chunks read so far.
    chunks: u64,
    done: bool,
    dates: DateCache,
    line: Vec<u8>,
}

impl StreamShare {
    fn open(
        index: u32,
        path: &Path,
        config: &FileSourceConfig,
    ) -> Result<StreamShare, SourceError> {
        let (mut reader, consumed) = open_text_counted(path)?;
        let (format, _) = read_header(&mut *reader, path, config)?;
        Ok(StreamShare {
            index,
            path: path.to_owned(),
            reader,
            consumed,
            reported: 0,
            format,
            chunk_bytes: config.chunk_bytes.max(1),
            max_line: config.max_line_bytes,
            line_no: 1,
            chunks: 0,
            done: false,
            dates: DateCache::default(),
            line: Vec::with_capacity(256),
        })
    }
}

impl ChunkReader for StreamShare {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let mut chunk = Chunk {
            index: self.chunks,
            ..Chunk::default()
        };
        self.chunks += 1;
        // Chunks are cut by text bytes; progress is reported in bytes of the file.
        let mut text_bytes = 0u64;
        while text_bytes < self.chunk_bytes as u64 {
            let n = read_line_bounded(&mut *self.reader, &mut self.line, self.max_line).map_err(
                |source| SourceError::Io {
                    path: self.path.clone(),
                    source,
                },
            )?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line_no += 1;
            text_bytes += n.min(self.max_line as u64);
            let origin = Origin {
                source: self.index,
                position: self.line_no,
            };
            let outcome = if n > self.max_line as u64 {
                Line::Rejected(RejectReason::TooLong {
                    bytes: n,
                    limit: self.max_line as u64,
                })
            } else {
                self.format.parse_line(&self.line, origin, &mut self.dates)
            };
            chunk.push_line(outcome, origin, &self.line);
        }
        let consumed = self.consumed.get();
        chunk.bytes = consumed - self.reported;
        self.reported = consumed;
        Ok(Some(chunk))
    }
}

/// Renders a reading for the dead-letter file when its original text is gone.
pub fn render_reading(r: &Reading) -> String {
    use crate::model::format_thousandths as f;
    format!(
        "{};{};{}s;{}",
        r.meter,
        format_iso(r.ts),
        r.interval_s,
        r.values
            .iter()
            .map(|&v| f(v as i64))
            .collect::<Vec<_>>()
            .join(";")
    )
}

/// One input a worker reads.
struct InputState {
    /// The input's place in [`FileSourceConfig::inputs`].
    index: u32,
    reader: Box<dyn ChunkReader>,
    /// `P - lateness` after the last chunk this worker judged (see [`crate::source::order`]):
    /// what the capability follows for this input.
    watermark: i64,
    /// Parsed chunks waiting for the maxima of the chunks before them, in file order (at most
    /// [`PENDING_CHUNKS`], so a worker reads on while its peers' maxima travel).
    pending: VecDeque<Prepared>,
    /// The share is read to its end.
    done: bool,
}

/// A parsed chunk whose rows that count are known, not yet judged for lateness.
struct Prepared {
    chunk: Chunk,
    /// The largest event time of its rows that count (`i64::MIN`: none).
    max: i64,
}

/// Streams returned by [`file_source`].
pub struct FileStreams<'scope> {
    /// Valid readings, at their source watermark.
    pub readings: VecCollection<'scope, Time, Reading>,
    /// Refused rows.
    pub rejected: StreamVec<'scope, Time, Rejection>,
    /// Per meter, the end (`ts + interval`) of the last reading this worker emitted, sent once
    /// its inputs are exhausted: the switch times of the hand-over to a live source (see
    /// [`crate::source::handover`]). Its frontier is the source's: empty once history is read.
    pub ends: StreamVec<'scope, Time, (MeterId, i64)>,
}

/// Parsed chunks of one input a worker may hold while it waits for its peers' maxima.
const PENDING_CHUNKS: usize = 4;

/// Chunks a worker may have in flight beyond the progress of `flow` (see [`file_source`]).
pub const DEFAULT_CHUNKS_IN_FLIGHT: usize = 4;

/// What the source does with a chunk's rows before and after the lateness judgement.
struct Judge<'a> {
    config: &'a FileSourceConfig,
    stats: &'a SourceStats,
    ends: &'a mut HistoryEnds,
}

impl Judge<'_> {
    /// Puts the chunk's readings in UTC, sets aside those after the switch to live and those
    /// already durable (before the restart floor), and finds the largest time of the rest.
    fn prepare(&mut self, mut chunk: Chunk) -> Prepared {
        let switch_at = self.config.switch_at.unwrap_or(i64::MAX);
        let resume_from = self.config.resume_from.unwrap_or(i64::MIN);
        let zoned = self.config.calendar.is_zoned();
        let (mut after_switch, mut skipped, mut max) = (0u64, 0u64, i64::MIN);
        let ends = &mut *self.ends;
        chunk.readings.retain_mut(|r| {
            if zoned {
                r.ts = self.config.calendar.from_local(r.ts);
            }
            if r.ts >= switch_at {
                after_switch += 1;
                return false;
            }
            if r.ts < resume_from {
                ends.note(r.meter, r.ts.saturating_add(r.interval_s as i64 * 1000));
                skipped += 1;
                return false;
            }
            max = max.max(r.ts);
            true
        });
        if after_switch > 0 {
            self.stats
                .after_switch
                .fetch_add(after_switch, Ordering::Relaxed);
        }
        if skipped > 0 {
            self.stats
                .already_durable
                .fetch_add(skipped, Ordering::Relaxed);
        }
        Prepared { chunk, max }
    }

    /// Judges a prepared chunk whose prefix (the largest time of the chunks before it) is
    /// `prefix`: a reading before the largest time seen before it minus the lateness is
    /// refused. Returns the watermark after the chunk.
    fn judge(&mut self, prepared: &mut Prepared, prefix: i64) -> i64 {
        let lateness = self.config.lateness_ms.max(0);
        let chunk = &mut prepared.chunk;
        let mut seen = prefix;
        let rejected = &mut chunk.rejected;
        let ends = &mut *self.ends;
        chunk.readings.retain(|r| {
            let bar = seen.saturating_sub(lateness);
            if r.ts < bar {
                rejected.push(Rejection::new(
                    r.origin,
                    RejectReason::TooLate {
                        ts: format_iso(r.ts),
                        watermark: format_iso(bar),
                    },
                    render_reading(r),
                ));
                return false;
            }
            seen = seen.max(r.ts);
            ends.note(r.meter, r.ts.saturating_add(r.interval_s as i64 * 1000));
            true
        });
        debug_assert_eq!(seen, prefix.max(prepared.max));
        seen.saturating_sub(lateness)
    }
}

/// Replays `config.inputs` into the graph; see the module docs. Fatal errors (a file vanishing
/// mid-run) are pushed to `errors` and end that input.
///
/// `flow` is a probe placed downstream (after the aggregation): a worker reads a new chunk only
/// while fewer than [`DEFAULT_CHUNKS_IN_FLIGHT`] of its earlier chunks are still ahead of the
/// probe, so a fast worker cannot run ahead of a slow one and pile readings up in memory.
///
/// Each chunk's maximum is broadcast to every worker, and a chunk is judged for lateness once
/// the maxima of all chunks before it are known ([`crate::source::order`]): the same refusals
/// for any worker count.
pub fn file_source<'scope>(
    scope: Scope<'scope, Time>,
    config: Arc<FileSourceConfig>,
    stats: Arc<SourceStats>,
    errors: RunErrors,
    flow: Option<ProbeHandle<Time>>,
) -> FileStreams<'scope> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::operator::Operator;
    use timely::dataflow::operators::vec::Broadcast;

    let worker = scope.index();
    let peers = scope.peers();
    let SourceOperator {
        mut builder,
        activator,
        mut readings_out,
        readings,
        mut rejected_out,
        rejected,
    } = SourceOperator::new("FileSource".to_owned(), scope);
    let (ends_out, ends_stream) = builder.new_output();
    let mut ends_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(MeterId, i64)>>>::from(ends_out);
    let (maxima_out, maxima) = builder.new_output();
    let mut maxima_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(u32, u64, i64)>>>::from(maxima_out);

    // Every worker hears every chunk's maximum, into the record its source reads.
    let order = Rc::new(RefCell::new(FileOrder::default()));
    {
        let order = Rc::clone(&order);
        let activator = activator.clone();
        maxima
            .broadcast()
            .sink(Pipeline, "FileOrder", move |(input, _frontier)| {
                let mut heard = false;
                input.for_each(|_time, data| {
                    let mut order = order.borrow_mut();
                    for &(index, chunk, max) in data.iter() {
                        order.record(index, chunk, max);
                    }
                    heard = true;
                });
                if heard {
                    activator.activate();
                }
            });
    }

    builder.build(move |capabilities| {
        let mut caps = Some(capabilities);
        let mut inputs: Vec<InputState> = Vec::new();
        let mut opened = false;
        let mut in_flight = InFlight::new(DEFAULT_CHUNKS_IN_FLIGHT);
        let mut ends = HistoryEnds::default();
        move |_frontiers| {
            let Some(current) = caps.as_mut() else {
                return;
            };
            if !opened {
                opened = true;
                for index in 0..config.inputs.len() as u32 {
                    match open_share(index, &config, worker, peers) {
                        Ok(Some(reader)) => inputs.push(InputState {
                            index,
                            reader,
                            watermark: i64::MIN,
                            pending: VecDeque::new(),
                            done: false,
                        }),
                        Ok(None) => {}
                        Err(e) => errors.push(e),
                    }
                }
            }
            let mut judge = Judge {
                config: &config,
                stats: &stats,
                ends: &mut ends,
            };
            // Judge and emit the chunks whose earlier maxima are all known, then read one
            // more chunk unless the graph has too many of this worker's chunks in hand.
            let mut reading = None;
            let blocked = flow
                .as_ref()
                .is_some_and(|probe| in_flight.blocked(*current[0].time(), probe));
            if !blocked {
                // Read from the input furthest behind, so inputs advance together in time.
                reading = inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.pending.len() < PENDING_CHUNKS && !s.done)
                    .min_by_key(|(i, s)| (s.watermark, *i))
                    .map(|(i, _)| i);
            }
            if let Some(i) = reading {
                let state = &mut inputs[i];
                match state.reader.next_chunk() {
                    Ok(Some(chunk)) => {
                        let prepared = judge.prepare(chunk);
                        let index = state.index;
                        order
                            .borrow_mut()
                            .record(index, prepared.chunk.index, prepared.max);
                        if peers > 1 {
                            maxima_out.activate().session(&current[3]).give((
                                index,
                                prepared.chunk.index,
                                prepared.max,
                            ));
                        }
                        state.pending.push_back(prepared);
                    }
                    Ok(None) => state.done = true,
                    Err(e) => {
                        // The run fails with this error; no worker may wait for the maxima
                        // of this input's later chunks.
                        errors.push(e);
                        state.done = true;
                        order
                            .borrow_mut()
                            .record(state.index, FAILED_CHUNK, i64::MIN);
                        if peers > 1 {
                            maxima_out.activate().session(&current[3]).give((
                                state.index,
                                FAILED_CHUNK,
                                i64::MIN,
                            ));
                        }
                    }
                }
            }
            let mut waiting = false;
            for state in inputs.iter_mut() {
                while let Some(mut prepared) = state.pending.pop_front() {
                    let index = state.index;
                    let chunk_no = prepared.chunk.index;
                    let prefix = order.borrow().prefix(index, chunk_no);
                    let Some(prefix) = prefix else {
                        if order.borrow().failed(index) {
                            state.done = true;
                            state.pending.clear();
                            break;
                        }
                        state.pending.push_front(prepared);
                        waiting = true;
                        break;
                    };
                    order.borrow_mut().forget_before(index, chunk_no);
                    // The chunk's graph time is its bar at its start, `prefix - lateness`: a
                    // function of the file order alone (so duplicates across inputs fold in the
                    // same order whatever the worker count), at most every kept reading's time,
                    // and at least the capability (this input's watermark, which the capability
                    // is at or before, is the bar after an earlier chunk). One time per chunk
                    // keeps the graph's times few.
                    let time = prefix.saturating_sub(config.lateness_ms.max(0)).max(0) as Time;
                    debug_assert!(time >= *current[0].time());
                    state.watermark = state.watermark.max(judge.judge(&mut prepared, prefix));
                    let chunk = prepared.chunk;
                    if !chunk.readings.is_empty() {
                        in_flight.sent(*current[0].time());
                        stats
                            .readings
                            .fetch_add(chunk.readings.len() as u64, Ordering::Relaxed);
                        let mut readings_handle = readings_out.activate();
                        readings_handle
                            .session(&current[0])
                            .give_iterator(chunk.readings.iter().map(|r| (*r, time, 1)));
                    }
                    if !chunk.rejected.is_empty() {
                        let mut rejected_handle = rejected_out.activate();
                        rejected_handle
                            .session(&current[1])
                            .give_iterator(chunk.rejected.iter().cloned());
                    }
                    stats.add(&chunk);
                }
            }
            inputs.retain(|s| !s.done || !s.pending.is_empty());
            if inputs.is_empty() {
                let last = ends.drain();
                if !last.is_empty() {
                    ends_out
                        .activate()
                        .session(&current[2])
                        .give_iterator(last.into_iter());
                }
                caps = None;
                return;
            }
            let low = inputs.iter().map(|s| s.watermark).min().unwrap_or(0).max(0) as Time;
            stats.watermark.fetch_max(low as i64, Ordering::Relaxed);
            for cap in current.iter_mut() {
                if *cap.time() < low {
                    cap.downgrade(&low);
                }
            }
            let readable = inputs
                .iter()
                .any(|s| s.pending.len() < PENDING_CHUNKS && !s.done);
            if blocked {
                activator.activate_after(Duration::from_micros(200));
            } else if readable {
                activator.activate();
            } else if waiting {
                // The maxima of other workers' chunks wake this source; a late wake-up also.
                activator.activate_after(Duration::from_millis(5));
            }
        }
    });

    FileStreams {
        readings: readings.as_collection(),
        rejected,
        ends: ends_stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::text::UCI_HEADER;
    use std::io::Write;

    fn uci_line(minute: u32) -> String {
        format!("16/12/2006;17:{minute:02}:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000\r\n")
    }

    /// Every chunk of every worker's share: (readings' line numbers, refusals by line number).
    fn read_all(config: &FileSourceConfig, peers: usize) -> (Vec<u64>, Vec<(u64, RejectReason)>) {
        let (mut lines, mut refused) = (Vec::new(), Vec::new());
        for worker in 0..peers {
            let Some(mut share) = open_share(0, config, worker, peers).unwrap() else {
                continue;
            };
            while let Some(chunk) = share.next_chunk().unwrap() {
                lines.extend(chunk.readings.iter().map(|r| r.origin.position));
                for r in chunk.rejected {
                    assert!(
                        r.record.len() <= 512,
                        "a dead letter keeps only a line's start"
                    );
                    refused.push((r.origin.position, r.reason));
                }
            }
        }
        lines.sort_unstable();
        refused.sort_by_key(|(line, _)| *line);
        (lines, refused)
    }

    #[test]
    fn read_line_bounded_keeps_a_prefix_and_reports_the_whole_length() {
        let text = format!("short\n{}\nlast", "x".repeat(10_000));
        let mut reader = std::io::BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut reader, &mut buf, 100).unwrap(), 6);
        assert_eq!(buf, b"short\n");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 100).unwrap(),
            10_001
        );
        assert_eq!(buf.len(), 100);
        assert_eq!(read_line_bounded(&mut reader, &mut buf, 100).unwrap(), 4);
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut reader, &mut buf, 100).unwrap(), 0);
    }

    #[test]
    fn overlong_lines_are_refused_with_their_line_number_for_any_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.txt");
        let mut text = format!("{UCI_HEADER}\r\n");
        text.push_str(&uci_line(0));
        // Line 3: 50 KB without a newline until its end, spanning many chunks.
        text.push_str(&"9".repeat(50_000));
        text.push('\n');
        for minute in 1..40 {
            text.push_str(&uci_line(minute));
        }
        // The last line: over the limit and without any newline at all.
        text.push_str(&"z".repeat(3000));
        std::fs::write(&path, &text).unwrap();
        let mut config = FileSourceConfig::new(vec![path]);
        config.chunk_bytes = 300;
        config.max_line_bytes = 2048;
        let want_lines: Vec<u64> = std::iter::once(2).chain(4..43).collect();
        for peers in [1, 2, 3, 7] {
            let (lines, refused) = read_all(&config, peers);
            assert_eq!(lines, want_lines, "{peers} workers");
            assert_eq!(
                refused,
                vec![
                    (
                        3,
                        RejectReason::TooLong {
                            bytes: 50_001,
                            limit: 2048
                        }
                    ),
                    (
                        43,
                        RejectReason::TooLong {
                            bytes: 3000,
                            limit: 2048
                        }
                    ),
                ],
                "{peers} workers"
            );
        }
    }

    #[test]
    fn a_gzip_bomb_without_newlines_is_one_refused_line_not_an_out_of_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.txt.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::best(),
        );
        write!(gz, "{UCI_HEADER}\n{}", uci_line(0)).unwrap();
        let block = vec![b'7'; 1 << 20];
        // 256 MiB of one line: a few hundred KiB on disk.
        for _ in 0..256 {
            gz.write_all(&block).unwrap();
        }
        write!(gz, "\n{}", uci_line(1)).unwrap();
        gz.finish().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
        let config = FileSourceConfig::new(vec![path]);
        let (lines, refused) = read_all(&config, 2);
        assert_eq!(lines, vec![2, 4]);
        assert_eq!(
            refused,
            vec![(
                3,
                RejectReason::TooLong {
                    bytes: (256 << 20) + 1,
                    limit: DEFAULT_MAX_LINE_BYTES as u64
                }
            )]
        );
    }

    #[test]
    fn an_overlong_header_fails_the_input_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("header.txt");
        std::fs::write(&path, "Date;Time;".repeat(10_000)).unwrap();
        let mut config = FileSourceConfig::new(vec![path]);
        config.max_line_bytes = 1000;
        let err = check_inputs(&config).unwrap_err();
        assert!(
            matches!(
                &err,
                SourceError::Header {
                    source: HeaderError::TooLong { limit: 1000 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("header.txt"), "{err}");
    }
}
