//! Insights into where a household's energy goes and what it could save, computed from the
//! merged views ([`Views::query`], so batch and speed rows alike).
//!
//! Everything is in the views' local calendar (hours of the day, weekdays, tariff periods).
//! Energy is `active_energy_wh` (Σ P·interval); the sub-meters are their `_sum` (Wh) and the
//! rest is `unmetered_wh`.
//!
//! | insight | how |
//! |---|---|
//! | where the energy goes | Σ over the hour rows of the range: kitchen (sub-meter 1), laundry (2), water heater + air conditioning (3), unmetered |
//! | typical day, typical week | mean energy of each local hour of the day (0–23) over the days of the range that have that hour, and of each (weekday, hour); weekday and weekend days apart. Wh in an hour = mean power in W |
//! | standby baseload | the **10th percentile of the minute-average active power between 00:00 and 06:00** local time over the range: the always-on power that the night's lowest minutes sit on, robust to a single odd minute. Its energy over a year is baseload × 8,766 h, priced at the tariff's time-weighted mean price |
//! | peak hours | the three hours of the typical day with the most energy; the share of energy in the tariff's peak period (its dearest) |
//! | cost | Σ over hour rows (or minute rows when the tariff has 15- or 30-minute boundaries) of energy × the price of the period holding the window's start, with the prices in force on that day; plus the daily standing charge |
//! | shifting | the laundry and water-heater energy (sub-meters 2 and 3) that fell in the peak period, priced at the difference between the peak and the cheapest period: what moving it out of the peak would have saved, scaled to a month (30.44 days) and a year (365.25 days) by the days of the range with data |
//! | unusual days | days whose energy is more than 3 robust deviations (1.4826 × the median absolute deviation, at least 5 % of the median) from the median of the same weekday in the range, and at least 25 % away from it; needs 3 days of that weekday |
//! | comparisons | the range's energy against the same-length period just before it and against the same dates a year before (`None` where the views have no data) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Query, QueryError, ViewRow, Views};
use crate::model::{Granularity, Measure};
use crate::time::{self, DAY_MS};

const HOUR_MS: i64 = 3_600_000;
/// Hours in an average year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8_766.0;

/// One price period of a day: `[start, end)` local clock times on 15-minute boundaries
/// (`end` before `start` wraps past midnight).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// A name (`HP`, `HC`, `peak`, ...).
    pub name: String,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM` (`24:00` or `00:00` for midnight).
    pub end: String,
    /// Price per kWh.
    pub price: f64,
}

/// Prices from a date on: one flat `price`, or `periods` covering the day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSet {
    /// First day these prices apply, `YYYY-MM-DD` (the earliest set also applies before it).
    #[serde(default = "PriceSet::since_ever")]
    pub from: String,
    /// A flat price per kWh (without `periods`).
    #[serde(default)]
    pub price: Option<f64>,
    /// Time-of-use periods covering the 24 hours exactly once.
    #[serde(default)]
    pub periods: Vec<Period>,
    /// Standing charge per day.
    #[serde(default)]
    pub standing_charge_per_day: f64,
}

impl PriceSet {
    fn since_ever() -> String {
        "0001-01-01".into()
    }
}

/// A tariff: price sets that change on given dates (`wattflow report --tariff FILE.toml`).
///
/// ```toml
/// currency = "EUR"
/// [[prices]]            # a French HP/HC contract: off-peak 22:00-06:00
/// from = "2006-01-01"
/// standing_charge_per_day = 0.45
/// periods = [
///   { name = "HC", start = "22:00", end = "06:00", price = 0.2068 },
///   { name = "HP", start = "06:00", end = "22:00", price = 0.2700 },
/// ]
/// [[prices]]            # new prices from 2008 on
/// from = "2008-01-01"
/// price = 0.25          # flat
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// Currency of the prices (shown, not converted).
    #[serde(default = "Tariff::euro")]
    pub currency: String,
    /// The price sets, each from its date on.
    pub prices: Vec<PriceSet>,
}

