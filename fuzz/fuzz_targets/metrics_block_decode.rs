#![no_main]
//! Arbitrary bytes decoded as a metrics block (as they are, and with a valid checksum) must never panic,
//! and a block that decodes must append as it decodes (`cairn_store::fuzzing::decode_metrics_block`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_store::fuzzing::decode_metrics_block(data);
});
