//! W1, history replay: the whole UCI household file through `wattflow replay` and through each
//! peer, side by side (see `../shared/docs/BENCHMARKS.md`).
//!
//! Preparation, not timed: the gzip'd input is unpacked once into `<work>/data/` (and reused
//! while the source file's size and modification time stay the same), the release `wattflow`
//! binary is located (or built) and copied to `<work>/bin/` so that every run uses the same
//! build, and the peers' virtual environment is made ready.
//!
//! Measurement: for run `i` of `N`, for each worker count, every system runs once as a child
//! process (interleaved: wattflow run i, DuckDB run i, Polars run i; the order is rotated by one
//! from one run to the next so that no system always goes first). Each child writes into a
//! freshly emptied `<work>/views/<system>-w<N>/`; wall time and peak RSS come from `wait4`
//! (see [`crate::measure`]). Between two children the harness calls `sync()`, so one system's
//! pending write-back does not land in the next one's time.
//!
//! Checks, after every child: the counts the system reports (rows read, readings, missing,
//! minute/hour/day rows) must equal what its Parquet files hold, and every system must agree
//! with every other on all of them (and, for the published UCI file, with its known figures).
//! Any difference stops the harness with an error, after the raw runs so far are written.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::check::{self, ViewCounts, GRANULARITIES};
use crate::machine::Machine;
use crate::measure;
use crate::peers::{self, PeerReport, PythonEnv, System};
use crate::report::{self, RunRecord, Summary};

/// Known figures of the published UCI file, checked when it is the input.
mod uci {
    /// Size of the unpacked file, which identifies it.
    pub const BYTES: u64 = 132_960_755;
    pub const ROWS: u64 = 2_075_259;
    pub const MISSING: u64 = 25_979;
    pub const READINGS: u64 = 2_049_280;
    pub const HOURS: u64 = 34_168;
    pub const DAYS: u64 = 1_433;
    /// Σ Global_active_power over the readings, kW-minutes.
    pub const ACTIVE_POWER_SUM: f64 = 2_237_024.862;
}

/// Arguments of `wattflow-bench w1`.
#[derive(Debug, Args)]
pub struct W1Args {
    /// Runs per system and worker count; the table reports medians.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The input: the UCI text file, gzip'd (unpacked once into the work folder) or not.
    /// Relative paths are tried from the current folder, then from the workspace root.
    #[arg(
        long,
        default_value = "../shared/data/household_power_consumption.txt.gz"
    )]
    pub data: PathBuf,
    /// Worker (thread) counts; each system runs with each: `--workers` for wattflow,
    /// `SET threads` for DuckDB, `POLARS_MAX_THREADS` for Polars.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Peers to run beside wattflow (`duckdb`, `polars`), or `none`.
    #[arg(long, value_delimiter = ',', default_value = "duckdb,polars")]
    pub peers: Vec<String>,
    /// The Python that creates the peers' venv.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// `--out`, `--work`, `--wattflow`, `--build`.
    #[command(flatten)]
    pub harness: crate::harness::Harness,
}

/// What one system said and what its views hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    /// Data rows read, missing ones included.
    pub rows_read: u64,
    /// Readings kept (rows with every measure).
    pub readings: u64,
    /// Rows dropped as missing.
    pub missing: u64,
    /// What the Parquet files hold.
    pub views: ViewCounts,
}

/// The whole JSON document written to `<out>/w1.json`.
#[derive(Debug, Serialize)]
struct RawReport<'a> {
    workload: &'static str,
    complete: bool,
    machine: &'a Machine,
    versions: &'a Versions,
    input: &'a InputInfo,
    runs_per_system: usize,
    workers: &'a [usize],
    summary: Vec<Summary>,
    runs: &'a [RunRecord],
}

/// Versions of what was measured.
#[derive(Debug, Clone, Serialize)]
struct Versions {
    wattflow: String,
    wattflow_binary: String,
    wattflow_binary_modified_utc: String,
    python: Option<String>,
    packages: std::collections::BTreeMap<String, String>,
}

/// The input as the systems read it.
#[derive(Debug, Clone, Serialize)]
struct InputInfo {
    source: String,
    unpacked: String,
    bytes: u64,
}

