//! Prometheus metrics of a running pipeline: `--metrics-listen ADDR` serves them as text at
//! `http://ADDR/metrics` ([`prometheus_client`]'s encoder behind an [`axum`] server on a
//! thread of its own).
//!
//! Every value is read from the pipeline's [`Progress`] counters at scrape time (a
//! [`Collector`]), so the hot path pays for nothing but its relaxed atomic increments.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `wattflow_readings_total` | counter | `source` = `history` \| `kafka` |
//! | `wattflow_rejected_total` | counter | `reason` ([`RejectReason::KINDS`]) |
//! | `wattflow_covered_by_history_total` | counter | |
//! | `wattflow_windows_sealed_total` | counter | `granularity` |
//! | `wattflow_windows_open` | gauge | `granularity` |
//! | `wattflow_sink_write_seconds` | histogram | `sink` = `cassandra` \| `parquet` |
//! | `wattflow_sink_rows_written_total` | counter | `sink` |
//! | `wattflow_sink_write_errors_total` | counter | `sink` |
//! | `wattflow_kafka_lag` | gauge | `partition` (messages behind the partition's end) |
//! | `wattflow_kafka_behind_real_time_seconds` | gauge | |
//! | `wattflow_kafka_following` | gauge | (1 once the history is read) |
//! | `wattflow_cassandra_rows_unwritten` | gauge | (queued or in flight; budget `max_queued_rows`) |
//! | `wattflow_kafka_paused_workers` | gauge | (paused for the speed views' memory budget) |
//! | `wattflow_dead_letters_pending` | gauge | |
//! | `wattflow_watermark_lag_seconds` | gauge | (wall clock − the event-time watermark) |
//! | `wattflow_history_bytes_total` | counter | |

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use wattflow::metrics::HistogramSnapshot;
use wattflow::model::Granularity;
#[cfg(doc)]
use wattflow::model::RejectReason;

use crate::graph::Progress;

/// Content type of the Prometheus/OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads a pipeline's counters at every scrape.
#[derive(Debug)]
struct PipelineCollector {
    progress: Arc<Progress>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    if let [(&[], value)] = values {
        return ConstCounter::new(*value).encode(metric);
    }
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(labels, value)] = values {
        if labels.is_empty() {
            return ConstGauge::new(*value).encode(metric);
        }
    }
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = &self.progress;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut encoder,
            "wattflow_readings",
            "Valid readings the sources sent to the window operator.",
            &[
                (&[("source", "history")], load(&p.source.readings)),
                (&[("source", "kafka")], load(&p.kafka.readings)),
            ],
        )?;
        let rejected = p.rejections.snapshot();
        let labels: Vec<[(&str, &str); 1]> =
            rejected.iter().map(|(k, _)| [("reason", *k)]).collect();
        let values: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(&rejected)
            .map(|(l, (_, n))| (l.as_slice(), *n))
            .collect();
        counter(
            &mut encoder,
            "wattflow_rejected",
            "Records refused (dead-lettered), by reason.",
            &values,
        )?;
        counter(
            &mut encoder,
            "wattflow_covered_by_history",
            "Kafka readings before their meter's switch time: counted, not aggregated again.",
            &[(&[], load(&p.kafka.covered))],
        )?;
        counter(
            &mut encoder,
            "wattflow_history_bytes",
            "Bytes of the history files consumed.",
            &[(&[], load(&p.source.bytes))],
        )?;
        let names: Vec<[(&str, &str); 1]> = Granularity::ALL
            .iter()
            .map(|g| [("granularity", g.name())])
            .collect();
        let sealed: Vec<(&[(&str, &str)], u64)> = names
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_slice(), load(&p.windows.sealed[i])))
            .collect();
        counter(
            &mut encoder,
            "wattflow_windows_sealed",
            "Windows sealed (the watermark passed their end) and released.",
            &sealed,
        )?;
        let open: Vec<_> = Granularity::ALL
            .iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    vec![("granularity", g.name().to_owned())],
                    p.windows.open[i].load(Ordering::Relaxed) as f64,
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "wattflow_windows_open",
            "Windows held open in memory.",
            &open,
        )?;

        let mut hist = encoder.encode_descriptor(
            "wattflow_sink_write_seconds",
            "Time to make one write durable: a Cassandra request, a Parquet partition file.",
            None,
            MetricType::Histogram,
        )?;
        let histograms: [(&str, HistogramSnapshot); 2] = [
            ("cassandra", p.cassandra.write_seconds.snapshot()),
            ("parquet", p.parquet.write_seconds.snapshot()),
        ];
        for (sink, h) in &histograms {
            let labels = [("sink", *sink)];
            hist.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)?;
        }
        let parquet_rows: u64 = p.parquet.windows_written.iter().map(load).sum();
        counter(
            &mut encoder,
            "wattflow_sink_rows_written",
            "Rows made durable by each sink.",
            &[
                (&[("sink", "cassandra")], load(&p.cassandra.rows_written)),
                (&[("sink", "parquet")], parquet_rows),
            ],
        )?;
        counter(
            &mut encoder,
            "wattflow_sink_write_errors",
            "Rows a sink could not write and will not retry.",
            &[(&[("sink", "cassandra")], load(&p.cassandra.write_errors))],
        )?;
        let lags: Vec<_> = p
            .kafka
            .partition_lags()
            .into_iter()
            .map(|(partition, lag)| (vec![("partition", partition.to_string())], lag as f64))
            .collect();
        gauge(
            &mut encoder,
            "wattflow_kafka_lag",
            "Messages between the next one to read and the end of each partition.",
            &lags,
        )?;
        gauge(
            &mut encoder,
            "wattflow_kafka_behind_real_time_seconds",
            "Wall clock minus the Kafka timestamp of the newest message read.",
            &[(
                vec![],
                p.kafka.behind_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            )],
        )?;
        gauge(
            &mut encoder,
            "wattflow_kafka_following",
            "1 once the history is read and the Kafka source follows the topic.",
            &[(
                vec![],
                f64::from(u8::from(p.kafka.following.load(Ordering::SeqCst))),
            )],
        )?;
        gauge(
            &mut encoder,
            "wattflow_cassandra_rows_unwritten",
            "Changed speed-view rows queued or in flight (the budget is max_queued_rows).",
            &[(
                vec![],
                (load(&p.cassandra.queued) + load(&p.cassandra.in_flight)) as f64,
            )],
        )?;
        gauge(
            &mut encoder,
            "wattflow_kafka_paused_workers",
            "Workers whose partitions are paused because the speed views are over their budget.",
            &[(vec![], load(&p.kafka.paused_workers) as f64)],
        )?;
        gauge(
            &mut encoder,
            "wattflow_dead_letters_pending",
            "Dead letters waiting to be sent again (offsets are not committed meanwhile).",
            &[(vec![], load(&p.dead_letters.pending) as f64)],
        )?;
        let watermark = p.watermark_ms();
        let lag = watermark.map_or(0.0, |w| {
            (wattflow::time::now_unix_ms().saturating_sub(w)) as f64 / 1000.0
        });
        gauge(
            &mut encoder,
            "wattflow_watermark_lag_seconds",
            "Wall clock minus the event-time watermark (naive local time counts as UTC).",
            &[(vec![], lag)],
        )?;
        Ok(())
    }
}

