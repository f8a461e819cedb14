//! Turning raw runs into the summary table: medians, ranges and ratios to DuckDB.

use serde::Serialize;

use crate::peers::System;

/// One measured run of one system at one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// 1-based run number.
    pub run: usize,
    /// Position of this system within its round (the order rotates from run to run).
    pub position: usize,
    /// The system.
    pub system: System,
    /// Worker threads given to the system.
    pub workers: usize,
    /// Wall seconds of the child process.
    pub wall_s: f64,
    /// Peak RSS of the child process (its `VmHWM`, see `measure`), MiB.
    pub peak_rss_mib: f64,
    /// User CPU seconds of the child.
    pub user_s: f64,
    /// System CPU seconds of the child.
    pub sys_s: f64,
    /// What the system reported and what its views hold.
    pub counts: crate::w1::Counts,
}

/// The summary of the runs of one system at one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The system.
    pub system: System,
    /// Worker threads.
    pub workers: usize,
    /// Number of runs.
    pub runs: usize,
    /// Median wall seconds.
    pub wall_median_s: f64,
    /// Fastest run.
    pub wall_min_s: f64,
    /// Slowest run.
    pub wall_max_s: f64,
    /// Median peak RSS, MiB.
    pub peak_rss_median_mib: f64,
    /// Median CPU (user + system) seconds.
    pub cpu_median_s: f64,
    /// Median wall time over DuckDB's at the same worker count.
    pub wall_vs_duckdb: Option<f64>,
    /// Median peak RSS over DuckDB's at the same worker count.
    pub rss_vs_duckdb: Option<f64>,
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Summarises `records` per (system, workers), in the order of `systems` then `workers`.
pub fn summarise(records: &[RunRecord], systems: &[System], workers: &[usize]) -> Vec<Summary> {
    let mut rows = Vec::new();
    for &w in workers {
        let of = |s: System| -> Vec<&RunRecord> {
            records
                .iter()
                .filter(|r| r.system == s && r.workers == w)
                .collect()
        };
        let duck = of(System::DuckDb);
        let duck_wall = median(&duck.iter().map(|r| r.wall_s).collect::<Vec<_>>());
        let duck_rss = median(&duck.iter().map(|r| r.peak_rss_mib).collect::<Vec<_>>());
        for &s in systems {
            let runs = of(s);
            if runs.is_empty() {
                continue;
            }
            let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
            let wall = median(&walls);
            let rss = median(&runs.iter().map(|r| r.peak_rss_mib).collect::<Vec<_>>());
            let ratio = |x: f64, base: f64| (!duck.is_empty() && base > 0.0).then(|| x / base);
            rows.push(Summary {
                system: s,
                workers: w,
                runs: runs.len(),
                wall_median_s: wall,
                wall_min_s: walls.iter().copied().fold(f64::INFINITY, f64::min),
                wall_max_s: walls.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                peak_rss_median_mib: rss,
                cpu_median_s: median(&runs.iter().map(|r| r.user_s + r.sys_s).collect::<Vec<_>>()),
                wall_vs_duckdb: ratio(wall, duck_wall),
                rss_vs_duckdb: ratio(rss, duck_rss),
            });
        }
    }
    rows
}

/// The summary as a markdown table.
pub fn markdown_table(rows: &[Summary]) -> String {
    let mut t = String::from(
        "| system | workers | wall median (s) | wall min–max (s) | peak RSS median (MiB) \
         | CPU median (s) | wall ÷ DuckDB | peak RSS ÷ DuckDB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ratio = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.2}"));
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {:.2} | {:.2}–{:.2} | {:.0} | {:.2} | {} | {} |\n",
            r.system.label(),
            r.workers,
            r.wall_median_s,
            r.wall_min_s,
            r.wall_max_s,
            r.peak_rss_median_mib,
            r.cpu_median_s,
            ratio(r.wall_vs_duckdb),
            ratio(r.rss_vs_duckdb),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
