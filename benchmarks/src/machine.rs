//! What the numbers were measured on: CPUs, memory, load, and the versions of the tools.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine and tool versions, reported with every table.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// When the harness started, UTC, `YYYY-MM-DDTHH:MM:SS`.
    pub started_utc: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    pub memory_mib: u64,
    /// `/proc/loadavg` at start: a busy machine makes every figure noisier.
    pub load_average: String,
    /// `uname -sr`.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `git rev-parse --short HEAD` of the workspace, with `-dirty` when tracked files differ.
    pub wattflow_commit: String,
}

impl Machine {
    /// Looks everything up; what cannot be found reads `unknown`.
    pub fn probe(workspace: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let commit = output("git", &["rev-parse", "--short", "HEAD"], workspace);
        // Read-only: `--no-optional-locks` keeps git from refreshing the index.
        let dirty = Command::new("git")
            .args(["--no-optional-locks", "diff", "--quiet", "HEAD", "--"])
            .current_dir(workspace)
            .status()
            .map(|s| s.code() == Some(1))
            .unwrap_or(false);
        Machine {
            started_utc: now_utc(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            memory_mib: memory_kib / 1024,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into()),
            kernel: output("uname", &["-sr"], workspace),
            rustc: output("rustc", &["--version"], workspace),
            wattflow_commit: if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            },
        }
    }
}

/// The first line of a command's stdout, or `unknown`.
pub fn output(program: &str, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The current time, UTC, as `YYYY-MM-DDTHH:MM:SS`.
pub fn now_utc() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 * 1000);
    wattflow::time::format_iso(ms)
}
