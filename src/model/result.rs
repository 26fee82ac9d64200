//! The partner's result document: what a finished submission carries back
//! to the host, whichever way the answer arrived (the synchronous answer, a
//! callback, a poll, or an operator's manual resolution).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::submission::{MAX_JSON_DEPTH, check_depth};

/// Default cap on a kept result document: 64 KiB of JSON.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024;

/// The partner's result document as kept with a submission.
///
/// A document is kept whole or not at all: one over the partner's cap
/// ([`crate::Partner::max_result_bytes`], default 64 KiB) is kept as
/// [`ResultDocument::TooLarge`], and one that cannot be kept as JSON as
/// [`ResultDocument::Unreadable`] — never cut, never dropped without a
/// trace.
///
/// ```
/// use liaison::ResultDocument;
/// use serde_json::json;
///
/// let kept = ResultDocument::capture(json!({"paid": 1250, "claim_no": "CH-77"}), 1024);
/// assert_eq!(kept.document().unwrap()["claim_no"], "CH-77");
///
/// let big = ResultDocument::capture(json!({"blob": "x".repeat(2000)}), 1024);
/// assert!(matches!(big, ResultDocument::TooLarge { limit: 1024, .. }));
/// assert!(big.document().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResultDocument {
    /// The document as the partner sent it.
    Json {
        /// The JSON value.
        document: Value,
    },
    /// The document was larger than the cap and was not kept.
    TooLarge {
        /// Its size in bytes of compact JSON (or as received).
        bytes: usize,
        /// The cap it exceeded.
        limit: usize,
    },
    /// The partner's answer was meant to be the result but could not be
    /// kept as JSON (not JSON, nested too deep).
    Unreadable {
        /// Why, in words.
        reason: String,
        /// Its size in bytes as received.
        bytes: usize,
    },
}

impl ResultDocument {
    /// Keep `document` if its compact JSON is at most `limit` bytes and it
    /// is nested no deeper than the JSON readers allow; otherwise the
    /// marker that says why not.
    pub fn capture(document: Value, limit: usize) -> Self {
        if check_depth("result", &document).is_err() {
            return ResultDocument::Unreadable {
                reason: format!("nested deeper than {MAX_JSON_DEPTH} levels"),
                bytes: 0,
            };
        }
        let bytes = compact_len(&document);
        if bytes > limit {
            ResultDocument::TooLarge { bytes, limit }
        } else {
            ResultDocument::Json { document }
        }
    }

    /// Keep the raw bytes of an answer meant to be the result: parsed as
    /// JSON and then as [`ResultDocument::capture`]; an answer over `limit`
    /// is not parsed at all.
    pub fn from_bytes(body: &[u8], limit: usize) -> Self {
        if body.len() > limit {
            return ResultDocument::TooLarge {
                bytes: body.len(),
                limit,
            };
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(document) => Self::capture(document, limit),
            Err(e) => ResultDocument::Unreadable {
                reason: if e.to_string().contains("recursion limit") {
                    format!("nested deeper than {MAX_JSON_DEPTH} levels")
                } else {
                    "not JSON".to_owned()
                },
                bytes: body.len(),
            },
        }
    }

    /// This document under `limit`: a kept document over it becomes
    /// [`ResultDocument::TooLarge`]; markers stay as they are.
    pub fn cap(self, limit: usize) -> Self {
        match self {
            ResultDocument::Json { document } => Self::capture(document, limit),
            marker => marker,
        }
    }

    /// The document, when it was kept.
    pub fn document(&self) -> Option<&Value> {
        match self {
            ResultDocument::Json { document } => Some(document),
            _ => None,
        }
    }

    /// Whether the document was kept (not a marker).
    pub fn is_kept(&self) -> bool {
        matches!(self, ResultDocument::Json { .. })
    }

    /// The words for a marker's timeline line; `None` for a kept document.
    pub(crate) fn marker_reason(&self) -> Option<String> {
        match self {
            ResultDocument::Json { .. } => None,
            ResultDocument::TooLarge { bytes, limit } => Some(format!(
                "the partner's result document is {bytes} bytes, over the {limit}-byte cap; it was not kept"
            )),
            ResultDocument::Unreadable { reason, bytes } => Some(format!(
                "the partner's result document ({bytes} bytes) could not be kept: {reason}"
            )),
        }
    }

    /// The stored form (JSON text).
    pub(crate) fn to_stored(&self) -> String {
        // A Value and plain fields always serialize.
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }

    /// Read the stored form back.
    pub(crate) fn from_stored(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }
}

/// Bytes of `value` as compact JSON, without building the text.
fn compact_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_kept_whole_or_replaced_by_a_marker() {
        let doc = json!({"status": "approved", "paid": 1250});
        let len = serde_json::to_string(&doc).unwrap().len();
        assert_eq!(
            ResultDocument::capture(doc.clone(), len),
            ResultDocument::Json {
                document: doc.clone()
            }
        );
        assert_eq!(
            ResultDocument::capture(doc.clone(), len - 1),
            ResultDocument::TooLarge {
                bytes: len,
                limit: len - 1
            }
        );
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let unreadable = ResultDocument::capture(deep, usize::MAX);
        assert!(matches!(unreadable, ResultDocument::Unreadable { .. }));
        assert!(
            unreadable
                .marker_reason()
                .unwrap()
                .contains("nested deeper")
        );
    }

    #[test]
    fn raw_answers_are_parsed_only_under_the_cap() {
        assert!(matches!(
            ResultDocument::from_bytes(b"{\"a\":1}", 100),
            ResultDocument::Json { .. }
        ));
        assert_eq!(
            ResultDocument::from_bytes(b"OK", 100),
            ResultDocument::Unreadable {
                reason: "not JSON".into(),
                bytes: 2
            }
        );
        assert_eq!(
            ResultDocument::from_bytes(&[b'['; 300], 10),
            ResultDocument::TooLarge {
                bytes: 300,
                limit: 10
            }
        );
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let parsed = ResultDocument::from_bytes(deep.as_bytes(), 10_000);
        assert!(
            matches!(&parsed, ResultDocument::Unreadable { reason, .. } if reason.contains("nested")),
            "{parsed:?}"
        );
    }

    #[test]
    fn the_stored_form_round_trips() {
        for doc in [
            ResultDocument::Json {
                document: json!({"nul": "a\u{0}b", "n": [1, 2.5, null]}),
            },
            ResultDocument::TooLarge {
                bytes: 70_000,
                limit: 65_536,
            },
            ResultDocument::Unreadable {
                reason: "not JSON".into(),
                bytes: 3,
            },
        ] {
            let stored = doc.to_stored();
            assert!(!stored.contains('\u{0}'), "{stored}");
            assert_eq!(ResultDocument::from_stored(&stored).unwrap(), doc);
        }
    }
}
