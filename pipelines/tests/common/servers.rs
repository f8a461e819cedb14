//! Helpers for the tests against the REAL Kafka and the REAL Cassandra started by
//! `scripts/services.sh up` (the test script exports `WATTFLOW_KAFKA` and `WATTFLOW_CASSANDRA`).
//! Without them a test is skipped with a note, except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::RwLock;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use wattflow::model::{Granularity, Measure, MeterId, Origin, Reading};
use wattflow::sink::cassandra::{
    connect, read_view, CassandraRow, CassandraSinkConfig, CassandraViews,
};
use wattflow::source::kafka::KafkaSourceConfig;
use wattflow_pipelines::toxiproxy::{Toxiproxy, CASSANDRA_PROXY};
use wattflow_pipelines::Replay;

/// Servers restarted by one test must not be in use by the others at that moment.
pub static SERVERS: RwLock<()> = RwLock::new(());

pub struct Env {
    pub kafka: String,
    pub cassandra: String,
}

/// The servers' addresses; also turns on the pipeline's log for the test when
/// `WATTFLOW_TEST_LOG` holds a filter (e.g. `wattflow=debug`; shown with `--nocapture`).
pub fn env() -> Option<Env> {
    if let Ok(filter) = std::env::var("WATTFLOW_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    match (
        std::env::var("WATTFLOW_KAFKA"),
        std::env::var("WATTFLOW_CASSANDRA"),
    ) {
        (Ok(kafka), Ok(cassandra)) => Some(Env { kafka, cassandra }),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but WATTFLOW_KAFKA / WATTFLOW_CASSANDRA are not set: start scripts/services.sh up")
        }
        _ => {
            eprintln!(
                "SKIPPED: set WATTFLOW_KAFKA and WATTFLOW_CASSANDRA (scripts/services.sh up)"
            );
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn kafka_config(env: &Env, topic: &str) -> KafkaSourceConfig {
    let mut config = KafkaSourceConfig::new(&env.kafka, topic, format!("{topic}-group"));
    config.exit_when_idle = Some(Duration::from_secs(4));
    config.idle_timeout = Duration::from_secs(2);
    config
}

pub fn cassandra_config(env: &Env, keyspace: &str) -> CassandraSinkConfig {
    let mut config = CassandraSinkConfig::new(&env.cassandra);
    config.keyspace = keyspace.to_owned();
    config
}

pub fn views(env: &Env, keyspace: &str) -> CassandraViews {
    connect(&cassandra_config(env, keyspace)).expect("connect to cassandra")
}

pub fn drop_keyspace(views: &CassandraViews, keyspace: &str) {
    views
        .execute(&format!("DROP KEYSPACE IF EXISTS {keyspace}"))
        .ok();
}

pub fn cassandra_rows(
    views: &CassandraViews,
    g: Granularity,
    meters: &[String],
    from: i64,
    to: i64,
) -> BTreeMap<(String, i64), CassandraRow> {
    let mut out = BTreeMap::new();
    for m in meters {
        for row in read_view(views, g, m, from, to).expect("read view") {
            out.insert((row.meter.clone(), row.window_start), row);
        }
    }
    out
}

/// Replays `file` into the batch views with the history path, for comparison.
pub fn parquet_views(file: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    Replay::new(out.path())
        .input(file)
        .workers(2)
        .run()
        .expect("replay");
    out
}

pub fn assert_speed_equals_batch(env: &Env, keyspace: &str, batch: &Path, meter: &str) {
    let v = views(env, keyspace);
    for g in Granularity::ALL {
        let mut parquet = super::read_view(batch, g.name());
        parquet.sort_by_key(|r| r.window_start);
        // Compared a month at a time, so a four-year view stays small in memory.
        const CHUNK_MS: i64 = 31 * 86_400_000;
        let first = parquet[0].window_start.div_euclid(CHUNK_MS) * CHUNK_MS;
        let end = parquet[parquet.len() - 1].window_start + 1;
        let mut rest = &parquet[..];
        for from in (first..end).step_by(CHUNK_MS as usize) {
            let n = rest.partition_point(|r| r.window_start < from + CHUNK_MS);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let to = (from + CHUNK_MS).min(end);
            let speed = cassandra_rows(&v, g, &[meter.to_string()], from, to);
            assert_eq!(
                speed.len(),
                chunk.len(),
                "{g} [{from}, {to}): row counts differ"
            );
            assert_rows_equal(g, chunk, &speed);
        }
    }
    drop_keyspace(&v, keyspace);
}

/// Every Parquet row equals its Cassandra row, measure by measure.
fn assert_rows_equal(
    g: Granularity,
    parquet: &[super::ViewRow],
    speed: &BTreeMap<(String, i64), CassandraRow>,
) {
    for row in parquet {
        let s = speed
            .get(&(row.meter.clone(), row.window_start))
            .unwrap_or_else(|| panic!("{g}: window {} missing in Cassandra", row.window_start));
        assert_eq!(s.samples, row.samples, "{g} {} samples", row.window_start);
        for (i, m) in super::MEASURES.iter().enumerate() {
            for (j, stat) in ["sum", "min", "max"].iter().enumerate() {
                let col = format!("{m}_{stat}");
                assert_eq!(
                    s.values[&col],
                    row.dec[i][j] as f64 / 1000.0,
                    "{g} {} {col}",
                    row.window_start
                );
            }
            assert_eq!(
                s.values[&format!("{m}_avg")],
                row.avg[i],
                "{g} {} {m}_avg",
                row.window_start
            );
        }
        assert_eq!(s.values["active_energy_wh"], row.active_energy_wh);
        assert_eq!(s.values["unmetered_wh"], row.unmetered_wh);
        assert_eq!(
            s.values.get("power_factor_avg").copied(),
            row.power_factor_avg
        );
    }
}

pub fn reading(meter: &str, ts: i64, interval_s: u32, values: [i32; 7]) -> Reading {
    Reading {
        meter: MeterId::new(meter).unwrap(),
        ts,
        interval_s,
        values,
        origin: Origin::default(),
    }
}

/// Expected rows computed here, from scratch: count, sum, min, max per measure.
#[derive(Default, Debug)]
pub struct Expect {
    pub samples: i64,
    pub sum: [i64; 7],
    pub min: [i64; 7],
    pub max: [i64; 7],
}

pub fn expected(readings: &[Reading], g: Granularity) -> BTreeMap<(String, i64), Expect> {
    let mut out: BTreeMap<(String, i64), Expect> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in readings {
        if !seen.insert((r.meter, r.ts)) {
            continue;
        }
        let len = g.len_ms();
        let e = out
            .entry((r.meter.to_string(), r.ts - r.ts.rem_euclid(len)))
            .or_insert_with(|| Expect {
                min: [i64::MAX; 7],
                max: [i64::MIN; 7],
                ..Expect::default()
            });
        e.samples += 1;
        for i in 0..7 {
            let v = r.values[i] as i64;
            e.sum[i] += v;
            e.min[i] = e.min[i].min(v);
            e.max[i] = e.max[i].max(v);
        }
    }
    out
}

pub fn assert_rows_match(
    g: Granularity,
    got: &BTreeMap<(String, i64), CassandraRow>,
    want: &BTreeMap<(String, i64), Expect>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{g}: windows differ"
    );
    for (key, e) in want {
        let row = &got[key];
        assert_eq!(row.samples, e.samples, "{g} {key:?} samples");
        for m in Measure::ALL {
            let i = m.index();
            for (stat, v) in [("sum", e.sum[i]), ("min", e.min[i]), ("max", e.max[i])] {
                let col = format!("{}_{stat}", m.name());
                assert_eq!(row.values[&col], v as f64 / 1000.0, "{g} {key:?} {col}");
            }
            let avg = row.values[&format!("{}_avg", m.name())];
            let want_avg = e.sum[i] as f64 / e.samples as f64 / 1000.0;
            assert!(
                (avg - want_avg).abs() < 1e-9,
                "{g} {key:?} {} avg {avg} vs {want_avg}",
                m.name()
            );
        }
    }
}

/// Publishes the UCI file `file` to `topic` (created with `partitions` partitions) with the
/// simulator; every message must be acknowledged. Returns the messages produced.
pub fn publish_file(env: &Env, topic: &str, file: &Path, partitions: i32) -> u64 {
    let mut sim = wattflow::simulate::SimulatorConfig::new(&env.kafka, topic);
    sim.from_file = Some(file.to_path_buf());
    sim.partitions = partitions;
    let produced = wattflow::simulate::simulate(&sim, &std::sync::atomic::AtomicBool::new(false))
        .expect("simulate --from-file");
    assert_eq!(produced.failed, 0, "the topic must hold every reading");
    produced.produced
}

/// Toxiproxy's API (`WATTFLOW_TOXIPROXY`, e.g. `127.0.0.1:8474`, started by
/// `scripts/services.sh up` with the proxies `cassandra` on 127.0.0.1:19042 to the node and
/// `kafka` on 127.0.0.1:19092 to the broker), acting on the proxy named `proxy`. `None` (skip)
/// without it, except under `CI=true`, where it fails.
pub fn toxiproxy(proxy: &str) -> Option<Toxiproxy> {
    match std::env::var("WATTFLOW_TOXIPROXY") {
        Ok(api) if !api.is_empty() => Some(Toxiproxy::new(api, proxy)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but WATTFLOW_TOXIPROXY is not set: start scripts/services.sh up")
        }
        _ => {
            eprintln!("SKIPPED: set WATTFLOW_TOXIPROXY (scripts/services.sh up)");
            None
        }
    }
}

/// What a fault test needs: the servers, the proxy named `proxy` reset to a clean state, the
/// 30-day slice, and the servers' lock held exclusively (the test disturbs them). `None`
/// (skip) without them, except under `CI=true`, where it fails.
pub fn fault_test(
    proxy: &str,
) -> Option<(
    Env,
    Toxiproxy,
    std::path::PathBuf,
    std::sync::RwLockWriteGuard<'static, ()>,
)> {
    let env = env()?;
    let proxy = toxiproxy(proxy)?;
    let file = super::data_file("uci_first_30_days.txt")?;
    let exclusive = SERVERS.write().unwrap_or_else(|e| e.into_inner());
    proxy.reset().expect("toxiproxy reset");
    Some((env, proxy, file, exclusive))
}

/// A sink configuration that reaches the node only through the Toxiproxy proxy.
pub fn proxied_cassandra_config(env: &Env, keyspace: &str) -> CassandraSinkConfig {
    let mut config = cassandra_config(env, keyspace);
    config.contact_points = vec![CASSANDRA_PROXY.to_owned()];
    config
        .address_map
        .insert(env.cassandra.clone(), CASSANDRA_PROXY.to_owned());
    config
}

/// The offsets `group` has committed on `topic`, summed over its partitions (0: none).
pub fn committed(brokers: &str, topic: &str, group: &str) -> i64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition(topic, p.id());
        }
    }
    consumer
        .committed_offsets(list, Duration::from_secs(10))
        .map(|c| {
            c.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Messages ever written to `topic` (0 if it does not exist).
pub fn messages_in(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let Some(t) = metadata.topics().iter().find(|t| t.error().is_none()) else {
        return 0;
    };
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// Runs `scripts/services.sh` with `args` (e.g. `["crash", "kafka"]`), which must succeed.
pub fn services(args: &[&str]) {
    let status = Command::new(super::repo_root().join("scripts/services.sh"))
        .args(args)
        .status()
        .expect("scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {args:?} failed");
}
