//! PNG charts of the views ([`plotters`]): the original project's plots (power factor,
//! voltage, sub-metering, active power over time) and the typical day, each with a title,
//! units, a time axis and a legend.
//!
//! Text needs a TrueType font: `WATTFLOW_FONT` if set, else DejaVu Sans or Liberation Sans
//! where Debian and most distributions install them, else what `fc-match sans-serif` names.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use wattflow::model::{Granularity, Measure};
use wattflow::serve::insights::{for_each_row, Insights};
use wattflow::serve::{ViewRow, Views};
use wattflow::time::Calendar;

/// What a chart shows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Average power factor per window.
    PowerFactor,
    /// Voltage: average, minimum and maximum per window.
    Voltage,
    /// Energy per window of the three sub-meters and of the rest (unmetered).
    SubMetering,
    /// Active power: average and maximum per window.
    ActivePower,
    /// The typical day: mean power per hour of the day, all days, weekdays, weekends.
    DailyProfile,
}

impl What {
    fn title(self) -> &'static str {
        match self {
            What::PowerFactor => "Power factor",
            What::Voltage => "Voltage",
            What::SubMetering => "Energy by sub-meter",
            What::ActivePower => "Active power",
            What::DailyProfile => "Typical day",
        }
    }
}

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

fn font_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WATTFLOW_FONT") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = FONT_PATHS.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(p.to_owned());
    }
    let out = std::process::Command::new("fc-match")
        .args(["-f", "%{file}", "sans-serif"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// Registers the charts' font once.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = font_path().ok_or(
            "no TrueType font found: install fonts-dejavu-core or set WATTFLOW_FONT to a .ttf file",
        )?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for style in [FontStyle::Normal, FontStyle::Bold] {
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| format!("{}: not a TrueType font", path.display()))?;
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One line of a chart.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(i64, f64)>,
}

fn series_of(
    what: What,
    rows: &[ViewRow],
    granularity: Granularity,
) -> (Vec<Series>, &'static str) {
    let line = |name: &str, color: RGBColor, f: &dyn Fn(&ViewRow) -> Option<f64>| Series {
        name: name.to_owned(),
        color,
        points: rows
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.window_start, v)))
            .collect(),
    };
    let m = |r: &ViewRow, m: Measure| *r.measure(m);
    let per = granularity.name();
    match what {
        What::PowerFactor => (
            vec![line("power factor (average)", BLUE, &|r| {
                r.power_factor_avg
            })],
            "power factor",
        ),
        What::Voltage => (
            vec![
                line("maximum", RED, &|r| Some(m(r, Measure::Voltage).max)),
                line("average", BLUE, &|r| Some(m(r, Measure::Voltage).avg)),
                line("minimum", GREEN, &|r| Some(m(r, Measure::Voltage).min)),
            ],
            "V",
        ),
        What::SubMetering => (
            vec![
                line("kitchen (sub-meter 1)", RGBColor(230, 120, 20), &|r| {
                    Some(m(r, Measure::SubMetering1).sum)
                }),
                line("laundry (sub-meter 2)", RGBColor(40, 150, 60), &|r| {
                    Some(m(r, Measure::SubMetering2).sum)
                }),
                line(
                    "water heater + AC (sub-meter 3)",
                    RGBColor(30, 90, 200),
                    &|r| Some(m(r, Measure::SubMetering3).sum),
                ),
                line("other devices (unmetered)", RGBColor(120, 120, 120), &|r| {
                    Some(r.unmetered_wh)
                }),
            ],
            match per {
                "minute" => "Wh per minute",
                "hour" => "Wh per hour",
                _ => "Wh per day",
            },
        ),
        What::ActivePower => (
            vec![
                line("maximum", RED, &|r| {
                    Some(m(r, Measure::GlobalActivePower).max)
                }),
                line("average", BLUE, &|r| {
                    Some(m(r, Measure::GlobalActivePower).avg)
                }),
            ],
            "kW",
        ),
        What::DailyProfile => (Vec::new(), "W"),
    }
}

