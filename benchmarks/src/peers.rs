//! The peers: DuckDB and Polars through their Python packages, in a virtual environment that
//! the harness creates under its work folder and fills from `benchmarks/peers/requirements.txt`
//! (pinned versions) whenever a pinned package is missing or at another version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// `wattflow replay`, the release binary.
    Wattflow,
    /// `peers/duckdb_w1.py`.
    DuckDb,
    /// `peers/polars_w1.py`.
    Polars,
}

impl System {
    /// Every peer, in report order.
    pub const PEERS: [System; 2] = [System::DuckDb, System::Polars];

    /// The lower-case name used on the command line, in file names and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Wattflow => "wattflow",
            System::DuckDb => "duckdb",
            System::Polars => "polars",
        }
    }

    /// The name as printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            System::Wattflow => "wattflow",
            System::DuckDb => "DuckDB",
            System::Polars => "Polars",
        }
    }

    /// Parses a peer name given to `--peers`.
    pub fn parse_peer(text: &str) -> Result<System, String> {
        System::PEERS
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| format!("unknown peer {text:?} (known: duckdb, polars)"))
    }
}

/// What a peer script prints on its last line of stdout (one JSON object; other fields, such
/// as `system` and `version`, are informative).
#[derive(Debug, Clone, Deserialize)]
pub struct PeerReport {
    /// Data rows in the input, missing ones included.
    pub rows_read: u64,
    /// Rows with every measure present.
    pub readings: u64,
    /// Rows dropped because a measure was missing.
    pub missing: u64,
    /// Rows written to the minute view.
    pub minute: u64,
    /// Rows written to the hour view.
    pub hour: u64,
    /// Rows written to the day view.
    pub day: u64,
}

impl PeerReport {
    /// Parses the last non-empty line of a peer's stdout.
    pub fn parse(stdout: &str) -> Result<Self> {
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .context("the peer printed nothing on stdout")?;
        serde_json::from_str(line).with_context(|| format!("the peer's report {line:?}"))
    }
}

/// The folder of the peer scripts and of `requirements.txt`.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The W1 script of a peer.
pub fn w1_script(peer: System) -> PathBuf {
    scripts_dir().join(format!("{}_w1.py", peer.name()))
}

/// A ready virtual environment.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// `<venv>/bin/python`.
    pub python: PathBuf,
    /// `python --version` of the venv.
    pub python_version: String,
    /// Installed versions of the pinned packages.
    pub versions: BTreeMap<String, String>,
}

/// Makes sure `<work>/venv` exists and holds the pinned W1 peer packages
/// (`peers/requirements.txt`); see [`ensure_venv_for`].
pub fn ensure_venv(work: &Path, base_python: &str) -> Result<PythonEnv> {
    ensure_venv_for(work, base_python, "requirements.txt", "venv")
}

/// Makes sure `<work>/<venv_name>` exists and holds the packages pinned in
/// `peers/<requirements>`; creates it with `<base_python> -m venv` and installs with pip when
/// needed (pip's output goes to stderr).
pub fn ensure_venv_for(
    work: &Path,
    base_python: &str,
    requirements: &str,
    venv_name: &str,
) -> Result<PythonEnv> {
    let requirements = scripts_dir().join(requirements);
    let pins = read_pins(&requirements)?;
    let venv = work.join(venv_name);
    let python = venv.join("bin").join("python");
    if !python.exists() {
        eprintln!(
            "creating a Python virtual environment in {}",
            venv.display()
        );
        run_visible(Command::new(base_python).arg("-m").arg("venv").arg(&venv))
            .with_context(|| format!("`{base_python} -m venv` (is python3-venv installed?)"))?;
    }
    let mut versions = installed(&python, pins.keys())?;
    if pins.iter().any(|(p, v)| versions.get(p) != Some(v)) {
        eprintln!(
            "installing the peers into {}: {}",
            venv.display(),
            pins.iter()
                .map(|(p, v)| format!("{p}=={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        run_visible(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
        )
        .context("pip install of the peers")?;
        versions = installed(&python, pins.keys())?;
        for (package, pinned) in &pins {
            if versions.get(package) != Some(pinned) {
                bail!(
                    "{package} is at {:?} after pip install, not the pinned {pinned}",
                    versions.get(package)
                );
            }
        }
    }
    let python_version =
        crate::machine::output(python.to_str().unwrap_or("python"), &["--version"], work);
    Ok(PythonEnv {
        python,
        python_version,
        versions,
    })
}

/// `name==version` lines of a requirements file.
fn read_pins(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut pins = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, version) = line
            .split_once("==")
            .with_context(|| format!("{}: {line:?} is not pinned with ==", path.display()))?;
        pins.insert(name.trim().to_lowercase(), version.trim().to_string());
    }
    Ok(pins)
}

/// Versions of `packages` installed in the venv of `python` (absent ones are left out).
fn installed<'a>(
    python: &Path,
    packages: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, String>> {
    let packages: Vec<&String> = packages.collect();
    let script = "import sys, importlib.metadata as m\n\
                  for p in sys.argv[1:]:\n    \
                  try: print(p, m.version(p))\n    \
                  except m.PackageNotFoundError: pass\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(&packages)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} could not list its packages: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, v)| (p.to_string(), v.trim().to_string()))
        .collect())
}

/// Runs a set-up command with its output on our stderr, failing on a non-zero status.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