/// Runs W1.
pub fn run(args: W1Args) -> Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        !args.workers.is_empty() && args.workers.iter().all(|&w| w >= 1),
        "--workers must list counts of at least 1"
    );
    let mut systems = vec![System::Wattflow];
    for p in &args.peers {
        if p.eq_ignore_ascii_case("none") || p.is_empty() {
            continue;
        }
        let peer = System::parse_peer(p).map_err(anyhow::Error::msg)?;
        if !systems.contains(&peer) {
            systems.push(peer);
        }
    }

    let root = workspace_root();
    let work = args.harness.work_dir(&root)?;
    let work = work.canonicalize()?;
    std::fs::create_dir_all(&args.harness.out)
        .with_context(|| args.harness.out.display().to_string())?;

    // Preparation (not timed).
    let source = resolve(&args.data, &root)
        .with_context(|| format!("input {} not found", args.data.display()))?;
    let input = unpack(&source, &work.join("data"))?;
    let located = args.harness.binary(&root)?;
    // Every run uses one copy of the binary, even if the workspace is rebuilt meanwhile.
    let wattflow = work.join("bin").join("wattflow");
    std::fs::create_dir_all(work.join("bin"))?;
    std::fs::copy(&located, &wattflow)
        .with_context(|| format!("copying {} into the work folder", located.display()))?;
    let venv = if systems.len() > 1 {
        Some(peers::ensure_venv(&work, &args.python)?)
    } else {
        None
    };
    let machine = Machine::probe(&root);
    let versions = versions(&located, &machine, venv.as_ref());
    let input_info = InputInfo {
        source: source.display().to_string(),
        unpacked: input.display().to_string(),
        bytes: std::fs::metadata(&input)?.len(),
    };
    eprintln!(
        "W1: {} run(s) × workers {:?} × {}; input {} ({} bytes); {} CPU(s), load {}",
        args.runs,
        args.workers,
        systems
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", "),
        input.display(),
        thousands(input_info.bytes),
        machine.cpus,
        machine.load_average
    );

    let mut records: Vec<RunRecord> = Vec::new();
    let write_raw = |records: &[RunRecord], complete: bool| -> Result<PathBuf> {
        let raw = RawReport {
            workload: "W1",
            complete,
            machine: &machine,
            versions: &versions,
            input: &input_info,
            runs_per_system: args.runs,
            workers: &args.workers,
            summary: report::summarise(records, &systems, &args.workers),
            runs: records,
        };
        let path = args.harness.out.join("w1.json");
        let mut f =
            BufWriter::new(File::create(&path).with_context(|| path.display().to_string())?);
        serde_json::to_writer_pretty(&mut f, &raw)?;
        f.write_all(b"\n")?;
        f.flush()?;
        Ok(path)
    };

    for run in 1..=args.runs {
        for &workers in &args.workers {
            let n = systems.len();
            for position in 0..n {
                let system = systems[(position + run - 1) % n];
                let views = work
                    .join("views")
                    .join(format!("{}-w{workers}", system.name()));
                if views.exists() {
                    std::fs::remove_dir_all(&views).with_context(|| views.display().to_string())?;
                }
                std::fs::create_dir_all(&views)?;
                let mut cmd = command(system, &wattflow, venv.as_ref(), &input, &views, workers);
                let measured = measure::run(&mut cmd).with_context(|| {
                    format!("{} run {run}, {workers} worker(s)", system.label())
                })?;
                // SAFETY: sync(2) has no preconditions.
                unsafe { libc::sync() };
                let counts = counts(system, &measured, &views).with_context(|| {
                    format!("{} run {run}, {workers} worker(s)", system.label())
                })?;
                eprintln!(
                    "run {run}/{} w={workers} {:<8} {:>7.2} s {:>7.0} MiB  cpu {:>6.2} s  rows {}/{}/{}",
                    args.runs,
                    system.label(),
                    measured.wall.as_secs_f64(),
                    measured.max_rss_mib(),
                    (measured.user + measured.sys).as_secs_f64(),
                    counts.views.minute,
                    counts.views.hour,
                    counts.views.day,
                );
                records.push(RunRecord {
                    run,
                    position: position + 1,
                    system,
                    workers,
                    wall_s: measured.wall.as_secs_f64(),
                    peak_rss_mib: measured.max_rss_mib(),
                    user_s: measured.user.as_secs_f64(),
                    sys_s: measured.sys.as_secs_f64(),
                    counts,
                });
                if let Err(e) = agree(&records, input_info.bytes == uci::BYTES) {
                    let path = write_raw(&records, false)?;
                    return Err(e.context(format!(
                        "the systems do not agree (raw runs so far in {})",
                        path.display()
                    )));
                }
            }
        }
    }

    let json = write_raw(&records, true)?;
    let summary = report::summarise(&records, &systems, &args.workers);
    let markdown = render(&args, &machine, &versions, &input_info, &records, &summary);
    let md = args.harness.out.join("w1.md");
    std::fs::write(&md, &markdown).with_context(|| md.display().to_string())?;
    println!("{markdown}");
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

