//! Entry points for the record store's fuzz targets in `fuzz/`, built only with the `fuzzing` feature: the
//! metrics blocks' decoder ([`decode_metrics_block`], in `metrics/fuzzing.rs`) and the collection model
//! harness, on the engine's shared harness ([`cairn_engine::fuzzing::harness`]). Like the engine's, they are
//! plain functions, so the committed corpus is replayed by the normal test run (`tests/tests/fuzz_corpus.rs`)
//! without a fuzzer.

mod collection_model;

pub use crate::metrics::fuzzing::{block_seeds as metrics_block_seeds, decode_block as decode_metrics_block};
pub use collection_model::{collection_model, CollectionSummary};
