//! `wattflow generate`: a synthetic household history in the UCI text format.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::HumanBytes;
use wattflow::generate::{Generator, GeneratorConfig};

/// Arguments of `wattflow generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of households (more than one adds a leading `Meter` column).
    #[arg(long, default_value_t = 1)]
    pub households: u32,
    /// Number of days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Output file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Random seed: the same seed gives the same file, byte for byte.
    #[arg(long, default_value_t = wattflow::generate::DEFAULT_SEED)]
    pub seed: u64,
    /// First day, `YYYY-MM-DD` (naive local time).
    #[arg(long, default_value = "2006-12-16")]
    pub start: String,
}

pub(crate) fn generate(args: GenerateArgs) -> Result<wattflow::generate::GenerateSummary> {
    let start_ms = wattflow::time::parse_iso(&args.start)
        .with_context(|| format!("--start {:?} is not a date like 2006-12-16", args.start))?;
    if args.households == 0 || args.days == 0 {
        bail!("--households and --days must be at least 1");
    }
    let generator = Generator::new(GeneratorConfig {
        households: args.households,
        days: args.days,
        start_ms,
        seed: args.seed,
        ..GeneratorConfig::default()
    });
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let file = std::fs::File::create(&args.out).with_context(|| args.out.display().to_string())?;
    let summary = generator
        .write_uci(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| args.out.display().to_string())?;
    eprintln!(
        "wrote {} rows ({} missing) for {} household(s) over {} day(s) to {} ({})",
        summary.rows,
        summary.missing,
        args.households,
        args.days,
        args.out.display(),
        HumanBytes(summary.bytes)
    );
    Ok(summary)
}
