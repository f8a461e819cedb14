//! `wattflow report`: the insights of a meter over a range, as text, Markdown or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use wattflow::model::Granularity;
use wattflow::serve::insights::{insights, Insights};
use wattflow::serve::{choose_meter, parse_time, MeterChoiceError, Views};

use super::serve::{load_tariff, ViewsArgs};

/// Output formats of `report`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Plain text for a terminal.
    Text,
    /// Markdown tables.
    Markdown,
    /// The insights as JSON (the API's `/api/v1/insights` answer).
    Json,
}

/// Arguments of `wattflow report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The views.
    #[command(flatten)]
    pub views: ViewsArgs,
    /// The meter and the range.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Tariff (TOML; default: an HP/HC contract, see the docs of `Tariff`).
    #[arg(long, value_name = "FILE.toml")]
    pub tariff: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

/// A meter and a range of it: the arguments of `report` and `plot`.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// The meter (default: the only one in the views).
    #[arg(long)]
    pub meter: Option<String>,
    /// First day or instant (default: 28 days before `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, exclusive (default: the end of the day of the newest reading).
    #[arg(long)]
    pub to: Option<String>,
}

impl RangeArgs {
    /// The meter and `[from, to)` (by default the 28 days up to the end of the day of the
    /// meter's newest reading).
    pub(crate) fn resolve(&self, views: &Views) -> Result<(String, i64, i64)> {
        let meter = pick_meter(views, self.meter.as_deref())?;
        let (from, to) = range(views, &meter, self.from.as_deref(), self.to.as_deref(), 28)?;
        Ok((meter, from, to))
    }
}

/// The meter a command names, or the only one in the views ([`choose_meter`]).
fn pick_meter(views: &Views, meter: Option<&str>) -> Result<String> {
    let meters: Vec<String> = views.meters()?.into_iter().collect();
    choose_meter(&meters, String::as_str, meter)
        .cloned()
        .map_err(|e| match e {
            MeterChoiceError::Unknown(_) => anyhow::anyhow!("{e}: the views hold {meters:?}"),
            MeterChoiceError::Ambiguous(_) => anyhow::anyhow!("{e}: give --meter"),
            other => anyhow::anyhow!(other),
        })
}

/// `[from, to)` from the flags: by default the 28 days up to the end of the newest reading's day.
fn range(
    views: &Views,
    meter: &str,
    from: Option<&str>,
    to: Option<&str>,
    default_days: i64,
) -> Result<(i64, i64)> {
    let cal = views.calendar();
    let parse = |t: &str| parse_time(t, cal).map_err(|e| anyhow::anyhow!(e));
    let to = match to {
        Some(t) => parse(t)?,
        None => {
            let newest = views
                .extent(meter)?
                .ok_or_else(|| anyhow::anyhow!("no data for meter {meter:?}"))?
                .newest_reading_ms;
            cal.window(Granularity::Day, newest.saturating_sub(1)).1
        }
    };
    let from = match from {
        Some(f) => parse(f)?,
        None => to.saturating_sub(default_days * 86_400_000),
    };
    if from >= to {
        bail!("--from must be before --to");
    }
    Ok((from, to))
}

