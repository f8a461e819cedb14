//! `wattflow demo`: the whole product on one machine with nothing else installed.
//!
//! ```text
//!  Generator ─> <dir>/history.txt ─> FileSource ──┐                       ┌─> ParquetSink ─> <dir>/{minute,hour,day}/  (batch views)
//!   (some weeks up to today's midnight)           ├─> WindowAggregate ──┤
//!  Generator ─> SensorSource (1 reading/s/house) ─┘   (one graph)        └─> MemoryViewSink ─> MemoryViews     (speed views)
//!   (from each meter's switch time, then the clock)                                              │
//!                                  Server: dashboard, HTTP API, live feed ◄── Views = batch ∪ speed
//! ```
//!
//! [`Demo::start`] prepares its folder (a new one, or one an earlier demo made: its views are
//! replaced), writes a seeded synthetic history of a few households ending at today's local
//! midnight, and runs it through the one graph ([`Pipeline`]) followed by simulated sensors in
//! the process, every meter switching at midnight ([`SwitchAt::At`]): first catching up from
//! midnight to the clock, then one reading per household per second. The batch views are Parquet under the
//! folder, the speed views a [`MemoryViews`] store; the server answers over both while the
//! pipeline runs. [`RunningDemo::stop`] stops the sensors, lets the graph seal what is open and
//! write it, and stops the server: the folder then holds complete, valid views of everything
//! the demo produced.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wattflow::generate::{Generator, GeneratorConfig, DEFAULT_MISSING_RATE, DEFAULT_SEED};
use wattflow::serve::insights::Prices;
use wattflow::serve::{MemoryViews, Views};
use wattflow::source::handover::SwitchAt;
use wattflow::source::sensors::SensorSourceConfig;
use wattflow::time::{Calendar, DAY_MS};

use crate::graph::{Pipeline, PipelineError, Progress, RunSummary};
use crate::serve::Server;

/// Default number of households.
pub const DEFAULT_DEMO_HOUSEHOLDS: u32 = 3;
/// Default days of history before today.
pub const DEFAULT_DEMO_DAYS: u32 = 28;
/// Default folder.
pub const DEFAULT_DEMO_DIR: &str = "wattflow-demo";
/// The file that marks a folder as a demo's (so a later demo may replace its views).
pub const MARKER_FILE: &str = "wattflow-demo.json";
/// The generated history in the folder.
pub const HISTORY_FILE: &str = "history.txt";
/// What a demo folder may hold besides the marker: replaced by the next demo.
const DEMO_ENTRIES: [&str; 7] = [
    "minute",
    "hour",
    "day",
    HISTORY_FILE,
    "rejected.csv",
    "_progress.json",
    "run.json",
];

/// Why a demo could not start or did not end well.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The folder holds something that is not a demo's.
    #[error("{}: {reason}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the demo could not be written or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings cannot work.
    #[error("{0}")]
    Config(String),
    /// The server could not start.
    #[error("the server: {0}")]
    Serve(std::io::Error),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The pipeline's thread panicked.
    #[error("the pipeline stopped unexpectedly: {0}")]
    Panicked(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The marker a demo leaves in its folder.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    households: u32,
    days: u32,
    seed: u64,
    history_start: String,
    history_end: String,
}

/// A demo to start: see the module docs. Build with [`Demo::new`].
#[derive(Clone, Debug)]
pub struct Demo {
    dir: PathBuf,
    households: u32,
    days: u32,
    seed: u64,
    missing_rate: f64,
    workers: usize,
    listen: String,
    prices: Option<Prices>,
    calendar: Calendar,
}

impl Demo {
    /// A demo in `dir` with [`DEFAULT_DEMO_HOUSEHOLDS`] households, [`DEFAULT_DEMO_DAYS`] days
    /// of history, one worker, serving on a free loopback port.
    pub fn new(dir: impl Into<PathBuf>) -> Demo {
        Demo {
            dir: dir.into(),
            households: DEFAULT_DEMO_HOUSEHOLDS,
            days: DEFAULT_DEMO_DAYS,
            seed: DEFAULT_SEED,
            missing_rate: DEFAULT_MISSING_RATE,
            workers: 1,
            listen: "127.0.0.1:0".into(),
            prices: None,
            calendar: Calendar::Naive,
        }
    }

    /// Households `household-1` … `household-N` (at least 1).
    pub fn households(mut self, households: u32) -> Demo {
        self.households = households;
        self
    }

    /// Days of history before today (0: none; the sensors still start at midnight).
    pub fn days(mut self, days: u32) -> Demo {
        self.days = days;
        self
    }

    /// Seed of the household model.
    pub fn seed(mut self, seed: u64) -> Demo {
        self.seed = seed;
        self
    }

    /// Fraction of the history's minutes lost to simulated outages (default 1 %).
    pub fn missing_rate(mut self, rate: f64) -> Demo {
        self.missing_rate = rate;
        self
    }

    /// Timely worker threads.
    pub fn workers(mut self, workers: usize) -> Demo {
        self.workers = workers.max(1);
        self
    }

