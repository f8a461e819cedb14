//! `wattflow plot`: a PNG chart of the views.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wattflow::model::Granularity;
use wattflow::serve::insights::insights;

use super::report::RangeArgs;
use super::serve::{load_tariff, ViewsArgs};
use crate::plot::{auto_granularity, plot_png, What};

/// Arguments of `wattflow plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The views.
    #[command(flatten)]
    pub views: ViewsArgs,
    /// What to draw.
    #[arg(long, value_enum)]
    pub what: What,
    /// The meter and the range.
    #[command(flatten)]
    pub range: RangeArgs,
    /// `minute`, `hour` or `day` (default: by the range: minutes up to 2 days, hours up to
    /// 92 days, days beyond).
    #[arg(long, value_parser = parse_granularity)]
    pub granularity: Option<Granularity>,
    /// The PNG file to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Width in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    /// Height in pixels.
    #[arg(long, default_value_t = 600)]
    pub height: u32,
}

fn parse_granularity(text: &str) -> Result<Granularity, String> {
    Granularity::parse(text).ok_or_else(|| format!("{text:?}: minute, hour or day"))
}

pub(crate) fn plot(args: PlotArgs) -> Result<()> {
    if !(100..=10_000).contains(&args.width) || !(100..=10_000).contains(&args.height) {
        anyhow::bail!("--width and --height are between 100 and 10000 pixels");
    }
    let views = args.views.open()?;
    let (meter, from, to) = args.range.resolve(&views)?;
    let granularity = args
        .granularity
        .unwrap_or_else(|| auto_granularity(from, to));
    let found = match args.what {
        What::DailyProfile => Some(insights(&views, &meter, from, to, &load_tariff(None)?)?),
        _ => None,
    };
    plot_png(
        &views,
        &meter,
        args.what,
        from,
        to,
        granularity,
        found.as_ref(),
        &args.out,
        (args.width, args.height),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
