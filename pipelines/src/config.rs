//! `pipeline.toml`: every option of `wattflow replay`, `live` and `run` in one file, and how it
//! is layered with the environment and the command line.
//!
//! Layers, each overriding the one before ([`figment`] does the merging):
//! 1. the defaults (the library's documented `DEFAULT_*` constants);
//! 2. the TOML file given with `--config` ([`ConfigFile`]); a key the file may not hold is an
//!    error naming the key and its line ([`ConfigError::File`]);
//! 3. the environment, for connection settings and secrets only ([`ENVIRONMENT`]);
//! 4. the command-line flags that were given.
//!
//! A section turns its part of the pipeline on: `[kafka]` with a `topic` adds the Kafka source,
//! `[parquet]` with an `out` folder the batch views, `[cassandra]` the speed views; history
//! inputs are `[history] inputs`. Environment variables only adjust sections that are on, so a
//! `WATTFLOW_CASSANDRA_PASSWORD` in the environment never adds a Cassandra sink by itself.
//!
//! Durations are written as `humantime` text (`500ms`, `90s`, `10m`, `1h`, `30d`).
//! `pipeline.example.toml` at the repository root documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::Serialized;
use figment::Figment;
use serde::{Deserialize, Serialize};
use wattflow::model::{Limits, MeterId};
use wattflow::sink::cassandra::{self, CassandraSinkConfig};
use wattflow::sink::parquet::{self, ParquetSinkConfig};
use wattflow::source::file::{self, FileSourceConfig};
use wattflow::source::handover::SwitchAt;
use wattflow::source::kafka::{self, KafkaSourceConfig, StartFrom};
use wattflow::time::Calendar;

use crate::graph::{Cluster, Pipeline};

/// Environment variables read, and the key each one sets (only in a section that is on).
pub const ENVIRONMENT: &[(&str, &str, &str)] = &[
    ("WATTFLOW_KAFKA_BROKERS", "kafka", "brokers"),
    ("WATTFLOW_KAFKA_GROUP", "kafka", "group"),
    ("WATTFLOW_KAFKA_SASL_USERNAME", "kafka", "sasl_username"),
    ("WATTFLOW_KAFKA_SASL_PASSWORD", "kafka", "sasl_password"),
    (
        "WATTFLOW_CASSANDRA_CONTACT_POINTS",
        "cassandra",
        "contact_points",
    ),
    ("WATTFLOW_CASSANDRA_KEYSPACE", "cassandra", "keyspace"),
    ("WATTFLOW_CASSANDRA_USERNAME", "cassandra", "username"),
    ("WATTFLOW_CASSANDRA_PASSWORD", "cassandra", "password"),
];

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or holds a key or value it may not (the message names the
    /// key, its line and column).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said, with the line and column.
        message: String,
    },
    /// The layers do not merge into a valid configuration.
    #[error("configuration: {0}")]
    Merge(#[from] Box<figment::Error>),
    /// A value is not acceptable.
    #[error("configuration: {key}: {message}")]
    Invalid {
        /// The key, as `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A whole pipeline configuration, as in `pipeline.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// How the pipeline runs.
    pub pipeline: PipelineSection,
    /// History inputs.
    pub history: HistorySection,
    /// The Kafka source: on when it names a topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSection>,
    /// The Parquet batch views: on when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetSection>,
    /// The Cassandra speed views: on when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cassandra: Option<CassandraSection>,
}

/// `[pipeline]`: how the graph runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Timely worker threads per process.
    pub workers: usize,
    /// `auto` (per meter, at the end of its history) or a timestamp `YYYY-MM-DDThh:mm:ss`.
    pub switch_at: String,
    /// Finish once the Kafka source has been idle (read to its end) this long.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub exit_when_idle: Option<Duration>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (loopback unless told otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Write the run's summary as JSON here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_json: Option<PathBuf>,
    /// How often progress is logged.
    #[serde(with = "humantime_serde")]
    pub log_every: Duration,
    /// `naive` (the data's local time, as the UCI file) or an IANA zone such as
    /// `Europe/Paris`: hour and day windows follow its local calendar.
    pub timezone: String,
    /// Processes of a timely cluster (1: one process).
    pub processes: usize,
    /// This process's index in the cluster.
    pub process: usize,
    /// The cluster's addresses, one `host:port` per line in process order (default
    /// `localhost:2101`, `localhost:2102`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<PathBuf>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            workers: 1,
            switch_at: "auto".into(),
            exit_when_idle: None,
            metrics_listen: None,
            summary_json: None,
            log_every: Duration::from_secs(5),
            timezone: "naive".into(),
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

/// `[history]`: history files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Input files: UCI text (plain or gzip'd), comma CSV with a header, or Parquet.
    pub inputs: Vec<PathBuf>,
    /// Meter id for inputs without a `Meter` column.
    pub meter: String,
    /// How far a row may come after a later one and still count.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Seconds one row covers.
    pub interval_s: u32,
    /// Chunk size for splitting text files between workers, bytes.
    pub chunk_bytes: usize,
    /// Where refused rows are written (default `<parquet.out>/rejected.csv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_file: Option<PathBuf>,
    /// Plausibility limits of a reading.
    pub limits: Limits,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            inputs: Vec::new(),
            meter: file::DEFAULT_METER.into(),
            lateness: Duration::from_millis(file::DEFAULT_LATENESS_MS as u64),
            interval_s: file::DEFAULT_INTERVAL_S,
            chunk_bytes: file::DEFAULT_CHUNK_BYTES,
            dead_letter_file: None,
            limits: Limits::default(),
        }
    }
}

