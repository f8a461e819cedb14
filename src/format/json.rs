//! JSON messages: one reading per message, the wire format of the live (Kafka) path.
//!
//! ```json
//! {"meter": "household-1", "ts": 1700000000000, "interval_s": 1,
//!  "global_active_power": 4.216, "global_reactive_power": 0.418, "voltage": 234.84,
//!  "global_intensity": 18.4, "sub_metering_1": 0.0, "sub_metering_2": 0.017,
//!  "sub_metering_3": 0.283}
//! ```
//!
//! `ts` is the start of the interval in ms since the epoch (naive local time written as if UTC,
//! like the history files), `interval_s` its length in seconds; powers are interval averages in
//! kW, the voltage in V, the intensity in A and the sub-meters the interval's energy in Wh.
//! Every field is required; unknown fields are ignored.
//!
//! Measures become exact thousandths without float arithmetic: a JSON number is read by
//! `serde_json` as an `f64` whose shortest round-trip text (`4.216` for 4.216) is then parsed as
//! a decimal by [`parse_thousandths`], so a number with more than three decimals, an exponent or
//! beyond the `i32` range is refused rather than rounded. [`render_message`] writes exactly three
//! decimals, so rendering and parsing round-trip bit for bit.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::format::text::parse_thousandths;
use crate::model::{
    write_thousandths, Limits, Measure, MeterId, Origin, Reading, RejectReason, MEASURES,
};
use crate::time::format_iso;

/// Largest `ts` accepted: 9999-12-31T23:59:59.999, so window ends never overflow.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Longest piece of offending text quoted in a rejection reason.
const MAX_QUOTED: usize = 64;

/// The fields of a message; `null` counts as missing. Anything else in the object is ignored.
/// Measures stay raw text borrowed from the payload (see [`measure`]).
#[derive(Deserialize)]
struct Message<'a> {
    meter: Option<Value>,
    ts: Option<Value>,
    interval_s: Option<Value>,
    #[serde(borrow)]
    global_active_power: Option<&'a RawValue>,
    #[serde(borrow)]
    global_reactive_power: Option<&'a RawValue>,
    #[serde(borrow)]
    voltage: Option<&'a RawValue>,
    #[serde(borrow)]
    global_intensity: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_metering_1: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_metering_2: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_metering_3: Option<&'a RawValue>,
}

