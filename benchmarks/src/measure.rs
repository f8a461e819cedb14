//! Measuring one child process and what it starts: wall time, peak resident memory, CPU time.
//!
//! The child is started with [`std::process::Command`] in a process group of its own and reaped
//! with `wait4(2)` on its own pid, which hands back that child's `rusage` (its CPU times and those
//! of the children it reaped). A sampler walks the child's process tree every 50 ms through
//! `/proc/<pid>/task/<tid>/children` and notes each process's CPU ticks and resident set:
//! - **peak memory** = the larger of the child's own `VmHWM` (growth in its last 50 ms can be
//!   missed) and the largest sampled sum of the tree's `VmRSS` (a peer such as PySpark runs its
//!   engine in a JVM that the Python driver starts). `ru_maxrss` would also count the harness's
//!   resident set at the spawn (Linux keeps the pre-`exec` image's peak), and
//!   `getrusage(RUSAGE_CHILDREN)` would give the maximum over every child the harness ever reaped;
//! - **CPU** ([`Measured::cpu`]) = the larger of the `rusage` figure and the sum of the last
//!   sampled ticks of every process of the tree (which counts grandchildren their parent never
//!   reaped, up to their last sample).
//!
//! Whatever of the group is left when the child exits is killed. With a [`Deadline`]
//! ([`run_until`]) the child gets `SIGTERM` once it passes (peers then print what they did so
//! far) and its group `SIGKILL` 30 s later.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What one child process (and its tree) cost and said.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From just before `spawn` to the return of `wait4`.
    pub wall: Duration,
    /// Peak resident set size of the child's tree, in KiB (see the module docs).
    pub max_rss_kib: u64,
    /// User CPU time of the child (and the children it reaped).
    pub user: Duration,
    /// System CPU time of the child (and the children it reaped).
    pub sys: Duration,
    /// CPU time of the whole tree from the samples.
    pub tree_cpu: Duration,
    /// Whether the deadline passed and the child was told to stop.
    pub stopped: bool,
    /// Everything the child wrote to stdout (its stderr is shown only when it fails).
    pub stdout: String,
}

impl Measured {
    /// Peak resident set size in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }

    /// CPU time of the child's tree: the larger of `rusage` and the samples.
    pub fn cpu(&self) -> Duration {
        (self.user + self.sys).max(self.tree_cpu)
    }
}

