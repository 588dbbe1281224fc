#![no_main]
//! Arbitrary bytes decoded as a table file must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::fuzzing::decode_table(data);
});