fn quoted(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > MAX_QUOTED {
        let mut cut = MAX_QUOTED;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn missing(field: &str) -> RejectReason {
    RejectReason::Undecodable(format!("missing field `{field}`"))
}

/// A measure in thousandths. Fast path: the number's own text, when it is a plain decimal with at
/// most three decimals (what [`render_message`] writes), is parsed without allocating; anything
/// else takes the documented path through `f64` (same result where both apply).
fn measure(field: &str, raw: Option<&RawValue>) -> Result<i32, RejectReason> {
    let raw = raw.ok_or_else(|| missing(field))?;
    if let Some(v) = parse_thousandths(raw.get().as_bytes()) {
        return Ok(v);
    }
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| RejectReason::Undecodable(format!("not a valid JSON message: {e}")))?;
    let bad = |text: String| RejectReason::BadNumber {
        field: field.to_owned(),
        text,
    };
    match &value {
        Value::Number(n) => {
            let text = n.to_string();
            parse_thousandths(text.as_bytes()).ok_or_else(|| bad(text))
        }
        other => Err(bad(quoted(other))),
    }
}

/// Parses one message into a reading stamped with `origin`, then checks it against `limits`.
///
/// Refusals: not JSON or not an object → [`RejectReason::Undecodable`]; a missing (or `null`)
/// field → [`RejectReason::Undecodable`] naming it; a measure or `interval_s` that is not a
/// number with at most three decimals (or not a whole number for `interval_s`) →
/// [`RejectReason::BadNumber`]; a `meter` that is not an acceptable id →
/// [`RejectReason::BadMeter`]; a `ts` that is not a whole number of ms in 1970..=9999 →
/// [`RejectReason::BadTimestamp`]; then whatever [`Reading::validate`] refuses (negative or
/// absurd measures, interval out of range).
pub fn parse_message(
    payload: &[u8],
    limits: &Limits,
    origin: Origin,
) -> Result<Reading, RejectReason> {
    // A struct also deserializes from a JSON array; only objects are messages.
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(RejectReason::Undecodable("not a JSON object".to_owned())),
        None => return Err(RejectReason::Undecodable("empty message".to_owned())),
    }
    let msg: Message = serde_json::from_slice(payload)
        .map_err(|e| RejectReason::Undecodable(format!("not a valid JSON message: {e}")))?;

    let meter = match msg.meter.ok_or_else(|| missing("meter"))? {
        Value::String(s) => MeterId::new(&s).map_err(|e| RejectReason::BadMeter(e.to_string()))?,
        other => {
            return Err(RejectReason::BadMeter(format!(
                "meter must be a string, found {}",
                quoted(&other)
            )))
        }
    };

    let ts_value = msg.ts.ok_or_else(|| missing("ts"))?;
    let ts = match ts_value.as_i64() {
        Some(ts) if (0..=MAX_TS_MS).contains(&ts) => ts,
        Some(_) => {
            return Err(RejectReason::BadTimestamp {
                text: quoted(&ts_value),
                why: "outside 1970-01-01..=9999-12-31".to_owned(),
            })
        }
        None => {
            return Err(RejectReason::BadTimestamp {
                text: quoted(&ts_value),
                why: "ts must be a whole number of ms since the epoch".to_owned(),
            })
        }
    };

    let interval_value = msg.interval_s.ok_or_else(|| missing("interval_s"))?;
    let interval_s = interval_value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| RejectReason::BadNumber {
            field: "interval_s".to_owned(),
            text: quoted(&interval_value),
        })?;

    let mut values = [0i32; MEASURES];
    let fields = [
        msg.global_active_power,
        msg.global_reactive_power,
        msg.voltage,
        msg.global_intensity,
        msg.sub_metering_1,
        msg.sub_metering_2,
        msg.sub_metering_3,
    ];
    for (m, value) in Measure::ALL.into_iter().zip(fields) {
        values[m.index()] = measure(m.name(), value)?;
    }

    let reading = Reading {
        meter,
        ts,
        interval_s,
        values,
        origin,
    };
    reading.validate(limits)?;
    Ok(reading)
}

/// Renders a reading as a message (the inverse of [`parse_message`]; `origin` is not written).
/// Measures are written with exactly three decimals.
pub fn render_message(r: &Reading) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(256);
    out.push_str("{\"meter\":");
    // Meter ids hold only characters that need no escaping, but stay safe if that ever changes.
    match serde_json::to_string(r.meter.as_str()) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
    // Writing into a String cannot fail.
    let _ = write!(out, ",\"ts\":{},\"interval_s\":{}", r.ts, r.interval_s);
    for m in Measure::ALL {
        out.push_str(",\"");
        out.push_str(m.name());
        out.push_str("\":");
        write_thousandths(&mut out, i64::from(r.values[m.index()]));
    }
    out.push('}');
    out
}

