//! A small client of Toxiproxy's HTTP API (Shopify's fault-injection proxy), for the fault
//! tests and the `faults` benchmark. `scripts/services.sh up` runs Toxiproxy with its API on
//! [`DEFAULT_API`], a proxy [`CASSANDRA_PROXY_NAME`] from [`CASSANDRA_PROXY`] to the
//! Cassandra node, and a proxy [`KAFKA_PROXY_NAME`] from [`KAFKA_PROXY`] to the broker's
//! `PROXIED` listener, which advertises the proxy's address: a client bootstrapped at
//! [`KAFKA_PROXY`] makes every connection (metadata, fetch, group coordinator, produce)
//! through it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where `scripts/services.sh` runs Toxiproxy's API.
pub const DEFAULT_API: &str = "127.0.0.1:8474";
/// The name of the proxy to Cassandra.
pub const CASSANDRA_PROXY_NAME: &str = "cassandra";
/// Where that proxy listens.
pub const CASSANDRA_PROXY: &str = "127.0.0.1:19042";
/// The name of the proxy to the Kafka broker.
pub const KAFKA_PROXY_NAME: &str = "kafka";
/// Where that proxy listens (bootstrap a client here to put all its traffic through it).
pub const KAFKA_PROXY: &str = "127.0.0.1:19092";

/// A failed call to the API.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    /// The API could not be reached or did not answer.
    #[error("toxiproxy at {api}: {source}")]
    Io {
        /// The API's address.
        api: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The API answered with an unexpected status.
    #[error("toxiproxy {method} {path}: status {status} ({reply})")]
    Status {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The status it answered.
        status: u16,
        /// The start of its reply.
        reply: String,
    },
}

/// The API of one Toxiproxy server, acting on one proxy.
#[derive(Clone, Debug)]
pub struct Toxiproxy {
    api: String,
    proxy: String,
}

impl Toxiproxy {
    /// The API at `api` (`host:port`), acting on the proxy named `proxy`.
    pub fn new(api: impl Into<String>, proxy: impl Into<String>) -> Toxiproxy {
        Toxiproxy {
            api: api.into(),
            proxy: proxy.into(),
        }
    }

    /// One request, expecting one of the statuses `ok`.
    fn call(&self, method: &str, path: &str, body: &str, ok: &[u16]) -> Result<(), ToxiproxyError> {
        let io = |source| ToxiproxyError::Io {
            api: self.api.clone(),
            source,
        };
        let mut stream = TcpStream::connect(&self.api).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.api,
            body.len()
        )
        .map_err(io)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(io)?;
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if ok.contains(&status) {
            return Ok(());
        }
        Err(ToxiproxyError::Status {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            reply: reply.chars().take(200).collect(),
        })
    }

    /// Adds toxic `name` of `kind` (`latency`, `reset_peer`, ...) with `attributes` (a JSON
    /// object) to the proxy's downstream.
    pub fn add(&self, name: &str, kind: &str, attributes: &str) -> Result<(), ToxiproxyError> {
        let body = format!(
            r#"{{"name":"{name}","type":"{kind}","stream":"downstream","toxicity":1.0,"attributes":{attributes}}}"#
        );
        self.call(
            "POST",
            &format!("/proxies/{}/toxics", self.proxy),
            &body,
            &[200],
        )
    }

    /// Removes toxic `name` (absent: nothing to do).
    pub fn remove(&self, name: &str) -> Result<(), ToxiproxyError> {
        let path = format!("/proxies/{}/toxics/{name}", self.proxy);
        self.call("DELETE", &path, "", &[204, 404])
    }

    /// Enables or disables the proxy (disabled: every connection is cut and none accepted).
    pub fn enable(&self, enabled: bool) -> Result<(), ToxiproxyError> {
        let body = format!(r#"{{"enabled":{enabled}}}"#);
        self.call("POST", &format!("/proxies/{}", self.proxy), &body, &[200])
    }

    /// Every proxy as it was: enabled, without toxics.
    pub fn reset(&self) -> Result<(), ToxiproxyError> {
        self.call("POST", "/reset", "", &[204])
    }
}
