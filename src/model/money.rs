//! Business value: an ISO 4217 currency and sums kept per currency, never
//! across currencies.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// An ISO 4217 currency, with its minor units (the codes and their minor
/// units come from the `iso_currency` crate's copy of the standard's table).
///
/// ```
/// use liaison::Currency;
///
/// let eur: Currency = "EUR".parse()?;
/// assert_eq!(eur.code(), "EUR");
/// assert_eq!(eur.minor_units(), 2);
/// assert_eq!(eur.format(12_500), "EUR 125.00");
/// assert_eq!(Currency::from_code("JPY")?.format(12_500), "JPY 12500");
/// assert!(Currency::from_code("eur").is_err()); // codes are upper case
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The currency with ISO 4217 alphabetic code `code` (three upper-case
    /// letters, e.g. `EUR`). Anything else is [`Error::InvalidInput`]
    /// naming `currency`.
    pub fn from_code(code: &str) -> Result<Currency> {
        iso_currency::Currency::from_code(code)
            .map(Currency)
            .ok_or_else(|| {
                Error::invalid(
                    "currency",
                    format!(
                        "{:?} is not an ISO 4217 currency code (three upper-case letters, e.g. \"EUR\")",
                        code.chars().take(16).collect::<String>()
                    ),
                )
            })
    }

    /// The alphabetic code, e.g. `EUR`.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in an amount: 2 for EUR, 0 for JPY,
    /// 3 for BHD; 0 for codes without minor units (e.g. XAU).
    pub fn minor_units(&self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }

    /// `minor` minor units written out with the code: `EUR 125.00`,
    /// `JPY 12500`.
    pub fn format(&self, minor: i64) -> String {
        format!("{} {}", self.code(), amount(minor, self.minor_units()))
    }
}

/// `minor` written with `units` digits after the point.
fn amount(minor: i64, units: u16) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if units == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.saturating_pow(u32::from(units));
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(units)
    )
}

/// An amount in minor units of `currency`, or with the currency unspecified
/// (written with two decimals and "(currency unspecified)"):
/// how every surface shows a business value.
///
/// ```
/// use liaison::{Currency, format_value};
///
/// assert_eq!(format_value(12_500, Some(Currency::from_code("EUR")?)), "EUR 125.00");
/// assert_eq!(format_value(12_500, None), "125.00 (currency unspecified)");
/// # Ok::<(), liaison::Error>(())
/// ```
pub fn format_value(minor: i64, currency: Option<Currency>) -> String {
    match currency {
        Some(c) => c.format(minor),
        None => format!("{} (currency unspecified)", amount(minor, 2)),
    }
}

impl PartialOrd for Currency {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Currency {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.code().cmp(other.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.code())
    }
}

impl FromStr for Currency {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// Business value summed per currency, never across: minor units per
/// [`Currency`], and per "currency unspecified" (`None`) for values given
/// without one. Shown as `EUR 250.00 + USD 10.00 + 1.00 (currency
/// unspecified)`; serialized as a map from code (or `"unspecified"`) to
/// minor units.
///
/// ```
/// use liaison::{Currency, Money};
///
/// let eur = Currency::from_code("EUR")?;
/// let usd = Currency::from_code("USD")?;
/// let money = Money::default().plus(Some(eur), 12_500).plus(Some(usd), 1_000).plus(Some(eur), 12_500);
/// assert_eq!(money.get(Some(eur)), 25_000);
/// assert_eq!(money.get(None), 0);
/// assert_eq!(money.to_string(), "EUR 250.00 + USD 10.00");
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Money(BTreeMap<Option<Currency>, i64>);

impl Money {
    /// Minor units in `currency` (`None`: currency unspecified); 0 if none.
    pub fn get(&self, currency: Option<Currency>) -> i64 {
        self.0.get(&currency).copied().unwrap_or(0)
    }