/// The command line of one system for one run.
fn command(
    system: System,
    wattflow: &Path,
    venv: Option<&PythonEnv>,
    input: &Path,
    views: &Path,
    workers: usize,
) -> Command {
    let mut cmd;
    match system {
        System::Wattflow => {
            cmd = Command::new(wattflow);
            cmd.arg("replay")
                .arg("--input")
                .arg(input)
                .arg("--out")
                .arg(views);
            cmd.arg("--workers").arg(workers.to_string()).arg("-q");
        }
        peer => {
            let python = venv.expect("a venv when peers run");
            cmd = Command::new(&python.python);
            cmd.arg(peers::w1_script(peer));
            cmd.arg("--input").arg(input).arg("--out").arg(views);
            cmd.arg("--threads").arg(workers.to_string());
        }
    }
    cmd
}

/// What a system reports, checked against what its views hold.
fn counts(system: System, measured: &measure::Measured, views: &Path) -> Result<Counts> {
    let held = check::views(views)?;
    let (rows_read, readings, missing, rows) = match system {
        System::Wattflow => {
            let s = WattflowSummary::parse(&measured.stdout)?;
            (s.rows_read, s.readings, s.missing, s.view_rows)
        }
        _ => {
            let r = PeerReport::parse(&measured.stdout)?;
            (
                r.rows_read,
                r.readings,
                r.missing,
                [r.minute, r.hour, r.day],
            )
        }
    };
    for (g, reported) in GRANULARITIES.iter().zip(rows) {
        if reported != held.rows(g) {
            bail!(
                "reports {reported} {g} rows but its {g} view holds {}",
                held.rows(g)
            );
        }
    }
    if held.day_samples != readings {
        bail!(
            "reports {readings} readings but its day view counts {} samples",
            held.day_samples
        );
    }
    if rows_read != readings + missing {
        bail!("reports {rows_read} rows read ≠ {readings} readings + {missing} missing");
    }
    Ok(Counts {
        rows_read,
        readings,
        missing,
        views: held,
    })
}

