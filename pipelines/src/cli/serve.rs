//! `wattflow serve`: the batch views (and, with `--cassandra`, the speed views) over HTTP;
//! and the arguments every command that reads the views shares.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use wattflow::serve::insights::{Prices, Tariff};
use wattflow::serve::{NoSpeedViews, SpeedViews, Views, DEFAULT_MAX_ROWS};
use wattflow::sink::cassandra::{connect_existing, CassandraSinkConfig};
use wattflow::time::Calendar;

use super::stop_flag;
use crate::serve::{Server, DEFAULT_LISTEN};

/// Where the views are: the arguments of every command that reads them.
#[derive(Debug, Args)]
pub struct ViewsArgs {
    /// The views' folder (`minute/`, `hour/`, `day/`), as `replay` or `run` wrote it.
    #[arg(long, default_value = "wattflow-views")]
    pub views: PathBuf,
    /// Cassandra contact point of the speed views (default: the batch views alone).
    #[arg(long, value_name = "HOST:PORT")]
    pub cassandra: Option<String>,
    /// Keyspace of the speed views.
    #[arg(long, default_value = "wattflow")]
    pub keyspace: String,
    /// The time zone the pipeline ran with (`naive` by default, as the UCI data).
    #[arg(long, value_name = "ZONE", default_value = "naive")]
    pub timezone: String,
    /// Most rows in one answer; a range that could hold more is refused.
    #[arg(long, default_value_t = DEFAULT_MAX_ROWS)]
    pub max_rows: usize,
}

impl ViewsArgs {
    /// Opens the views (connecting to Cassandra when asked).
    pub fn open(&self) -> Result<Views> {
        let calendar = Calendar::parse(&self.timezone)?;
        let speed: Arc<dyn SpeedViews> = match &self.cassandra {
            Some(contact) => {
                let mut config = CassandraSinkConfig::new(contact);
                config.keyspace = self.keyspace.clone();
                config.calendar = calendar.clone();
                // Read-only: the pipeline creates the keyspace and tables, serve changes nothing.
                let views = connect_existing(&config).with_context(|| {
                    format!(
                        "connecting to the speed views in Cassandra at {contact}, keyspace {} \
                         (a pipeline creates them: run it first)",
                        self.keyspace
                    )
                })?;
                Arc::new(wattflow::serve::CassandraSpeedViews::new(Arc::new(views)))
            }
            None => Arc::new(NoSpeedViews),
        };
        Ok(Views::new(&self.views, speed)
            .with_calendar(calendar)
            .with_max_rows(self.max_rows))
    }
}

/// Reads a tariff file (TOML, see [`Tariff`]), or the default tariff.
pub fn load_tariff(path: Option<&std::path::Path>) -> Result<Prices> {
    let tariff = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the tariff {}", p.display()))?;
            toml::from_str::<Tariff>(&text)
                .with_context(|| format!("the tariff {}", p.display()))?
        }
        None => Tariff::default(),
    };
    Prices::new(&tariff).map_err(|e| anyhow::anyhow!("the tariff: {e}"))
}

/// Arguments of `wattflow serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The views.
    #[command(flatten)]
    pub views: ViewsArgs,
    /// Address to listen on (loopback by default; `0.0.0.0:8080` for every interface).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Tariff of the insights' costs (TOML; default: an HP/HC contract).
    #[arg(long, value_name = "FILE.toml")]
    pub tariff: Option<PathBuf>,
}

pub(crate) fn serve(args: ServeArgs) -> Result<()> {
    let views = args.views.open()?;
    let prices = load_tariff(args.tariff.as_deref())?;
    let stop = stop_flag();
    let server = Server::start_with(views, prices, &args.listen)?;
    println!(
        "serving {} at http://{}/",
        args.views.views.display(),
        server.addr()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    Ok(())
}
