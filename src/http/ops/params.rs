//! Query strings and form bodies (`application/x-www-form-urlencoded`).

use std::str::FromStr;

use axum::http::Uri;

use super::failure::Failure;

/// Decoded name/value pairs, in order.
#[derive(Debug, Default)]
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn from_query(uri: &Uri) -> Self {
        Params::from_form(uri.query().unwrap_or("").as_bytes())
    }

    pub(super) fn from_form(body: &[u8]) -> Self {
        Params(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first non-empty value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, repeated or comma-separated.
    pub(super) fn list(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// `name` parsed, or `None` when absent; 400 when it does not parse.
    pub(super) fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, Failure> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Failure::bad_request(format!("invalid {name}: {v:?}")))
            })
            .transpose()
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`), or `default` when absent.
    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(Failure::bad_request(format!(
                "invalid {name}: {v:?} (use true or false)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_split() {
        let p =
            Params::from_form(b"state=stuck,failed&state=dead_lettered&partner=a%26b&empty=&n=7");
        assert_eq!(p.list("state"), ["stuck", "failed", "dead_lettered"]);
        assert_eq!(p.get("partner"), Some("a&b"));
        assert_eq!(p.get("empty"), None);
        assert_eq!(p.parsed::<u32>("n").unwrap(), Some(7));
        assert!(p.parsed::<u32>("partner").is_err());
        assert!(p.flag("missing", true).unwrap());
        assert!(
            Params::from_form(b"open=false")
                .flag("open", true)
                .is_ok_and(|v| !v)
        );
        assert!(Params::from_form(b"open=maybe").flag("open", true).is_err());
    }
}