/// `[kafka]`: the live source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic of JSON readings.
    pub topic: String,
    /// Consumer group under which offsets are committed.
    pub group: String,
    /// Where partitions without a committed offset start: `earliest`, `latest` or a timestamp.
    pub start: String,
    /// Allowed lateness.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Readings further ahead of the wall clock than this are refused.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// A partition at its end that received nothing this long stops holding the watermark.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Topic for refused messages (default `<topic>.rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Most messages a worker takes per activation.
    pub max_batch: usize,
    /// SASL user (sets `sasl.username`); from `WATTFLOW_KAFKA_SASL_USERNAME` too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// SASL password (sets `sasl.password`); better from `WATTFLOW_KAFKA_SASL_PASSWORD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<String>,
    /// Further librdkafka properties (TLS, SASL mechanism, tuning), applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "127.0.0.1:9092".into(),
            topic: String::new(),
            group: kafka::DEFAULT_GROUP_ID.into(),
            start: "earliest".into(),
            lateness: Duration::from_millis(kafka::DEFAULT_LATENESS_MS as u64),
            max_future_skew: Duration::from_millis(kafka::DEFAULT_FUTURE_SKEW_MS as u64),
            idle_timeout: kafka::DEFAULT_IDLE_TIMEOUT,
            dead_letter_topic: None,
            max_batch: kafka::DEFAULT_MAX_BATCH,
            sasl_username: None,
            sasl_password: None,
            properties: BTreeMap::new(),
        }
    }
}

/// `[parquet]`: the batch views.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSection {
    /// Output folder (`minute/`, `hour/`, `day/`, `rejected.csv`).
    pub out: PathBuf,
    /// zstd level (negative levels are faster and larger).
    pub zstd_level: i32,
    /// Files per partition, meters spread over them by a hash of their id (at least 1).
    pub buckets: u32,
}

impl Default for ParquetSection {
    fn default() -> Self {
        ParquetSection {
            out: PathBuf::from("wattflow-views"),
            zstd_level: parquet::DEFAULT_ZSTD_LEVEL,
            buckets: 1,
        }
    }
}

/// One or several `host:port`, as a list or as comma-separated text (for the environment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContactPoints {
    /// `["a:9042", "b:9042"]`.
    List(Vec<String>),
    /// `"a:9042,b:9042"`.
    Text(String),
}

