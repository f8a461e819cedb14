//! `wattflow demo`: the README's first command. Synthetic history and simulated live sensors
//! through the one graph, Parquet batch views and in-memory speed views, and the dashboard
//! over both; Ctrl-C stops it cleanly (see [`crate::demo`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use wattflow::time::Calendar;

use super::serve::load_tariff;
use super::{parse_duration, stop_flag};
use crate::demo::{Demo, DemoError, DEFAULT_DEMO_DAYS, DEFAULT_DEMO_DIR, DEFAULT_DEMO_HOUSEHOLDS};

/// The address the demo prefers; when it is taken (and `--listen` was not given), a free port.
const PREFERRED_LISTEN: &str = "127.0.0.1:8080";

/// Arguments of `wattflow demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's folder: the history, the Parquet batch views, the dead letters. A new folder,
    /// or one an earlier demo made (its views are replaced).
    #[arg(long, default_value = DEFAULT_DEMO_DIR)]
    pub dir: PathBuf,
    /// Simulated households.
    #[arg(long, default_value_t = DEFAULT_DEMO_HOUSEHOLDS)]
    pub households: u32,
    /// Days of history before today (0: live sensors only, from midnight).
    #[arg(long, default_value_t = DEFAULT_DEMO_DAYS)]
    pub days: u32,
    /// Seed of the household model.
    #[arg(long, default_value_t = wattflow::generate::DEFAULT_SEED)]
    pub seed: u64,
    /// Address of the dashboard (default 127.0.0.1:8080, or a free port when that is taken).
    #[arg(long)]
    pub listen: Option<String>,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Calendar of the views: `naive` (the machine's local wall clock) or an IANA zone.
    #[arg(long, value_name = "ZONE", default_value = "naive")]
    pub timezone: String,
    /// Tariff of the insights' costs (TOML; default: an HP/HC contract).
    #[arg(long, value_name = "FILE.toml")]
    pub tariff: Option<PathBuf>,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

pub(crate) fn demo(args: DemoArgs) -> Result<()> {
    let stop = stop_flag();
    let calendar = Calendar::parse(&args.timezone)?;
    let prices = load_tariff(args.tariff.as_deref())?;
    let demo = Demo::new(&args.dir)
        .households(args.households)
        .days(args.days)
        .seed(args.seed)
        .workers(args.workers)
        .timezone(calendar)
        .prices(prices);
    println!(
        "wattflow demo: {} households, {} days of history, then live sensors (one reading a second each)",
        args.households, args.days
    );
    let started = Instant::now();
    let running = match &args.listen {
        Some(listen) => demo.listen(listen).start()?,
        None => match demo.clone().listen(PREFERRED_LISTEN).start() {
            Err(DemoError::Serve(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
                demo.listen("127.0.0.1:0").start()?
            }
            other => other?,
        },
    };
    let dir = running.dir().display().to_string();
    if running.wait_live(Duration::from_secs(120)) {
        let p = running.progress();
        println!(
            "history read ({} readings) and live sensors caught up in {:.1} s",
            p.source.readings.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    } else if running.finished() {
        // The pipeline ended early: stop() says why.
        running.stop().context("the demo's pipeline")?;
        anyhow::bail!("the demo's pipeline ended unexpectedly");
    }
    println!("dashboard: http://{}/", running.addr());
    println!("batch views (Parquet): {dir}/{{minute,hour,day}}/   speed views: in memory");
    println!("press Ctrl-C to stop");
    let deadline = args.duration.map(|d| Instant::now() + d);
    while !stop.load(Ordering::Relaxed)
        && !running.finished()
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping: sealing the open windows and writing the views...");
    let summary = running.stop().context("the demo's pipeline")?;
    let readings = summary.sensors.as_ref().map_or(0, |s| s.readings);
    println!(
        "stopped after {:.1} s: {} history rows and {} live readings; views in {dir}/",
        started.elapsed().as_secs_f64(),
        summary.history.as_ref().map_or(0, |h| h.rows),
        readings
    );
    for v in &summary.views {
        println!(
            "  {:<6} {:>8} rows in {} file(s)",
            v.granularity.name(),
            v.manifest.rows,
            v.manifest.partitions.len()
        );
    }
    Ok(())
}