impl Tariff {
    fn euro() -> String {
        "EUR".into()
    }
}

impl Default for Tariff {
    /// The default: an HP/HC (peak / off-peak) contract like the French regulated one of
    /// 2024–2025: off-peak (HC) 22:00–06:00 at 0.2068 €/kWh, peak (HP) 06:00–22:00 at
    /// 0.2700 €/kWh, standing charge 0.45 €/day.
    fn default() -> Tariff {
        Tariff {
            currency: "EUR".into(),
            prices: vec![PriceSet {
                from: PriceSet::since_ever(),
                price: None,
                periods: vec![
                    Period {
                        name: "HC".into(),
                        start: "22:00".into(),
                        end: "06:00".into(),
                        price: 0.2068,
                    },
                    Period {
                        name: "HP".into(),
                        start: "06:00".into(),
                        end: "22:00".into(),
                        price: 0.27,
                    },
                ],
                standing_charge_per_day: 0.45,
            }],
        }
    }
}

/// A tariff checked and laid out per 15-minute slot of the day.
#[derive(Clone, Debug)]
pub struct Prices {
    currency: String,
    /// `(first local day, per slot: (period index, price), period names, standing charge)`.
    sets: Vec<CheckedSet>,
    /// Whether every boundary is on the hour (hour rows then suffice).
    hourly: bool,
}

#[derive(Clone, Debug)]
struct CheckedSet {
    from_day: i64,
    slots: [(usize, f64); 96],
    names: Vec<String>,
    standing: f64,
}

fn clock(text: &str) -> Result<u32, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a clock time HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{text:?}: bad hour"))?,
        m.parse().map_err(|_| format!("{text:?}: bad minutes"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("{text:?} is not a time of day"));
    }
    if m % 15 != 0 {
        return Err(format!(
            "{text:?}: periods start and end on 15-minute boundaries"
        ));
    }
    Ok((h * 60 + m) / 15 % 96)
}

impl Prices {
    /// Checks a tariff: prices finite and not negative, periods on 15-minute boundaries
    /// covering every slot of the day exactly once, dates valid and increasing.
    pub fn new(tariff: &Tariff) -> Result<Prices, String> {
        if tariff.prices.is_empty() {
            return Err("the tariff has no [[prices]]".into());
        }
        let mut sets = Vec::new();
        let mut hourly = true;
        for (i, set) in tariff.prices.iter().enumerate() {
            let at = format!("prices[{i}] (from {})", set.from);
            let from = time::parse_iso(&set.from)
                .filter(|_| set.from.trim().len() == 10)
                .ok_or_else(|| format!("{at}: from is not a date YYYY-MM-DD"))?;
            let from_day = from.div_euclid(DAY_MS);
            if sets
                .last()
                .is_some_and(|s: &CheckedSet| s.from_day >= from_day)
            {
                return Err(format!("{at}: the dates must increase"));
            }
            let ok = |p: f64| p.is_finite() && p >= 0.0;
            if !ok(set.standing_charge_per_day) {
                return Err(format!("{at}: bad standing charge"));
            }
            let mut slots = [(usize::MAX, 0.0); 96];
            let names;
            match (set.price, set.periods.is_empty()) {
                (Some(p), true) if ok(p) => {
                    slots = [(0, p); 96];
                    names = vec!["flat".to_owned()];
                }
                (Some(_), true) => return Err(format!("{at}: bad price")),
                (None, false) => {
                    names = set.periods.iter().map(|p| p.name.clone()).collect();
                    for (j, p) in set.periods.iter().enumerate() {
                        if !ok(p.price) {
                            return Err(format!("{at}: period {}: bad price", p.name));
                        }
                        let (a, b) = (clock(&p.start)?, clock(&p.end)?);
                        hourly &= a % 4 == 0 && b % 4 == 0;
                        let mut s = a;
                        loop {
                            if slots[s as usize].0 != usize::MAX {
                                return Err(format!(
                                    "{at}: period {} overlaps period {}",
                                    p.name, set.periods[slots[s as usize].0].name
                                ));
                            }
                            slots[s as usize] = (j, p.price);
                            s = (s + 1) % 96;
                            if s == b {
                                break;
                            }
                        }
                    }
                    if let Some(gap) = slots.iter().position(|s| s.0 == usize::MAX) {
                        return Err(format!(
                            "{at}: no period covers {:02}:{:02}",
                            gap / 4,
                            gap % 4 * 15
                        ));
                    }
                }
                _ => return Err(format!("{at}: give either price or periods")),
            }
            sets.push(CheckedSet {
                from_day,
                slots,
                names,
                standing: set.standing_charge_per_day,
            });
        }
        Ok(Prices {
            currency: tariff.currency.clone(),
            sets,
            hourly,
        })
    }

