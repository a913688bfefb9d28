//! Durations as people write them in plans: `90d`, `24h`, `1h30m`, `2w`, `45s`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A whole number of seconds, written and read in the plan's short form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanDuration(pub u64);

const UNITS: [(char, u64); 5] = [
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// The longest duration a plan or the command line may give: 100 years. Longer is a typo
/// (`grace: 200000000d`), and every date rekey computes from a duration (the end of a grace
/// period, a hunt window, a secret's expiry) stays far inside what chrono can represent.
pub const MAX_SECONDS: u64 = 100 * 366 * 86_400;

impl PlanDuration {
    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn from_days(days: u64) -> Self {
        PlanDuration(days.saturating_mul(86_400).min(MAX_SECONDS))
    }

    pub fn from_hours(hours: u64) -> Self {
        PlanDuration(hours.saturating_mul(3_600).min(MAX_SECONDS))
    }

    /// As a chrono duration, for date arithmetic; a value built past [`MAX_SECONDS`] (the
    /// parser refuses one) counts as the maximum, so no arithmetic on it can overflow.
    pub fn to_chrono(self) -> chrono::Duration {
        // MAX_SECONDS fits an i64 of seconds and chrono's range by orders of magnitude.
        chrono::Duration::seconds(self.0.min(MAX_SECONDS) as i64)
    }

    /// `at + self`, or `None` past the dates chrono can represent.
    pub fn after(self, at: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        at.checked_add_signed(self.to_chrono())
    }

    /// Parses `1h30m`-style text; units w, d, h, m, s, each at most once, largest first.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {text:?}: expected a number and a unit (w, d, h, m, s), like 90d, 24h or 1h30m"
            )
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_unit_rank = None;
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let rank = UNITS.iter().position(|(u, _)| *u == c).ok_or_else(bad)?;
            if digits.is_empty() || last_unit_rank.is_some_and(|r| r >= rank) {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(UNITS[rank].1)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(|| format!("duration {text:?} is too large"))?;
            digits.clear();
            last_unit_rank = Some(rank);
        }
        if !digits.is_empty() || last_unit_rank.is_none() {
            return Err(bad());
        }
        if total > MAX_SECONDS {
            return Err(format!(
                "duration {text:?} is longer than 100 years ({}), the longest rekey accepts",
                PlanDuration(MAX_SECONDS)
            ));
        }
        Ok(PlanDuration(total))
    }
}

impl fmt::Display for PlanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, secs) in UNITS {
            // Weeks only when exact: `14d` reads better than `2w` in a plan about key age.
            if unit == 'w' {
                continue;
            }
            if rest >= secs {
                write!(f, "{}{}", rest / secs, unit)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl Serialize for PlanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PlanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PlanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$",
            "description": "A duration such as 90d, 24h, 1h30m or 45s."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(PlanDuration::parse("90d").unwrap().seconds(), 90 * 86_400);
        assert_eq!(PlanDuration::parse("1h30m").unwrap().seconds(), 5_400);
        assert_eq!(PlanDuration::parse("2w").unwrap().seconds(), 14 * 86_400);
        assert_eq!(PlanDuration::parse("0s").unwrap().seconds(), 0);
        assert_eq!(
            PlanDuration::parse("36600d").unwrap().seconds(),
            MAX_SECONDS
        );
        assert!(PlanDuration(u64::MAX).after(chrono::Utc::now()).is_some());
        assert_eq!(PlanDuration(5_400).to_string(), "1h30m");
        assert_eq!(PlanDuration(90 * 86_400).to_string(), "90d");
        for bad in [
            "",
            "10",
            "h",
            "1x",
            "30m1h",
            "1h1h",
            "-1h",
            "1.5h",
            "99999999999999999999w",
            "200000000d",
            "36601d",
        ] {
            assert!(PlanDuration::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
