//! A small validating parser for the OpenMetrics text that
//! prometheus-client emits, for the tests: hand-written, no regex.

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) name: String,
    pub(super) labels: Vec<(String, String)>,
    pub(super) value: f64,
}

#[derive(Debug, Default)]
pub(super) struct MetricFamily {
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) unit: Option<String>,
    pub(super) samples: Vec<Sample>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// Label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            Err(format!("bad value {s:?}"))
        }
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// `name{label="value",...} value` (labels optional, values escaped with
/// `\\`, `\"` and `\n`).
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            let eq = rest
                .find('=')
                .ok_or_else(|| format!("label without '=' in {line:?}"))?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("repeated label {key:?} in {line:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted label value in {line:?}"))?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[close + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            } else {
                return Err(format!("expected ',' or '}}' in {line:?}"));
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("expected ' ' before the value in {line:?}"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

/// Parses and checks a whole exposition: every line is `# HELP`, `# TYPE`,
/// `# UNIT`, a sample, or the final `# EOF`; every family has HELP then TYPE;
/// sample names match their family's type; histograms are complete.
pub(super) fn parse(text: &str) -> Result<Vec<MetricFamily>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition must end with \"# EOF\\n\"")?;
    let mut families: Vec<MetricFamily> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or("HELP without text")?;
            if !is_metric_name(name) || help.trim().is_empty() {
                return Err(format!("bad HELP line {line:?}"));
            }
            if families.iter().any(|f| f.name == name) {
                return Err(format!("family {name} declared twice"));
            }
            families.push(MetricFamily {
                name: name.to_owned(),
                ..MetricFamily::default()
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = families.last_mut().ok_or("TYPE before HELP")?;
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
            if name != family.name || !family.kind.is_empty() {
                return Err(format!("TYPE {name} does not follow its HELP"));
            }
            if !matches!(kind, "counter" | "gauge" | "histogram") {
                return Err(format!("unexpected type {kind:?}"));
            }
            family.kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let family = families.last_mut().ok_or("UNIT before HELP")?;
            let (name, unit) = rest.split_once(' ').ok_or("UNIT without a unit")?;
            if name != family.name || family.kind.is_empty() || family.unit.is_some() {
                return Err(format!("UNIT {name} does not follow its TYPE"));
            }
            if !name.ends_with(&format!("_{unit}")) {
                return Err(format!("{name} does not end with its unit {unit}"));
            }
            family.unit = Some(unit.to_owned());
        } else if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        } else {
            let family = families
                .last_mut()
                .filter(|f| !f.kind.is_empty())
                .ok_or_else(|| format!("sample outside a typed family: {line:?}"))?;
            let sample = parse_sample(line)?;
            let suffix = sample
                .name
                .strip_prefix(&family.name)
                .ok_or_else(|| format!("{} outside family {}", sample.name, family.name))?;
            let allowed: &[&str] = match family.kind.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                _ => &["_bucket", "_sum", "_count"],
            };
            if !allowed.contains(&suffix) {
                return Err(format!("{} in {} family", sample.name, family.kind));
            }
            if (suffix == "_bucket") != sample.labels.iter().any(|(k, _)| k == "le") {
                return Err(format!("`le` on a non-bucket or missing: {line:?}"));
            }
            family.samples.push(sample);
        }
    }
    for family in &families {
        if family.kind.is_empty() {
            return Err(format!("{} has no TYPE", family.name));
        }
        if family.kind == "histogram" {
            check_histogram(family)?;
        }
    }
    Ok(families)
}

fn without_le(labels: &[(String, String)]) -> Vec<(String, String)> {
    labels.iter().filter(|(k, _)| k != "le").cloned().collect()
}

/// Per label set: buckets in increasing `le`, cumulative, ending `+Inf` equal
/// to `_count`, with a `_sum`.
fn check_histogram(family: &MetricFamily) -> Result<(), String> {
    let mut series: Vec<Vec<(String, String)>> = Vec::new();
    for s in &family.samples {
        let key = without_le(&s.labels);
        if !series.contains(&key) {
            series.push(key);
        }
    }
    for key in series {
        let of = |suffix: &str| {
            family
                .samples
                .iter()
                .filter(|s| s.name == format!("{}{suffix}", family.name))
                .filter(|s| without_le(&s.labels) == key)
                .collect::<Vec<_>>()
        };
        let (buckets, sums, counts) = (of("_bucket"), of("_sum"), of("_count"));
        if sums.len() != 1 || counts.len() != 1 {
            return Err(format!(
                "{} {key:?}: needs one _sum and one _count",
                family.name
            ));
        }
        let mut last = (f64::NEG_INFINITY, 0.0);
        for b in &buckets {
            let le = &b.labels.iter().find(|(k, _)| k == "le").unwrap().1;
            let le = parse_value(le)?;
            if le <= last.0 || b.value < last.1 {
                return Err(format!("{} {key:?}: buckets out of order", family.name));
            }
            last = (le, b.value);
        }
        if last.0 != f64::INFINITY || last.1 != counts[0].value {
            return Err(format!(
                "{} {key:?}: le=\"+Inf\" missing or not equal to _count",
                family.name
            ));
        }
    }
    Ok(())
}

pub(super) fn find<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name == name)
}

/// The value of sample `name` with exactly `labels` (in any order).
pub(super) fn value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| {
            let mut have = s.labels.clone();
            have.sort();
            s.name == name && have == want
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_escapes_and_rejects_bad_lines() {
        let s = parse_sample(r#"a_b:c{x="q\"u\\o\nte",y=""} -1.5e3"#).unwrap();
        assert_eq!(s.name, "a_b:c");
        assert_eq!(
            s.labels,
            vec![
                ("x".to_owned(), "q\"u\\o\nte".to_owned()),
                ("y".to_owned(), String::new())
            ]
        );
        assert_eq!(s.value, -1500.0);
        assert_eq!(parse_sample("up 1").unwrap().value, 1.0);
        for bad in [
            "1up 1",
            "up",
            "up{} 1",
            "up{x=1} 1",
            r#"up{x="1} 1"#,
            r#"up{x="1"}1"#,
            r#"up{x="1",x="2"} 1"#,
            r#"up{x="\t"} 1"#,
            "up one",
            "up 1 2",
        ] {
            assert!(parse_sample(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("# TYPE x gauge\nx 1\n# EOF\n").is_err(), "no HELP");
        assert!(
            parse("# HELP x X.\n# TYPE x gauge\nx 1\n").is_err(),
            "no EOF"
        );
        assert!(parse("# HELP x X.\n# TYPE x counter\nx 1\n# EOF\n").is_err());
        assert!(parse("# HELP x X.\n# TYPE x gauge\n# random\n# EOF\n").is_err());
        assert!(parse("# HELP x X.\n# TYPE x gauge\nx 1\n# EOF\n").is_ok());
    }
}
