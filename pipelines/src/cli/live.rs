//! `wattflow live`: Kafka into the Cassandra speed views (and optionally Parquet), the live
//! preset of the one graph.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::{parse_duration, stop_flag};

/// Arguments of `wattflow live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to consume.
    #[arg(long, default_value = "readings")]
    pub topic: String,
    /// Consumer group (offsets are committed under it).
    #[arg(long, default_value = "wattflow-live")]
    pub group: String,
    /// Where to start when the group has no committed offset: `earliest`, `latest`, or a
    /// timestamp `YYYY-MM-DDThh:mm:ss` (naive, as the data).
    #[arg(long, default_value = "earliest")]
    pub start: String,
    /// Cassandra contact point.
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cassandra: String,
    /// Cassandra keyspace (created if missing).
    #[arg(long, default_value = "wattflow")]
    pub keyspace: String,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Allowed lateness, e.g. `10m`.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub lateness: Duration,
    /// Time-to-live of minute rows in Cassandra, e.g. `30d` (default: kept).
    #[arg(long, value_parser = parse_duration)]
    pub minute_ttl: Option<Duration>,
    /// How long a changed minute row may wait to gather further changes before it is written.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub minute_delay: Duration,
    /// The same for hour rows.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub hour_delay: Duration,
    /// The same for day rows.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub day_delay: Duration,
    /// While the input catches up on a backlog, every changed row waits at least this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub backlog_delay: Duration,
    /// Most Cassandra requests in flight at once.
    #[arg(long, default_value_t = wattflow::sink::cassandra::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Rows per Cassandra request (an unlogged batch when more than 1).
    #[arg(long, default_value_t = wattflow::sink::cassandra::DEFAULT_BATCH_ROWS)]
    pub batch_rows: usize,
    /// Also write sealed windows as Parquet batch views here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Finish once every partition has been idle (and read to its end) this long.
    #[arg(long, value_parser = parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Dead-letter topic (default `<topic>.rejected`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
}

pub(crate) fn live(args: LiveArgs) -> Result<()> {
    use wattflow::sink::cassandra::CassandraSinkConfig;
    use wattflow::source::kafka::{KafkaSourceConfig, StartFrom};
    let start = match args.start.as_str() {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        other => StartFrom::Timestamp(
            wattflow::time::parse_iso(other)
                .with_context(|| format!("--start {other:?}: earliest, latest or a timestamp"))?,
        ),
    };
    let mut kafka = KafkaSourceConfig::new(&args.brokers, &args.topic, &args.group);
    kafka.start = start;
    kafka.lateness_ms = args.lateness.as_millis() as i64;
    kafka.exit_when_idle = args.exit_when_idle;
    if let Some(dlq) = args.dead_letter_topic {
        kafka.dead_letter_topic = Some(dlq);
    }
    let mut cassandra = CassandraSinkConfig::new(&args.cassandra);
    cassandra.keyspace = args.keyspace;
    cassandra.minute_ttl = args.minute_ttl;
    cassandra.minute_delay = args.minute_delay;
    cassandra.hour_delay = args.hour_delay;
    cassandra.day_delay = args.day_delay;
    cassandra.max_in_flight = args.max_in_flight;
    cassandra.batch_rows = args.batch_rows;
    cassandra.backlog_delay = args.backlog_delay;
    let mut job = crate::live::Live::new(kafka, cassandra).workers(args.workers);
    if let Some(out) = args.out {
        job = job.parquet(out);
    }
    let s = job.run(stop_flag())?;
    println!(
        "live finished after {:.1} s: {} messages, {} readings, {} rejected, {} duplicates, {} rows written, {} changes merged",
        s.elapsed.as_secs_f64(),
        s.messages,
        s.readings,
        s.rejected,
        s.duplicates,
        s.rows_written,
        s.changes_merged,
    );
    if let Some(at) = s.last_message_after {
        println!("last message read {:.3} s after start", at.as_secs_f64());
    }
    if let Some(at) = s.last_write_after {
        println!("last row written {:.3} s after start", at.as_secs_f64());
    }
    Ok(())
}
