//! Seeded, deterministic synthetic smart-meter histories in the UCI format.
//!
//! The generator imitates the UCI "Individual household electric power consumption" data set
//! (one reading per minute: global active and reactive power, voltage, intensity and three
//! sub-meters) for any number of simulated households, so tests, benchmarks and demos need no
//! downloaded data.
//!
//! # The model of a household
//!
//! Each household draws its own parameters from `(seed, household)`: the size of its base load,
//! how early it gets up, its fridge, the power of its oven, washing machine, tumble-drier and
//! water heater, whether it has an air conditioner, and where it sits on the feeder (voltage).
//! Its power is the sum of:
//!
//! - **Unmetered base load** (lights, electronics, standby, winter heating; not on any sub-meter):
//!   a daily profile (low at night, ~0.3–0.5 kW; a morning peak; the largest peak in the
//!   evening), different on weekends (later mornings, busier days), about 18 % higher in midwinter
//!   than in midsummer, modulated by slow 15-minute noise and small per-minute noise, never below
//!   a standby floor. Short unmetered appliances come on top: kettle, vacuum cleaner, iron and,
//!   on cold evenings, a space heater.
//! - **Sub-meter 1, kitchen**: microwave uses (a few minutes at ~1.2 kW), an oven (pre-heating,
//!   then thermostat cycling, 30–90 min) and a dishwasher programme (pumps and two ~2 kW
//!   heating phases, ~1–1.5 h, usually in the evening).
//! - **Sub-meter 2, laundry room**: the fridge compressor cycling on and off (~100 W, period
//!   20–40 min, day and night), washing-machine programmes (a ~2 kW heating phase, then motor
//!   phases with a poor power factor) sometimes followed by a tumble-drier, and the room's light.
//! - **Sub-meter 3, water heater and air conditioner**: the water heater switched on by the night
//!   tariff around 22:00–23:30 for ~0.5–4 h (2 h typical, longer in winter) at 2–3 kW, on some
//!   days topped up in the afternoon; on hot summer afternoons, the air conditioner cycling at
//!   1.2–2.2 kW.
//!
//! Appliance runs are drawn per `(seed, household, day)` with second precision, and the base
//! load is constant within each clock minute, so the energy of any interval is an exact
//! integral: [`Generator::reading`] is a pure function of `(seed, household, ts, interval_s)` and
//! sixty one-second readings add up to the one-minute reading (within rounding).
//!
//! Derived measures are physically consistent: the global active power is the interval's total
//! energy over its length, never less than what the sub-meters saw; the reactive power comes
//! from a small share of the base load plus the inductive loads (compressors, motors);
//! the voltage drifts slowly around 235 V, sags a little in the evening and under load, and is
//! kept within 225.5–244.5 V; the intensity is `sqrt(P² + Q²) / V`.
//!
//! **Missing data**: like the real file, outages hide whole runs of minutes (2 min to 4 h) at
//! about [`GeneratorConfig::missing_rate`] of the minutes; they are drawn from their own hash
//! stream, so the missing rate never changes the values of the minutes that remain.
//!
//! Everything is computed from integers and IEEE-exact float operations (`+ - * / sqrt`, no
//! `sin`/`exp`), so the output is byte-identical for the same configuration on every platform.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::model::{Measure, MeterId, Origin, Reading, MEASURES};
use crate::time;

/// Default number of simulated households.
pub const DEFAULT_HOUSEHOLDS: u32 = 1;
/// Default length of the history, in days.
pub const DEFAULT_DAYS: u32 = 30;
/// Default seed.
pub const DEFAULT_SEED: u64 = 42;
/// Default fraction of minutes lost to outages.
pub const DEFAULT_MISSING_RATE: f64 = 0.01;
/// Default start: 2006-12-16T00:00:00 naive, the first day of the UCI data set, in ms.
pub const DEFAULT_START_MS: i64 = time::days_from_civil(2006, 12, 16) * time::DAY_MS;

/// Header of a single-household UCI file (a multi-household file prefixes `Meter;`).
pub const UCI_HEADER: &str = "Date;Time;Global_active_power;Global_reactive_power;Voltage;\
Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3";
/// The measures of a missing minute, exactly as in the UCI file: six `?` and an empty last field.
pub const UCI_MISSING: &str = "?;?;?;?;?;?;";
/// Interval of the rows written by [`Generator::write_uci`], in seconds.
pub const UCI_INTERVAL_S: u32 = 60;
/// Prefix of the meter ids: household `n` is `household-n`.
pub const METER_PREFIX: &str = "household-";

/// Shortest outage, in minutes.
pub const MIN_OUTAGE_MINUTES: i64 = 2;
/// Longest outage, in minutes.
pub const MAX_OUTAGE_MINUTES: i64 = 240;
/// Lowest voltage the generator emits, in V.
pub const MIN_VOLTAGE_V: f64 = 225.5;
/// Highest voltage the generator emits, in V.
pub const MAX_VOLTAGE_V: f64 = 244.5;

const MINUTE_MS: i64 = 60_000;
const MINUTES_PER_DAY: i64 = 1_440;
const DAYS_PER_YEAR: f64 = 365.2425;
/// Mean outage length in minutes: `MIN + (MAX - MIN) * E[u³]` with `u` uniform.
const MEAN_OUTAGE_MINUTES: f64 =
    MIN_OUTAGE_MINUTES as f64 + (MAX_OUTAGE_MINUTES - MIN_OUTAGE_MINUTES) as f64 / 4.0;
/// Most outage candidates drawn per day.
const MAX_OUTAGE_SLOTS: usize = 64;
/// Voltage drop per W of the household's own load, in V.
const VOLT_DROP_PER_W: f64 = 0.3 / 1000.0;
/// Bytes buffered before a write to the output.
const FLUSH_AT: usize = 1 << 16;

/// Energy channels: unmetered, then the three sub-meters.
const UNMETERED: usize = 0;
const KITCHEN: usize = 1;
const LAUNDRY: usize = 2;
const HEATER: usize = 3;

/// Hash-stream tags, so each kind of draw has its own independent stream.
const TAG_HOUSE: u64 = 0x0068_6f75_7365;
const TAG_PARAMS: u64 = 1;
const TAG_DAY: u64 = 2;
const TAG_OUTAGE: u64 = 3;
const TAG_MINUTE: u64 = 4;
const TAG_SLOW: u64 = 5;
const TAG_VOLT: u64 = 6;

/// Unmetered base load (W) at each hour of a working day, before the household's scale.
const WEEKDAY_PROFILE_W: [f64; 24] = [
    450.0, 350.0, 300.0, 280.0, 280.0, 300.0, 550.0, 950.0, 850.0, 500.0, 420.0, 420.0, 550.0,
    500.0, 420.0, 420.0, 480.0, 650.0, 950.0, 1200.0, 1300.0, 1200.0, 900.0, 650.0,
];
/// Unmetered base load (W) at each hour of a Saturday or Sunday.
const WEEKEND_PROFILE_W: [f64; 24] = [
    550.0, 420.0, 340.0, 300.0, 280.0, 280.0, 300.0, 380.0, 650.0, 900.0, 850.0, 800.0, 900.0,
    800.0, 700.0, 680.0, 700.0, 800.0, 1000.0, 1200.0, 1300.0, 1250.0, 1000.0, 750.0,
];
/// Daily voltage shape (V) at each hour: higher at night, sagging at the evening peak.
const VOLTAGE_SHAPE_V: [f64; 24] = [
    0.6, 1.0, 1.2, 1.2, 1.2, 1.0, 0.4, -0.3, -0.4, 0.0, 0.2, 0.1, -0.2, 0.0, 0.2, 0.2, 0.0, -0.4,
    -0.9, -1.2, -1.2, -1.0, -0.5, 0.1,
];

/// What to generate. All fields have defaults (`DEFAULT_*`), also when read with serde.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Number of households, numbered `1..=households` (`household-1`, ...).
    pub households: u32,
    /// Length of the history written by [`Generator::write_uci`], in days.
    pub days: u32,
    /// First minute of the history, ms since the epoch (naive local time written as if UTC).
    pub start_ms: i64,
    /// Seed of every random draw: the same seed gives the same data.
    pub seed: u64,
    /// Fraction of minutes missing, in outage runs of 2 min to 4 h (clamped to `0..=1`;
    /// `1` makes every minute missing). Rates above ~0.3 come out somewhat lower than asked
    /// because outages overlap.
    pub missing_rate: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            households: DEFAULT_HOUSEHOLDS,
            days: DEFAULT_DAYS,
            start_ms: time::naive_to_ms(2006, 12, 16, 0, 0, 0).unwrap_or(DEFAULT_START_MS),
            seed: DEFAULT_SEED,
            missing_rate: DEFAULT_MISSING_RATE,
        }
    }
}

/// What [`Generator::write_uci`] wrote.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Data rows written (header excluded), missing ones included.
    pub rows: u64,
    /// Rows written as missing (`?;?;?;?;?;?;`).
    pub missing: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

