//! Property tests of [`JsonMatcher::parse`]: no input makes it panic; a body
//! built with `serde_json` from a valid reference and a configured status
//! reads back as exactly the report it was built from; and a status value
//! outside every configured list is always malformed.

use std::str::FromStr;

use http::header::HeaderMap;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use super::{
    CallbackMatcher, CallbackReport, CorrelateBy, Correlation, InboundCallback, JsonMatcher,
    MalformedCallback, ReportedOutcome, Unverified,
};
use crate::model::submission::{MAX_KEY_BYTES, SubmissionId};

const SUCCEEDED: [&str; 3] = ["succeeded", "ok", "200"];
const FAILED: [&str; 3] = ["failed", "rejected", "false"];
const PROGRESS: [&str; 2] = ["processing", "pended"];
/// The failure reason (and progress note) are cut to this many characters.
const REASON_CHARS: usize = 1000;

fn parse(matcher: &JsonMatcher, body: Vec<u8>) -> Result<CallbackReport, MalformedCallback> {
    matcher.parse(&InboundCallback::new("prop", HeaderMap::new(), body))
}

/// The configured matcher: default pointers, several values per outcome
/// (one a number's text, one a boolean's), and progress values.
fn matcher(by: CorrelateBy) -> JsonMatcher {
    JsonMatcher::builder(Unverified)
        .correlate(by, "/reference")
        .status("/status", SUCCEEDED, FAILED)
        .progress(PROGRESS)
        .build()
        .expect("a valid configuration")
}

/// Matchers with other shapes, for the no-panic properties.
fn matchers() -> Vec<JsonMatcher> {
    let nested = JsonMatcher::builder(Unverified)
        .correlate(CorrelateBy::SubmissionId, "/data/0/id")
        .status("/data/0/state", ["paid"], ["denied"])
        .event_id("/meta/~1id")
        .reason("/data/0/errors/0")
        .build()
        .expect("a valid configuration");
    let keyed = JsonMatcher::builder(Unverified)
        .correlate(CorrelateBy::IdempotencyKey, "/")
        .status("/~0", ["x"], ["y"])
        .without_event_id()
        .build()
        .expect("a valid configuration");
    vec![
        matcher(CorrelateBy::ExternalRef),
        matcher(CorrelateBy::SubmissionId),
        nested,
        keyed,
    ]
}

fn known(status: &str) -> bool {
    let status = status.to_ascii_lowercase();
    SUCCEEDED
        .iter()
        .chain(&FAILED)
        .chain(&PROGRESS)
        .any(|v| *v == status)
}

