//! Time as the core sees it: milliseconds since the Unix epoch, passed in by
//! the caller (the core never reads a clock). Serialised as RFC 3339 UTC
//! (`2026-11-28T06:23:15.000Z`), the form the API shows.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub i64);

impl Time {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Time(ms)
    }
    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// This instant plus `ms` milliseconds (saturating).
    pub const fn plus_ms(self, ms: u64) -> Self {
        let ms = if ms > i64::MAX as u64 {
            i64::MAX
        } else {
            ms as i64
        };
        Time(self.0.saturating_add(ms))
    }
    /// Milliseconds from `earlier` to `self`, 0 when `earlier` is later.
    pub fn since(self, earlier: Time) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

/// Days since the epoch to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The days of a month (1-12) of a proleptic Gregorian year.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// (year, month, day) to days since the epoch (`days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s, ms) = (
            ms_of_day / 3_600_000,
            (ms_of_day / 60_000) % 60,
            (ms_of_day / 1000) % 60,
            ms_of_day % 1000,
        );
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

impl std::str::FromStr for Time {
    type Err = String;
    /// Reads `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SS.sssZ)");
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
            s.get(r)
                .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(bad)
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let rest = &s[19..];
        let ms = match rest {
            "Z" => 0,
            _ => {
                let frac = rest
                    .strip_prefix('.')
                    .and_then(|r| r.strip_suffix('Z'))
                    .filter(|f| {
                        !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit())
                    })
                    .ok_or_else(bad)?;
                let padded = format!("{frac:0<3}");
                padded[..3].parse::<i64>().map_err(|_| bad())?
            }
        };
        if !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        // A day the month has (no 2026-02-31, no 2026-04-31).
        if d < 1 || d > i64::from(days_in_month(y, mo as u32)) {
            return Err(format!("`{s}` names a day its month does not have"));
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        Ok(Time(
            days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms,
        ))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Time {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An instant, RFC 3339 in UTC with milliseconds."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2026-11-28T06:23:15Z, from `date -d 2026-11-28T06:23:15Z +%s`.
        let t = Time(1_795_846_995_000);
        assert_eq!(t.to_string(), "2026-11-28T06:23:15.000Z");
        assert_eq!("2026-11-28T06:23:15Z".parse(), Ok(t));
        assert_eq!("2000-02-29T23:59:59.5Z".parse(), Ok(Time(951_868_799_500)));
        assert!("2026-13-01T00:00:00Z".parse::<Time>().is_err());
        assert!("yesterday".parse::<Time>().is_err());
    }

    #[test]
    fn days_a_month_does_not_have_are_refused() {
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-02-31T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-32T00:00:00Z",
        ] {
            assert!(bad.parse::<Time>().is_err(), "{bad}");
        }
        for good in [
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2026-12-31T23:59:59Z",
        ] {
            assert!(good.parse::<Time>().is_ok(), "{good}");
        }
    }

    proptest::proptest! {
        /// A date reads iff its day exists, and then means that day: the
        /// time printed for it is the text read.
        #[test]
        fn a_date_reads_iff_the_calendar_has_it(y in 1i64..=9999, m in 1u32..=12, d in 1u32..=31) {
            let text = format!("{y:04}-{m:02}-{d:02}T12:00:00.000Z");
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let exists = match m {
                2 => d <= if leap { 29 } else { 28 },
                4 | 6 | 9 | 11 => d <= 30,
                _ => true,
            };
            match text.parse::<Time>() {
                Ok(t) => {
                    proptest::prop_assert!(exists, "{text} was accepted");
                    proptest::prop_assert_eq!(t.to_string(), text);
                }
                Err(_) => proptest::prop_assert!(!exists, "{text} was refused"),
            }
        }

        #[test]
        fn every_instant_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let t = Time(ms);
            proptest::prop_assert_eq!(t.to_string().parse::<Time>(), Ok(t));
        }
    }

    #[test]
    fn round_trips() {
        for ms in [
            -86_400_001,
            -1,
            0,
            1,
            951_868_799_500,
            4_102_444_800_000,
            253_402_300_799_999,
        ] {
            let t = Time(ms);
            assert_eq!(t.to_string().parse::<Time>(), Ok(t), "{t}");
        }
    }
}
