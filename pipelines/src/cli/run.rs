//! `wattflow run`: the one graph, configured by flags for the common case and by
//! `--config pipeline.toml` for everything (see [`crate::config`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use super::{parse_duration, stop_flag};
use crate::config::{environment, layer, read_file};
use crate::graph::RunSummary;

/// Arguments of `wattflow run`. A flag that is given overrides the file and the environment.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Everything else, as TOML (see `pipeline.example.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// History input (UCI text, gzip'd text, CSV or Parquet); repeat for several files.
    #[arg(long = "input", short = 'i', value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Meter id for history inputs without a `Meter` column.
    #[arg(long)]
    pub meter: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka topic to follow after the history (turns the Kafka source on).
    #[arg(long)]
    pub topic: Option<String>,
    /// Consumer group (offsets are committed under it).
    #[arg(long)]
    pub group: Option<String>,
    /// Where partitions without a committed offset start: earliest, latest or a timestamp.
    #[arg(long)]
    pub start: Option<String>,
    /// Cassandra contact point(s), `host:port[,host:port]` (turns the speed views on).
    #[arg(long, value_name = "HOST:PORT")]
    pub cassandra: Option<String>,
    /// Cassandra keyspace (created if missing).
    #[arg(long)]
    pub keyspace: Option<String>,
    /// Output folder of the Parquet batch views (turns them on).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Files per Parquet partition: meters are spread over `part-0.parquet` … by a hash of
    /// their id, so many meters spread over the workers (default 1; keep it for a view).
    #[arg(long, value_name = "N")]
    pub parquet_buckets: Option<u32>,
    /// Timely worker threads.
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Finish once the Kafka source has been idle (read to its end) this long.
    #[arg(long, value_parser = parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// `auto` (per meter, the end of its history) or a timestamp `YYYY-MM-DDThh:mm:ss`.
    #[arg(long, value_name = "TIMESTAMP|auto")]
    pub switch_at: Option<String>,
    /// Allowed lateness of both sources, e.g. `10m`.
    #[arg(long, value_parser = parse_duration)]
    pub lateness: Option<Duration>,
    /// Live readings further ahead of the wall clock than this are refused (default 5m).
    #[arg(long, value_parser = parse_duration)]
    pub max_future_skew: Option<Duration>,
    /// `naive` (default: the data's local time) or an IANA zone, e.g. `Europe/Paris`: hour and
    /// day windows follow its local calendar; live readings carry UTC epoch milliseconds.
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Dead-letter topic (default `<topic>.rejected`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Processes of a timely cluster (each runs this command with its own `--process`).
    #[arg(long, short = 'n')]
    pub processes: Option<usize>,
    /// This process's index in the cluster, from 0.
    #[arg(long, short = 'p')]
    pub process: Option<usize>,
    /// The cluster's addresses, one `host:port` per line in process order.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// Write the run's summary as JSON to this file (`FILE.p<I>` in process I of a cluster).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

fn put(flags: &mut Map<String, Value>, section: &str, key: &str, value: Value) {
    flags
        .entry(section.to_owned())
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("sections are objects")
        .insert(key.to_owned(), value);
}

fn text(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

impl RunArgs {
    /// The flags that were given, as configuration keys by section.
    pub fn flags(&self) -> Value {
        let mut f = Map::new();
        if !self.inputs.is_empty() {
            put(&mut f, "history", "inputs", json!(self.inputs));
        }
        if let Some(m) = &self.meter {
            put(&mut f, "history", "meter", json!(m));
        }
        if let Some(l) = self.lateness {
            put(&mut f, "history", "lateness", text(l));
        }
        let kafka = [
            ("brokers", self.brokers.clone()),
            ("topic", self.topic.clone()),
            ("group", self.group.clone()),
            ("start", self.start.clone()),
            ("dead_letter_topic", self.dead_letter_topic.clone()),
        ];
        for (key, value) in kafka {
            if let Some(v) = value {
                put(&mut f, "kafka", key, json!(v));
            }
        }
        if let Some(s) = self.max_future_skew {
            put(&mut f, "kafka", "max_future_skew", text(s));
        }
        if let Some(c) = &self.cassandra {
            put(&mut f, "cassandra", "contact_points", json!(c));
        }
        if let Some(k) = &self.keyspace {
            put(&mut f, "cassandra", "keyspace", json!(k));
        }
        if let Some(o) = &self.out {
            put(&mut f, "parquet", "out", json!(o));
        }
        if let Some(b) = self.parquet_buckets {
            put(&mut f, "parquet", "buckets", json!(b));
        }
        if let Some(w) = self.workers {
            put(&mut f, "pipeline", "workers", json!(w));
        }
        if let Some(d) = self.exit_when_idle {
            put(&mut f, "pipeline", "exit_when_idle", text(d));
        }
        if let Some(a) = &self.metrics_listen {
            put(&mut f, "pipeline", "metrics_listen", json!(a));
        }
        if let Some(s) = &self.switch_at {
            put(&mut f, "pipeline", "switch_at", json!(s));
        }
        if let Some(n) = self.processes {
            put(&mut f, "pipeline", "processes", json!(n));
        }
        if let Some(i) = self.process {
            put(&mut f, "pipeline", "process", json!(i));
        }
        if let Some(h) = &self.hostfile {
            put(&mut f, "pipeline", "hostfile", json!(h));
        }
        if let Some(z) = &self.timezone {
            put(&mut f, "pipeline", "timezone", json!(z));
        }
        if let Some(s) = &self.summary_json {
            put(&mut f, "pipeline", "summary_json", json!(s));
        }
        Value::Object(f)
    }
}

pub(crate) fn run(args: RunArgs) -> Result<()> {
    let file = args.config.as_deref().map(read_file).transpose()?;
    let mut config = layer(file, &environment(), args.flags())?;
    // `--lateness` is the lateness of both sources.
    if let (Some(lateness), Some(kafka)) = (args.lateness, config.kafka.as_mut()) {
        kafka.lateness = lateness;
    }
    let pipeline = config.to_pipeline()?;
    let summary = pipeline.run(stop_flag())?;
    print_summary(&summary);
    if let Some(path) = &config.pipeline.summary_json {
        let path = match config.pipeline.processes {
            n if n > 1 => PathBuf::from(format!("{}.p{}", path.display(), config.pipeline.process)),
            _ => path.clone(),
        };
        let path = &path;
        summary
            .write_json(path)
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(())
}

fn print_summary(s: &RunSummary) {
    println!("run finished in {:.2} s", s.elapsed_s);
    if let Some(h) = &s.history {
        println!(
            "  history        {:>12} rows, {} readings, {} missing, {} rejected, {} duplicates",
            h.rows, h.readings, h.missing, h.rejected, h.duplicates
        );
    }
    if let Some(k) = &s.kafka {
        println!(
            "  kafka          {:>12} messages, {} readings, {} covered by history, {} rejected, {} duplicates",
            k.messages, k.readings, k.covered_by_history, k.rejected, k.duplicates
        );
    }
    if let Some(c) = &s.cassandra {
        println!(
            "  speed views    {:>12} rows written, {} changes merged, {} write errors",
            c.rows_written, c.changes_merged, c.write_errors
        );
    }
    for v in &s.views {
        println!(
            "  {:<6} view    {:>12} windows written this run; view holds {} rows in {} file(s), sealed through {}",
            v.granularity.name(),
            v.windows_written,
            v.manifest.rows,
            v.manifest.partitions.len(),
            v.manifest.sealed_through,
        );
    }
    if let Some(path) = &s.dead_letter_file {
        println!(
            "  dead letters   {:>12} in {}",
            s.dead_letter_file_records,
            path.display()
        );
    }
}
