#![no_main]
//! Collection operations (versions, indexes, paged queries, claims, transactions) with power cuts against a
//! model (`cairn_store::fuzzing::collection_model`): any disagreement panics.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_store::fuzzing::collection_model(data);
});
