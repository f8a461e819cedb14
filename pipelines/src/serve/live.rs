//! `GET /api/v1/live?meter=`: the speed view's newest windows as Server-Sent Events.
//!
//! **One watcher per meter, however many feeds.** The first feed of a meter starts a watcher
//! task ([`Hub`]); later feeds of that meter join it. The watcher reads the speed store for each
//! granularity's windows from the newest it has seen on, renders the windows whose value
//! changed once, as a `windows` event (`{"granularity": "minute", "rows": [...]}`, the rows in
//! the views API's format), and hands that one text to every feed through a broadcast channel.
//! So a hundred open dashboards of one meter cost the store one reader, not a hundred, and the
//! server renders each change once.
//!
//! **When it reads.** A store that counts its changes ([`SpeedViews::version`], e.g. the
//! in-process [`MemoryViews`](wattflow::serve::MemoryViews)) wakes the watcher as soon as it
//! changes ([`SpeedViews::wait_for_change`]; the watcher then lets [`SETTLE`] pass so that the
//! changes of one batch go out as one event), so a new window reaches the page within
//! milliseconds; a store that cannot tell (Cassandra) is read every [`POLL`]. Batch rows never
//! change once written, so the feed reads the speed side alone.
//!
//! **What a feed gets.** Its first events are the newest window of each granularity as the
//! watcher last saw it (for the first feed of a meter, what the watcher's first read finds);
//! then every change. A feed too slow to keep up with [`CHANNEL`] events gets the newest
//! windows again and carries on (the page merges windows by start, so nothing is drawn twice).
//! A store that cannot be read is an `error` event (`{"error": "..."}`), repeated every
//! 4 × [`POLL`] while it lasts. A feed ends when its client goes or the server stops; the
//! watcher ends with its meter's last feed, or with the server. Should its read ever fail
//! outright (a panic), it leaves the hub and closes its feeds, whose clients reconnect
//! (`EventSource` does) and start a new one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;
use wattflow::model::Granularity;

use super::render::{answer_json, Columns};
use super::{blocking, parameters, pick_meter, ApiError, Shared};
use wattflow::serve::{Answer, Freshness, SpeedViews, ViewRow};

/// How often a watcher looks at a speed store that cannot say when it changed, and the longest
/// it waits for one that can.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a watcher lets a store that has just changed go on changing before it reads it.
pub const SETTLE: Duration = Duration::from_millis(5);
/// Events a feed may fall behind its watcher before it is sent the newest windows instead.
pub const CHANNEL: usize = 256;

/// What a watcher tells its feeds: the body of a `windows` or an `error` event.
#[derive(Clone, Debug)]
enum Message {
    Windows(Arc<str>),
    Error(Arc<str>),
}

impl Message {
    fn event(&self) -> Event {
        match self {
            Message::Windows(body) => Event::default().event("windows").data(&**body),
            Message::Error(body) => Event::default().event("error").data(&**body),
        }
    }
}

/// The watchers of the meters that have live feeds, and how many of each there are.
pub(super) struct Hub {
    watchers: Mutex<HashMap<String, Arc<Watcher>>>,
    /// Open feeds (`wattflow_http_live_feeds`).
    pub feeds: Gauge,
    /// Running watchers (`wattflow_http_live_watchers`).
    pub watching: Gauge,
}