pub(crate) fn report(args: ReportArgs) -> Result<()> {
    let views = args.views.open()?;
    let prices = load_tariff(args.tariff.as_deref())?;
    let (meter, from, to) = args.range.resolve(&views)?;
    let found = insights(&views, &meter, from, to, &prices)?;
    let text = match args.format {
        ReportFormat::Json => serde_json::to_string_pretty(&found)? + "\n",
        ReportFormat::Text => render(&found, false),
        ReportFormat::Markdown => render(&found, true),
    };
    print!("{text}");
    Ok(())
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

/// The insights as text or Markdown.
pub fn render(i: &Insights, markdown: bool) -> String {
    let mut out = String::new();
    let h = |out: &mut String, title: &str| {
        if markdown {
            let _ = writeln!(out, "\n## {title}\n");
        } else {
            let _ = writeln!(out, "\n{title}\n{}", "-".repeat(title.len()));
        }
    };
    let table = |out: &mut String, header: &[&str], rows: Vec<Vec<String>>| {
        if markdown {
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
            for r in rows {
                let _ = writeln!(out, "| {} |", r.join(" | "));
            }
        } else {
            let mut widths: Vec<usize> = header.iter().map(|c| c.len()).collect();
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(
                out,
                "{}",
                line(header.iter().map(|s| s.to_string()).collect())
            );
            for r in rows {
                let _ = writeln!(out, "{}", line(r));
            }
        }
    };
    let title = format!("Energy report for {}: {} to {}", i.meter, i.from, i.to);
    if markdown {
        let _ = writeln!(out, "# {title}");
    } else {
        let _ = writeln!(out, "{title}\n{}", "=".repeat(title.len()));
    }
    let _ = writeln!(
        out,
        "\n{:.1} kWh over {} days with data.",
        i.total_kwh, i.days_with_data
    );
    h(&mut out, "Where the energy goes");
    table(
        &mut out,
        &["part", "kWh", "share"],
        i.shares
            .iter()
            .map(|s| {
                vec![
                    s.name.replace('_', " "),
                    format!("{:.1}", s.kwh),
                    pct(s.share),
                ]
            })
            .collect(),
    );
    h(&mut out, "Standby baseload");
    match (
        i.baseload_w,
        i.baseload_kwh_per_year,
        i.baseload_cost_per_year,
    ) {
        (Some(w), Some(k), Some(c)) => {
            let _ = writeln!(
                out,
                "{w:.0} W always on (10th percentile of 00:00-06:00 minute power): {k:.0} kWh a year, {c:.0} {} a year.",
                i.cost.currency
            );
        }
        _ => {
            let _ = writeln!(out, "No night-time minutes in the range.");
        }
    }
    h(&mut out, "Cost and the peak period");
    let c = &i.cost;
    let _ = writeln!(
        out,
        "Energy {:.2} {cur}, standing charges {:.2} {cur}; {} of the energy in the peak period.",
        c.energy,
        c.standing,
        pct(c.peak_share),
        cur = c.currency
    );
    table(
        &mut out,
        &["period", "kWh", "cost"],
        c.by_period
            .iter()
            .map(|(n, (k, v))| vec![n.clone(), format!("{k:.1}"), format!("{v:.2}")])
            .collect(),
    );
    let _ = writeln!(
        out,
        "\nMoving the laundry and water-heater energy out of the peak ({:.1} kWh) would save {:.2} {cur} a month, {:.2} {cur} a year.",
        c.shiftable_peak_kwh,
        c.shift_saving_per_month,
        c.shift_saving_per_year,
        cur = c.currency
    );
    let hours: Vec<String> = i.peak_hours.iter().map(|h| format!("{h:02}:00")).collect();
    let _ = writeln!(out, "Peak hours of the typical day: {}.", hours.join(", "));
    h(&mut out, "Typical day (mean W per hour)");
    table(
        &mut out,
        &["hour", "all days", "weekdays", "weekends"],
        (0..24)
            .map(|hour| {
                let f = |v: &Vec<Option<f64>>| v[hour].map_or("-".into(), |w| format!("{w:.0}"));
                vec![
                    format!("{hour:02}:00"),
                    f(&i.typical_day),
                    f(&i.typical_weekday),
                    f(&i.typical_weekend),
                ]
            })
            .collect(),
    );
    h(&mut out, "Unusual days");
    if i.unusual_days.is_empty() {
        let _ = writeln!(
            out,
            "None: every day was close to the typical for its weekday."
        );
    } else {
        table(
            &mut out,
            &["day", "kWh", "typical kWh", "deviations"],
            i.unusual_days
                .iter()
                .map(|d| {
                    vec![
                        d.date.clone(),
                        format!("{:.1}", d.kwh),
                        format!("{:.1}", d.typical_kwh),
                        format!("{:+.1}", d.deviations),
                    ]
                })
                .collect(),
        );
    }
    h(&mut out, "Against other periods");
    table(
        &mut out,
        &["against", "from", "kWh", "change"],
        i.comparisons
            .iter()
            .map(|c| {
                vec![
                    c.against.replace('_', " "),
                    c.from.clone(),
                    c.kwh.map_or("no data".into(), |k| format!("{k:.1}")),
                    c.change
                        .map_or("-".into(), |v| format!("{:+.1} %", v * 100.0)),
                ]
            })
            .collect(),
    );
    out
}