/// Refuses a reading whose interval starts more than `skew_ms` after `now_ms`
/// ([`RejectReason::FromTheFuture`]), so one sensor with a wrong clock cannot drag the
/// watermark ahead and make every honest reading late.
pub fn check_future(r: &Reading, now_ms: i64, skew_ms: i64) -> Result<(), RejectReason> {
    if r.ts > now_ms.saturating_add(skew_ms) {
        return Err(RejectReason::FromTheFuture {
            ts: format_iso(r.ts),
            now: format_iso(now_ms),
            skew_s: (skew_ms.max(0) / 1000) as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, GeneratorConfig};

    fn reading() -> Reading {
        Reading {
            meter: MeterId::new("household-7").unwrap(),
            ts: 1_700_000_000_000,
            interval_s: 1,
            values: [4_216, 418, 234_840, 18_400, 0, 17, 283],
            origin: Origin::default(),
        }
    }

    fn parse(text: &str) -> Result<Reading, RejectReason> {
        parse_message(text.as_bytes(), &Limits::default(), Origin::default())
    }

    /// The message of `reading()` with `field` replaced by `value` (raw JSON) or removed (`None`).
    fn with(field: &str, value: Option<&str>) -> String {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_str(&render_message(&reading())).unwrap();
        match value {
            Some(raw) => {
                v.insert(field.to_owned(), serde_json::from_str(raw).unwrap());
            }
            None => {
                v.remove(field);
            }
        }
        Value::Object(v).to_string()
    }

    #[test]
    fn renders_the_documented_schema() {
        assert_eq!(
            render_message(&reading()),
            "{\"meter\":\"household-7\",\"ts\":1700000000000,\"interval_s\":1,\
             \"global_active_power\":4.216,\"global_reactive_power\":0.418,\
             \"voltage\":234.840,\"global_intensity\":18.400,\"sub_metering_1\":0.000,\
             \"sub_metering_2\":0.017,\"sub_metering_3\":0.283}"
        );
    }

    #[test]
    fn round_trips_exactly() {
        let origin = Origin {
            source: 3,
            position: 99,
        };
        let mut r = reading();
        r.origin = origin;
        let back = parse_message(render_message(&r).as_bytes(), &Limits::default(), origin);
        assert_eq!(back, Ok(r));
        let generator = Generator::new(GeneratorConfig::default());
        for h in 1..=3 {
            for (i, r) in generator
                .readings(h, 1_167_609_600_000, 1, 600)
                .chain(generator.readings(h, 1_167_609_600_000, 60, 200))
                .enumerate()
            {
                let origin = Origin {
                    source: h,
                    position: i as u64,
                };
                let r = Reading { origin, ..r };
                assert_eq!(
                    parse_message(render_message(&r).as_bytes(), &Limits::default(), origin),
                    Ok(r)
                );
            }
        }
    }

    #[test]
    fn every_thousandth_survives_the_float_detour() {
        // Written with an exponent and a fourth decimal, no value can take the fast path:
        // each goes through serde_json's f64 and back to text, and must never be off by one.
        for v in (0..1_000_000).chain((0..20_000).map(|k| 2_147_483_647 - k * 7_919)) {
            let text = format!("{}.{:03}0e0", v / 1000, v % 1000);
            assert_eq!(
                parse_thousandths(text.as_bytes()),
                None,
                "{text} took the fast path"
            );
            let raw = RawValue::from_string(text.clone()).unwrap();
            assert_eq!(measure("voltage", Some(&raw)), Ok(v), "{text}");
        }
        // The same values rendered as messages (the fast path) parse to the same readings.
        let limits = Limits {
            max_power_w: i32::MAX,
            voltage_mv: (0, i32::MAX),
            max_current_ma: i32::MAX,
            max_interval_s: 3600,
        };
        let mut r = reading();
        for v in (0..1_000_000).step_by(997) {
            r.values = [v; MEASURES];
            r.interval_s = 3600;
            let back = parse_message(render_message(&r).as_bytes(), &limits, r.origin);
            assert_eq!(back, Ok(r), "value {v}");
        }
    }

    #[test]
    fn numbers_are_read_exactly_or_refused() {
        let gap = |raw: &str| {
            parse(&with("global_active_power", Some(raw)))
                .map(|r| r.values[Measure::GlobalActivePower.index()])
        };
        assert_eq!(gap("4.216"), Ok(4_216));
        assert_eq!(gap("4.2160"), Ok(4_216));
        assert_eq!(gap("4"), Ok(4_000));
        assert_eq!(gap("0.1"), Ok(100));
        assert_eq!(gap("1e1"), Ok(10_000));
        assert!(matches!(
            gap("4.2165"),
            Err(RejectReason::BadNumber { field, .. }) if field == "global_active_power"
        ));
        assert!(matches!(gap("1e-7"), Err(RejectReason::BadNumber { .. })));
        assert!(matches!(gap("1e300"), Err(RejectReason::BadNumber { .. })));
        assert!(matches!(
            gap("\"4.216\""),
            Err(RejectReason::BadNumber { text, .. }) if text == "\"4.216\""
        ));
        assert!(matches!(gap("true"), Err(RejectReason::BadNumber { .. })));
        assert!(matches!(gap("[1]"), Err(RejectReason::BadNumber { .. })));
    }

    #[test]
    fn undecodable_messages_are_refused() {
        for bad in [
            "",
            "   ",
            "not json",
            "[\"household-1\", 0]",
            "42",
            "{\"meter\": ",
            "{\"meter\":\"a\",\"meter\":\"b\"}",
        ] {
            assert!(
                matches!(parse(bad), Err(RejectReason::Undecodable(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert!(matches!(
            parse_message(b"\xff\xfe", &Limits::default(), Origin::default()),
            Err(RejectReason::Undecodable(_))
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["meter", "ts", "interval_s"]
            .into_iter()
            .chain(Measure::ALL.iter().map(|m| m.name()))
        {
            for msg in [with(field, None), with(field, Some("null"))] {
                match parse(&msg) {
                    Err(RejectReason::Undecodable(why)) => {
                        assert!(why.contains(field), "{field}: {why}")
                    }
                    other => panic!("{field}: {other:?}"),
                }
            }
        }
        // Unknown fields are ignored.
        assert_eq!(parse(&with("firmware", Some("\"1.2\""))), Ok(reading()));
    }

    #[test]
    fn bad_meter_timestamp_and_interval_are_refused() {
        assert!(matches!(
            parse(&with("meter", Some("\"has space\""))),
            Err(RejectReason::BadMeter(_))
        ));
        assert!(matches!(
            parse(&with("meter", Some("\"\""))),
            Err(RejectReason::BadMeter(_))
        ));
        assert!(matches!(
            parse(&with("meter", Some("17"))),
            Err(RejectReason::BadMeter(_))
        ));
        for ts in ["-1", "1.7e12", "\"2024-01-01\"", "253402300800000"] {
            assert!(
                matches!(
                    parse(&with("ts", Some(ts))),
                    Err(RejectReason::BadTimestamp { .. })
                ),
                "{ts}"
            );
        }
        for interval in ["1.5", "-1", "\"1\"", "4294967296"] {
            assert!(
                matches!(
                    parse(&with("interval_s", Some(interval))),
                    Err(RejectReason::BadNumber { field, .. }) if field == "interval_s"
                ),
                "{interval}"
            );
        }
        assert_eq!(
            parse(&with("interval_s", Some("0"))),
            Err(RejectReason::BadInterval(0))
        );
        assert_eq!(
            parse(&with("interval_s", Some("7200"))),
            Err(RejectReason::BadInterval(7200))
        );
    }

    #[test]
    fn implausible_readings_are_refused() {
        assert!(matches!(
            parse(&with("voltage", Some("-230.0"))),
            Err(RejectReason::Negative { field, .. }) if field == "voltage"
        ));
        assert!(matches!(
            parse(&with("global_active_power", Some("1000.5"))),
            Err(RejectReason::Absurd { field, .. }) if field == "global_active_power"
        ));
        assert!(matches!(
            parse(&with("voltage", Some("9000"))),
            Err(RejectReason::Absurd { .. })
        ));
        // A sub-meter cannot see 1 kWh in one second.
        assert!(matches!(
            parse(&with("sub_metering_3", Some("1000"))),
            Err(RejectReason::Absurd { .. })
        ));
    }

    #[test]
    fn future_readings_are_refused_beyond_the_skew() {
        let r = reading();
        assert_eq!(check_future(&r, r.ts, 0), Ok(()));
        assert_eq!(check_future(&r, r.ts - 300_000, 300_000), Ok(()));
        assert!(matches!(
            check_future(&r, r.ts - 300_001, 300_000),
            Err(RejectReason::FromTheFuture { skew_s: 300, .. })
        ));
        assert_eq!(check_future(&r, i64::MAX, i64::MAX), Ok(()));
    }
}
