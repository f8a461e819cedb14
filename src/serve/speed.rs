//! The speed side of a query: a view store that holds every window's latest value.
//!
//! [`SpeedViews`] is what the serving layer needs of one: a meter's rows in a range, the
//! meters, and a change counter (for live updates). Implementations: [`MemoryViews`], in the
//! process (the demo, and programs that embed wattflow without Cassandra), [`NoSpeedViews`]
//! (batch views alone) and, with the `cassandra` feature, [`CassandraSpeedViews`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::row::{Source, ViewRow};
use super::ServeError;
use crate::model::{Aggregate, Granularity};

/// A store of speed views, shared by the threads of a server.
pub trait SpeedViews: Send + Sync {
    /// `meter`'s rows of a granularity whose window starts in `[from_ms, to_ms)`, in window
    /// order, each tagged [`Source::Speed`].
    fn rows(
        &self,
        granularity: Granularity,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ViewRow>, ServeError>;

    /// The meters with rows in the store.
    fn meters(&self) -> Result<BTreeSet<String>, ServeError>;

    /// A number that grows whenever a row changes (0 when the store cannot tell, in which
    /// case a live feed must poll).
    fn version(&self) -> u64 {
        0
    }

    /// Blocks until [`SpeedViews::version`] is no longer `seen` or `timeout` has passed, and
    /// returns the version then. A store that cannot tell (version 0) just waits `timeout`;
    /// call it only from a thread that may block.
    fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let _ = seen;
        std::thread::sleep(timeout);
        self.version()
    }

    /// A name for logs and `/health` (`memory`, `cassandra 127.0.0.1:9042/wattflow`, ...).
    fn describe(&self) -> String;
}

/// No speed views: answers come from the batch views alone.
#[derive(Copy, Clone, Debug, Default)]
pub struct NoSpeedViews;

impl SpeedViews for NoSpeedViews {
    fn rows(&self, _: Granularity, _: &str, _: i64, _: i64) -> Result<Vec<ViewRow>, ServeError> {
        Ok(Vec::new())
    }

    fn meters(&self) -> Result<BTreeSet<String>, ServeError> {
        Ok(BTreeSet::new())
    }

    fn describe(&self) -> String {
        "none".into()
    }
}

/// Speed views held in memory: per granularity and meter, the latest value of every window
/// upserted, in window order. Rows older than [`MemoryViews::retain_ms`] before a meter's
/// newest window are dropped as newer ones arrive, so a long-running process holds a bounded
/// tail of each view (the batch views hold the rest).
///
/// The tail must reach back to the batch view's sealed high-water mark, or a query finds a gap
/// between the two: the Parquet sink writes a partition (a month of minutes, a year of hours
/// and days) once it is sealed, so the mark can be a month (minutes) or a year (hours, days)
/// behind the newest window. The default retention ([`MemoryViews::new`]) covers that, at about
/// 20 MiB per meter for the minutes and hours (a row takes about 350 bytes); a store that only
/// serves recent windows can keep less ([`MemoryViews::with_retention`]).
#[derive(Debug)]
pub struct MemoryViews {
    rows: RwLock<BTreeMap<(Granularity, String), BTreeMap<i64, ViewRow>>>,
    version: AtomicU64,
    retain_ms: [i64; 3],
    /// Threads in [`SpeedViews::wait_for_change`]: a change wakes them only when there are
    /// some, so writes cost no system call otherwise.
    waiters: AtomicUsize,
    signal: Mutex<()>,
    changed: Condvar,
}

impl Default for MemoryViews {
    fn default() -> Self {
        MemoryViews::new()
    }
}

impl MemoryViews {
    /// A store that keeps, per meter, 33 days of minutes, 367 days of hours and 2 years of
    /// days: enough to reach back to the batch views' mark whatever the day of the month.
    pub fn new() -> MemoryViews {
        const DAY: i64 = 86_400_000;
        MemoryViews::with_retention([33 * DAY, 367 * DAY, 732 * DAY])
    }

