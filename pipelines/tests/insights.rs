//! Insights (`wattflow::serve::insights`) against values known by construction, and on the
//! 30-day slice against a computation from the raw file; PNG charts decoded and inspected.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use wattflow::model::Granularity;
use wattflow::serve::insights::{insights, Prices, Tariff};
use wattflow::serve::{NoSpeedViews, Views};
use wattflow_pipelines::plot::{plot_png, What};
use wattflow_pipelines::Replay;

const METER: &str = wattflow::source::file::DEFAULT_METER;
const DAY: i64 = 86_400_000;

fn ms(text: &str) -> i64 {
    wattflow::time::parse_iso(text).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        "{what}: {a} != {b}"
    );
}

/// A known household, a minute at a time, for 28 days from Monday 2007-01-01:
/// 0.3 kW from 00:00 to 06:00, 1.2 kW from 06:00 to 22:00 (2.4 kW on Wednesday 2007-01-17),
/// 0.6 kW from 22:00 to 24:00; the kitchen 1 Wh a minute 12:00–13:00, the laundry 2 Wh a
/// minute 10:00–11:00, the water heater 5 Wh a minute 06:00–07:00 and 23:00–24:00.
fn known_power(day: usize, minute: usize) -> (f64, [u32; 3]) {
    let hour = minute / 60;
    let odd = day == 16;
    let kw = match hour {
        0..=5 => 0.3,
        6..=21 if odd => 2.4,
        6..=21 => 1.2,
        _ => 0.6,
    };
    let subs = [
        (hour == 12) as u32,
        2 * (hour == 10) as u32,
        5 * (hour == 6 || hour == 23) as u32,
    ];
    (kw, subs)
}

fn write_known(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3").unwrap();
    for day in 0..28 {
        let (y, m, d) = wattflow::time::civil_from_days(
            wattflow::time::days_from_civil(2007, 1, 1) + day as i64,
        );
        for minute in 0..1440 {
            let (kw, s) = known_power(day, minute);
            writeln!(
                out,
                "{d}/{m}/{y};{:02}:{:02}:00;{kw:.3};0.100;240.000;5.000;{:.3};{:.3};{:.3}",
                minute / 60,
                minute % 60,
                s[0] as f64,
                s[1] as f64,
                s[2] as f64
            )
            .unwrap();
        }
    }
}