/// The synthetic smart-meter generator: see the [module documentation](self) for the model.
#[derive(Clone, Debug)]
pub struct Generator {
    config: GeneratorConfig,
    /// `missing_rate` clamped to `0..=1` (NaN counts as 0).
    missing_rate: f64,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: GeneratorConfig) -> Generator {
        let missing_rate = if config.missing_rate > 0.0 {
            config.missing_rate.min(1.0)
        } else {
            0.0
        };
        Generator {
            config,
            missing_rate,
        }
    }

    /// The configuration this generator was made with.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// End (exclusive) of the history written by [`Generator::write_uci`], ms since the epoch.
    pub fn end_ms(&self) -> i64 {
        self.config.start_ms + self.config.days as i64 * time::DAY_MS
    }

    /// The meter id of `household`: `household-1`, `household-2`, ... (households are 1-based).
    pub fn meter(&self, household: u32) -> MeterId {
        MeterId::new(&format!("{METER_PREFIX}{household}"))
            .expect("household-<u32> is a valid meter id")
    }

    /// The reading of `household` for the interval `[ts, ts + interval_s * 1000)`.
    ///
    /// A pure function of `(seed, household, ts, interval_s)`: the file generator and a live
    /// per-second simulator produce consistent data, and calls may come in any order. The
    /// sub-meters hold the interval's energy (`power_W * interval_s / 3600` Wh, in mWh), so a
    /// one-second reading holds about 1/60 of the minute's. Any `household` number is accepted,
    /// also beyond [`GeneratorConfig::households`]; an `interval_s` of 0 is taken as 1. The
    /// reading's origin is [`Origin::default`]. Whether the minute is missing is a separate
    /// question: see [`Generator::is_missing`].
    pub fn reading(&self, household: u32, ts: i64, interval_s: u32) -> Reading {
        let interval_s = interval_s.max(1);
        let house = House::new(self.config.seed, household);
        let end = ts + interval_s as i64 * 1000;
        let first = ts.div_euclid(time::DAY_MS) - 1;
        let last = (end - 1).div_euclid(time::DAY_MS);
        let plans: Vec<DayPlan> = (first..=last)
            .map(|day| DayPlan::new(&house, day))
            .collect();
        let refs: Vec<&DayPlan> = plans.iter().collect();
        Reading {
            meter: self.meter(household),
            ts,
            interval_s,
            values: values(&house, &refs, ts, interval_s),
            origin: Origin::default(),
        }
    }

    /// The readings of `household` for `count` consecutive intervals of `interval_s` seconds
    /// from `from`: exactly the values of [`Generator::reading`], computed faster because each
    /// day's appliance schedule is drawn once. Missing minutes are included; filter them with
    /// [`Generator::is_missing`] if needed. An `interval_s` of 0 is taken as 1.
    pub fn readings(&self, household: u32, from: i64, interval_s: u32, count: u64) -> Readings<'_> {
        Readings {
            generator: self,
            meter: self.meter(household),
            cache: HouseCache::new(self.config.seed, household),
            next_ts: from,
            interval_s: interval_s.max(1),
            remaining: count,
        }
    }

    /// `household`'s readings on demand, for a caller that keeps them apart from this
    /// generator (see [`Household`]).
    pub fn household(&self, household: u32) -> Household {
        Household {
            meter: self.meter(household),
            cache: HouseCache::new(self.config.seed, household),
        }
    }

    /// Whether the minute holding `ts` is part of a simulated outage (missing data) for
    /// `household`.
    pub fn is_missing(&self, household: u32, ts: i64) -> bool {
        if self.missing_rate >= 1.0 {
            return true;
        }
        if self.missing_rate <= 0.0 {
            return false;
        }
        let house = House::new(self.config.seed, household);
        let minute = ts.div_euclid(MINUTE_MS);
        let day = minute.div_euclid(MINUTES_PER_DAY);
        self.outages(&house, day - 1).contains(minute) || self.outages(&house, day).contains(minute)
    }

    /// Writes the history in the UCI text format.
    ///
    /// `;` separated, CRLF line endings, header
    /// `Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3`,
    /// `Date` as `d/m/yyyy` without zero padding, `Time` as `hh:mm:ss`, every value with exactly
    /// 3 decimals, one row per minute (interval 60 s) from `start_ms` for `days` days; missing
    /// minutes are written `?;?;?;?;?;?;` (six `?` and an empty last field, exactly like the real
    /// file: `16/12/2006;17:24:00;?;?;?;?;?;?;`). With more than one household a leading `Meter`
    /// column is added (header `Meter;Date;Time;...`) and rows are ordered by time, then
    /// household. The values are those of [`Generator::reading`] with a 60 s interval.
    ///
    /// Output is buffered internally (pass the writer unbuffered or buffered alike) and flushed
    /// at the end.
    pub fn write_uci<W: Write>(&self, mut out: W) -> io::Result<GenerateSummary> {
        let households = self.config.households;
        let multi = households > 1;
        let meters: Vec<Vec<u8>> = (1..=households)
            .map(|h| format!("{METER_PREFIX}{h};").into_bytes())
            .collect();
        let mut caches: Vec<HouseCache> = (1..=households)
            .map(|h| HouseCache::new(self.config.seed, h))
            .collect();
        let mut summary = GenerateSummary::default();
        let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
        if multi {
            buf.extend_from_slice(b"Meter;");
        }
        buf.extend_from_slice(UCI_HEADER.as_bytes());
        buf.extend_from_slice(b"\r\n");

        let mut date: Vec<u8> = Vec::with_capacity(16);
        let mut date_day = i64::MIN;
        let mut clock = [0u8; 9];
        let minutes = self.config.days as i64 * MINUTES_PER_DAY;
        for k in 0..minutes {
            let ts = self.config.start_ms + k * MINUTE_MS;
            let day = ts.div_euclid(time::DAY_MS);
            if day != date_day {
                date_day = day;
                date.clear();
                push_date(&mut date, day);
                date.push(b';');
                for cache in &mut caches {
                    cache.move_to(self, day);
                }
            }
            fill_clock(&mut clock, ts);
            for (cache, meter) in caches.iter_mut().zip(&meters) {
                if multi {
                    buf.extend_from_slice(meter);
                }
                buf.extend_from_slice(&date);
                buf.extend_from_slice(&clock);
                if cache.is_missing(self.missing_rate, ts) {
                    buf.extend_from_slice(UCI_MISSING.as_bytes());
                    summary.missing += 1;
                } else {
                    let v = cache.values(self, ts, UCI_INTERVAL_S);
                    push_milli(&mut buf, v[0]);
                    for &x in &v[1..] {
                        buf.push(b';');
                        push_milli(&mut buf, x);
                    }
                }
                buf.extend_from_slice(b"\r\n");
                summary.rows += 1;
            }
            if buf.len() >= FLUSH_AT {
                out.write_all(&buf)?;
                summary.bytes += buf.len() as u64;
                buf.clear();
            }
        }
        out.write_all(&buf)?;
        summary.bytes += buf.len() as u64;
        out.flush()?;
        Ok(summary)
    }

    /// The outage runs that start on `day` for `house`.
    fn outages(&self, house: &House, day: i64) -> Outages {
        let mut outages = Outages::EMPTY;
        if self.missing_rate <= 0.0 || self.missing_rate >= 1.0 {
            return outages;
        }
        // Expected runs per day, spread over enough candidate slots that each is unlikely.
        let per_day = self.missing_rate * MINUTES_PER_DAY as f64 / MEAN_OUTAGE_MINUTES;
        let slots = ((2.0 * per_day).ceil() as usize).clamp(4, MAX_OUTAGE_SLOTS);
        let p = (per_day / slots as f64).min(1.0);
        let mut rng = Rng(hash2(house.k_outage, day as u64));
        for _ in 0..slots {
            let hit = rng.unit() < p;
            let start = rng.below(MINUTES_PER_DAY as u64) as i64;
            let u = rng.unit();
            if hit {
                let len = MIN_OUTAGE_MINUTES
                    + (u * u * u * (MAX_OUTAGE_MINUTES - MIN_OUTAGE_MINUTES + 1) as f64) as i64;
                let first = day * MINUTES_PER_DAY + start;
                outages.runs[outages.len] = (first, first + len);
                outages.len += 1;
            }
        }
        outages
    }
}