/// Every record must match the first one; with the published file, its known figures too.
fn agree(records: &[RunRecord], published_file: bool) -> Result<()> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let (a, b) = (&first.counts, &last.counts);
    let mut problems = String::new();
    let mut compare = |what: &str, x: u64, y: u64| {
        if x != y {
            let _ = writeln!(
                problems,
                "  {what}: {} says {x}, {} (run {}, {} workers) says {y}",
                first.system.label(),
                last.system.label(),
                last.run,
                last.workers
            );
        }
    };
    compare("rows read", a.rows_read, b.rows_read);
    compare("readings", a.readings, b.readings);
    compare("missing rows", a.missing, b.missing);
    compare("minute rows", a.views.minute, b.views.minute);
    compare("hour rows", a.views.hour, b.views.hour);
    compare("day rows", a.views.day, b.views.day);
    let (p, q) = (a.views.day_active_power, b.views.day_active_power);
    if (p - q).abs() > 1e-9 * p.abs().max(1.0) {
        let _ = writeln!(problems, "  Σ global_active_power (day view): {p} vs {q}");
    }
    if published_file {
        let known = [
            ("rows read", b.rows_read, uci::ROWS),
            ("missing rows", b.missing, uci::MISSING),
            ("readings", b.readings, uci::READINGS),
            ("minute rows", b.views.minute, uci::READINGS),
            ("hour rows", b.views.hour, uci::HOURS),
            ("day rows", b.views.day, uci::DAYS),
        ];
        for (what, got, want) in known {
            if got != want {
                let _ = writeln!(
                    problems,
                    "  {what}: {} says {got}, the UCI file has {want}",
                    last.system.label()
                );
            }
        }
        if (q - uci::ACTIVE_POWER_SUM).abs() > 1e-6 {
            let _ = writeln!(
                problems,
                "  Σ global_active_power: {} says {q}, the UCI file has {}",
                last.system.label(),
                uci::ACTIVE_POWER_SUM
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("results differ:\n{problems}")
    }
}

/// The figures `wattflow replay` prints (see `pipelines/src/cli.rs`).
#[derive(Debug, PartialEq)]
struct WattflowSummary {
    rows_read: u64,
    readings: u64,
    missing: u64,
    /// Rows each view holds: minute, hour, day.
    view_rows: [u64; 3],
}

impl WattflowSummary {
    fn parse(stdout: &str) -> Result<Self> {
        let number = |line: &str, prefix: &str| -> Option<u64> {
            line.trim()
                .strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let (mut rows_read, mut readings, mut missing) = (None, None, None);
        let mut view_rows = [None; 3];
        for line in stdout.lines() {
            rows_read = rows_read.or_else(|| number(line, "rows read"));
            readings = readings.or_else(|| number(line, "readings"));
            missing = missing.or_else(|| number(line, "missing"));
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.get(1) == Some(&"windows") {
                if let Some(i) = GRANULARITIES.iter().position(|g| Some(g) == words.first()) {
                    view_rows[i] = words
                        .iter()
                        .position(|w| *w == "holds")
                        .and_then(|p| words.get(p + 1)?.parse().ok());
                }
            }
        }
        match (rows_read, readings, missing, view_rows) {
            (Some(rows_read), Some(readings), Some(missing), [Some(m), Some(h), Some(d)]) => Ok(Self {
                rows_read,
                readings,
                missing,
                view_rows: [m, h, d],
            }),
            _ => bail!(
                "could not read the counts from wattflow's summary (has its format changed?):\n{stdout}"
            ),
        }
    }
}

/// The markdown report: the table, then what it was measured on.
fn render(
    args: &W1Args,
    machine: &Machine,
    versions: &Versions,
    input: &InputInfo,
    records: &[RunRecord],
    summary: &[Summary],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### W1 — history replay ({} UTC)\n",
        machine.started_utc
    );
    md.push_str(&report::markdown_table(summary));
    if let Some(r) = records.first() {
        let c = &r.counts;
        let _ = writeln!(
            md,
            "\nEvery system read {} rows, dropped {} missing, and wrote minute/hour/day views of \
             {} / {} / {} rows (checked in the Parquet files; Σ global_active_power of the day \
             view {:.3} for all).",
            thousands(c.rows_read),
            thousands(c.missing),
            thousands(c.views.minute),
            thousands(c.views.hour),
            thousands(c.views.day),
            c.views.day_active_power
        );
    }
    let _ = writeln!(
        md,
        "Medians of {} run(s) per row, the systems interleaved within each run (order rotated \
         from run to run); wall time of each system's process and its CPU (user + system \
         seconds) from `wait4`, its peak RSS (`VmHWM`) sampled from `/proc`.\n",
        args.runs
    );
    let _ = writeln!(
        md,
        "- machine: {} CPU(s) ({}), {:.1} GiB memory, {}; load average at start {}",
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib as f64 / 1024.0,
        machine.kernel,
        machine.load_average
    );
    let mut tools = format!(
        "wattflow {} (binary built {} UTC), {}",
        versions.wattflow, versions.wattflow_binary_modified_utc, machine.rustc
    );
    if let Some(py) = &versions.python {
        let _ = write!(tools, ", {py}");
    }
    for (p, v) in &versions.packages {
        let _ = write!(tools, ", {p} {v}");
    }
    let _ = writeln!(md, "- versions: {tools}");
    let _ = writeln!(
        md,
        "- input: {} ({} bytes unpacked)",
        input.source,
        thousands(input.bytes)
    );
    md
}

/// `2049280` → `2,049,280`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn versions(wattflow: &Path, machine: &Machine, venv: Option<&PythonEnv>) -> Versions {
    let modified = std::fs::metadata(wattflow)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or("unknown".into(), |d| {
            wattflow::time::format_iso(d.as_secs() as i64 * 1000)
        });
    let reported = crate::machine::output(
        wattflow.to_str().unwrap_or("wattflow"),
        &["--version"],
        Path::new("."),
    );
    Versions {
        wattflow: format!(
            "{} @ {}",
            reported.trim_start_matches("wattflow ").trim(),
            machine.wattflow_commit
        ),
        wattflow_binary: wattflow.display().to_string(),
        wattflow_binary_modified_utc: modified,
        python: venv.map(|v| v.python_version.clone()),
        packages: venv.map(|v| v.versions.clone()).unwrap_or_default(),
    }
}

/// The workspace this harness belongs to.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benchmarks/ sits in the workspace")
        .to_path_buf()
}

/// Cargo's target folder (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"))
}

/// A path as given, else (when relative) from the workspace root.
fn resolve(path: &Path, root: &Path) -> Option<PathBuf> {
    if path.exists() {
        return path.canonicalize().ok();
    }
    let from_root = root.join(path);
    (path.is_relative() && from_root.exists())
        .then(|| from_root.canonicalize().ok())
        .flatten()
}