#[test]
fn insights_of_a_known_household_are_the_values_it_was_built_with() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known.txt");
    write_known(&file);
    let out = dir.path().join("views");
    Replay::new(&out).input(&file).run().expect("replay");
    let views = Views::new(&out, Arc::new(NoSpeedViews));
    let prices = Prices::new(&Tariff::default()).unwrap();
    let (from, to) = (ms("2007-01-01T00:00:00"), ms("2007-01-29T00:00:00"));
    let i = insights(&views, METER, from, to, &prices).unwrap();

    // Expected, from the construction.
    let (mut total, mut subs, mut hp, mut shift_peak) = (0.0, [0.0; 3], 0.0, 0.0);
    let mut per_hour = [0.0; 24];
    for day in 0..28 {
        for minute in 0..1440 {
            let (kw, s) = known_power(day, minute);
            let wh = kw * 1000.0 / 60.0;
            total += wh;
            per_hour[minute / 60] += wh / 28.0;
            for k in 0..3 {
                subs[k] += s[k] as f64;
            }
            if (6..22).contains(&(minute / 60)) {
                hp += wh;
                shift_peak += (s[1] + s[2]) as f64;
            }
        }
    }
    assert_eq!(i.days_with_data, 28);
    close(i.total_kwh, total / 1000.0, "total");
    let share = |name: &str| i.shares.iter().find(|s| s.name == name).unwrap().clone();
    close(share("kitchen").kwh, subs[0] / 1000.0, "kitchen");
    close(share("laundry").kwh, subs[1] / 1000.0, "laundry");
    close(
        share("water_heater_and_ac").kwh,
        subs[2] / 1000.0,
        "water heater",
    );
    close(
        share("unmetered").kwh,
        (total - subs.iter().sum::<f64>()) / 1000.0,
        "unmetered",
    );
    close(share("laundry").share, subs[1] / total, "laundry share");
    for (h, want) in per_hour.iter().enumerate() {
        close(
            i.typical_day[h].unwrap(),
            *want,
            &format!("typical hour {h}"),
        );
    }
    // Weekends are never the odd Wednesday: exactly the construction.
    close(i.typical_weekend[3].unwrap(), 300.0, "weekend night");
    close(i.typical_weekend[12].unwrap(), 1200.0, "weekend day");
    close(
        i.typical_week[2][12].unwrap(),
        (3.0 * 1200.0 + 2400.0) / 4.0,
        "Wednesday noon",
    );
    assert_eq!(i.peak_hours, [6, 7, 8]);
    close(i.baseload_w.unwrap(), 300.0, "baseload");
    close(
        i.baseload_kwh_per_year.unwrap(),
        0.3 * 8766.0,
        "baseload a year",
    );
    let mean_price = (8.0 * 0.2068 + 16.0 * 0.27) / 24.0;
    close(
        i.baseload_cost_per_year.unwrap(),
        0.3 * 8766.0 * mean_price,
        "baseload cost",
    );
    let hc = total - hp;
    close(
        i.cost.energy,
        (hp * 0.27 + hc * 0.2068) / 1000.0,
        "energy cost",
    );
    close(i.cost.standing, 28.0 * 0.45, "standing");
    close(i.cost.peak_share, hp / total, "peak share");
    close(i.cost.by_period["HP"].0, hp / 1000.0, "HP kWh");
    close(i.cost.shiftable_peak_kwh, shift_peak / 1000.0, "shiftable");
    let saving = shift_peak / 1000.0 * (0.27 - 0.2068);
    close(i.cost.shift_saving, saving, "saving");
    close(
        i.cost.shift_saving_per_year,
        saving / 28.0 * 365.25,
        "saving a year",
    );
    close(
        i.cost.shift_saving_per_month,
        saving / 28.0 * 30.44,
        "saving a month",
    );
    // The one odd day, and nothing else.
    assert_eq!(i.unusual_days.len(), 1, "{:?}", i.unusual_days);
    assert_eq!(i.unusual_days[0].date, "2007-01-17");
    close(i.unusual_days[0].kwh, 1.8 + 16.0 * 2.4 + 1.2, "odd day");
    close(
        i.unusual_days[0].typical_kwh,
        1.8 + 16.0 * 1.2 + 1.2,
        "typical Wednesday",
    );
    assert!(i.unusual_days[0].deviations > 3.0);
    // Nothing before the history.
    assert!(i
        .comparisons
        .iter()
        .all(|c| c.kwh.is_none() && c.change.is_none()));
    // The second half against the first: the previous period has data.
    let j = insights(&views, METER, ms("2007-01-15T00:00:00"), to, &prices).unwrap();
    let prev = &j.comparisons[0];
    assert_eq!(prev.against, "previous_period");
    assert_eq!(prev.from, "2007-01-01");
    close(prev.kwh.unwrap(), 14.0 * 22.2, "first two weeks");
    close(
        prev.change.unwrap(),
        (14.0 * 22.2 + 19.2) / (14.0 * 22.2) - 1.0,
        "change",
    );

    // A 30-minute time-of-use boundary prices by minute rows.
    let tariff: Tariff = serde_json::from_value(serde_json::json!({
        "currency": "EUR",
        "prices": [{ "from": "2000-01-01", "periods": [
            { "name": "night", "start": "21:30", "end": "06:30", "price": 0.1 },
            { "name": "day", "start": "06:30", "end": "21:30", "price": 0.3 } ] }]
    }))
    .unwrap();
    let half = insights(&views, METER, from, to, &Prices::new(&tariff).unwrap()).unwrap();
    let mut want = 0.0;
    for day in 0..28 {
        for minute in 0..1440 {
            let (kw, _) = known_power(day, minute);
            let price = if (390..1290).contains(&minute) {
                0.3
            } else {
                0.1
            };
            want += kw / 60.0 * price;
        }
    }
    close(half.cost.energy, want, "cost at 30-minute boundaries");
}

/// The 30-day slice, parsed here: `(ts, kW, sub-meters)` of every complete line.
fn raw_minutes(file: &Path) -> Vec<(i64, f64, [f64; 3])> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(';').collect();
        if f.len() < 9 || f[2..9].iter().any(|v| *v == "?" || v.is_empty()) {
            continue;
        }
        let d: Vec<u32> = f[0].split('/').map(|x| x.parse().unwrap()).collect();
        let t: Vec<u32> = f[1].split(':').map(|x| x.parse().unwrap()).collect();
        let ts = wattflow::time::naive_to_ms(d[2] as i64, d[1], d[0], t[0], t[1], t[2]).unwrap();
        let n = |i: usize| f[i].parse::<f64>().unwrap();
        out.push((ts, n(2), [n(6), n(7), n(8)]));
    }
    out
}