    /// A store that keeps, per granularity (minute, hour, day), windows starting at most this
    /// many ms before a meter's newest.
    pub fn with_retention(retain_ms: [i64; 3]) -> MemoryViews {
        MemoryViews {
            rows: RwLock::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            retain_ms,
            waiters: AtomicUsize::new(0),
            signal: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// How long before a meter's newest window rows of `granularity` are kept.
    pub fn retain_ms(&self, granularity: Granularity) -> i64 {
        self.retain_ms[granularity as usize]
    }

    /// Sets a window's value (the row's `source` becomes [`Source::Speed`]).
    pub fn upsert_row(&self, granularity: Granularity, row: ViewRow) {
        self.store(granularity, row, false);
    }

    /// Sets a window's value from its aggregate.
    pub fn upsert(
        &self,
        granularity: Granularity,
        meter: &str,
        window_start: i64,
        agg: &Aggregate,
    ) {
        self.upsert_row(
            granularity,
            ViewRow::of(meter, window_start, agg, Source::Speed),
        );
    }

    /// Applies a change of a window from a pipeline: the new value replaces the stored one
    /// unless that has more samples. Readings only ever add to a window, so the value with
    /// the most samples is the newest, whatever order two changes arrive in.
    pub fn apply(&self, granularity: Granularity, meter: &str, window_start: i64, agg: &Aggregate) {
        self.store(
            granularity,
            ViewRow::of(meter, window_start, agg, Source::Speed),
            true,
        );
    }

    fn store(&self, granularity: Granularity, mut row: ViewRow, newest_only: bool) {
        row.source = Source::Speed;
        let retain = self.retain_ms(granularity);
        let mut all = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let windows = all.entry((granularity, row.meter.clone())).or_default();
        match windows.entry(row.window_start) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if newest_only && e.get().samples > row.samples {
                    return;
                }
                e.insert(row);
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(row);
            }
        }
        if let Some((&newest, _)) = windows.last_key_value() {
            let keep_from = newest.saturating_sub(retain);
            while windows
                .first_key_value()
                .is_some_and(|(&t, _)| t < keep_from)
            {
                windows.pop_first();
            }
        }
        drop(all);
        // With `wait_for_change`'s order (waiters up, then version read) one of the two sees
        // the other: a waiter either finds the new version or is woken.
        self.version.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
            self.changed.notify_all();
        }
    }

    /// Rows held over all views.
    pub fn len(&self) -> usize {
        let all = self.rows.read().unwrap_or_else(|e| e.into_inner());
        all.values().map(BTreeMap::len).sum()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SpeedViews for MemoryViews {
    fn rows(
        &self,
        granularity: Granularity,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ViewRow>, ServeError> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let all = self.rows.read().unwrap_or_else(|e| e.into_inner());
        Ok(all
            .get(&(granularity, meter.to_owned()))
            .map(|w| w.range(from_ms..to_ms).map(|(_, r)| r.clone()).collect())
            .unwrap_or_default())
    }

    fn meters(&self) -> Result<BTreeSet<String>, ServeError> {
        let all = self.rows.read().unwrap_or_else(|e| e.into_inner());
        Ok(all.keys().map(|(_, m)| m.clone()).collect())
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        let version = loop {
            let v = self.version.load(Ordering::SeqCst);
            let now = Instant::now();
            if v != seen || now >= deadline {
                break v;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        version
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(feature = "cassandra")]
pub use cassandra::CassandraSpeedViews;

#[cfg(feature = "cassandra")]
mod cassandra {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::{SpeedViews, ViewRow};
    use crate::model::{Granularity, Measure, MEASURES};
    use crate::serve::row::{MeasureValues, Source};
    use crate::serve::ServeError;
    use crate::sink::cassandra::{list_meters, read_view, CassandraRow, CassandraViews};

    /// The speed views in Cassandra (or ScyllaDB), as the pipeline's sink writes them.
    #[derive(Clone, Debug)]
    pub struct CassandraSpeedViews {
        views: Arc<CassandraViews>,
    }

    impl CassandraSpeedViews {
        /// Reads through a connected session.
        pub fn new(views: Arc<CassandraViews>) -> CassandraSpeedViews {
            CassandraSpeedViews { views }
        }
    }

    fn speed_error(e: impl std::fmt::Display) -> ServeError {
        ServeError::Speed(e.to_string())
    }

    /// A row read back from Cassandra, as a [`ViewRow`].
    pub(crate) fn view_row(row: CassandraRow) -> ViewRow {
        let v = |name: &str| row.values.get(name).copied().unwrap_or(f64::NAN);
        let mut measures = [MeasureValues::default(); MEASURES];
        for (m, out) in Measure::ALL.iter().zip(measures.iter_mut()) {
            *out = MeasureValues {
                sum: v(&format!("{}_sum", m.name())),
                min: v(&format!("{}_min", m.name())),
                max: v(&format!("{}_max", m.name())),
                avg: v(&format!("{}_avg", m.name())),
            };
        }
        ViewRow {
            window_start: row.window_start,
            samples: row.samples,
            covered_seconds: row.covered_seconds,
            measures,
            active_energy_wh: v("active_energy_wh"),
            unmetered_wh: v("unmetered_wh"),
            power_factor_avg: row.values.get("power_factor_avg").copied(),
            source: Source::Speed,
            meter: row.meter,
        }
    }

    impl SpeedViews for CassandraSpeedViews {
        fn rows(
            &self,
            granularity: Granularity,
            meter: &str,
            from_ms: i64,
            to_ms: i64,
        ) -> Result<Vec<ViewRow>, ServeError> {
            if from_ms >= to_ms {
                return Ok(Vec::new());
            }
            let rows =
                read_view(&self.views, granularity, meter, from_ms, to_ms).map_err(speed_error)?;
            Ok(rows.into_iter().map(view_row).collect())
        }

        fn meters(&self) -> Result<BTreeSet<String>, ServeError> {
            Ok(list_meters(&self.views)
                .map_err(speed_error)?
                .into_iter()
                .collect())
        }

        fn describe(&self) -> String {
            let c = self.views.config();
            format!("cassandra {}/{}", c.contact_points.join(","), c.keyspace)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MeterId, Origin, Reading};

    fn agg(samples: u64) -> Aggregate {
        let r = Reading {
            meter: MeterId::new("m").unwrap(),
            ts: 0,
            interval_s: 1,
            values: [1000, 100, 230_000, 4000, 0, 0, 0],
            origin: Origin::default(),
        };
        let mut a = Aggregate::EMPTY;
        for _ in 0..samples {
            a.add(&r);
        }
        a
    }

    #[test]
    fn a_waiter_wakes_at_a_change_not_at_its_timeout() {
        let views = std::sync::Arc::new(MemoryViews::new());
        let seen = views.version();
        // Nothing changes: the wait ends at its timeout with the same version.
        let t0 = Instant::now();
        assert_eq!(views.wait_for_change(seen, Duration::from_millis(50)), seen);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let waiter = {
            let views = std::sync::Arc::clone(&views);
            std::thread::spawn(move || {
                let t = Instant::now();
                (
                    views.wait_for_change(seen, Duration::from_secs(30)),
                    t.elapsed(),
                )
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        views.apply(Granularity::Minute, "m", 0, &agg(1));
        let (version, waited) = waiter.join().unwrap();
        assert!(version > seen);
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
        // A version already past `seen` returns at once.
        let t1 = Instant::now();
        assert_eq!(
            views.wait_for_change(seen, Duration::from_secs(30)),
            version
        );
        assert!(t1.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_change_with_fewer_samples_does_not_replace_a_newer_value() {
        let views = MemoryViews::new();
        views.apply(Granularity::Hour, "m", 0, &agg(3));
        views.apply(Granularity::Hour, "m", 0, &agg(2));
        let rows = views.rows(Granularity::Hour, "m", 0, 1).unwrap();
        assert_eq!(rows[0].samples, 3);
        views.apply(Granularity::Hour, "m", 0, &agg(4));
        assert_eq!(
            views.rows(Granularity::Hour, "m", 0, 1).unwrap()[0].samples,
            4
        );
        // `upsert` sets whatever it is given (a store of the caller's).
        views.upsert(Granularity::Hour, "m", 0, &agg(1));
        assert_eq!(
            views.rows(Granularity::Hour, "m", 0, 1).unwrap()[0].samples,
            1
        );
    }

    #[test]
    fn the_memory_store_keeps_each_windows_latest_value_and_a_bounded_tail() {
        let views = MemoryViews::with_retention([120_000, 0, 0]);
        let v0 = views.version();
        views.upsert(Granularity::Minute, "m", 0, &agg(1));
        views.upsert(Granularity::Minute, "m", 0, &agg(2));
        views.upsert(Granularity::Minute, "m", 60_000, &agg(3));
        assert!(views.version() >= v0 + 3);
        let rows = views.rows(Granularity::Minute, "m", 0, 120_000).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.window_start, r.samples))
                .collect::<Vec<_>>(),
            [(0, 2), (60_000, 3)]
        );
        assert!(rows.iter().all(|r| r.source == Source::Speed));
        assert!(views
            .rows(Granularity::Hour, "m", 0, 120_000)
            .unwrap()
            .is_empty());
        assert!(views
            .rows(Granularity::Minute, "other", 0, 120_000)
            .unwrap()
            .is_empty());
        assert!(views
            .rows(Granularity::Minute, "m", 60_000, 60_000)
            .unwrap()
            .is_empty());
        // A window 3 minutes on: the one at 0 falls out of the 2-minute tail.
        views.upsert(Granularity::Minute, "m", 180_000, &agg(1));
        let starts: Vec<i64> = views
            .rows(Granularity::Minute, "m", 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|r| r.window_start)
            .collect();
        assert_eq!(starts, [60_000, 180_000]);
        assert_eq!(
            views.meters().unwrap().into_iter().collect::<Vec<_>>(),
            ["m"]
        );
        assert_eq!(views.len(), 2);
    }
}