impl Hub {
    pub(super) fn new() -> Hub {
        Hub {
            watchers: Mutex::new(HashMap::new()),
            feeds: Gauge::default(),
            watching: Gauge::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Watcher>>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A window's start and a one-row `windows` event body of it.
type Newest = Option<(i64, Arc<str>)>;

/// One meter's watcher, shared by its feeds.
struct Watcher {
    /// `None` once the watcher has ended: its feeds then see the channel closed and end too.
    sender: Mutex<Option<broadcast::Sender<Message>>>,
    /// Per granularity, the newest window the watcher has seen, as a one-row `windows` body:
    /// what a feed gets first.
    latest: Mutex<[Newest; 3]>,
}

impl Watcher {
    fn sender(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Message>>> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the feeds (none listening is fine: the watcher's loop then ends it).
    fn send(&self, message: Message) {
        if let Some(sender) = &*self.sender() {
            let _ = sender.send(message);
        }
    }

    /// Ends the watcher for its feeds and takes it out of `watchers` (if it is still the
    /// meter's there). Called with the hub's lock held, so no feed joins a watcher that has
    /// ended.
    fn retire(self: &Arc<Self>, meter: &str, watchers: &mut HashMap<String, Arc<Watcher>>) {
        if watchers.get(meter).is_some_and(|w| Arc::ptr_eq(w, self)) {
            watchers.remove(meter);
        }
        self.sender().take();
    }

    fn newest(&self) -> Vec<Message> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .iter()
            .flatten()
            .map(|(_, body)| Message::Windows(Arc::clone(body)))
            .collect()
    }
}

/// What a watcher has read: per granularity, `window_start → (samples, covered_seconds)`.
struct Reader {
    shared: Arc<Shared>,
    meter: String,
    /// Where the first read looks back from: the meter's newest reading when the watcher began.
    start: i64,
    /// Newest window start seen per granularity (`None`: nothing yet).
    from: [Option<i64>; 3],
    seen: [BTreeMap<i64, (i64, i64)>; 3],
    version: Option<u64>,
}

impl Reader {
    /// One read: per granularity, the windows that changed since the last, in window order.
    fn changes(&mut self) -> Result<Vec<(Granularity, Vec<ViewRow>)>, ApiError> {
        let speed = self.shared.views.speed();
        let version = speed.version();
        if version != 0 && self.version == Some(version) {
            return Ok(Vec::new());
        }
        self.version = Some(version);
        let now = self.shared.views.calendar().now_ms();
        let mut out = Vec::new();
        for g in Granularity::ALL {
            let i = g as usize;
            let len = g.len_ms();
            let first = self.from[i].is_none();
            // From the newest window seen, or on the first read from a day before the meter's
            // newest reading for minutes (a week for hours, a year for days), over as long
            // again; and the same span up to the clock when that is further on (a pipeline
            // whose newest data is far behind the clock, or the other way round).
            let span = match g {
                Granularity::Minute => 86_400_000,
                Granularity::Hour => 7 * 86_400_000,
                Granularity::Day => 366 * 86_400_000,
            };
            let from = self.from[i].unwrap_or(self.start.saturating_sub(span));
            let until = from.saturating_add(2 * span);
            let mut rows: Vec<ViewRow> = speed.rows(g, &self.meter, from, until)?;
            let recent = now.saturating_sub(span);
            if recent > until {
                rows.extend(speed.rows(g, &self.meter, recent, now.saturating_add(2 * len))?);
            }
            if first {
                rows = rows.split_off(rows.len().saturating_sub(1));
            }
            let mut changed: Vec<ViewRow> = rows
                .into_iter()
                .filter(|r| {
                    let v = (r.samples, r.covered_seconds);
                    self.seen[i].insert(r.window_start, v) != Some(v)
                })
                .collect();
            let Some(newest) = changed.iter().map(|r| r.window_start).max() else {
                continue;
            };
            changed.sort_by_key(|r| r.window_start);
            self.from[i] = Some(self.from[i].map_or(newest, |f| f.max(newest)));
            let keep = self.from[i].unwrap_or(newest);
            self.seen[i].retain(|&t, _| t >= keep);
            out.push((g, changed));
        }
        Ok(out)
    }

    /// A `windows` body of `rows` (in window order, at least one).
    fn body(&self, g: Granularity, rows: Vec<ViewRow>) -> Arc<str> {
        let (a, b) = (
            rows[0].window_start,
            rows[rows.len() - 1].window_start + g.len_ms(),
        );
        let answer = Answer {
            freshness: Freshness {
                newest_reading_ms: None,
                age_ms: None,
                batch_sealed_through_ms: None,
                batch_rows: 0,
                speed_rows: rows.len(),
            },
            rows,
        };
        let calendar = self.shared.views.calendar();
        answer_json(calendar, &self.meter, g, (a, b), &answer, &Columns::all()).into()
    }
}

/// Reads `meter`'s speed windows and tells `watcher`'s feeds, until the last feed has gone or
/// the server stops.
async fn watch(shared: Arc<Shared>, watcher: Arc<Watcher>, meter: String, start: i64) {
    let mut reader = Reader {
        shared: Arc::clone(&shared),
        meter: meter.clone(),
        start,
        from: [None; 3],
        seen: Default::default(),
        version: None,
    };
    let mut stopping = shared.stopping.clone();
    loop {
        if *stopping.borrow() || stopping.has_changed().is_err() {
            break;
        }
        {
            // Feeds join under the hub's lock: none can join between this check and the removal.
            let mut watchers = shared.hub.lock();
            if watcher
                .sender()
                .as_ref()
                .is_none_or(|s| s.receiver_count() == 0)
            {
                watcher.retire(&meter, &mut watchers);
                break;
            }
        }
        let (found, back) = match tokio::task::spawn_blocking(move || {
            // Each change is rendered once: all its windows for the feeds, and the newest
            // alone for feeds that join later.
            let found = reader.changes().map(|changes| {
                changes
                    .into_iter()
                    .map(|(g, rows)| {
                        let newest = rows[rows.len() - 1].clone();
                        let start = newest.window_start;
                        (g, start, reader.body(g, vec![newest]), reader.body(g, rows))
                    })
                    .collect::<Vec<_>>()
            });
            (found, reader)
        })
        .await
        {
            Ok(done) => done,
            // The read panicked: the reader is gone with it; end, and the feeds with it (their
            // clients reconnect, and start a new watcher).
            Err(_) => break,
        };
        reader = back;
        match found {
            Ok(changes) if !changes.is_empty() => {
                for (g, start, newest, body) in changes {
                    {
                        let mut latest = watcher.latest.lock().unwrap_or_else(|e| e.into_inner());
                        let slot = &mut latest[g as usize];
                        if slot.as_ref().is_none_or(|(t, _)| *t <= start) {
                            *slot = Some((start, newest));
                        }
                    }
                    // No receiver left is fine: the loop's check ends the watcher.
                    watcher.send(Message::Windows(body));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                // The store is down: say so, and keep trying.
                let text = serde_json::json!({ "error": e.message }).to_string();
                watcher.send(Message::Error(text.into()));
                tokio::select! {
                    _ = tokio::time::sleep(4 * POLL) => {}
                    _ = stopping.changed() => {}
                }
                continue;
            }
        }
        // Nothing new: wait for the store to change (or read one that cannot tell again).
        let speed: Arc<dyn SpeedViews> = Arc::clone(shared.views.speed());
        let seen = reader.version.unwrap_or(0);
        if seen == 0 {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopping.changed() => {}
            }
        } else {
            let wait = tokio::task::spawn_blocking(move || speed.wait_for_change(seen, POLL));
            tokio::select! {
                now = wait => if now.is_ok_and(|v| v != seen) {
                    tokio::time::sleep(SETTLE).await;
                },
                _ = stopping.changed() => {}
            }
        }
    }
    // However it ended (stop, a failed read, no feed left): out of the hub, feeds told.
    watcher.retire(&meter, &mut shared.hub.lock());
    shared.hub.watching.dec();
}

/// A feed's side of its meter's watcher; counts itself out of `wattflow_http_live_feeds` when
/// the client goes.
struct Feed {
    shared: Arc<Shared>,
    watcher: Arc<Watcher>,
    receiver: broadcast::Receiver<Message>,
    queue: VecDeque<Message>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.hub.feeds.dec();
    }
}

/// Joins (or starts) `meter`'s watcher: the receiver of its messages and the newest windows.
fn join(shared: &Arc<Shared>, meter: &str, start: i64) -> Feed {
    let mut watchers = shared.hub.lock();
    // A watcher in the hub has not ended (it leaves the hub as it ends, under this lock).
    let joined = watchers
        .get(meter)
        .and_then(|w| Some((Arc::clone(w), w.sender().as_ref()?.subscribe())));
    let (watcher, receiver) = match joined {
        Some(joined) => joined,
        None => {
            let (sender, receiver) = broadcast::channel(CHANNEL);
            let w = Arc::new(Watcher {
                sender: Mutex::new(Some(sender)),
                latest: Mutex::new([None, None, None]),
            });
            watchers.insert(meter.to_owned(), Arc::clone(&w));
            shared.hub.watching.inc();
            tokio::spawn(watch(
                Arc::clone(shared),
                Arc::clone(&w),
                meter.to_owned(),
                start,
            ));
            (w, receiver)
        }
    };
    shared.hub.feeds.inc();
    Feed {
        shared: Arc::clone(shared),
        queue: watcher.newest().into(),
        watcher,
        receiver,
        stopping: shared.stopping.clone(),
    }
}

/// The live feed of a meter.
pub(super) async fn live(State(shared): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let s = Arc::clone(&shared);
    let meter = match blocking(move || {
        let p = parameters(raw.as_deref(), &["meter"])?;
        pick_meter(&s, p.get("meter"))
    })
    .await
    {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let feed = join(&shared, &meter.meter, meter.newest_reading_ms);
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if *feed.stopping.borrow() || feed.stopping.has_changed().is_err() {
                return None;
            }
            if let Some(m) = feed.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(m.event()), feed));
            }
            tokio::select! {
                got = feed.receiver.recv() => match got {
                    Ok(m) => feed.queue.push_back(m),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let newest = feed.watcher.newest();
                        feed.queue.extend(newest);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = feed.stopping.changed() => {}
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