    fn set_of(&self, local_day: i64) -> &CheckedSet {
        let i = self.sets.partition_point(|s| s.from_day <= local_day);
        &self.sets[i.saturating_sub(1)]
    }

    /// `(period name, price, is the peak: the dearest period of its set)` of a local instant.
    fn at(&self, local_ms: i64) -> (&str, f64, bool) {
        let set = self.set_of(local_ms.div_euclid(DAY_MS));
        let slot = (local_ms.rem_euclid(DAY_MS) / (15 * 60_000)) as usize;
        let (period, price) = set.slots[slot];
        let dearest = set.slots.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        let cheapest = set.slots.iter().map(|s| s.1).fold(f64::MAX, f64::min);
        (
            &set.names[period],
            price,
            price == dearest && dearest > cheapest,
        )
    }

    fn cheapest(&self, local_ms: i64) -> f64 {
        let set = self.set_of(local_ms.div_euclid(DAY_MS));
        set.slots.iter().map(|s| s.1).fold(f64::MAX, f64::min)
    }

    /// The time-weighted mean price of a day's slots.
    fn mean_price(&self, local_ms: i64) -> f64 {
        let set = self.set_of(local_ms.div_euclid(DAY_MS));
        set.slots.iter().map(|s| s.1).sum::<f64>() / 96.0
    }
}

/// Energy of one part of the household.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    /// `kitchen`, `laundry`, `water_heater_and_ac`, `unmetered`.
    pub name: &'static str,
    /// kWh over the range.
    pub kwh: f64,
    /// Fraction of the active energy.
    pub share: f64,
}

/// A day far from its weekday's typical energy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnusualDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// kWh that day.
    pub kwh: f64,
    /// The median kWh of that weekday in the range.
    pub typical_kwh: f64,
    /// Robust deviations from it (signed).
    pub deviations: f64,
}

/// The range's energy against another period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// `previous_period` or `year_before`.
    pub against: &'static str,
    /// First day of the other period.
    pub from: String,
    /// Its kWh (`None` without data).
    pub kwh: Option<f64>,
    /// (this − other) / other (`None` without data).
    pub change: Option<f64>,
}

/// Cost of the range under the tariff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    /// The tariff's currency.
    pub currency: String,
    /// Energy cost over the range.
    pub energy: f64,
    /// Standing charges over the days with data.
    pub standing: f64,
    /// kWh and cost per period name.
    pub by_period: BTreeMap<String, (f64, f64)>,
    /// Share of the energy in the peak period.
    pub peak_share: f64,
    /// Laundry and water-heater kWh in the peak period.
    pub shiftable_peak_kwh: f64,
    /// What moving it to the cheapest period would have saved over the range.
    pub shift_saving: f64,
    /// The same per month of 30.44 days.
    pub shift_saving_per_month: f64,
    /// The same per year.
    pub shift_saving_per_year: f64,
}

