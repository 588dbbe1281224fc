#![no_main]
//! Engine operations with power cuts and injected I/O errors against a BTreeMap model
//! (`cairn_engine::fuzzing::engine_model`): any disagreement panics.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_engine::fuzzing::engine_model(data);
});
