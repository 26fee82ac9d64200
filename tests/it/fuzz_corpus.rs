//! The fuzz targets' entry points (fuzz/src/lib.rs, included here by path)
//! as normal tests: over the checked-in corpus (fuzz/corpus/<target>/:
//! valid, truncated and hostile samples), over mutations of it, and over
//! random bytes. `PROPTEST_CASES` scales the random part (default 2,000 per
//! property for the pure targets, a tenth of that for ingest, which writes).
//! Long runs use cargo-fuzz: docs/reliability.md (Fuzzing).

use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod entry;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every corpus file of a target, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "{target}: only {} corpus files",
        files.len()
    );
    files
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A corpus file with a few byte-level edits (flip, insert, delete, cut),
/// as a mutation-based fuzzer would make.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let files: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, bytes)| bytes).collect();
    (
        select(files),
        vec((any::<usize>(), any::<u8>(), 0..4u8), 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, op) in edits {
                let i = if bytes.is_empty() {
                    0
                } else {
                    at % bytes.len()
                };
                match op {
                    0 if !bytes.is_empty() => bytes[i] ^= byte | 1,
                    1 => bytes.insert(i.min(bytes.len()), byte),
                    2 if !bytes.is_empty() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
}

#[test]
fn signature_headers_corpus() {
    for (name, bytes) in corpus("signature_headers") {
        entry::signature_headers(&bytes);
        let verified = entry::verified_by(&bytes);
        if name.starts_with("valid-") {
            assert!(!verified.is_empty(), "{name} no longer verifies");
        } else if name.starts_with("truncated-") || name.starts_with("hostile-") {
            assert!(verified.is_empty(), "{name} verifies under {verified:?}");
        }
    }
}

#[test]
fn json_matcher_corpus() {
    for (name, bytes) in corpus("json_matcher") {
        entry::json_matcher(&bytes);
        if name.starts_with("valid-") {
            assert!(entry::parses(&bytes), "{name} no longer parses");
        } else if name.starts_with("truncated") {
            assert!(!entry::parses(&bytes), "{name} parses");
        }
    }
}

#[test]
fn callback_ingest_corpus() {
    let ingest = entry::Ingest::start();
    for (_, bytes) in corpus("callback_ingest") {
        ingest.run(&bytes);
    }
    // Hostile inputs on top of everything above, on the same store.
    for (_, bytes) in corpus("callback_ingest") {
        ingest.run(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2000)))]

    #[test]
    fn signature_headers_random(data in vec(any::<u8>(), 0..600)) {
        entry::signature_headers(&data);
    }

    #[test]
    fn signature_headers_mutated(data in mutated("signature_headers")) {
        entry::signature_headers(&data);
    }

    #[test]
    fn json_matcher_random(data in vec(any::<u8>(), 0..600)) {
        entry::json_matcher(&data);
    }

    #[test]
    fn json_matcher_mutated(data in mutated("json_matcher")) {
        entry::json_matcher(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2000) / 10))]

    #[test]
    fn callback_ingest_random_and_mutated(
        random in vec(any::<u8>(), 0..600),
        edited in mutated("callback_ingest"),
    ) {
        entry::callback_ingest(&random);
        entry::callback_ingest(&edited);
    }
}

#[cfg(feature = "http")]
#[test]
fn callback_router_corpus() {
    let served = entry::Served::start();
    for (_, bytes) in corpus("callback_router") {
        served.run(&bytes);
    }
}

#[cfg(feature = "http")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2000) / 20))]

    #[test]
    fn callback_router_random_and_mutated(
        random in vec(any::<u8>(), 0..600),
        edited in mutated("callback_router"),
    ) {
        entry::callback_router(&random);
        entry::callback_router(&edited);
    }
}
