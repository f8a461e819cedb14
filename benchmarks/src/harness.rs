//! The flags every workload takes (`--out`, `--work`, `--wattflow`, `--build`) and what they
//! resolve to.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::w1::{locate_wattflow, target_dir};

/// Where a workload writes, works, and which `wattflow` it runs.
#[derive(Debug, Args)]
pub struct Harness {
    /// Where the table (`<workload>.md`) and the raw runs (`<workload>.json`) go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Work folder: unpacked input, the peers' Python venv, the views written by the runs.
    /// Default: `<workspace>/target/wattflow-bench`.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// The `wattflow` binary. Default: the workspace's release build, built when missing.
    #[arg(long)]
    pub wattflow: Option<PathBuf>,
    /// Run `cargo build --release -p wattflow-pipelines` first even when the binary exists,
    /// so that the figures are those of the current source.
    #[arg(long)]
    pub build: bool,
}

impl Harness {
    /// The work folder, created.
    pub fn work_dir(&self, root: &Path) -> Result<PathBuf> {
        let work = self
            .work
            .clone()
            .unwrap_or_else(|| target_dir(root).join("wattflow-bench"));
        std::fs::create_dir_all(&work).with_context(|| work.display().to_string())?;
        Ok(work)
    }

    /// The `wattflow` binary (see [`locate_wattflow`]).
    pub fn binary(&self, root: &Path) -> Result<PathBuf> {
        locate_wattflow(self.wattflow.as_deref(), self.build, root)
    }
}