/// The measures of `house` over `[ts, ts + interval_s s)`, given the day plans of every day from
/// the one before `ts` to the one holding the interval's end, in day order.
fn values(house: &House, plans: &[&DayPlan], ts: i64, interval_s: u32) -> [i32; MEASURES] {
    let dur = interval_s as i64 * 1000;
    let (a, b) = (ts, ts + dur);
    // Energies in W·ms per channel, reactive energy in var·ms, voltage·ms.
    let mut energy = [0.0f64; 4];
    let mut reactive = 0.0f64;
    let mut volt_ms = 0.0f64;
    let mut minute = a.div_euclid(MINUTE_MS);
    loop {
        let from = a.max(minute * MINUTE_MS);
        if from >= b {
            break;
        }
        let to = b.min((minute + 1) * MINUTE_MS);
        let base = house.minute_base(minute);
        let len = (to - from) as f64;
        energy[UNMETERED] += base.watts * len;
        reactive += base.vars * len;
        volt_ms += base.volts * len;
        minute += 1;
    }
    let fridge_on = house.fridge_on_ms(b) - house.fridge_on_ms(a);
    energy[LAUNDRY] += house.fridge_w * fridge_on as f64;
    reactive += house.fridge_var * fridge_on as f64;
    for plan in plans {
        plan.accumulate(a, b, &mut energy, &mut reactive);
    }

    let durf = dur as f64;
    let mwh = |e: f64| (e / 3600.0).round() as i32;
    let subs = [
        mwh(energy[KITCHEN]),
        mwh(energy[LAUNDRY]),
        mwh(energy[HEATER]),
    ];
    let sub_sum: i64 = subs.iter().map(|&s| s as i64).sum();
    let total = energy[UNMETERED] + energy[KITCHEN] + energy[LAUNDRY] + energy[HEATER];
    // Never less than what the sub-meters saw, after rounding: P·dur ≥ Σ sub · 3600.
    let p_w = ((total / durf).round() as i64).max((sub_sum * 3600 + dur - 1) / dur);
    let q_w = (reactive / durf).round() as i64;
    let volts = (volt_ms / durf - VOLT_DROP_PER_W * p_w as f64).clamp(MIN_VOLTAGE_V, MAX_VOLTAGE_V);
    let v_mv = (volts * 1000.0).round() as i64;
    let s_va = ((p_w * p_w + q_w * q_w) as f64).sqrt();
    let i_ma = (s_va * 1e6 / v_mv as f64).round() as i64;

    let mut out = [0i32; MEASURES];
    out[Measure::GlobalActivePower.index()] = p_w.clamp(0, i32::MAX as i64) as i32;
    out[Measure::GlobalReactivePower.index()] = q_w.clamp(0, i32::MAX as i64) as i32;
    out[Measure::Voltage.index()] = v_mv as i32;
    out[Measure::GlobalIntensity.index()] = i_ma.clamp(0, i32::MAX as i64) as i32;
    out[Measure::SubMetering1.index()] = subs[0];
    out[Measure::SubMetering2.index()] = subs[1];
    out[Measure::SubMetering3.index()] = subs[2];
    out
}

// ---------------------------------------------------------------------------------------------
// Randomness: SplitMix64 as a stream and as a keyed hash.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
const fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed hash of `index`, injective in `index` for a fixed `key`.
const fn hash2(key: u64, index: u64) -> u64 {
    fmix(key ^ fmix(index.wrapping_add(GOLDEN)))
}

/// A uniform float in `[0, 1)` from 21 bits of `h` starting at bit `shift`.
fn bits_unit(h: u64, shift: u32) -> f64 {
    ((h >> shift) & 0x1F_FFFF) as f64 / (1u64 << 21) as f64
}

/// A SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        fmix(self.0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform integer in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }

    /// A whole number of seconds in `[lo_s, hi_s)`, as ms.
    fn secs(&mut self, lo_s: u32, hi_s: u32) -> i64 {
        (lo_s as u64 + self.below((hi_s - lo_s).max(1) as u64)) as i64 * 1000
    }
}

// ---------------------------------------------------------------------------------------------
// Calendar helpers.

/// Saturday or Sunday (day 0, 1970-01-01, was a Thursday).
fn is_weekend(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5
}

/// Season in `[-1, 1]`: +1 in mid-January, -1 in mid-July, smooth in between.
fn season(day: i64) -> f64 {
    let x = ((day - 14) as f64 / DAYS_PER_YEAR).rem_euclid(1.0);
    let t = (2.0 * x - 1.0).abs();
    2.0 * t * t * (3.0 - 2.0 * t) - 1.0
}

/// Linear interpolation in an hourly table at minute-of-day `m` (wrapping at midnight).
fn hourly(table: &[f64; 24], m: i64) -> f64 {
    let m = m.rem_euclid(MINUTES_PER_DAY);
    let h = (m / 60) as usize;
    let f = (m % 60) as f64 / 60.0;
    table[h] + (table[(h + 1) % 24] - table[h]) * f
}

// ---------------------------------------------------------------------------------------------
// The household.

/// Per-household parameters, drawn from `(seed, household)`.
#[derive(Clone, Debug)]
struct House {
    k_day: u64,
    k_outage: u64,
    k_minute: u64,
    k_slow: u64,
    k_volt: u64,
    /// Multiplier of the base-load profile.
    scale: f64,
    /// How much later (minutes) than the profile the household lives.
    shift_min: i64,
    /// Smallest unmetered load, W.
    standby_w: f64,
    /// Reactive share of the base load.
    q_ratio: f64,
    /// Offset of the household's voltage, V.
    volt_offset: f64,
    fridge_period_ms: i64,
    fridge_on_ms: i64,
    fridge_phase_ms: i64,
    fridge_w: f64,
    fridge_var: f64,
    oven_w: f64,
    dish_heat_w: f64,
    washer_heat_w: f64,
    dryer_w: f64,
    has_dryer: bool,
    /// How often the household does laundry, relative to the average.
    laundry: f64,
    heater_w: f64,
    /// Night-tariff switch-on time, hours after midnight (22–23.5).
    heater_start_h: f64,
    /// Typical night heating time, minutes.
    hot_water_min: f64,
    has_ac: bool,
    ac_w: f64,
}

/// Base-load state of one clock minute.
struct MinuteBase {
    watts: f64,
    vars: f64,
    volts: f64,
}

impl House {
    fn new(seed: u64, household: u32) -> House {
        let key = hash2(hash2(seed, TAG_HOUSE), household as u64);
        let mut r = Rng(hash2(key, TAG_PARAMS));
        let fridge_period_s = 1200 + r.below(1200) as i64;
        let fridge_on_s = (fridge_period_s as f64 * r.range(0.35, 0.5)) as i64;
        let fridge_phase_s = r.below(fridge_period_s as u64) as i64;
        let fridge_w = r.range(85.0, 130.0).round();
        House {
            k_day: hash2(key, TAG_DAY),
            k_outage: hash2(key, TAG_OUTAGE),
            k_minute: hash2(key, TAG_MINUTE),
            k_slow: hash2(key, TAG_SLOW),
            k_volt: hash2(key, TAG_VOLT),
            scale: r.range(0.8, 1.25),
            shift_min: r.below(81) as i64 - 40,
            standby_w: r.range(120.0, 200.0).round(),
            q_ratio: r.range(0.08, 0.18),
            volt_offset: r.range(-1.5, 1.5),
            fridge_period_ms: fridge_period_s * 1000,
            fridge_on_ms: fridge_on_s * 1000,
            fridge_phase_ms: fridge_phase_s * 1000,
            fridge_w,
            fridge_var: (fridge_w * 0.9).round(),
            oven_w: r.range(1800.0, 2400.0).round(),
            dish_heat_w: r.range(1800.0, 2200.0).round(),
            washer_heat_w: r.range(1800.0, 2200.0).round(),
            dryer_w: r.range(1800.0, 2500.0).round(),
            has_dryer: r.chance(0.6),
            laundry: r.range(0.8, 1.4),
            heater_w: r.range(2000.0, 3000.0).round(),
            heater_start_h: r.range(22.0, 23.5),
            hot_water_min: r.range(80.0, 130.0),
            has_ac: r.chance(0.6),
            ac_w: r.range(1200.0, 2200.0).round(),
        }
    }

    /// Fridge compressor on-time (ms) from a fixed origin up to `t`: `F(b) - F(a)` is the
    /// on-time within `[a, b)`.
    fn fridge_on_ms(&self, t: i64) -> i64 {
        let u = t + self.fridge_phase_ms;
        u.div_euclid(self.fridge_period_ms) * self.fridge_on_ms
            + u.rem_euclid(self.fridge_period_ms).min(self.fridge_on_ms)
    }

    /// Unmetered base load, its reactive power and the supply voltage during clock minute
    /// `minute` (minutes since the epoch).
    fn minute_base(&self, minute: i64) -> MinuteBase {
        let day = minute.div_euclid(MINUTES_PER_DAY);
        let of_day = minute.rem_euclid(MINUTES_PER_DAY);
        let profile = if is_weekend(day) {
            &WEEKEND_PROFILE_W
        } else {
            &WEEKDAY_PROFILE_W
        };
        let typical = hourly(profile, of_day - self.shift_min);
        // Slow noise: random knots every 15 minutes, linearly interpolated.
        let knot = minute.div_euclid(15);
        let k0 = bits_unit(hash2(self.k_slow, knot as u64), 11);
        let k1 = bits_unit(hash2(self.k_slow, (knot + 1) as u64), 11);
        let slow = k0 + (k1 - k0) * (minute.rem_euclid(15) as f64 / 15.0);
        let h = hash2(self.k_minute, minute as u64);
        let fast = 0.92 + 0.16 * bits_unit(h, 0);
        let watts =
            (typical * self.scale * (1.0 + 0.18 * season(day)) * (0.75 + 0.5 * slow) * fast)
                .max(self.standby_w);
        let vars = watts * self.q_ratio * (0.7 + 0.6 * bits_unit(h, 21));
        // Voltage: hourly random knots, a daily shape and per-minute noise.
        let hour = minute.div_euclid(60);
        let v0 = bits_unit(hash2(self.k_volt, hour as u64), 11);
        let v1 = bits_unit(hash2(self.k_volt, (hour + 1) as u64), 11);
        let vslow = v0 + (v1 - v0) * (minute.rem_euclid(60) as f64 / 60.0);
        let volts = 235.5
            + self.volt_offset
            + 2.3 * (2.0 * vslow - 1.0)
            + hourly(&VOLTAGE_SHAPE_V, of_day)
            + 0.35 * (2.0 * bits_unit(h, 42) - 1.0);
        MinuteBase { watts, vars, volts }
    }
}