impl ContactPoints {
    /// The contact points as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            ContactPoints::List(v) => v.clone(),
            ContactPoints::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// `[cassandra]`: the speed views.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraSection {
    /// Nodes to contact first.
    pub contact_points: ContactPoints,
    /// Keyspace of the views (created if missing).
    pub keyspace: String,
    /// Replication map used when the keyspace is created, as CQL map text.
    pub replication: String,
    /// User for password authentication (from `WATTFLOW_CASSANDRA_USERNAME` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (better from `WATTFLOW_CASSANDRA_PASSWORD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Time to live of minute rows (default: kept).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub minute_ttl: Option<Duration>,
    /// How long a changed minute row may wait to gather further changes.
    #[serde(with = "humantime_serde")]
    pub minute_delay: Duration,
    /// The same for hour rows.
    #[serde(with = "humantime_serde")]
    pub hour_delay: Duration,
    /// The same for day rows.
    #[serde(with = "humantime_serde")]
    pub day_delay: Duration,
    /// While the input catches up on a backlog, every changed row waits at least this long.
    #[serde(with = "humantime_serde")]
    pub backlog_delay: Duration,
    /// Requests in flight at once, per process.
    pub max_in_flight: usize,
    /// Rows per request (an unlogged batch when more than 1).
    pub batch_rows: usize,
    /// How long connecting may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Client-side timeout of one request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Changed rows the process may hold unwritten (the speed layer's memory budget): the
    /// Kafka source pauses while it is used up.
    pub max_queued_rows: usize,
    /// Node addresses as announced (`ip:port`) to the address to connect to (NAT, proxies).
    pub address_map: std::collections::BTreeMap<String, String>,
}

impl Default for CassandraSection {
    fn default() -> Self {
        let d = CassandraSinkConfig::default();
        CassandraSection {
            contact_points: ContactPoints::List(vec![cassandra::DEFAULT_CONTACT_POINT.into()]),
            keyspace: d.keyspace,
            replication: d.replication,
            username: None,
            password: None,
            minute_ttl: d.minute_ttl,
            minute_delay: d.minute_delay,
            hour_delay: d.hour_delay,
            day_delay: d.day_delay,
            backlog_delay: d.backlog_delay,
            max_in_flight: d.max_in_flight,
            batch_rows: d.batch_rows,
            connect_timeout: d.connect_timeout,
            request_timeout: d.request_timeout,
            max_queued_rows: d.max_queued_rows,
            address_map: d.address_map,
        }
    }
}

/// Reads and checks a `pipeline.toml`: unknown keys and bad values are errors naming the key
/// and its line.
pub fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::File {
        path: path.to_owned(),
        message,
    })
}