/// A label for an instant on a time axis spanning `span_ms`.
fn time_label(calendar: &Calendar, t: i64, span_ms: i64) -> String {
    let text = calendar.format(t);
    if span_ms <= 2 * 86_400_000 {
        text[11..16].to_owned()
    } else if span_ms <= 62 * 86_400_000 {
        format!("{} {}", &text[5..10], &text[11..16])
    } else {
        text[..10].to_owned()
    }
}

/// The granularity a range is drawn at when none is given: minutes up to two days, hours up
/// to three months, days beyond.
pub fn auto_granularity(from_ms: i64, to_ms: i64) -> Granularity {
    match to_ms - from_ms {
        s if s <= 2 * 86_400_000 => Granularity::Minute,
        s if s <= 92 * 86_400_000 => Granularity::Hour,
        _ => Granularity::Day,
    }
}

/// Draws a chart of `meter` over `[from_ms, to_ms)` into a PNG file of `width` × `height`.
#[allow(clippy::too_many_arguments)]
pub fn plot_png(
    views: &Views,
    meter: &str,
    what: What,
    from_ms: i64,
    to_ms: i64,
    granularity: Granularity,
    insights: Option<&Insights>,
    out: &Path,
    (width, height): (u32, u32),
) -> Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let title = format!("{} of {meter}", what.title());
    if what == What::DailyProfile {
        let i = insights.ok_or_else(|| anyhow!("the daily profile needs the insights"))?;
        draw_profile(&root, &title, i)?;
    } else {
        let mut rows = Vec::new();
        for_each_row(views, meter, granularity, from_ms, to_ms, |r| {
            rows.push(r.clone())
        })?;
        if rows.is_empty() {
            bail!("no {granularity} rows of {meter} in the range");
        }
        let (series, unit) = series_of(what, &rows, granularity);
        draw_lines(
            &root,
            views.calendar(),
            &title,
            unit,
            granularity,
            from_ms,
            to_ms,
            &series,
        )?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    calendar: &Calendar,
    title: &str,
    unit: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        bail!("nothing to draw: the rows have no {unit} values");
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let (x0, x1) = (
        series
            .iter()
            .filter_map(|s| s.points.first())
            .map(|p| p.0)
            .min()
            .unwrap_or(from_ms),
        series
            .iter()
            .filter_map(|s| s.points.last())
            .map(|p| p.0)
            .max()
            .unwrap_or(to_ms),
    );
    let x1 = x1.max(x0 + granularity.len_ms());
    let span = x1 - x0;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{title} ({granularity} windows)"),
            ("sans-serif", 26),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(|e| anyhow!("{e}"))?;
    let label = |t: &i64| time_label(calendar, *t, span);
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&label)
        .x_desc(if calendar.is_zoned() {
            format!("time ({})", calendar.name())
        } else {
            "local time".to_owned()
        })
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The legend box of a chart's labelled series.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(position)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

fn draw_profile<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    i: &Insights,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let lines = [
        ("all days", BLUE, &i.typical_day),
        ("weekdays", RGBColor(230, 120, 20), &i.typical_weekday),
        ("weekends", RGBColor(40, 150, 60), &i.typical_weekend),
    ];
    let hi = lines
        .iter()
        .flat_map(|l| l.2.iter().flatten())
        .fold(0.0f64, |a, &v| a.max(v));
    if hi <= 0.0 {
        bail!("no hourly data in the range");
    }
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{title}, {} to {}", i.from, i.to),
            ("sans-serif", 26),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..24f64, 0f64..hi * 1.08)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|h| format!("{:02}:00", *h as u32))
        .x_desc("hour of the day (local time)")
        .y_desc("mean power, W")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (name, color, values) in lines {
        // Each hour drawn as a step across it.
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(h, v)| v.map(|v| [(h as f64, v), (h as f64 + 1.0, v)]))
            .flatten()
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}