/// One appliance drawing constant power over `[start, end)` (ms since the epoch).
#[derive(Clone, Copy, Debug)]
struct Run {
    start: i64,
    end: i64,
    channel: usize,
    watts: f64,
    vars: f64,
}

/// The appliance runs that start on one day, sorted by start.
#[derive(Clone, Debug, Default)]
struct DayPlan {
    runs: Vec<Run>,
    /// Longest run, ms: a run starting before `a - longest` cannot reach `a`.
    longest: i64,
}

impl DayPlan {
    fn new(house: &House, day: i64) -> DayPlan {
        let mut plan = DayPlan {
            runs: Vec::with_capacity(64),
            longest: 0,
        };
        let mut r = Rng(hash2(house.k_day, day as u64));
        let midnight = day * time::DAY_MS;
        let weekend = is_weekend(day);
        let season = season(day);
        // A whole second between `lo` and `hi` hours after midnight.
        let at =
            |r: &mut Rng, lo: f64, hi: f64| midnight + (r.range(lo, hi) * 3600.0) as i64 * 1000;

        // Kitchen: microwave around meals.
        let lunch_p = if weekend { 0.5 } else { 0.3 };
        for (centre, p) in [(7.5, 0.35), (12.75, lunch_p), (19.5, 0.55)] {
            if r.chance(p) {
                let start = at(&mut r, centre - 0.6, centre + 0.6);
                let len = r.secs(60, 360);
                let w = r.range(1100.0, 1300.0).round();
                plan.run(KITCHEN, start, len, w, (0.3 * w).round());
            }
        }
        // Kitchen: oven, pre-heating then thermostat cycling.
        if r.chance(if weekend { 0.55 } else { 0.3 }) {
            let start = if weekend && r.chance(0.5) {
                at(&mut r, 11.3, 12.5)
            } else {
                at(&mut r, 18.3, 19.8)
            };
            let total = r.secs(30 * 60, 90 * 60);
            let preheat = r.secs(8 * 60, 14 * 60);
            let (on, off) = (r.secs(90, 200), r.secs(90, 240));
            plan.run(KITCHEN, start, preheat, house.oven_w, 0.0);
            plan.cycle(
                KITCHEN,
                start + preheat,
                total - preheat,
                (on, off),
                house.oven_w,
                0.0,
            );
        }
        // Kitchen: dishwasher programme.
        if r.chance(if weekend { 0.65 } else { 0.5 }) {
            let mut t = if weekend && r.chance(0.4) {
                at(&mut r, 13.5, 15.0)
            } else {
                at(&mut r, 20.5, 23.2)
            };
            let phases = [
                (r.secs(240, 480), 150.0, 100.0),
                (r.secs(15 * 60, 22 * 60), house.dish_heat_w, 0.0),
                (r.secs(25 * 60, 35 * 60), 150.0, 100.0),
                (r.secs(8 * 60, 14 * 60), house.dish_heat_w, 0.0),
                (r.secs(10 * 60, 20 * 60), 60.0, 30.0),
            ];
            for (len, w, q) in phases {
                plan.run(KITCHEN, t, len, w, q);
                t += len;
            }
        }

        // Laundry: washing machine, maybe followed by the tumble-drier.
        let wash_p = if weekend { 0.55 } else { 0.25 } * house.laundry;
        if r.chance(wash_p) {
            let mut t = if weekend {
                at(&mut r, 9.0, 17.0)
            } else if r.chance(0.5) {
                at(&mut r, 7.0, 8.5)
            } else {
                at(&mut r, 17.5, 20.5)
            };
            let motor = r.range(250.0, 400.0).round();
            let phases = [
                (r.secs(120, 300), 100.0, 120.0),
                (r.secs(10 * 60, 20 * 60), house.washer_heat_w, 40.0),
                (r.secs(30 * 60, 50 * 60), motor, (1.2 * motor).round()),
                (r.secs(10 * 60, 20 * 60), 150.0, 150.0),
                (r.secs(6 * 60, 12 * 60), 500.0, 450.0),
            ];
            for (len, w, q) in phases {
                plan.run(LAUNDRY, t, len, w, q);
                t += len;
            }
            if house.has_dryer && r.chance(0.35 + 0.3 * season.max(0.0)) {
                let start = t + r.secs(5 * 60, 40 * 60);
                let total = r.secs(45 * 60, 90 * 60);
                let (on, off) = (r.secs(8 * 60, 12 * 60), r.secs(2 * 60, 4 * 60));
                plan.run(LAUNDRY, start, total, 200.0, 160.0);
                plan.cycle(LAUNDRY, start, total, (on, off), house.dryer_w, 0.0);
            }
        }
        // Laundry: the room's light.
        for _ in 0..r.below(3) {
            let start = at(&mut r, 7.0, 22.0);
            let len = r.secs(60, 600);
            plan.run(LAUNDRY, start, len, 60.0, 0.0);
        }

        // Water heater on the night tariff, longer in winter; sometimes an afternoon top-up.
        let start = at(
            &mut r,
            house.heater_start_h - 0.15,
            house.heater_start_h + 0.15,
        );
        let minutes = house.hot_water_min * (1.0 + 0.3 * season) * r.range(0.6, 1.4);
        plan.run(
            HEATER,
            start,
            (minutes * 60.0) as i64 * 1000,
            house.heater_w,
            0.0,
        );
        if r.chance(0.2) {
            let start = at(&mut r, 13.0, 15.0);
            let len = r.secs(15 * 60, 50 * 60);
            plan.run(HEATER, start, len, house.heater_w, 0.0);
        }
        // Air conditioner on hot summer afternoons.
        if house.has_ac && season < -0.3 {
            let heat = (-season - 0.3) / 0.7;
            if r.chance(0.15 + 0.7 * heat) {
                let start = at(&mut r, 12.5, 15.5);
                let end = at(&mut r, 19.0, 22.5);
                let (on, off) = (r.secs(10 * 60, 25 * 60), r.secs(5 * 60, 15 * 60));
                let q = (0.3 * house.ac_w).round();
                plan.cycle(HEATER, start, end - start, (on, off), house.ac_w, q);
            }
        }

        // Unmetered: kettle, vacuum cleaner, iron, space heater on cold evenings.
        let tea_p = if weekend { 0.5 } else { 0.2 };
        for (centre, p) in [(7.2, 0.6), (16.5, tea_p), (21.0, 0.4)] {
            if r.chance(p) {
                let start = at(&mut r, centre - 0.5, centre + 0.5);
                let len = r.secs(120, 240);
                let w = r.range(1900.0, 2200.0).round();
                plan.run(UNMETERED, start, len, w, 0.0);
            }
        }
        if r.chance(if weekend { 0.35 } else { 0.12 }) {
            let start = at(&mut r, 9.5, 17.0);
            let len = r.secs(10 * 60, 35 * 60);
            let w = r.range(1100.0, 1500.0).round();
            plan.run(UNMETERED, start, len, w, (0.5 * w).round());
        }
        if r.chance(if weekend { 0.15 } else { 0.08 }) {
            let start = at(&mut r, 10.0, 21.0);
            let total = r.secs(20 * 60, 60 * 60);
            let (on, off) = (r.secs(60, 90), r.secs(30, 60));
            plan.cycle(UNMETERED, start, total, (on, off), 1000.0, 0.0);
        }
        if season > 0.3 && r.chance(season * 0.5) {
            let start = at(&mut r, 17.5, 19.5);
            let total = r.secs(2 * 3600, 4 * 3600);
            let (on, off) = (r.secs(10 * 60, 20 * 60), r.secs(10 * 60, 20 * 60));
            plan.cycle(UNMETERED, start, total, (on, off), 1500.0, 0.0);
        }

        plan.runs.sort_by_key(|run| run.start);
        plan
    }

    /// Adds a run of `len` ms from `start`.
    fn run(&mut self, channel: usize, start: i64, len: i64, watts: f64, vars: f64) {
        if len <= 0 {
            return;
        }
        self.longest = self.longest.max(len);
        self.runs.push(Run {
            start,
            end: start + len,
            channel,
            watts,
            vars,
        });
    }

    /// Adds thermostat cycling: `(on, off)` ms periods for `total` ms from `start`.
    fn cycle(
        &mut self,
        channel: usize,
        start: i64,
        total: i64,
        (on, off): (i64, i64),
        watts: f64,
        vars: f64,
    ) {
        let end = start + total;
        let mut t = start;
        while t < end {
            self.run(channel, t, on.min(end - t), watts, vars);
            t += on + off.max(1000);
        }
    }