/// Parses the text of a `pipeline.toml` (see [`read_file`]); the error is the TOML reader's
/// message, which names the key, its line and column.
pub fn parse_file(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// Merges the layers (see the module docs): `file` (or the defaults), then `environment`
/// (name, value) pairs for the sections that are on, then `flags` (a JSON object of the keys
/// given on the command line, by section).
pub fn layer(
    file: Option<ConfigFile>,
    environment: &[(String, String)],
    flags: serde_json::Value,
) -> Result<ConfigFile, ConfigError> {
    let base = Figment::from(Serialized::defaults(file.unwrap_or_default()))
        .merge(Serialized::defaults(flags.clone()));
    let on: ConfigFile = base.extract().map_err(Box::new)?;
    let mut env = serde_json::Map::new();
    for (name, value) in environment {
        let Some((_, section, key)) = ENVIRONMENT.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        let enabled = match *section {
            "kafka" => on.kafka.is_some(),
            "cassandra" => on.cassandra.is_some(),
            _ => true,
        };
        if enabled {
            env.entry(section.to_string())
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .expect("object")
                .insert(key.to_string(), serde_json::Value::String(value.clone()));
        }
    }
    // The flags go last again: they override the environment.
    let merged = base
        .merge(Serialized::defaults(serde_json::Value::Object(env)))
        .merge(Serialized::defaults(flags));
    merged
        .extract()
        .map_err(|e| ConfigError::Merge(Box::new(e)))
}

/// The environment variables of [`ENVIRONMENT`] that are set.
pub fn environment() -> Vec<(String, String)> {
    ENVIRONMENT
        .iter()
        .filter_map(|(name, _, _)| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// Parses `earliest`, `latest` or a naive timestamp.
pub fn parse_start(text: &str) -> Result<StartFrom, ConfigError> {
    Ok(match text {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        other => StartFrom::Timestamp(wattflow::time::parse_iso(other).ok_or_else(|| {
            invalid(
                "kafka.start",
                format!("{other:?}: earliest, latest or a timestamp YYYY-MM-DDThh:mm:ss"),
            )
        })?),
    })
}

/// Parses `auto` or a naive timestamp.
pub fn parse_switch_at(text: &str) -> Result<SwitchAt, ConfigError> {
    if text == "auto" {
        return Ok(SwitchAt::Auto);
    }
    wattflow::time::parse_iso(text)
        .map(SwitchAt::At)
        .ok_or_else(|| {
            invalid(
                "pipeline.switch_at",
                format!("{text:?}: auto or a timestamp YYYY-MM-DDThh:mm:ss"),
            )
        })
}

fn millis(key: &str, d: Duration) -> Result<i64, ConfigError> {
    i64::try_from(d.as_millis()).map_err(|_| invalid(key, format!("{d:?} is too long")))
}

impl ConfigFile {
    /// The pipeline this configuration describes.
    pub fn to_pipeline(&self) -> Result<Pipeline, ConfigError> {
        let p = &self.pipeline;
        if p.workers == 0 {
            return Err(invalid("pipeline.workers", "at least 1"));
        }
        let h = &self.history;
        let mut history = FileSourceConfig::new(h.inputs.clone());
        history.default_meter =
            MeterId::new(&h.meter).map_err(|e| invalid("history.meter", e.to_string()))?;
        history.lateness_ms = millis("history.lateness", h.lateness)?;
        if h.interval_s == 0 || h.interval_s > h.limits.max_interval_s {
            return Err(invalid(
                "history.interval_s",
                format!("from 1 to {}", h.limits.max_interval_s),
            ));
        }
        history.interval_s = h.interval_s;
        history.chunk_bytes = h.chunk_bytes.max(4096);
        history.limits = h.limits;
        let calendar = Calendar::parse(&p.timezone)
            .map_err(|e| invalid("pipeline.timezone", e.to_string()))?;
        // A switch instant is written in the data's local time.
        let switch_at = match parse_switch_at(&p.switch_at)? {
            SwitchAt::At(t) => SwitchAt::At(calendar.from_local(t)),
            auto => auto,
        };
        let mut pipeline = Pipeline::new()
            .history(history)
            .workers(p.workers)
            .switch_at(switch_at)
            .log_every(p.log_every)
            .timezone(calendar);
        if p.processes > 1 {
            let cluster = Cluster::from_hostfile(p.processes, p.process, p.hostfile.as_deref())
                .map_err(|e| invalid("pipeline.processes", e.to_string()))?;
            pipeline = pipeline.cluster(cluster);
        }
        if let Some(addr) = &p.metrics_listen {
            pipeline = pipeline.metrics_listen(addr);
        }
        if let Some(file) = &h.dead_letter_file {
            pipeline = pipeline.dead_letter_file(file);
        }
        if let Some(k) = &self.kafka {
            if k.topic.is_empty() {
                return Err(invalid("kafka.topic", "give the topic to read"));
            }
            let mut config = KafkaSourceConfig::new(&k.brokers, &k.topic, &k.group);
            config.start = parse_start(&k.start)?;
            config.lateness_ms = millis("kafka.lateness", k.lateness)?;
            config.future_skew_ms = millis("kafka.max_future_skew", k.max_future_skew)?;
            config.idle_timeout = k.idle_timeout;
            config.exit_when_idle = p.exit_when_idle;
            if let Some(topic) = &k.dead_letter_topic {
                config.dead_letter_topic = Some(topic.clone());
            }
            config.max_batch = k.max_batch.max(1);
            if let Some(user) = &k.sasl_username {
                config
                    .properties
                    .push(("sasl.username".into(), user.clone()));
            }
            if let Some(password) = &k.sasl_password {
                config
                    .properties
                    .push(("sasl.password".into(), password.clone()));
            }
            for (key, value) in &k.properties {
                config.properties.push((key.clone(), value.clone()));
            }
            pipeline = pipeline.kafka(config);
        }
        if let Some(q) = &self.parquet {
            pipeline = pipeline.parquet_config(ParquetSinkConfig {
                zstd_level: q.zstd_level,
                buckets: q.buckets,
                ..ParquetSinkConfig::new(&q.out)
            });
        }
        if let Some(c) = &self.cassandra {
            let mut config = CassandraSinkConfig::new(cassandra::DEFAULT_CONTACT_POINT);
            config.contact_points = c.contact_points.to_vec();
            config.keyspace = c.keyspace.clone();
            config.replication = c.replication.clone();
            config.username = c.username.clone();
            config.password = c.password.clone().map(cassandra::Secret::new);
            config.minute_ttl = c.minute_ttl;
            config.minute_delay = c.minute_delay;
            config.hour_delay = c.hour_delay;
            config.day_delay = c.day_delay;
            config.backlog_delay = c.backlog_delay;
            config.max_in_flight = c.max_in_flight;
            config.batch_rows = c.batch_rows;
            config.connect_timeout = c.connect_timeout;
            config.request_timeout = c.request_timeout;
            config.max_queued_rows = c.max_queued_rows;
            config.address_map = c.address_map.clone();
            config
                .validate()
                .map_err(|e| invalid("cassandra", e.to_string()))?;
            pipeline = pipeline.cassandra(config);
        }
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline.example.toml"),
        )
        .expect("pipeline.example.toml at the repository root")
    }

    #[test]
    fn the_example_file_parses_and_describes_a_pipeline() {
        let config = parse_file(&example()).expect("the example parses");
        assert!(config.kafka.is_some() && config.parquet.is_some() && config.cassandra.is_some());
        assert_eq!(config.history.lateness, Duration::from_secs(600));
        config
            .to_pipeline()
            .expect("the example is a valid pipeline");
    }

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        // Every key of the defaults appears in the example, so nothing is left undocumented.
        let text = example();
        let defaults = toml::to_string(&ConfigFile {
            kafka: Some(KafkaSection::default()),
            parquet: Some(ParquetSection::default()),
            cassandra: Some(CassandraSection::default()),
            ..ConfigFile::default()
        })
        .unwrap();
        for line in defaults.lines() {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            let key = key.trim();
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} ="))
                }),
                "pipeline.example.toml does not document `{key}`"
            );
        }
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_name_and_line() {
        let text = "[pipeline]\nworkers = 2\n\n[kafka]\ntopic = \"t\"\nbrokerz = \"x:9092\"\n";
        let err = parse_file(text).unwrap_err();
        assert!(err.contains("brokerz"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        let err = parse_file("[histroy]\ninputs = []\n").unwrap_err();
        assert!(err.contains("histroy") && err.contains("line 1"), "{err}");
        let err = parse_file("[history]\nlateness = \"ten minutes\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let file = parse_file(
            "[kafka]\ntopic = \"t\"\nbrokers = \"file:9092\"\n[cassandra]\nkeyspace = \"ks\"\n",
        )
        .unwrap();
        let env = vec![
            ("WATTFLOW_KAFKA_BROKERS".to_string(), "env:9092".to_string()),
            ("WATTFLOW_CASSANDRA_PASSWORD".to_string(), "123".to_string()),
            (
                "WATTFLOW_CASSANDRA_CONTACT_POINTS".to_string(),
                "a:9042, b:9042".to_string(),
            ),
        ];
        let merged = layer(Some(file.clone()), &env, serde_json::json!({})).unwrap();
        let kafka = merged.kafka.as_ref().unwrap();
        assert_eq!(kafka.brokers, "env:9092");
        assert_eq!(kafka.topic, "t");
        let cassandra = merged.cassandra.as_ref().unwrap();
        assert_eq!(cassandra.password.as_deref(), Some("123"));
        assert_eq!(cassandra.contact_points.to_vec(), vec!["a:9042", "b:9042"]);
        assert_eq!(cassandra.keyspace, "ks");

        let flags =
            serde_json::json!({"kafka": {"brokers": "flag:9092"}, "pipeline": {"workers": 3}});
        let merged = layer(Some(file), &env, flags).unwrap();
        assert_eq!(merged.kafka.unwrap().brokers, "flag:9092");
        assert_eq!(merged.pipeline.workers, 3);
    }

    #[test]
    fn the_environment_turns_no_section_on() {
        let env = vec![("WATTFLOW_CASSANDRA_PASSWORD".to_string(), "x".to_string())];
        let merged = layer(None, &env, serde_json::json!({"parquet": {"out": "v"}})).unwrap();
        assert!(merged.cassandra.is_none());
        assert_eq!(merged.parquet.unwrap().out, PathBuf::from("v"));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let mut c = ConfigFile::default();
        c.pipeline.switch_at = "soon".into();
        let e = c.to_pipeline().unwrap_err().to_string();
        assert!(e.contains("pipeline.switch_at"), "{e}");
        let c = ConfigFile {
            kafka: Some(KafkaSection::default()),
            ..ConfigFile::default()
        };
        let e = c.to_pipeline().unwrap_err().to_string();
        assert!(e.contains("kafka.topic"), "{e}");
        let mut c = ConfigFile::default();
        c.history.lateness = Duration::from_secs(u64::MAX);
        let e = c.to_pipeline().unwrap_err().to_string();
        assert!(e.contains("history.lateness"), "{e}");
    }
}
