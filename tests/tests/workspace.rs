//! Workspace policy: the engine embeds in a plain threaded program, so it depends on no async runtime and
//! no network crate.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[test]
fn engine_depends_on_no_async_or_network_crate() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    let names: Vec<&str> =
        deps.lines().filter_map(|l| l.split(['=', ' ', '.']).next()).filter(|n| !n.is_empty()).collect();
    assert!(!names.is_empty());
    let allowed = [
        // Optional, for the `fuzzing` feature only (the fuzz targets' input decoding).
        "arbitrary",
        "crc32fast",
        "memmap2",
        "parking_lot",
        "serde",
        "serde_json",
        "thiserror",
        "xxhash-rust",
        "zstd",
    ];
    for name in &names {
        assert!(allowed.contains(name), "engine dependency {name} is not on the list of allowed crates");
    }
    for banned in ["tokio", "async-std", "hyper", "reqwest", "axum", "object_store", "tokio-postgres"] {
        assert!(!manifest.contains(banned), "the engine must not depend on {banned}");
    }
}