/// The metrics of `progress` as Prometheus (OpenMetrics) text.
pub fn render(progress: &Arc<Progress>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PipelineCollector {
        progress: Arc::clone(progress),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// A running metrics endpoint; dropping it stops the server.
pub struct MetricsServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port is known when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The address does not parse.
    #[error("--metrics-listen {0:?} is not an address like 127.0.0.1:9464")]
    Address(String),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Serves `progress` at `http://addr/metrics` until the returned server is dropped.
pub fn serve(addr: &str, progress: Arc<Progress>) -> Result<MetricsServer, MetricsError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| MetricsError::Address(addr.to_owned()))?;
    let bind_err = |source| MetricsError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(parsed).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    if !local.ip().is_loopback() {
        tracing::warn!("metrics served on {local}, beyond this machine");
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
    let thread = std::thread::Builder::new()
        .name("wattflow-metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let app = Router::new().route(
                    "/metrics",
                    get(move || {
                        let progress = Arc::clone(&progress);
                        async move {
                            ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&progress))
                                .into_response()
                        }
                    }),
                );
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = server.await {
                    tracing::error!("metrics server: {e}");
                }
            });
        })
        .map_err(bind_err)?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(bind_err(e)),
        Err(_) => {
            return Err(bind_err(std::io::Error::other(
                "the metrics thread did not start",
            )))
        }
    }
    Ok(MetricsServer {
        addr: local,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattflow::model::RejectReason;

    #[test]
    fn every_documented_metric_is_rendered() {
        let progress = Arc::new(Progress::default());
        progress.source.readings.store(7, Ordering::Relaxed);
        progress.kafka.covered.store(3, Ordering::Relaxed);
        progress.rejections.count(&RejectReason::PartiallyMissing);
        progress
            .cassandra
            .write_seconds
            .observe(Duration::from_millis(3));
        let text = render(&progress);
        for line in [
            "wattflow_readings_total{source=\"history\"} 7",
            "wattflow_readings_total{source=\"kafka\"} 0",
            "wattflow_covered_by_history_total 3",
            "wattflow_rejected_total{reason=\"partially_missing\"} 1",
            "wattflow_rejected_total{reason=\"too_late\"} 0",
            "wattflow_windows_sealed_total{granularity=\"minute\"} 0",
            "wattflow_sink_write_seconds_count{sink=\"cassandra\"} 1",
            "wattflow_sink_write_seconds_bucket{le=\"0.005\",sink=\"cassandra\"} 1",
            "wattflow_watermark_lag_seconds",
            "# TYPE wattflow_kafka_lag gauge",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_endpoint_serves_the_metrics_over_http() {
        use std::io::{Read, Write};
        let progress = Arc::new(Progress::default());
        progress.kafka.readings.store(42, Ordering::Relaxed);
        let server = serve("127.0.0.1:0", Arc::clone(&progress)).unwrap();
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("openmetrics-text"), "{response}");
        assert!(response.contains("wattflow_readings_total{source=\"kafka\"} 42"));
        assert!(serve("nonsense", progress).is_err());
    }
}
