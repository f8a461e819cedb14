//! Where partitions end, asked of the broker away from the worker.
//!
//! After consumer trouble a worker no longer knows whether a quiet partition is at its end
//! (see [`super::worker::Worker::note_consumer_errors`]), and a partition that gets no message
//! afterwards would never be idle again unless someone asks the broker for its high watermark.
//! The question is not put to the fetching consumer on the worker's thread:
//! - the query blocks while the broker is out of reach (librdkafka's watermark query can even
//!   outlive its timeout), which would stall every operator of the worker;
//! - put to the fetching consumer every few seconds during a cut, the Kafka-cut test saw that
//!   consumer read nothing more of one partition after the connection came back.
//!
//! So each worker that needs an answer starts one thread with a client of its own (the source's
//! brokers and properties, no group), which answers questions in order; the worker only looks
//! at the answers, each stamped with when it was asked, and takes one only if it was asked after
//! the ends were forgotten.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::client_config;
use super::KafkaSourceConfig;

/// How long one watermark question may take on the asking thread.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a partition's watermarks were asked for, and its low and high watermarks.
pub(super) type Answer = (Instant, i64, i64);

/// The questions of one worker about where its partitions end, and the broker's answers.
#[derive(Debug)]
pub(super) struct EndQueries {
    config: Arc<KafkaSourceConfig>,
    /// Started at the first question.
    ask: Option<mpsc::Sender<(i32, Instant)>>,
    answers: Arc<Mutex<HashMap<i32, Answer>>>,
}

impl EndQueries {
    pub(super) fn new(config: Arc<KafkaSourceConfig>) -> EndQueries {
        EndQueries {
            config,
            ask: None,
            answers: Arc::default(),
        }
    }

    /// Asks for the watermarks of `partition`; the answer comes later, in
    /// [`EndQueries::answer`].
    pub(super) fn ask(&mut self, partition: i32) {
        let now = Instant::now();
        if let Some(ask) = &self.ask {
            if ask.send((partition, now)).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel::<(i32, Instant)>();
        let (config, answers) = (Arc::clone(&self.config), Arc::clone(&self.answers));
        let started = thread::Builder::new()
            .name("wattflow-kafka-ends".into())
            .spawn(move || answer_questions(&config, &rx, &answers));
        if let Err(e) = started {
            tracing::warn!("cannot start the thread that asks where partitions end: {e}");
            return;
        }
        // The thread lives as long as the sender: it ends when the worker drops it.
        let _ = tx.send((partition, now));
        self.ask = Some(tx);
    }

    /// The latest answer for `partition`, if any.
    pub(super) fn answer(&self, partition: i32) -> Option<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .copied()
    }
}

/// The asking thread: one client, questions in order until the worker hangs up.
fn answer_questions(
    config: &KafkaSourceConfig,
    questions: &mpsc::Receiver<(i32, Instant)>,
    answers: &Mutex<HashMap<i32, Answer>>,
) {
    let client: BaseConsumer = match client_config(config, &[]).create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot make a client to ask where partitions end: {e}");
            return;
        }
    };
    while let Ok((partition, asked)) = questions.recv() {
        // Stamped with when it is put to the broker: messages written later are fetched anyway.
        let asked = asked.max(Instant::now());
        match client.fetch_watermarks(&config.topic, partition, QUERY_TIMEOUT) {
            Ok((low, high)) => {
                answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(partition, (asked, low, high));
            }
            Err(e) => tracing::debug!("end of {}[{partition}] not known yet: {e}", config.topic),
        }
    }
}