    /// Adds the energy (W·ms) and reactive energy (var·ms) of the runs within `[a, b)`.
    fn accumulate(&self, a: i64, b: i64, energy: &mut [f64; 4], reactive: &mut f64) {
        let hi = self.runs.partition_point(|r| r.start < b);
        let lo = self.runs[..hi].partition_point(|r| r.start <= a - self.longest);
        for run in &self.runs[lo..hi] {
            let overlap = b.min(run.end) - a.max(run.start);
            if overlap > 0 {
                energy[run.channel] += run.watts * overlap as f64;
                *reactive += run.vars * overlap as f64;
            }
        }
    }
}

/// Outage runs starting on one day: half-open minute ranges, minutes since the epoch.
#[derive(Clone, Copy, Debug)]
struct Outages {
    runs: [(i64, i64); MAX_OUTAGE_SLOTS],
    len: usize,
}

impl Outages {
    const EMPTY: Outages = Outages {
        runs: [(0, 0); MAX_OUTAGE_SLOTS],
        len: 0,
    };

    fn contains(&self, minute: i64) -> bool {
        self.runs[..self.len]
            .iter()
            .any(|&(from, to)| (from..to).contains(&minute))
    }
}

/// The state of a sequential scan of one household: its parameters and the plans of the
/// current and previous day.
#[derive(Clone, Debug)]
struct HouseCache {
    house: House,
    day: i64,
    plans: [DayPlan; 2],
    outages: [Outages; 2],
}

impl HouseCache {
    fn new(seed: u64, household: u32) -> HouseCache {
        HouseCache {
            house: House::new(seed, household),
            day: i64::MIN,
            plans: [DayPlan::default(), DayPlan::default()],
            outages: [Outages::EMPTY; 2],
        }
    }

    /// Makes the cached plans those of `day - 1` and `day`.
    fn move_to(&mut self, generator: &Generator, day: i64) {
        if day == self.day {
            return;
        }
        if self.day != i64::MIN && day == self.day + 1 {
            self.plans.swap(0, 1);
            self.outages.swap(0, 1);
        } else {
            self.plans[0] = DayPlan::new(&self.house, day - 1);
            self.outages[0] = generator.outages(&self.house, day - 1);
        }
        self.plans[1] = DayPlan::new(&self.house, day);
        self.outages[1] = generator.outages(&self.house, day);
        self.day = day;
    }

    /// Whether the minute holding `ts`, on the cached day, is missing.
    fn is_missing(&self, rate: f64, ts: i64) -> bool {
        let minute = ts.div_euclid(MINUTE_MS);
        rate >= 1.0 || self.outages[0].contains(minute) || self.outages[1].contains(minute)
    }

    /// The values of `[ts, ts + interval_s s)`, moving the cache to the day holding `ts`.
    fn values(&mut self, generator: &Generator, ts: i64, interval_s: u32) -> [i32; MEASURES] {
        let day = ts.div_euclid(time::DAY_MS);
        self.move_to(generator, day);
        let last = (ts + interval_s as i64 * 1000 - 1).div_euclid(time::DAY_MS);
        if last == day {
            return values(
                &self.house,
                &[&self.plans[0], &self.plans[1]],
                ts,
                interval_s,
            );
        }
        // The interval runs past midnight: add the plans of the following days.
        let later: Vec<DayPlan> = (day + 1..=last)
            .map(|d| DayPlan::new(&self.house, d))
            .collect();
        let mut plans: Vec<&DayPlan> = vec![&self.plans[0], &self.plans[1]];
        plans.extend(later.iter());
        values(&self.house, &plans, ts, interval_s)
    }
}

/// One household's readings on demand, in any order, owning its cache of day plans (unlike
/// [`Readings`], it borrows no [`Generator`], so a long-lived operator can keep one per
/// household): see [`Generator::household`].
#[derive(Clone, Debug)]
pub struct Household {
    meter: MeterId,
    cache: HouseCache,
}

impl Household {
    /// The household's meter.
    pub fn meter(&self) -> MeterId {
        self.meter
    }

    /// The reading of `[ts, ts + interval_s s)`: exactly [`Generator::reading`], faster when
    /// calls move forward through time (each day's schedule is drawn once).
    pub fn reading(&mut self, generator: &Generator, ts: i64, interval_s: u32) -> Reading {
        let interval_s = interval_s.max(1);
        Reading {
            meter: self.meter,
            ts,
            interval_s,
            values: self.cache.values(generator, ts, interval_s),
            origin: Origin::default(),
        }
    }
}

/// Iterator over consecutive readings of one household: see [`Generator::readings`].
#[derive(Clone, Debug)]
pub struct Readings<'g> {
    generator: &'g Generator,
    meter: MeterId,
    cache: HouseCache,
    next_ts: i64,
    interval_s: u32,
    remaining: u64,
}

