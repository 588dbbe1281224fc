#![no_main]
//! Arbitrary bytes decoded as a table file must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_engine::fuzzing::decode_table(data);
});
