#![no_main]
//! Arbitrary bytes decoded as a wal file must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_engine::fuzzing::decode_wal(data);
});