/// Everything [`insights`] finds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Insights {
    /// The meter.
    pub meter: String,
    /// The range, as given.
    pub from: String,
    /// The end of the range (exclusive).
    pub to: String,
    /// Local days of the range with data.
    pub days_with_data: usize,
    /// Active energy over the range, kWh.
    pub total_kwh: f64,
    /// Where it goes.
    pub shares: Vec<Share>,
    /// Mean Wh per local hour of the day (= mean W), 24 values (`None`: no data at that hour).
    pub typical_day: Vec<Option<f64>>,
    /// The same for Monday–Friday.
    pub typical_weekday: Vec<Option<f64>>,
    /// The same for Saturday and Sunday.
    pub typical_weekend: Vec<Option<f64>>,
    /// 7 × 24 (Monday first).
    pub typical_week: Vec<Vec<Option<f64>>>,
    /// The standby baseload, W (`None` without night minutes).
    pub baseload_w: Option<f64>,
    /// Its energy over a year, kWh.
    pub baseload_kwh_per_year: Option<f64>,
    /// Its cost over a year at the tariff's mean price.
    pub baseload_cost_per_year: Option<f64>,
    /// The three hours of the typical day with the most energy.
    pub peak_hours: Vec<u32>,
    /// Cost under the tariff.
    pub cost: Cost,
    /// Days far from their weekday's typical energy, furthest first.
    pub unusual_days: Vec<UnusualDay>,
    /// Against the previous period and the year before.
    pub comparisons: Vec<Comparison>,
}

/// Monday = 0 of a local day number.
fn weekday(local_day: i64) -> usize {
    (local_day + 3).rem_euclid(7) as usize
}

/// Hands each of a meter's rows in a range to `f`, in window order, read in pieces under the
/// views' row cap (so a year of minutes is never held at once).
pub fn for_each_row(
    views: &Views,
    meter: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    f: impl FnMut(&ViewRow),
) -> Result<(), QueryError> {
    for_each_row_with(views, meter, granularity, from_ms, to_ms, None, f)
}

/// [`for_each_row`] decoding only `columns` of the batch rows (see [`Views::query_columns`]).
pub fn for_each_row_columns(
    views: &Views,
    meter: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    columns: &[&str],
    f: impl FnMut(&ViewRow),
) -> Result<(), QueryError> {
    for_each_row_with(views, meter, granularity, from_ms, to_ms, Some(columns), f)
}

fn for_each_row_with(
    views: &Views,
    meter: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    columns: Option<&[&str]>,
    mut f: impl FnMut(&ViewRow),
) -> Result<(), QueryError> {
    let step = (views.max_rows() as i64 - 1).max(1) * granularity.len_ms().min(23 * HOUR_MS);
    let mut at = from_ms;
    while at < to_ms {
        let end = at.saturating_add(step).min(to_ms);
        let q = Query {
            meter: meter.to_owned(),
            granularity,
            from_ms: at,
            to_ms: end,
        };
        let answer = match columns {
            None => views.query(&q)?,
            Some(columns) => views.query_columns(&q, columns)?,
        };
        answer.rows.iter().for_each(&mut f);
        at = end;
    }
    Ok(())
}