impl Iterator for Readings<'_> {
    type Item = Reading;

    fn next(&mut self) -> Option<Reading> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let ts = self.next_ts;
        self.next_ts += self.interval_s as i64 * 1000;
        Some(Reading {
            meter: self.meter,
            ts,
            interval_s: self.interval_s,
            values: self.cache.values(self.generator, ts, self.interval_s),
            origin: Origin::default(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, usize::try_from(self.remaining).ok())
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting without `format!`.

/// Appends the decimal digits of `v`.
fn push_uint(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends thousandths `v` as a number with exactly three decimals (`4.216`, `0.000`).
fn push_milli(buf: &mut Vec<u8>, v: i32) {
    if v < 0 {
        buf.push(b'-');
    }
    let a = v.unsigned_abs();
    push_uint(buf, (a / 1000) as u64);
    let f = a % 1000;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

/// Appends the date of `day` (days since the epoch) as `d/m/yyyy` without zero padding.
fn push_date(buf: &mut Vec<u8>, day: i64) {
    let (y, m, d) = time::civil_from_days(day);
    push_uint(buf, d as u64);
    buf.push(b'/');
    push_uint(buf, m as u64);
    buf.push(b'/');
    if y < 0 {
        buf.push(b'-');
    }
    push_uint(buf, y.unsigned_abs());
}

/// Writes `hh:mm:ss;` of `ts` into `clock`.
fn fill_clock(clock: &mut [u8; 9], ts: i64) {
    let s = ts.rem_euclid(time::DAY_MS) / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    *clock = [
        b'0' + (h / 10) as u8,
        b'0' + (h % 10) as u8,
        b':',
        b'0' + (m / 10) as u8,
        b'0' + (m % 10) as u8,
        b':',
        b'0' + (s / 10) as u8,
        b'0' + (s % 10) as u8,
        b';',
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    const P: usize = Measure::GlobalActivePower as usize;
    const Q: usize = Measure::GlobalReactivePower as usize;
    const V: usize = Measure::Voltage as usize;
    const I: usize = Measure::GlobalIntensity as usize;
    const S1: usize = Measure::SubMetering1 as usize;
    const S2: usize = Measure::SubMetering2 as usize;
    const S3: usize = Measure::SubMetering3 as usize;

    fn generator(seed: u64, start_ms: i64, missing_rate: f64) -> Generator {
        Generator::new(GeneratorConfig {
            seed,
            start_ms,
            missing_rate,
            ..GeneratorConfig::default()
        })
    }

    /// 30 days of one-minute readings of household 1 from `start_ms`.
    fn month(seed: u64, household: u32, start_ms: i64) -> Vec<Reading> {
        generator(seed, start_ms, 0.0)
            .readings(household, start_ms, 60, 30 * 1440)
            .collect()
    }

    fn ms(y: i64, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        time::naive_to_ms(y, m, d, h, mi, s).unwrap()
    }

    /// Minute of the day of `ts`.
    fn minute_of_day(ts: i64) -> i64 {
        ts.rem_euclid(time::DAY_MS) / MINUTE_MS
    }

    /// Average power in W of a sub-meter value (mWh) over a one-minute reading.
    fn sub_w(mwh: i32) -> f64 {
        mwh as f64 * 3.6 / 60.0
    }

    fn mean(xs: impl Iterator<Item = f64>) -> f64 {
        let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        assert!(n > 0, "mean of nothing");
        sum / n as f64
    }

    /// Runs of consecutive minutes where `on` holds, merging gaps of up to `gap` minutes:
    /// `(first index, length in minutes, largest value)`.
    fn episodes(
        rs: &[Reading],
        gap: usize,
        on: impl Fn(&Reading) -> bool,
    ) -> Vec<(usize, usize, i32)> {
        let mut out: Vec<(usize, usize, i32)> = Vec::new();
        let mut last_on: Option<usize> = None;
        for (k, r) in rs.iter().enumerate() {
            if !on(r) {
                continue;
            }
            match (last_on, out.last_mut()) {
                (Some(prev), Some(ep)) if k - prev <= gap + 1 => {
                    ep.1 = k - ep.0 + 1;
                    ep.2 = ep.2.max(r.values[S1].max(r.values[S2]).max(r.values[S3]));
                }
                _ => out.push((k, 1, r.values[S1].max(r.values[S2]).max(r.values[S3]))),
            }
            last_on = Some(k);
        }
        out
    }

    #[test]
    fn defaults_start_on_the_first_uci_day() {
        let c = GeneratorConfig::default();
        assert_eq!(c.start_ms, ms(2006, 12, 16, 0, 0, 0));
        assert_eq!(c.start_ms, DEFAULT_START_MS);
        assert_eq!((c.households, c.days, c.seed), (1, 30, DEFAULT_SEED));
        assert_eq!(c.missing_rate, DEFAULT_MISSING_RATE);
        // 16/12/2006 was a Saturday, 18/12/2006 a Monday.
        let day = c.start_ms / time::DAY_MS;
        assert!(is_weekend(day) && is_weekend(day + 1) && !is_weekend(day + 2));
        assert!(season(day) > 0.8 && season(day + 30) > 0.99 && season(day + 210) < -0.99);
        assert_eq!(Generator::new(c).end_ms(), ms(2007, 1, 15, 0, 0, 0));
    }

    #[test]
    fn meters_are_named_household_n() {
        let g = Generator::new(GeneratorConfig::default());
        assert_eq!(g.meter(1).as_str(), "household-1");
        assert_eq!(g.meter(12).as_str(), "household-12");
        assert_eq!(g.meter(u32::MAX).as_str(), "household-4294967295");
        let r = g.reading(3, DEFAULT_START_MS, 60);
        assert_eq!(r.meter.as_str(), "household-3");
        assert_eq!(
            (r.ts, r.interval_s, r.origin),
            (DEFAULT_START_MS, 60, Origin::default())
        );
        assert_eq!(g.reading(1, DEFAULT_START_MS, 0).interval_s, 1);
    }

    #[test]
    fn a_household_gives_the_generators_readings_in_any_order() {
        let g = Generator::new(GeneratorConfig::default());
        let mut house = g.household(3);
        assert_eq!(house.meter().as_str(), "household-3");
        // Forward through two midnights one second at a time, then back a day, then an
        // interval across midnight.
        let mut calls: Vec<(i64, u32)> = (0..200)
            .map(|k| (DEFAULT_START_MS + time::DAY_MS - 100_000 + k * 1_000, 1))
            .collect();
        calls.push((DEFAULT_START_MS + 3_600_000, 1));
        calls.push((DEFAULT_START_MS + 2 * time::DAY_MS - 30_000, 60));
        for (ts, interval) in calls {
            assert_eq!(
                house.reading(&g, ts, interval),
                g.reading(3, ts, interval),
                "{ts}"
            );
        }
    }

    #[test]
    fn reading_is_a_pure_function_of_its_arguments() {
        let g = Generator::new(GeneratorConfig::default());
        let other = Generator::new(GeneratorConfig::default());
        let calls: Vec<(u32, i64, u32)> = (0..150u32)
            .map(|k| {
                let ts = DEFAULT_START_MS + k as i64 * 7_919_000 + (k % 7) as i64 * 1_000;
                (1 + k % 3, ts, [1, 60, 900][k as usize % 3])
            })
            .collect();
        let forward: Vec<Reading> = calls.iter().map(|&(h, t, i)| g.reading(h, t, i)).collect();
        let mut backward: Vec<Reading> = calls
            .iter()
            .rev()
            .map(|&(h, t, i)| other.reading(h, t, i))
            .collect();
        backward.reverse();
        assert_eq!(forward, backward);
        // The cached scan gives the very same readings.
        let scan: Vec<Reading> = g
            .readings(2, DEFAULT_START_MS - 30_000, 60, 3_000)
            .collect();
        for (k, r) in scan.iter().enumerate().step_by(41) {
            assert_eq!(
                *r,
                g.reading(2, DEFAULT_START_MS - 30_000 + k as i64 * 60_000, 60)
            );
        }
        // Households differ.
        let a = g.reading(1, DEFAULT_START_MS + 20 * 3_600_000, 3_600);
        let b = g.reading(2, DEFAULT_START_MS + 20 * 3_600_000, 3_600);
        assert_ne!(a.values, b.values);
    }

    #[test]
    fn output_is_deterministic_and_depends_on_the_seed() {
        let config = GeneratorConfig {
            households: 2,
            days: 2,
            ..GeneratorConfig::default()
        };
        let write = |c: GeneratorConfig| {
            let mut out = Vec::new();
            let summary = Generator::new(c).write_uci(&mut out).unwrap();
            assert_eq!(summary.bytes, out.len() as u64);
            String::from_utf8(out).unwrap()
        };
        let a = write(config);
        assert_eq!(a, write(config));
        let b = write(GeneratorConfig { seed: 43, ..config });
        assert_ne!(a, b);
        let differing = a.lines().zip(b.lines()).filter(|(x, y)| x != y).count();
        assert!(
            differing > a.lines().count() * 9 / 10,
            "{differing} lines differ"
        );
    }

    #[test]
    fn readings_are_valid_and_physically_consistent() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let limits = Limits::default();
        let (mut v_typical, mut q_small) = (0usize, 0usize);
        for r in &rs {
            r.validate(&limits).unwrap();
            let v = r.values;
            let subs = v[S1] as i64 + v[S2] as i64 + v[S3] as i64;
            assert!(
                v[P] as i64 * r.interval_s as i64 * 1000 >= subs * 3600,
                "{r:?}"
            );
            let (p_kw, q_kw, volts) = (v[P] as f64 / 1e3, v[Q] as f64 / 1e3, v[V] as f64 / 1e3);
            let s_va = (p_kw * p_kw + q_kw * q_kw).sqrt() * 1e3;
            assert!((v[I] as f64 / 1e3 - s_va / volts).abs() < 0.1, "{r:?}");
            assert!((225_000..=245_000).contains(&v[V]), "{r:?}");
            assert!(v[Q] <= 1_500, "{r:?}");
            v_typical += (230_000..=240_000).contains(&v[V]) as usize;
            q_small += (v[Q] <= 500) as usize;
        }
        assert!(
            v_typical * 100 >= rs.len() * 95,
            "{v_typical} of {}",
            rs.len()
        );
        assert!(q_small * 100 >= rs.len() * 98, "{q_small} of {}", rs.len());
        let q_mean = mean(rs.iter().map(|r| r.values[Q] as f64 / 1e3));
        assert!((0.05..0.3).contains(&q_mean), "mean Q {q_mean}");
        let v_mean = mean(rs.iter().map(|r| r.values[V] as f64 / 1e3));
        assert!((232.0..238.0).contains(&v_mean), "mean V {v_mean}");
    }

    #[test]
    fn thirty_days_have_realistic_magnitudes() {
        for seed in [DEFAULT_SEED, 1, 7] {
            let rs = month(seed, 1, DEFAULT_START_MS);
            let p_mean = mean(rs.iter().map(|r| r.values[P] as f64 / 1e3));
            let p_max = rs.iter().map(|r| r.values[P]).max().unwrap() as f64 / 1e3;
            assert!(
                (0.6..=1.8).contains(&p_mean),
                "seed {seed}: mean P {p_mean}"
            );
            assert!((4.0..=12.0).contains(&p_max), "seed {seed}: max P {p_max}");
            // Sub-meters in Wh per minute, near the real file's 1.1, 1.3 and 6.5.
            let sub = |m: usize| mean(rs.iter().map(|r| r.values[m] as f64 / 1e3));
            assert!(
                (0.3..3.0).contains(&sub(S1)),
                "seed {seed}: sub 1 {}",
                sub(S1)
            );
            assert!(
                (0.5..3.0).contains(&sub(S2)),
                "seed {seed}: sub 2 {}",
                sub(S2)
            );
            assert!(
                (2.0..12.0).contains(&sub(S3)),
                "seed {seed}: sub 3 {}",
                sub(S3)
            );
        }
    }

    #[test]
    fn daily_rhythm_has_quiet_nights_and_two_peaks() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let weekdays: Vec<&Reading> = rs
            .iter()
            .filter(|r| !is_weekend(r.ts.div_euclid(time::DAY_MS)))
            .collect();
        let window = |from_h: i64, to_h: i64| {
            mean(
                weekdays
                    .iter()
                    .filter(|r| (from_h * 60..to_h * 60).contains(&minute_of_day(r.ts)))
                    .map(|r| r.values[P] as f64 / 1e3),
            )
        };
        let (night, morning, day, evening) =
            (window(2, 5), window(7, 9), window(10, 16), window(18, 22));
        assert!((0.2..0.7).contains(&night), "night {night}");
        assert!(
            morning > 1.5 * night && morning > day,
            "morning {morning} day {day}"
        );
        assert!(
            evening > 3.0 * night && evening > morning,
            "evening {evening}"
        );
        // The unmetered base load at night is 0.3–0.5 kW-ish.
        let mut base: Vec<f64> = rs
            .iter()
            .filter(|r| (180..300).contains(&minute_of_day(r.ts)))
            .map(|r| {
                (r.values[P] as f64
                    - (sub_w(r.values[S1]) + sub_w(r.values[S2]) + sub_w(r.values[S3])))
                    / 1e3
            })
            .collect();
        base.sort_by(f64::total_cmp);
        let median = base[base.len() / 2];
        assert!((0.2..0.6).contains(&median), "night base {median}");
    }

    #[test]
    fn weekends_differ_from_weekdays() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let window = |weekend: bool, from_min: i64, to_min: i64| {
            mean(
                rs.iter()
                    .filter(|r| is_weekend(r.ts.div_euclid(time::DAY_MS)) == weekend)
                    .filter(|r| (from_min..to_min).contains(&minute_of_day(r.ts)))
                    .map(|r| r.values[P] as f64 / 1e3),
            )
        };
        let (we_day, wd_day) = (window(true, 600, 960), window(false, 600, 960));
        assert!(
            we_day > 1.2 * wd_day,
            "weekend day {we_day} vs weekday {wd_day}"
        );
        let (we_early, wd_early) = (window(true, 390, 480), window(false, 390, 480));
        assert!(
            wd_early > 1.2 * we_early,
            "weekday early {wd_early} vs weekend {we_early}"
        );
    }

    #[test]
    fn winter_base_load_exceeds_summer_base_load() {
        let house = House::new(DEFAULT_SEED, 1);
        let week = |from: i64| {
            let first = from / MINUTE_MS;
            mean((first..first + 7 * MINUTES_PER_DAY).map(|m| house.minute_base(m).watts))
        };
        let (winter, summer) = (week(ms(2007, 1, 8, 0, 0, 0)), week(ms(2007, 7, 9, 0, 0, 0)));
        assert!(
            winter > 1.2 * summer,
            "winter {winter} W, summer {summer} W"
        );
        assert!(house.standby_w <= summer && summer < 1_000.0);
    }

    #[test]
    fn one_second_readings_add_up_to_the_minute() {
        let g = Generator::new(GeneratorConfig::default());
        let minutes: Vec<Reading> = g.readings(1, DEFAULT_START_MS, 60, 2 * 1440).collect();
        // Minutes where an appliance switches (a sub-meter changes) plus a regular sample.
        let mut picked: Vec<&Reading> = minutes
            .windows(2)
            .filter(|w| (S1..=S3).any(|m| (w[0].values[m] == 0) != (w[1].values[m] == 0)))
            .map(|w| &w[1])
            .step_by(3)
            .take(25)
            .collect();
        assert!(picked.len() >= 20, "only {} edges", picked.len());
        picked.extend(minutes.iter().step_by(157));
        for m in picked {
            let seconds: Vec<Reading> = g.readings(1, m.ts, 1, 60).collect();
            for s in &seconds {
                assert_eq!(s.interval_s, 1);
                s.validate(&Limits::default()).unwrap();
            }
            for sub in [S1, S2, S3] {
                let sum: i64 = seconds.iter().map(|s| s.values[sub] as i64).sum();
                assert!(
                    (sum - m.values[sub] as i64).abs() <= 31,
                    "sub {sub}: {sum} vs {m:?}"
                );
            }
            let p = mean(seconds.iter().map(|s| s.values[P] as f64));
            assert!((p - m.values[P] as f64).abs() <= 1.0, "P {p} vs {m:?}");
            let q = mean(seconds.iter().map(|s| s.values[Q] as f64));
            assert!((q - m.values[Q] as f64).abs() <= 1.0, "Q {q} vs {m:?}");
        }
        // A steady one-second reading holds 1/60 of its minute.
        let quiet = minutes
            .iter()
            .find(|r| r.values[S3] > 30_000)
            .expect("a heater minute");
        let s = g.reading(1, quiet.ts + 30_000, 1);
        assert!(
            (s.values[S3] as f64 * 60.0 - quiet.values[S3] as f64).abs() < 60.0,
            "{s:?} {quiet:?}"
        );
    }

    #[test]
    fn an_hour_reading_sums_its_minutes() {
        let g = Generator::new(GeneratorConfig::default());
        for h in [0i64, 7, 19, 22, 23, 40, 95] {
            let from = DEFAULT_START_MS + h * 3_600_000;
            let hour = g.reading(1, from, 3_600);
            let minutes: Vec<Reading> = g.readings(1, from, 60, 60).collect();
            for sub in [S1, S2, S3] {
                let sum: i64 = minutes.iter().map(|r| r.values[sub] as i64).sum();
                assert!(
                    (sum - hour.values[sub] as i64).abs() <= 31,
                    "hour {h} sub {sub}"
                );
            }
            let p = mean(minutes.iter().map(|r| r.values[P] as f64));
            assert!(
                (p - hour.values[P] as f64).abs() <= 1.0,
                "hour {h}: {p} vs {hour:?}"
            );
        }
    }

    #[test]
    fn kitchen_runs_are_occasional_kilowatt_appliances() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let idle = rs.iter().filter(|r| r.values[S1] == 0).count();
        assert!(
            idle * 10 > rs.len() * 8,
            "kitchen idle {idle} of {}",
            rs.len()
        );
        let runs = episodes(&rs, 5, |r| r.values[S1] > 0);
        assert!(
            (15..200).contains(&runs.len()),
            "{} kitchen runs",
            runs.len()
        );
        // One programme lasts at most ~100 min (oven then dishwasher may chain up to ~3 h).
        assert!(runs.iter().all(|&(_, len, _)| len <= 200), "{runs:?}");
        let long = runs.iter().filter(|&&(_, len, _)| len > 100).count();
        assert!(long * 10 <= runs.len(), "{runs:?}");
        assert!(
            runs.iter().any(|&(_, len, _)| len >= 30),
            "no oven or dishwasher: {runs:?}"
        );
        let peaks: Vec<f64> = runs
            .iter()
            .map(|&(k, len, _)| {
                rs[k..k + len]
                    .iter()
                    .map(|r| sub_w(r.values[S1]))
                    .fold(0.0, f64::max)
            })
            .collect();
        // One appliance draws 1–2.5 kW; two at once (microwave during the oven) stay below 3.6 kW.
        assert!(peaks.iter().all(|&w| w <= 3_600.0), "{peaks:?}");
        let single = peaks.iter().filter(|&&w| w <= 2_500.0).count();
        assert!(single * 10 >= peaks.len() * 9, "{peaks:?}");
        let kw = peaks.iter().filter(|&&w| w >= 1_000.0).count();
        assert!(kw * 2 > peaks.len(), "{peaks:?}");
    }

    #[test]
    fn the_fridge_cycles_every_twenty_to_forty_minutes() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        // 02:00–05:00: nothing else runs in the laundry room.
        let mut starts = 0usize;
        let mut on = 0usize;
        let mut nights = 0usize;
        for night in rs.chunks(1440) {
            let w = &night[120..300];
            nights += 1;
            starts += w
                .windows(2)
                .filter(|p| p[0].values[S2] == 0 && p[1].values[S2] > 0)
                .count();
            on += w.iter().filter(|r| r.values[S2] > 0).count();
            for r in w {
                assert!(sub_w(r.values[S2]) <= 140.0, "{r:?}");
            }
            assert!(w.iter().any(|r| sub_w(r.values[S2]) >= 70.0));
        }
        let per_hour = starts as f64 / (nights * 3) as f64;
        assert!(
            (1.4..=3.1).contains(&per_hour),
            "{per_hour} fridge cycles per hour"
        );
        let share = on as f64 / (nights * 180) as f64;
        assert!((0.3..0.7).contains(&share), "compressor on {share}");
    }

    #[test]
    fn laundry_shows_washing_and_drying_cycles() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let heating = episodes(&rs, 5, |r| sub_w(r.values[S2]) >= 1_500.0);
        assert!(heating.len() >= 4, "{heating:?}");
        assert!(heating.iter().all(|&(_, len, _)| len <= 100), "{heating:?}");
        // A washing programme also has a long motor phase of a few hundred W.
        let motor = episodes(&rs, 0, |r| (200.0..600.0).contains(&sub_w(r.values[S2])));
        assert!(motor.iter().filter(|&&(_, len, _)| len >= 25).count() >= heating.len() / 2);
    }

    #[test]
    fn the_water_heater_runs_long_on_the_night_tariff() {
        let rs = month(DEFAULT_SEED, 1, DEFAULT_START_MS);
        let runs = episodes(&rs, 0, |r| sub_w(r.values[S3]) >= 1_800.0);
        let night: Vec<_> = runs
            .iter()
            .filter(|&&(k, len, _)| {
                len >= 30 && (21 * 60 + 30..24 * 60).contains(&minute_of_day(rs[k].ts))
            })
            .collect();
        assert!(night.len() >= 27, "{runs:?}");
        let avg = mean(night.iter().map(|&&(_, len, _)| len as f64));
        assert!((60.0..240.0).contains(&avg), "mean heating {avg} min");
        for r in &rs {
            assert!(sub_w(r.values[S3]) <= 3_050.0, "{r:?}");
        }
    }

    #[test]
    fn air_conditioning_runs_only_in_summer() {
        let household = (1..50)
            .find(|&h| House::new(DEFAULT_SEED, h).has_ac)
            .expect("a household with AC");
        let late_afternoon = |start: i64| {
            let rs = month(DEFAULT_SEED, household, start);
            rs.chunks(1440)
                .filter(|day| day[16 * 60..19 * 60].iter().any(|r| r.values[S3] > 0))
                .count()
        };
        assert_eq!(late_afternoon(ms(2007, 1, 1, 0, 0, 0)), 0);
        let summer = late_afternoon(ms(2007, 7, 1, 0, 0, 0));
        assert!(summer >= 10, "AC on {summer} July days");
    }

    #[test]
    fn outages_come_in_runs_at_about_the_missing_rate() {
        let start = DEFAULT_START_MS;
        let minutes = 120 * MINUTES_PER_DAY;
        let g = generator(DEFAULT_SEED, start, 0.05);
        let missing: Vec<bool> = (0..minutes)
            .map(|k| g.is_missing(1, start + k * MINUTE_MS))
            .collect();
        let rate = missing.iter().filter(|&&m| m).count() as f64 / minutes as f64;
        assert!((0.03..0.07).contains(&rate), "missing rate {rate}");
        let mut runs = Vec::new();
        let mut len = 0i64;
        for &m in missing.iter().chain([false].iter()) {
            if m {
                len += 1;
            } else if len > 0 {
                runs.push(len);
                len = 0;
            }
        }
        let avg = mean(runs.iter().map(|&l| l as f64));
        assert!(
            (20.0..150.0).contains(&avg),
            "mean outage {avg} min over {} runs",
            runs.len()
        );
        assert!(runs.iter().all(|&l| l >= MIN_OUTAGE_MINUTES));
        assert!(
            runs.iter().any(|&l| l >= 120) && runs.iter().any(|&l| l <= 10),
            "{runs:?}"
        );
        // Seconds inside a missing minute are missing too.
        let k = missing.iter().position(|&m| m).unwrap() as i64;
        assert!(g.is_missing(1, start + k * MINUTE_MS + 59_999));
        // The rate does not change the values, and 0 and 1 are exact.
        let ts = start + k * MINUTE_MS;
        assert_eq!(
            g.reading(1, ts, 60),
            generator(DEFAULT_SEED, start, 0.0).reading(1, ts, 60)
        );
        let none = generator(DEFAULT_SEED, start, 0.0);
        let all = generator(DEFAULT_SEED, start, 1.0);
        assert!((0..minutes)
            .step_by(13)
            .all(|k| !none.is_missing(1, start + k * MINUTE_MS)));
        assert!((0..minutes)
            .step_by(13)
            .all(|k| all.is_missing(1, start + k * MINUTE_MS)));
    }

    #[test]
    fn default_missing_rate_is_about_one_percent() {
        let g = Generator::new(GeneratorConfig::default());
        let minutes = 365 * MINUTES_PER_DAY;
        let mut missing = 0usize;
        for household in 1..=3 {
            let mut cache = HouseCache::new(DEFAULT_SEED, household);
            for k in 0..minutes {
                let ts = DEFAULT_START_MS + k * MINUTE_MS;
                cache.move_to(&g, ts.div_euclid(time::DAY_MS));
                missing += cache.is_missing(g.missing_rate, ts) as usize;
            }
        }
        let rate = missing as f64 / (3 * minutes) as f64;
        assert!((0.006..0.014).contains(&rate), "missing rate {rate}");
    }

    /// Parses a `d.ddd` field into thousandths, checking it has exactly three decimals.
    fn thousandths(field: &str) -> i32 {
        let (int, frac) = field.split_once('.').unwrap_or_else(|| panic!("{field:?}"));
        assert!(
            !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()),
            "{field:?}"
        );
        assert!(
            frac.len() == 3 && frac.bytes().all(|b| b.is_ascii_digit()),
            "{field:?}"
        );
        int.parse::<i32>().unwrap() * 1000 + frac.parse::<i32>().unwrap()
    }

    #[test]
    fn uci_output_parses_back_to_the_readings() {
        let g = generator(DEFAULT_SEED, DEFAULT_START_MS, 0.05);
        let g = Generator::new(GeneratorConfig {
            days: 3,
            ..*g.config()
        });
        let mut out = Vec::new();
        let summary = g.write_uci(&mut out).unwrap();
        assert_eq!(summary.bytes, out.len() as u64);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n"));
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], UCI_HEADER);
        assert_eq!(lines[0].split(';').count(), 9);
        assert_eq!(summary.rows, 3 * 1440);
        assert_eq!(lines.len() as u64, summary.rows + 1);
        let mut missing = 0;
        for (k, line) in lines[1..].iter().enumerate() {
            let ts = DEFAULT_START_MS + k as i64 * MINUTE_MS;
            let f: Vec<&str> = line.split(';').collect();
            assert_eq!(f.len(), 9, "{line}");
            let day = 16 + k / 1440;
            assert_eq!(f[0], format!("{day}/12/2006"));
            let m = k % 1440;
            assert_eq!(f[1], format!("{:02}:{:02}:00", m / 60, m % 60));
            if f[2] == "?" {
                assert!(
                    f[2..8].iter().all(|&x| x == "?") && f[8].is_empty(),
                    "{line}"
                );
                assert!(line.ends_with(";?;?;?;?;?;?;"));
                assert!(g.is_missing(1, ts));
                missing += 1;
            } else {
                assert!(!g.is_missing(1, ts));
                let values: Vec<i32> = f[2..].iter().map(|x| thousandths(x)).collect();
                if k % 7 == 0 {
                    assert_eq!(values, g.reading(1, ts, 60).values.to_vec(), "{line}");
                }
            }
        }
        assert_eq!(missing, summary.missing);
        assert!(
            missing > 0 && missing < summary.rows / 5,
            "{missing} missing"
        );
    }

    #[test]
    fn several_households_get_a_meter_column_ordered_by_time() {
        let g = Generator::new(GeneratorConfig {
            households: 3,
            days: 1,
            missing_rate: 0.2,
            ..GeneratorConfig::default()
        });
        let mut out = Vec::new();
        let summary = g.write_uci(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], format!("Meter;{UCI_HEADER}"));
        assert_eq!(summary.rows, 3 * 1440);
        assert!(summary.missing > 0);
        for (k, line) in lines[1..].iter().enumerate() {
            let f: Vec<&str> = line.split(';').collect();
            assert_eq!(f.len(), 10, "{line}");
            assert_eq!(f[0], format!("household-{}", k % 3 + 1));
            let m = k / 3;
            assert_eq!(f[2], format!("{:02}:{:02}:00", m / 60, m % 60));
            if f[3] == "?" {
                assert!(
                    f[3..9].iter().all(|&x| x == "?") && f[9].is_empty(),
                    "{line}"
                );
            } else {
                f[3..].iter().for_each(|x| {
                    thousandths(x);
                });
            }
        }
    }

    #[test]
    fn dates_are_unpadded_and_unaligned_starts_match_reading() {
        let write = |start_ms: i64, days: u32| {
            let g = Generator::new(GeneratorConfig {
                start_ms,
                days,
                missing_rate: 0.0,
                ..GeneratorConfig::default()
            });
            let mut out = Vec::new();
            g.write_uci(&mut out).unwrap();
            (g, String::from_utf8(out).unwrap())
        };
        let (_, text) = write(ms(2007, 2, 1, 0, 0, 0), 1);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert!(lines[1].starts_with("1/2/2007;00:00:00;"), "{}", lines[1]);
        assert!(
            lines[1440].starts_with("1/2/2007;23:59:00;"),
            "{}",
            lines[1440]
        );
        // Half a minute off the clock: rows straddle midnight and still match `reading`.
        let start = ms(2006, 12, 31, 12, 0, 30);
        let (g, text) = write(start, 1);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert!(lines[1].starts_with("31/12/2006;12:00:30;"));
        assert!(
            lines[720].starts_with("31/12/2006;23:59:30;"),
            "{}",
            lines[720]
        );
        assert!(
            lines[721].starts_with("1/1/2007;00:00:30;"),
            "{}",
            lines[721]
        );
        for k in [0usize, 718, 719, 720, 1439] {
            let values: Vec<i32> = lines[k + 1].split(';').skip(2).map(thousandths).collect();
            let r = g.reading(1, start + k as i64 * MINUTE_MS, 60);
            assert_eq!(values, r.values.to_vec(), "row {k}");
        }
    }

    #[test]
    fn numbers_are_written_with_exactly_three_decimals() {
        let text = |v: i32| {
            let mut buf = Vec::new();
            push_milli(&mut buf, v);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(text(0), "0.000");
        assert_eq!(text(5), "0.005");
        assert_eq!(text(4_216), "4.216");
        assert_eq!(text(234_840), "234.840");
        assert_eq!(text(-1_500), "-1.500");
        assert_eq!(text(i32::MAX), "2147483.647");
        let mut date = Vec::new();
        push_date(&mut date, ms(2010, 11, 26, 0, 0, 0) / time::DAY_MS);
        assert_eq!(date, b"26/11/2010");
        let mut clock = [0u8; 9];
        fill_clock(&mut clock, ms(2006, 12, 16, 17, 24, 5));
        assert_eq!(&clock, b"17:24:05;");
    }
}