/// The input as plain text: a `.gz` is unpacked once into `dir` and reused while the source's
/// size and modification time are unchanged (recorded in a `.source` stamp beside it).
pub(crate) fn unpack(source: &Path, dir: &Path) -> Result<PathBuf> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .context("input has no file name")?;
    let Some(stem) = name.strip_suffix(".gz") else {
        return Ok(source.to_path_buf());
    };
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let target = dir.join(stem);
    let stamp_path = dir.join(format!("{stem}.source"));
    let meta = std::fs::metadata(source)?;
    let modified = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stamp = format!("{}\n{}\n{}\n", source.display(), meta.len(), modified);
    if target.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(target);
    }
    eprintln!("unpacking {} into {}", source.display(), target.display());
    let partial = dir.join(format!("{stem}.partial"));
    let mut reader = flate2::read::MultiGzDecoder::new(BufReader::new(File::open(source)?));
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
    std::io::copy(&mut reader, &mut writer)
        .with_context(|| format!("unpacking {}", source.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&partial, &target)?;
    std::fs::write(&stamp_path, stamp)?;
    Ok(target)
}

/// The `wattflow` binary: `--wattflow`, else the release build, built when missing or asked.
pub(crate) fn locate_wattflow(
    wattflow: Option<&Path>,
    build: bool,
    root: &Path,
) -> Result<PathBuf> {
    if let Some(path) = wattflow {
        ensure!(
            path.is_file(),
            "--wattflow {} is not a file",
            path.display()
        );
        return Ok(path.canonicalize()?);
    }
    let path = target_dir(root).join("release").join("wattflow");
    if build || !path.is_file() {
        eprintln!(
            "building the release wattflow binary (cargo build --release -p wattflow-pipelines)"
        );
        peers::run_visible(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "-p",
                    "wattflow-pipelines",
                    "--bin",
                    "wattflow",
                ])
                .current_dir(root),
        )?;
    }
    ensure!(path.is_file(), "no wattflow binary at {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "replay finished in 6.32 s
  rows read           2075259   (328593 rows/s, 126.80 MiB)
  readings            2049280
  missing               25979
  rejected                  0   (/tmp/w1/wf/rejected.csv)
  minute windows     2049280   written this run; view holds 2049280 rows in 48 file(s), sealed through 2010-11-26T21:03:00
  hour   windows       34168   written this run; view holds 34168 rows in 5 file(s), sealed through 2010-11-26T22:00:00
  day    windows        1433   written this run; view holds 1433 rows in 5 file(s), sealed through 2010-11-27T00:00:00
";

    #[test]
    fn reads_wattflows_summary() {
        assert_eq!(
            WattflowSummary::parse(SUMMARY).unwrap(),
            WattflowSummary {
                rows_read: 2_075_259,
                readings: 2_049_280,
                missing: 25_979,
                view_rows: [2_049_280, 34_168, 1_433],
            }
        );
        assert!(WattflowSummary::parse("replay finished in 1 s\n").is_err());
    }

    fn record(system: System, minute: u64, power: f64) -> RunRecord {
        RunRecord {
            run: 1,
            position: 1,
            system,
            workers: 1,
            wall_s: 1.0,
            peak_rss_mib: 1.0,
            user_s: 1.0,
            sys_s: 0.0,
            counts: Counts {
                rows_read: 11,
                readings: 10,
                missing: 1,
                views: ViewCounts {
                    minute,
                    hour: 2,
                    day: 1,
                    day_samples: 10,
                    day_active_power: power,
                },
            },
        }
    }

    #[test]
    fn differing_systems_are_caught() {
        let same = [
            record(System::Wattflow, 10, 5.5),
            record(System::DuckDb, 10, 5.5),
        ];
        assert!(agree(&same, false).is_ok());
        let rows = [
            record(System::Wattflow, 10, 5.5),
            record(System::Polars, 9, 5.5),
        ];
        let text = format!("{:#}", agree(&rows, false).unwrap_err());
        assert!(
            text.contains("minute rows") && text.contains("Polars"),
            "{text}"
        );
        let totals = [
            record(System::Wattflow, 10, 5.5),
            record(System::DuckDb, 10, 5.6),
        ];
        assert!(agree(&totals, false).is_err());
        // The published file's figures are checked when it is the input.
        assert!(agree(&same, true).is_err());
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_433), "1,433");
        assert_eq!(thousands(2_049_280), "2,049,280");
    }

    #[test]
    fn reads_a_peers_report() {
        let r = PeerReport::parse(
            "noise\n{\"system\": \"duckdb\", \"version\": \"2.0.1\", \"rows_read\": 10, \
             \"readings\": 9, \"missing\": 1, \"minute\": 9, \"hour\": 2, \"day\": 1}\n",
        )
        .unwrap();
        assert_eq!((r.readings, r.minute, r.hour, r.day), (9, 9, 2, 1));
    }
}
