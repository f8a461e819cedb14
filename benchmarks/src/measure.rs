//! Measuring one child process: wall time, peak resident memory and CPU time.
//!
//! The child is started with [`std::process::Command`] and reaped with `wait4(2)` on its own pid,
//! which hands back that child's `rusage` (CPU times). Peak memory is the child's own `VmHWM`,
//! sampled from `/proc/<pid>/status` while it runs: `ru_maxrss` would also count the harness's
//! resident set at the spawn (Linux keeps the pre-`exec` image's peak), which is large when the
//! harness itself holds data, and `getrusage(RUSAGE_CHILDREN)` would give the maximum over every
//! child the harness ever reaped.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What one child process cost and said.
///
/// Peak memory is the child's `VmHWM`, sampled every 50 ms from `/proc` while it runs (growth in
/// its last 50 ms can be missed), or `ru_maxrss` when no sample could be read.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From just before `spawn` to the return of `wait4`.
    pub wall: Duration,
    /// Peak resident set size of the child, in KiB (Linux reports `ru_maxrss` in kilobytes).
    pub max_rss_kib: u64,
    /// User CPU time of the child.
    pub user: Duration,
    /// System CPU time of the child.
    pub sys: Duration,
    /// Everything the child wrote to stdout (its stderr is shown only when it fails).
    pub stdout: String,
}

impl Measured {
    /// Peak resident set size in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured, and measures it.
/// Fails, with the tail of its stderr, when the child does not exit with status 0.
pub fn run(cmd: &mut Command) -> Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id() as libc::pid_t;
    // Drain both pipes while the child runs so that it never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    // The child's own high-water mark, sampled: `ru_maxrss` also counts the harness's resident
    // set at the moment of the spawn (Linux carries the pre-exec image's peak across `exec`).
    let hwm = Arc::new(AtomicU64::new(0));
    let sampler = {
        let hwm = Arc::clone(&hwm);
        thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while let Ok(status) = std::fs::read_to_string(&path) {
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    hwm.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child; both pointers are valid for writes.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if reaped == -1 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        bail!("wait4 on {what}: {err}");
    }
    let wall = start.elapsed();
    sampler.join().expect("rss sampler panicked");
    // The child is reaped: `Child` must not wait on it again, and dropping it does not.
    drop(child);
    let stdout = stdout.join().expect("stdout reader panicked");
    let stderr = stderr.join().expect("stderr reader panicked");

    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        bail!("{what} {how}; end of its stderr:\n{}", tail(&stderr, 40));
    }
    Ok(Measured {
        wall,
        max_rss_kib: match hwm.load(Ordering::Relaxed) {
            0 => u64::try_from(usage.ru_maxrss).unwrap_or(0),
            sampled => sampled,
        },
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
        stdout,
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child_and_captures_its_output() {
        let m = run(Command::new("sh").args(["-c", "echo hello; echo oops >&2"])).unwrap();
        assert_eq!(m.stdout.trim(), "hello");
        assert!(m.max_rss_kib > 0);
    }

    #[test]
    fn peak_rss_is_the_childs_own() {
        // A child that touches ~64 MiB reports at least that, and the next, small one does not
        // inherit the figure (as RUSAGE_CHILDREN would).
        let big = run(Command::new("sh").args([
            "-c",
            "head -c 67108864 /dev/zero | tr '\\0' a | sort >/dev/null",
        ]));
        let small = run(&mut Command::new("true")).unwrap();
        if let Ok(big) = big {
            assert!(small.max_rss_kib < big.max_rss_kib);
        }
        assert!(small.max_rss_kib < 32 * 1024);
    }

    #[test]
    fn a_failing_child_is_an_error_with_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo broken >&2; exit 3"])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("status 3") && text.contains("broken"),
            "{text}"
        );
    }
}