/// Any JSON value: scalars at the leaves, arrays and objects up to a few
/// levels deep, with keys that sometimes are the matcher's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        select(vec![
            "reference",
            "status",
            "event_id",
            "reason",
            "data",
            "0",
            "id"
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        select(SUCCEEDED.iter().chain(&FAILED).copied().collect::<Vec<_>>()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Random text in ASCII case.
fn mixed_case(value: &str, upper: &[bool]) -> String {
    value
        .chars()
        .zip(upper.iter().chain(std::iter::repeat(&false)))
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// How the status is written: as a string, or as the JSON number or boolean
/// whose text it is.
fn status_json(status: &str, as_string: bool) -> Value {
    if !as_string && let Ok(number) = serde_json::from_str::<Value>(status) {
        return number;
    }
    Value::from(status)
}

fn correlation() -> impl Strategy<Value = (CorrelateBy, String)> {
    prop_oneof![
        "\\PC{1,64}".prop_map(|r| (CorrelateBy::ExternalRef, r)),
        "\\PC{1,64}".prop_map(|r| (CorrelateBy::IdempotencyKey, r)),
        any::<u128>().prop_map(|n| {
            let id = SubmissionId::from_str(&uuid::Uuid::from_u128(n).to_string());
            (CorrelateBy::SubmissionId, id.expect("any UUID").to_string())
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop_oneof![
            vec(any::<u8>(), 0..512),
            "[\\[\\]{}\":,0-9a-z .eE+-]{0,256}".prop_map(String::into_bytes),
            any::<String>().prop_map(String::into_bytes),
        ],
    ) {
        for m in matchers() {
            if let Err(e) = parse(&m, body.clone()) {
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(
        value in json_value(),
        fields in vec(json_value(), 4),
    ) {
        let mut shaped = Map::new();
        for (name, field) in ["reference", "status", "event_id", "reason"].into_iter().zip(fields) {
            shaped.insert(name.to_owned(), field);
        }
        shaped.insert("data".to_owned(), json!([value.clone()]));
        for body in [value, Value::Object(shaped)] {
            let bytes = serde_json::to_vec(&body).expect("a Value always serializes");
            for m in matchers() {
                let _ = parse(&m, bytes.clone());
            }
        }
    }

    #[test]
    fn deeply_nested_arrays_never_panic(
        depth in 0usize..20_000,
        closed in any::<bool>(),
        wrapped in any::<bool>(),
    ) {
        let mut nested = "[".repeat(depth);
        if closed {
            nested.push_str(&"]".repeat(depth));
        }
        let body = if wrapped {
            format!(r#"{{"reference":"MP-1","status":{nested},"event_id":{nested}}}"#)
        } else {
            nested
        };
        for m in matchers() {
            let result = parse(&m, body.clone().into_bytes());
            // Past serde_json's recursion limit, the body is refused.
            if depth > 200 {
                prop_assert!(result.is_err());
            }
        }
    }

    #[test]
    fn a_configured_status_reads_back_as_built(
        (by, reference) in correlation(),
        (status, outcome) in prop_oneof![
            select(SUCCEEDED.to_vec()).prop_map(|s| (s, 0u8)),
            select(FAILED.to_vec()).prop_map(|s| (s, 1u8)),
            select(PROGRESS.to_vec()).prop_map(|s| (s, 2u8)),
        ],
        upper in vec(any::<bool>(), 10),
        as_string in any::<bool>(),
        event_id in proptest::option::of("\\PC{1,64}"),
        reason in proptest::option::of(vec(any::<char>(), 0..1200)),
        extra in json_value(),
    ) {
        let reason: Option<String> = reason.map(|r| r.into_iter().collect());
        let mut body = json!({
            "reference": reference,
            "status": status_json(&mixed_case(status, &upper), as_string),
            "reason": reason,
            "extra": extra,
        });
        if let Some(event_id) = &event_id {
            body["event_id"] = Value::from(event_id.as_str());
        }
        let bytes = serde_json::to_vec(&body).expect("a Value always serializes");
        let result = parse(&matcher(by), bytes);

        // Identifiers are bounded in bytes: 64 characters of four bytes each
        // are one byte too many (see the test below).
        if reference.len() > MAX_KEY_BYTES
            || event_id.as_ref().is_some_and(|e| e.len() > MAX_KEY_BYTES)
        {
            prop_assert!(result.is_err());
            return Ok(());
        }
        // Trimmed, cut, and a blank one counts as none.
        let cut = reason
            .map(|r| r.trim().chars().take(REASON_CHARS).collect::<String>())
            .filter(|r| !r.is_empty());
        let expected = CallbackReport {
            correlation: match by {
                CorrelateBy::ExternalRef => Correlation::ExternalRef(reference),
                CorrelateBy::IdempotencyKey => Correlation::IdempotencyKey(reference),
                CorrelateBy::SubmissionId => {
                    Correlation::SubmissionId(reference.parse().expect("a generated id"))
                }
            },
            event_id,
            outcome: match outcome {
                0 => ReportedOutcome::Succeeded,
                1 => ReportedOutcome::Failed {
                    reason: cut.unwrap_or_else(|| {
                        "the partner reported failure without a reason".to_owned()
                    }),
                },
                _ => ReportedOutcome::Progress { note: cut },
            },
            // No result pointer is configured: no document.
            result: None,
        };
        prop_assert_eq!(result, Ok(expected));
    }

    #[test]
    fn an_unknown_status_is_always_malformed(
        status in prop_oneof![
            any::<String>().prop_map(Value::from),
            "[a-zA-Z0-9 _-]{0,16}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            json_value(),
        ],
        reference in "[A-Z]{2}-[0-9]{1,6}",
    ) {
        let text = match &status {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        prop_assume!(!text.as_deref().is_some_and(known));
        let body = json!({ "reference": reference, "status": status, "event_id": "e-1" });
        let bytes = serde_json::to_vec(&body).expect("a Value always serializes");
        for by in [CorrelateBy::ExternalRef, CorrelateBy::IdempotencyKey] {
            let err = parse(&matcher(by), bytes.clone()).expect_err("an unknown status");
            prop_assert!(err.reason.contains("status"), "{}", err.reason);
        }
    }
}

#[test]
fn sixty_four_four_byte_characters_are_one_byte_too_many() {
    let reference = "\u{1F600}".repeat(64);
    assert_eq!(reference.len(), MAX_KEY_BYTES + 1);
    let body = json!({ "reference": reference, "status": "ok" });
    let m = matcher(CorrelateBy::ExternalRef);
    assert!(parse(&m, serde_json::to_vec(&body).unwrap()).is_err());
    let body = json!({ "reference": "\u{1F600}".repeat(63), "status": "ok" });
    assert!(parse(&m, serde_json::to_vec(&body).unwrap()).is_ok());
}