/// When a child is told to stop; unset (the default) means never. It can be set or moved while
/// the child runs.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    /// A deadline `after` from now.
    pub fn after(after: Duration) -> Deadline {
        let d = Deadline::default();
        d.set(Instant::now() + after);
        d
    }

    /// Sets the deadline to `at`.
    pub fn set(&self, at: Instant) {
        *self.0.lock().expect("deadline") = Some(at);
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().expect("deadline")
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured, and measures it.
/// Fails, with the tail of its stderr, when the child does not exit with status 0.
pub fn run(cmd: &mut Command) -> Result<Measured> {
    run_until(cmd, Deadline::default())
}

/// [`run`], telling the child to stop (`SIGTERM`) once `deadline` has passed.
pub fn run_until(cmd: &mut Command, deadline: Deadline) -> Result<Measured> {
    let (measured, failure) = run_to_exit(cmd, deadline)?;
    match failure {
        Some(failure) => bail!("{failure}"),
        None => Ok(measured),
    }
}

/// [`run_until`] for a child that may fail: its measurements either way, and, when it did not
/// exit with status 0, how it ended with the tail of its stderr.
pub fn run_to_exit(cmd: &mut Command, deadline: Deadline) -> Result<(Measured, Option<String>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id() as libc::pid_t;
    // Drain both pipes while the child runs so that it never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let exited = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let tree = Arc::new(Mutex::new(TreeSamples::default()));
    let sampler = {
        let (exited, stopped, tree) =
            (Arc::clone(&exited), Arc::clone(&stopped), Arc::clone(&tree));
        thread::spawn(move || {
            let mut killed = false;
            while !exited.load(Ordering::Relaxed) {
                tree.lock().expect("tree samples").sample(pid);
                if let Some(deadline) = deadline.get() {
                    let now = Instant::now();
                    if now >= deadline && !stopped.swap(true, Ordering::Relaxed) {
                        // SAFETY: signalling a pid we spawned and have not reaped yet.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                    if now >= deadline + Duration::from_secs(30) && !killed {
                        killed = true;
                        // SAFETY: as above, the whole process group of the child.
                        unsafe { libc::kill(-pid, libc::SIGKILL) };
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut status: libc::c_int = 0;
    // SAFETY: plain C struct, filled in by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
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
    exited.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler panicked");
    // Nothing the child started outlives it (an orphaned JVM would skew the next run).
    // SAFETY: signalling the process group the child led; it may already be empty.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    drop(child);
    let stdout = stdout.join().expect("stdout reader panicked");
    let stderr = stderr.join().expect("stderr reader panicked");

    let failure = (!libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0).then(|| {
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        format!("{what} {how}; end of its stderr:\n{}", tail(&stderr, 40))
    });
    let tree = tree.lock().expect("tree samples");
    let sampled = tree.own_hwm_kib.max(tree.peak_rss_kib);
    let measured = Measured {
        wall,
        max_rss_kib: match sampled {
            0 => u64::try_from(usage.ru_maxrss).unwrap_or(0),
            sampled => sampled,
        },
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
        tree_cpu: tree.cpu(),
        stopped: stopped.load(Ordering::Relaxed),
        stdout,
    };
    Ok((measured, failure))
}

/// What the sampler saw of a process tree.
#[derive(Debug, Default)]
struct TreeSamples {
    /// The root's own `VmHWM`, KiB.
    own_hwm_kib: u64,
    /// Largest sum of the tree's `VmRSS`, KiB.
    peak_rss_kib: u64,
    /// Last CPU ticks (user + system) seen per process.
    ticks: HashMap<libc::pid_t, u64>,
}

impl TreeSamples {
    fn sample(&mut self, root: libc::pid_t) {
        let mut rss = 0;
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            };
            rss += field("VmRSS:").unwrap_or(0);
            if pid == root {
                self.own_hwm_kib = self.own_hwm_kib.max(field("VmHWM:").unwrap_or(0));
            }
            if let Some(ticks) = cpu_ticks(pid) {
                self.ticks.insert(pid, ticks);
            }
            stack.extend(children(pid));
        }
        self.peak_rss_kib = self.peak_rss_kib.max(rss);
    }

    fn cpu(&self) -> Duration {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(self.ticks.values().sum::<u64>() as f64 / hz)
    }
}

/// User + system ticks of a process, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// Child pids of every thread of `pid`.
fn children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    out
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
    fn grandchildren_count_and_do_not_outlive_the_child() {
        // The shell starts a busy grandchild in the background and exits without waiting: its
        // CPU counts (sampled), and the group kill stops it.
        let m = run(Command::new("sh").args(["-c", "(while :; do :; done) & sleep 1; echo $!"]))
            .unwrap();
        assert!(m.tree_cpu >= Duration::from_millis(500), "{m:?}");
        assert!(m.cpu() >= m.tree_cpu);
        let orphan: libc::pid_t = m.stdout.trim().parse().unwrap();
        thread::sleep(Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z"),
            "still running: {state}"
        );
    }

    #[test]
    fn a_deadline_stops_the_child_with_sigterm() {
        let started = Instant::now();
        let m = run_until(
            Command::new("sh").args(["-c", "trap 'echo stopped; exit 0' TERM; sleep 30 & wait"]),
            Deadline::after(Duration::from_millis(300)),
        )
        .unwrap();
        assert!(m.stopped);
        assert_eq!(m.stdout.trim(), "stopped");
        assert!(started.elapsed() < Duration::from_secs(10));
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
