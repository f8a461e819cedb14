//! `GET /api/v1/live?meter=`: the speed view's newest windows as Server-Sent Events.
//!
//! Per connection, a feed reads the speed store for each granularity's windows from the newest
//! it has sent on, and sends those whose value changed as one `windows` event:
//! `{"granularity": "minute", "rows": [...]}` with the rows in the views API's format. A store
//! that counts its changes ([`SpeedViews::version`], e.g. the in-process
//! [`MemoryViews`](wattflow::serve::MemoryViews)) wakes the feed as soon as it changes
//! ([`SpeedViews::wait_for_change`]; the feed then lets [`SETTLE`] pass so that the changes of
//! one batch go out as one event), so a new window reaches the page within milliseconds;
//! a store that cannot tell (Cassandra) is read every [`POLL`]. The first poll sends the newest window of each granularity. Batch
//! rows never change once written, so the feed reads the speed side alone. It ends when the
//! client goes or the server stops.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use wattflow::model::Granularity;

use super::render::{answer_json, Columns};
use super::{blocking, parameters, pick_meter, ApiError, Shared};
use wattflow::serve::{Answer, Freshness, SpeedViews, ViewRow};

/// How often a feed looks at a speed store that cannot say when it changed, and the longest a
/// feed waits for one that can.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a feed lets a store that has just changed go on changing before it reads it.
pub const SETTLE: Duration = Duration::from_millis(5);

/// What one feed has sent: per granularity, `window_start → (samples, covered_seconds)`.
struct Feed {
    shared: Arc<Shared>,
    meter: String,
    /// Where the first poll looks back from: the meter's newest reading when the feed began.
    start: i64,
    /// Newest window start sent per granularity (`None`: nothing yet).
    from: [Option<i64>; 3],
    sent: [BTreeMap<i64, (i64, i64)>; 3],
    version: Option<u64>,
    /// Events found but not yet sent.
    queue: Vec<Event>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    /// One poll: the events of the windows that changed since the last.
    fn poll(&mut self) -> Result<Vec<Event>, ApiError> {
        let speed = self.shared.views.speed();
        let version = speed.version();
        if version != 0 && self.version == Some(version) {
            return Ok(Vec::new());
        }
        self.version = Some(version);
        let calendar = self.shared.views.calendar();
        let now = calendar.now_ms();
        let mut events = Vec::new();
        for g in Granularity::ALL {
            let i = g as usize;
            let len = g.len_ms();
            let first = self.from[i].is_none();
            // From the newest window sent, or on the first poll from a day before the meter's
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
            let changed: Vec<ViewRow> = rows
                .into_iter()
                .filter(|r| {
                    let v = (r.samples, r.covered_seconds);
                    self.sent[i].insert(r.window_start, v) != Some(v)
                })
                .collect();
            let Some(newest) = changed.iter().map(|r| r.window_start).max() else {
                continue;
            };
            self.from[i] = Some(self.from[i].map_or(newest, |f| f.max(newest)));
            let keep = self.from[i].unwrap_or(newest);
            self.sent[i].retain(|&t, _| t >= keep);
            let (a, b) = (changed[0].window_start, newest + len);
            let answer = Answer {
                freshness: Freshness {
                    newest_reading_ms: None,
                    age_ms: None,
                    batch_sealed_through_ms: None,
                    batch_rows: 0,
                    speed_rows: changed.len(),
                },
                rows: changed,
            };
            let body = answer_json(calendar, &self.meter, g, (a, b), &answer, &Columns::all());
            events.push(Event::default().event("windows").data(body));
        }
        Ok(events)
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
    let start = meter.newest_reading_ms;
    let feed = Feed {
        stopping: shared.stopping.clone(),
        shared,
        meter: meter.meter,
        start,
        from: [None; 3],
        sent: Default::default(),
        version: None,
        queue: Vec::new(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if *feed.stopping.borrow() {
                return None;
            }
            if let Some(e) = feed.queue.pop() {
                return Some((Ok::<Event, Infallible>(e), feed));
            }
            let (found, back) = tokio::task::spawn_blocking(move || {
                let found = feed.poll();
                (found, feed)
            })
            .await
            .ok()?;
            feed = back;
            match found {
                Ok(mut events) if !events.is_empty() => {
                    events.reverse();
                    feed.queue = events;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    // The store is down: say so, and keep trying.
                    let text = serde_json::json!({ "error": e.message }).to_string();
                    let mut stopping = feed.stopping.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(4 * POLL) => {}
                        _ = stopping.changed() => {}
                    }
                    return Some((Ok(Event::default().event("error").data(text)), feed));
                }
            }
            // Nothing new: wait for the store to change (or poll one that cannot tell).
            let mut stopping = feed.stopping.clone();
            let speed: Arc<dyn SpeedViews> = Arc::clone(feed.shared.views.speed());
            let seen = feed.version.unwrap_or(0);
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
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
