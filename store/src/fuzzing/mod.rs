//! Entry point for the record store's fuzz target in `fuzz/`, built only with the `fuzzing` feature: the
//! collection model harness, on the engine's shared harness ([`cairn_engine::fuzzing::harness`]). Like the
//! engine's, it is a plain function, so the committed corpus is replayed by the normal test run
//! (`tests/tests/fuzz_corpus.rs`) without a fuzzer.

mod collection_model;

pub use collection_model::{collection_model, CollectionSummary};