/// All of a meter's rows in a range, read in pieces under the views' row cap.
pub fn rows_in(
    views: &Views,
    meter: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ViewRow>, QueryError> {
    let mut out = Vec::new();
    for_each_row(views, meter, granularity, from_ms, to_ms, |r| {
        out.push(r.clone())
    })?;
    Ok(out)
}

fn kwh_in(views: &Views, meter: &str, from: i64, to: i64) -> Result<Option<f64>, QueryError> {
    let rows = rows_in(views, meter, Granularity::Day, from, to)?;
    Ok((!rows.is_empty()).then(|| rows.iter().map(|r| r.active_energy_wh).sum::<f64>() / 1000.0))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    percentile(values, 0.5)
}

/// Insights into a meter's energy over `[from_ms, to_ms)` under a tariff (module docs).
pub fn insights(
    views: &Views,
    meter: &str,
    from_ms: i64,
    to_ms: i64,
    prices: &Prices,
) -> Result<Insights, QueryError> {
    views.check(&Query {
        meter: meter.to_owned(),
        granularity: Granularity::Day,
        from_ms,
        to_ms,
    })?;
    let cal = views.calendar();
    let local = |t: i64| cal.to_local(t);
    let hours = rows_in(views, meter, Granularity::Hour, from_ms, to_ms)?;
    let sub = |r: &ViewRow, m: Measure| r.measure(m).sum;

    // Where the energy goes.
    let total_wh: f64 = hours.iter().map(|r| r.active_energy_wh).sum();
    let parts = [
        (
            "kitchen",
            hours
                .iter()
                .map(|r| sub(r, Measure::SubMetering1))
                .sum::<f64>(),
        ),
        (
            "laundry",
            hours.iter().map(|r| sub(r, Measure::SubMetering2)).sum(),
        ),
        (
            "water_heater_and_ac",
            hours.iter().map(|r| sub(r, Measure::SubMetering3)).sum(),
        ),
        ("unmetered", hours.iter().map(|r| r.unmetered_wh).sum()),
    ];
    let shares = parts
        .iter()
        .map(|&(name, wh)| Share {
            name,
            kwh: wh / 1000.0,
            share: if total_wh > 0.0 { wh / total_wh } else { 0.0 },
        })
        .collect();

    // Typical day and week: mean Wh per (weekday, hour).
    let mut cells = [[(0.0f64, 0u32); 24]; 7];
    let mut day_wh: BTreeMap<i64, f64> = BTreeMap::new();
    for r in &hours {
        let t = local(r.window_start);
        let (day, hour) = (
            t.div_euclid(DAY_MS),
            (t.rem_euclid(DAY_MS) / HOUR_MS) as usize,
        );
        let cell = &mut cells[weekday(day)][hour];
        cell.0 += r.active_energy_wh;
        cell.1 += 1;
        *day_wh.entry(day).or_default() += r.active_energy_wh;
    }
    let mean_over = |days: &[usize]| -> Vec<Option<f64>> {
        (0..24)
            .map(|h| {
                let (s, n) = days.iter().fold((0.0, 0), |(s, n), &d| {
                    (s + cells[d][h].0, n + cells[d][h].1)
                });
                (n > 0).then(|| s / n as f64)
            })
            .collect()
    };
    let typical_day = mean_over(&[0, 1, 2, 3, 4, 5, 6]);
    let typical_week = (0..7).map(|d| mean_over(&[d])).collect();
    let mut by_energy: Vec<(u32, f64)> = typical_day
        .iter()
        .enumerate()
        .filter_map(|(h, v)| v.map(|v| (h as u32, v)))
        .collect();
    by_energy.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let peak_hours = by_energy.iter().take(3).map(|&(h, _)| h).collect();

    // Cost, the peak share and what shifting would save.
    let mut cost = Cost {
        currency: prices.currency.clone(),
        energy: 0.0,
        standing: day_wh.keys().map(|&d| prices.set_of(d).standing).sum(),
        by_period: BTreeMap::new(),
        peak_share: 0.0,
        shiftable_peak_kwh: 0.0,
        shift_saving: 0.0,
        shift_saving_per_month: 0.0,
        shift_saving_per_year: 0.0,
    };
    let (mut peak_wh, mut priced_wh) = (0.0, 0.0);
    let mut price = |r: &ViewRow| {
        let t = local(r.window_start);
        let (name, price, peak) = prices.at(t);
        let kwh = r.active_energy_wh / 1000.0;
        priced_wh += r.active_energy_wh;
        cost.energy += kwh * price;
        let e = cost.by_period.entry(name.to_owned()).or_default();
        e.0 += kwh;
        e.1 += kwh * price;
        if peak {
            peak_wh += r.active_energy_wh;
            let shiftable =
                (sub(r, Measure::SubMetering2) + sub(r, Measure::SubMetering3)) / 1000.0;
            cost.shiftable_peak_kwh += shiftable;
            cost.shift_saving += shiftable * (price - prices.cheapest(t));
        }
    };
    if prices.hourly {
        hours.iter().for_each(&mut price);
    }

    // Baseload: a low percentile of the night's minute power (and the cost by minute rows
    // when the tariff's periods are not whole hours).
    let mut night: Vec<f64> = Vec::new();
    // Only what this pass uses is decoded: a year of minutes is half a million rows.
    let minute_columns = [
        "global_active_power_avg",
        "active_energy_wh",
        "sub_metering_2_sum",
        "sub_metering_3_sum",
    ];
    for_each_row_columns(
        views,
        meter,
        Granularity::Minute,
        from_ms,
        to_ms,
        &minute_columns,
        |r| {
            if local(r.window_start).rem_euclid(DAY_MS) < 6 * HOUR_MS {
                let w = r.measure(Measure::GlobalActivePower).avg * 1000.0;
                if w.is_finite() {
                    night.push(w);
                }
            }
            if !prices.hourly {
                price(r);
            }
        },
    )?;
    night.sort_by(f64::total_cmp);
    let baseload_w = percentile(&night, 0.10);
    let mean_price = prices.mean_price(local(to_ms.saturating_sub(1)));
    let baseload_kwh_per_year = baseload_w.map(|w| w / 1000.0 * HOURS_PER_YEAR);

    cost.peak_share = if priced_wh > 0.0 {
        peak_wh / priced_wh
    } else {
        0.0
    };
    let days = day_wh.len();
    if days > 0 {
        cost.shift_saving_per_month = cost.shift_saving / days as f64 * 30.44;
        cost.shift_saving_per_year = cost.shift_saving / days as f64 * 365.25;
    }

    // Unusual days: far from the median of their weekday.
    let mut by_weekday: [Vec<f64>; 7] = Default::default();
    for (&d, &wh) in &day_wh {
        by_weekday[weekday(d)].push(wh);
    }
    let stats: Vec<Option<(f64, f64)>> = by_weekday
        .iter()
        .map(|v| {
            if v.len() < 3 {
                return None;
            }
            let mut v = v.clone();
            let m = median(&mut v)?;
            let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
            // A household that repeats itself exactly has no spread: 5 % of the median is
            // the least deviation counted as one.
            let sigma = (median(&mut dev)? * 1.4826).max(0.05 * m.abs());
            Some((m, sigma))
        })
        .collect();
    let mut unusual_days: Vec<UnusualDay> = day_wh
        .iter()
        .filter_map(|(&d, &wh)| {
            let (m, sigma) = stats[weekday(d)]?;
            let deviations = if sigma > 0.0 { (wh - m) / sigma } else { 0.0 };
            let far = deviations.abs() >= 3.0 && (wh - m).abs() >= 0.25 * m;
            far.then(|| UnusualDay {
                date: time::format_date(d * DAY_MS),
                kwh: wh / 1000.0,
                typical_kwh: m / 1000.0,
                deviations,
            })
        })
        .collect();
    unusual_days.sort_by(|a, b| b.deviations.abs().total_cmp(&a.deviations.abs()));

    // Comparisons.
    let span = to_ms - from_ms;
    let this_kwh = total_wh / 1000.0;
    let year_before = |t: i64| {
        let l = local(t);
        let (y, m, d) = time::civil_from_days(l.div_euclid(DAY_MS));
        let d = d.min(28 + (m != 2) as u32 * 2);
        let back = time::days_from_civil(y - 1, m, d) * DAY_MS + l.rem_euclid(DAY_MS);
        cal.from_local(back)
    };
    let mut comparisons = Vec::new();
    for (against, from, to) in [
        ("previous_period", from_ms - span, from_ms),
        ("year_before", year_before(from_ms), year_before(to_ms)),
    ] {
        let kwh = if from < to && from >= super::MIN_QUERY_MS {
            kwh_in(views, meter, from, to)?
        } else {
            None
        };
        comparisons.push(Comparison {
            against,
            from: cal.format_date(from),
            kwh,
            change: kwh.filter(|&k| k > 0.0).map(|k| (this_kwh - k) / k),
        });
    }

    Ok(Insights {
        meter: meter.to_owned(),
        from: cal.format(from_ms),
        to: cal.format(to_ms),
        days_with_data: days,
        total_kwh: this_kwh,
        shares,
        typical_day,
        typical_weekday: mean_over(&[0, 1, 2, 3, 4]),
        typical_weekend: mean_over(&[5, 6]),
        typical_week,
        baseload_w,
        baseload_kwh_per_year,
        baseload_cost_per_year: baseload_kwh_per_year.map(|k| k * mean_price),
        peak_hours,
        cost,
        unusual_days,
        comparisons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tariffs_are_checked_and_priced_per_quarter_hour() {
        let p = Prices::new(&Tariff::default()).unwrap();
        assert!(p.hourly);
        let at = |hhmm: &str| time::parse_iso(&format!("2007-01-01T{hhmm}:00")).unwrap();
        assert_eq!(p.at(at("05:45")), ("HC", 0.2068, false));
        assert_eq!(p.at(at("06:00")), ("HP", 0.27, true));
        assert_eq!(p.at(at("21:59")), ("HP", 0.27, true));
        assert_eq!(p.at(at("22:00")), ("HC", 0.2068, false));
        assert!((p.mean_price(at("00:00")) - (8.0 * 0.2068 + 16.0 * 0.27) / 24.0).abs() < 1e-12);
        let toml_like = |periods: Vec<(&str, &str, f64)>| Tariff {
            currency: "EUR".into(),
            prices: vec![PriceSet {
                from: "2006-01-01".into(),
                price: None,
                periods: periods
                    .into_iter()
                    .map(|(a, b, price)| Period {
                        name: format!("{a}-{b}"),
                        start: a.into(),
                        end: b.into(),
                        price,
                    })
                    .collect(),
                standing_charge_per_day: 0.0,
            }],
        };
        // 30-minute boundaries are fine, and make minute rows necessary.
        let half = Prices::new(&toml_like(vec![
            ("00:00", "07:30", 0.1),
            ("07:30", "24:00", 0.3),
        ]))
        .unwrap();
        assert!(!half.hourly);
        assert_eq!(half.at(at("07:15")).1, 0.1);
        assert_eq!(half.at(at("07:30")).1, 0.3);
        for (bad, why) in [
            (vec![("00:00", "12:00", 0.1)], "no period covers 12:00"),
            (
                vec![("00:00", "13:00", 0.1), ("12:00", "00:00", 0.2)],
                "overlaps",
            ),
            (
                vec![("00:00", "12:10", 0.1), ("12:10", "00:00", 0.2)],
                "15-minute",
            ),
            (
                vec![("00:00", "12:00", -1.0), ("12:00", "00:00", 0.2)],
                "bad price",
            ),
            (vec![("00:00", "25:00", 0.1)], "not a time of day"),
        ] {
            let e = Prices::new(&toml_like(bad)).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // Prices that change on a date.
        let mut two = Tariff::default();
        two.prices.push(PriceSet {
            from: "2008-01-01".into(),
            price: Some(0.25),
            periods: vec![],
            standing_charge_per_day: 0.5,
        });
        let p = Prices::new(&two).unwrap();
        let t2008 = time::parse_iso("2008-03-01T12:00:00").unwrap();
        assert_eq!(p.at(t2008), ("flat", 0.25, false));
        assert_eq!(p.at(at("12:00")).1, 0.27);
        two.prices.swap(0, 1);
        assert!(Prices::new(&two).unwrap_err().contains("increase"));
    }

    #[test]
    fn percentiles_and_weekdays() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[0.0, 10.0], 0.1), Some(1.0));
        assert_eq!(percentile(&[], 0.1), None);
        // 2007-01-01 was a Monday, 2006-12-16 a Saturday.
        assert_eq!(weekday(time::days_from_civil(2007, 1, 1)), 0);
        assert_eq!(weekday(time::days_from_civil(2006, 12, 16)), 5);
    }
}