    /// Every currency with a non-zero sum, currencies by code first, the
    /// unspecified sum last.
    pub fn iter(&self) -> impl Iterator<Item = (Option<Currency>, i64)> + '_ {
        let named = self.0.iter().filter(|(c, _)| c.is_some());
        let unspecified = self.0.iter().filter(|(c, _)| c.is_none());
        named
            .chain(unspecified)
            .filter(|(_, v)| **v != 0)
            .map(|(c, v)| (*c, *v))
    }

    /// No value in any currency.
    pub fn is_zero(&self) -> bool {
        self.iter().next().is_none()
    }

    /// This plus `minor` in `currency` (saturating).
    pub fn plus(mut self, currency: Option<Currency>, minor: i64) -> Self {
        self.add(currency, minor);
        self
    }

    /// Add `minor` in `currency` (saturating). A currency whose sum is 0
    /// is not kept, so two sums with the same amounts compare equal.
    pub fn add(&mut self, currency: Option<Currency>, minor: i64) {
        let v = self.get(currency).saturating_add(minor);
        if v == 0 {
            self.0.remove(&currency);
        } else {
            self.0.insert(currency, v);
        }
    }

    /// Add every currency of `other`.
    pub fn add_all(&mut self, other: &Money) {
        for (c, v) in other.iter() {
            self.add(c, v);
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(c, v)| format_value(v, c)).collect();
        if parts.is_empty() {
            f.write_str("0")
        } else {
            f.write_str(&parts.join(" + "))
        }
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let entries: Vec<_> = self.iter().collect();
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (c, v) in entries {
            map.serialize_entry(c.map_or("unspecified", |c| c.code()), &v)?;
        }
        map.end()
    }
}

/// The stored form of an optional currency: its code, `NULL` when unspecified.
pub(crate) fn currency_from_column(code: Option<&str>) -> Option<Currency> {
    code.and_then(|c| Currency::from_code(c).ok())
}

/// The counters' key for a currency: its code, `''` when unspecified.
pub(crate) fn currency_from_counter(code: &str) -> Option<Currency> {
    (!code.is_empty())
        .then(|| Currency::from_code(code).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_currency_minor_units() {
        let c = |code| Currency::from_code(code).unwrap();
        assert_eq!(c("EUR").format(12_500), "EUR 125.00");
        assert_eq!(c("EUR").format(5), "EUR 0.05");
        assert_eq!(c("JPY").format(12_500), "JPY 12500");
        assert_eq!(c("BHD").format(1_234), "BHD 1.234");
        assert_eq!(c("XAU").format(3), "XAU 3");
        assert_eq!(c("USD").format(-150), "USD -1.50");
        assert_eq!(format_value(12_500, None), "125.00 (currency unspecified)");
    }

    #[test]
    fn codes_are_iso_4217_only() {
        for bad in ["eur", "EURO", "", "XYZ", "E U", "€", "EU"] {
            match Currency::from_code(bad) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "currency"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(currency_from_counter(""), None);
        assert_eq!(currency_from_counter("CHF").map(|c| c.code()), Some("CHF"));
    }

    #[test]
    fn money_never_mixes_currencies() {
        let eur = Currency::from_code("EUR").ok();
        let usd = Currency::from_code("USD").ok();
        let mut m = Money::default().plus(eur, 100).plus(None, 7);
        m.add_all(&Money::default().plus(usd, 5).plus(eur, 1));
        assert_eq!((m.get(eur), m.get(usd), m.get(None)), (101, 5, 7));
        assert_eq!(
            m.to_string(),
            "EUR 1.01 + USD 0.05 + 0.07 (currency unspecified)"
        );
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"EUR": 101, "USD": 5, "unspecified": 7})
        );
        assert_eq!(Money::default().to_string(), "0");
        assert!(Money::default().plus(eur, 0).is_zero());
        assert_eq!(
            Money::default().plus(eur, 5).plus(eur, -5),
            Money::default()
        );
    }
}
