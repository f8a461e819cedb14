//! The dead-letter file: every refused record with its file, line and reason.
//!
//! All refusals are routed to worker 0, which writes `rejected.csv` (RFC 4180 quoting, header
//! `file,line,reason,record`) as they arrive and flushes it when its input is complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::source::Rejection;
use crate::Time;

/// File name of the dead-letter file inside the output folder.
pub const REJECTED_FILE: &str = "rejected.csv";

/// Quotes a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes refusals to `path`. `sources` names the inputs that [`Origin::source`](crate::model::Origin)
/// indexes. `count` is increased by each record written; I/O errors go to `errors`.
pub fn rejected_sink(
    rejected: StreamVec<'_, Time, Rejection>,
    path: PathBuf,
    sources: Arc<Vec<String>>,
    count: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let worker = rejected.scope().index();
    let mut out: Option<BufWriter<File>> = None;
    if worker == 0 {
        let opened = std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))
            .and_then(|_| File::create(&path))
            .and_then(|f| {
                let mut w = BufWriter::new(f);
                w.write_all(b"file,line,reason,record\n")?;
                Ok(w)
            });
        match opened {
            Ok(w) => out = Some(w),
            Err(e) => errors
                .lock()
                .expect("errors lock")
                .push(format!("{}: {e}", path.display())),
        }
    }
    rejected.sink(
        Exchange::new(|_: &Rejection| 0),
        "RejectedSink",
        move |(input, frontier)| {
            input.for_each(|_, data| {
                for r in data.drain(..) {
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = out.as_mut() {
                        let kafka;
                        let source = match r.origin.kafka_partition() {
                            Some(p) => {
                                kafka = format!("kafka partition {p}");
                                kafka.as_str()
                            }
                            None => sources
                                .get(r.origin.source as usize)
                                .map(String::as_str)
                                .unwrap_or("?"),
                        };
                        let line = format!(
                            "{},{},{},{}\n",
                            csv_field(source),
                            r.origin.position,
                            csv_field(&r.reason.to_string()),
                            csv_field(&r.record)
                        );
                        if let Err(e) = w.write_all(line.as_bytes()) {
                            errors
                                .lock()
                                .expect("errors lock")
                                .push(format!("{}: {e}", path.display()));
                            out = None;
                        }
                    }
                }
            });
            if frontier.is_empty() {
                if let Some(mut w) = out.take() {
                    if let Err(e) = w.flush() {
                        errors
                            .lock()
                            .expect("errors lock")
                            .push(format!("{}: {e}", path.display()));
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