#[test]
fn insights_of_the_thirty_day_slice_match_a_computation_from_the_raw_file() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    Replay::new(dir.path()).input(&file).run().expect("replay");
    let views = Views::new(dir.path(), Arc::new(NoSpeedViews));
    let prices = Prices::new(&Tariff::default()).unwrap();
    let (from, to) = (ms("2006-12-16T00:00:00"), ms("2007-01-16T00:00:00"));
    let i = insights(&views, METER, from, to, &prices).unwrap();
    let raw = raw_minutes(&file);
    let total: f64 = raw.iter().map(|r| r.1 * 1000.0 / 60.0).sum();
    close(i.total_kwh, total / 1000.0, "total");
    for (k, name) in ["kitchen", "laundry", "water_heater_and_ac"]
        .iter()
        .enumerate()
    {
        let want: f64 = raw.iter().map(|r| r.2[k]).sum();
        let got = i.shares.iter().find(|s| s.name == *name).unwrap();
        close(got.kwh, want / 1000.0, name);
    }
    // Typical day: mean of each (date, hour)'s energy by hour of the day.
    let mut hours: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    for r in &raw {
        *hours
            .entry((r.0.div_euclid(DAY), r.0.rem_euclid(DAY) / 3_600_000))
            .or_default() += r.1 * 1000.0 / 60.0;
    }
    for h in 0..24 {
        let v: Vec<f64> = hours
            .iter()
            .filter(|((_, hh), _)| *hh == h)
            .map(|(_, e)| *e)
            .collect();
        close(
            i.typical_day[h as usize].unwrap(),
            v.iter().sum::<f64>() / v.len() as f64,
            &format!("hour {h}"),
        );
    }
    // Baseload: the 10th percentile of the night's minute power (linear interpolation).
    let mut night: Vec<f64> = raw
        .iter()
        .filter(|r| r.0.rem_euclid(DAY) < 6 * 3_600_000)
        .map(|r| r.1 * 1000.0)
        .collect();
    night.sort_by(f64::total_cmp);
    let rank = 0.1 * (night.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let p10 = night[lo] + (night[hi] - night[lo]) * (rank - lo as f64);
    close(i.baseload_w.unwrap(), p10, "baseload");
    assert!(
        (100.0..600.0).contains(&p10),
        "a household's baseload: {p10} W"
    );
    // Peak energy: 06:00–22:00.
    let hp: f64 = raw
        .iter()
        .filter(|r| (6 * 3_600_000..22 * 3_600_000).contains(&r.0.rem_euclid(DAY)))
        .map(|r| r.1 * 1000.0 / 60.0)
        .sum();
    close(i.cost.peak_share, hp / total, "peak share");
    let days: std::collections::BTreeSet<i64> = raw.iter().map(|r| r.0.div_euclid(DAY)).collect();
    assert_eq!(i.days_with_data, days.len());
}

/// `(width, height, RGB pixels)` of a PNG.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn plots_are_real_pngs_with_every_series_drawn() {
    let Some(file) = common::data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    Replay::new(dir.path()).input(&file).run().expect("replay");
    let views = Views::new(dir.path(), Arc::new(NoSpeedViews));
    let (from, to) = (ms("2006-12-17T00:00:00"), ms("2006-12-24T00:00:00"));
    let found = insights(
        &views,
        METER,
        from,
        to,
        &Prices::new(&Tariff::default()).unwrap(),
    )
    .unwrap();
    let colours: [(What, &[[u8; 3]]); 5] = [
        (What::PowerFactor, &[[0, 0, 255]]),
        (What::Voltage, &[[255, 0, 0], [0, 0, 255], [0, 255, 0]]),
        (
            What::SubMetering,
            &[
                [230, 120, 20],
                [40, 150, 60],
                [30, 90, 200],
                [120, 120, 120],
            ],
        ),
        (What::ActivePower, &[[255, 0, 0], [0, 0, 255]]),
        (
            What::DailyProfile,
            &[[0, 0, 255], [230, 120, 20], [40, 150, 60]],
        ),
    ];
    for (what, series) in colours {
        let out = dir.path().join(format!("{what:?}.png"));
        plot_png(
            &views,
            METER,
            what,
            from,
            to,
            Granularity::Hour,
            Some(&found),
            &out,
            (900, 500),
        )
        .unwrap();
        let (w, h, pixels) = decode(&out);
        assert_eq!((w, h), (900, 500), "{what:?}");
        let ink = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
        assert!(ink > 5_000, "{what:?}: nearly blank ({ink} pixels drawn)");
        for colour in series {
            // Lines and the legend's sample: many pixels of the series' colour.
            let n = pixels.iter().filter(|p| *p == colour).count();
            assert!(
                n > 60,
                "{what:?}: series colour {colour:?} drawn on {n} pixels"
            );
        }
    }
    // No rows: a clear error, no file.
    let empty = dir.path().join("empty.png");
    let e = plot_png(
        &views,
        METER,
        What::Voltage,
        ms("2010-01-01T00:00:00"),
        ms("2010-01-02T00:00:00"),
        Granularity::Hour,
        None,
        &empty,
        (900, 500),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no hour rows"), "{e}");
}
