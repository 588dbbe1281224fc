//! Entry points for the fuzz targets in `fuzz/`, built only with the `fuzzing` feature.
//!
//! The decoders feed arbitrary bytes to the code that reads files from disk; none of them may panic. The
//! model harnesses decode the bytes (with [`arbitrary`]) into a sequence of operations, run it on a database
//! over [`MemStorage`](crate::MemStorage) with crashes and injected I/O errors, and check every answer
//! against a simple model; a disagreement panics with a description. They are plain functions, so the
//! committed corpus is replayed by the normal test run (`tests/tests/fuzz_corpus.rs`) without a fuzzer. The
//! record store's model harness (`cairn_store::fuzzing`) builds on [`harness`].

mod decode;
mod engine_model;
pub mod harness;

pub use decode::{decode_manifest, decode_table, decode_wal};
pub use engine_model::{engine_model, EngineSummary};