    /// Where the server listens (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, listen: impl Into<String>) -> Demo {
        self.listen = listen.into();
        self
    }

    /// The tariff of the insights (default: [`wattflow::serve::insights::Tariff::default`]).
    pub fn prices(mut self, prices: Prices) -> Demo {
        self.prices = Some(prices);
        self
    }

    /// The calendar of the views and of the sensors' clock (default: naive local time, the
    /// machine's wall clock).
    pub fn timezone(mut self, calendar: Calendar) -> Demo {
        self.calendar = calendar;
        self
    }

    /// Makes the folder ready: creates it, or clears the views of an earlier demo in it.
    fn prepare(&self) -> Result<(), DemoError> {
        let dir = &self.dir;
        if dir.exists() {
            if !dir.is_dir() {
                return Err(DemoError::Folder {
                    path: dir.clone(),
                    reason: "exists and is not a folder".into(),
                });
            }
            let is_demo = dir.join(MARKER_FILE).is_file();
            let mut entries = std::fs::read_dir(dir).map_err(io_at(dir))?.peekable();
            if !is_demo && entries.peek().is_some() {
                return Err(DemoError::Folder {
                    path: dir.clone(),
                    reason: format!(
                        "is not empty and holds no {MARKER_FILE}: the demo only writes into a new \
                         folder or one an earlier demo made; give another --dir"
                    ),
                });
            }
            for name in DEMO_ENTRIES {
                let path = dir.join(name);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_at(&path)(e)),
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(io_at(dir))
    }

    /// Prepares the folder, writes the history, and starts the pipeline and the server.
    pub fn start(self) -> Result<RunningDemo, DemoError> {
        if self.households == 0 {
            return Err(DemoError::Config(
                "a demo needs at least one household".into(),
            ));
        }
        self.prepare()?;
        let today = self.calendar.day_start(self.calendar.now_ms());
        let local_today = self.calendar.to_local(today);
        let history_start = local_today - self.days as i64 * DAY_MS;
        let mut pipeline = Pipeline::new();
        let history = self.dir.join(HISTORY_FILE);
        if self.days > 0 {
            let generator = Generator::new(GeneratorConfig {
                households: self.households,
                days: self.days,
                start_ms: history_start,
                seed: self.seed,
                missing_rate: self.missing_rate,
            });
            let file = std::fs::File::create(&history).map_err(io_at(&history))?;
            generator
                .write_uci(BufWriter::new(file))
                .map_err(io_at(&history))?;
            pipeline = pipeline.input(&history);
        }
        let marker = Marker {
            households: self.households,
            days: self.days,
            seed: self.seed,
            history_start: wattflow::time::format_iso(history_start),
            history_end: wattflow::time::format_iso(local_today),
        };
        let marker_path = self.dir.join(MARKER_FILE);
        let text = serde_json::to_string_pretty(&marker).map_err(std::io::Error::other);
        text.and_then(|t| std::fs::write(&marker_path, t + "\n"))
            .map_err(io_at(&marker_path))?;

        let speed = Arc::new(MemoryViews::new());
        let sensors = SensorSourceConfig::new(self.households)
            .seed(self.seed)
            .start_ms(today);
        // Every meter hands over at midnight, whatever outage ends its history.
        let pipeline = pipeline
            .switch_at(SwitchAt::At(today))
            .sensors(sensors)
            .parquet(&self.dir)
            .memory_views(Arc::clone(&speed))
            .timezone(self.calendar.clone())
            .workers(self.workers);
        let progress = pipeline.progress();
        let stop = Arc::new(AtomicBool::new(false));
        let run = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("wattflow-demo".into())
                .spawn(move || pipeline.run(stop))
                .map_err(|e| DemoError::Io {
                    path: self.dir.clone(),
                    source: e,
                })?
        };
        let speed_views: Arc<dyn wattflow::serve::SpeedViews> = Arc::clone(&speed) as _;
        let views = Views::new(&self.dir, speed_views).with_calendar(self.calendar);
        let server = match self.prices {
            Some(prices) => Server::start_with(views, prices, &self.listen),
            None => Server::start(views, &self.listen),
        };
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = run.join();
                return Err(DemoError::Serve(e));
            }
        };
        Ok(RunningDemo {
            dir: self.dir,
            server,
            run,
            stop,
            progress,
            speed,
            history_end_ms: today,
        })
    }
}

/// A demo that runs: the pipeline on its threads, the server on its own.
pub struct RunningDemo {
    dir: PathBuf,
    server: Server,
    run: JoinHandle<Result<RunSummary, PipelineError>>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    speed: Arc<MemoryViews>,
    history_end_ms: i64,
}

impl std::fmt::Debug for RunningDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningDemo")
            .field("dir", &self.dir)
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl RunningDemo {
    /// Where the server listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The demo's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live counters of the pipeline.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The speed views in memory.
    pub fn speed(&self) -> &Arc<MemoryViews> {
        &self.speed
    }

    /// Where the history ends and the sensors take over: today's local midnight, in the
    /// views' time basis.
    pub fn history_end_ms(&self) -> i64 {
        self.history_end_ms
    }

    /// Whether the pipeline has ended (by itself, it only does on an error).
    pub fn finished(&self) -> bool {
        self.run.is_finished()
    }

    /// Waits until the history is read and the sensors have caught up with the clock (`false`
    /// after `timeout`, or if the pipeline ended).
    pub fn wait_live(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let sensors = &self.progress.sensors;
        loop {
            let caught_up = sensors.following.load(Ordering::SeqCst)
                && sensors.readings.load(Ordering::Relaxed) > 0
                && sensors.behind_ms.load(Ordering::Relaxed) < 2_000;
            if caught_up {
                return true;
            }
            if Instant::now() >= deadline || self.run.is_finished() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the sensors, lets the pipeline seal and write what is open, and stops the server.
    pub fn stop(self) -> Result<RunSummary, DemoError> {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.run.join();
        self.server.stop();
        match result {
            Ok(r) => Ok(r?),
            Err(panic) => Err(DemoError::Panicked(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
            )),
        }
    }
}
