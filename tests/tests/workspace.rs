//! Workspace policy: each layer is a crate that depends only on the layers below it, and the key-value
//! engine embeds in a plain threaded program: no serialization framework, no async runtime, no network crate.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

/// The names in the `[dependencies]` table of the workspace member in directory `member`.
fn dependencies(member: &str) -> Vec<String> {
    let path = format!("{}/../{member}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(path).unwrap();
    let deps = manifest.split("\n[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    deps.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['=', ' ', '.']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn engine_depends_on_no_serialization_async_or_network_crate() {
    let names = dependencies("engine");
    assert!(!names.is_empty());
    let allowed = [
        // Optional, for the `fuzzing` feature only (the fuzz targets' input decoding).
        "arbitrary",
        // The current view, loaded by every read without a lock (`Inner::view`).
        "arc-swap",
        "crc32fast",
        // System calls the standard library lacks (`sync_file_range`, the blob files' write-back hint).
        "libc",
        "memmap2",
        "parking_lot",
        "thiserror",
        "xxhash-rust",
        "zstd",
        // zstd's C bindings under the `zstd` crate, for the one call it does not wrap (`ZDICT_finalizeDictionary`,
        // a table's dictionary).
        "zstd-sys",
    ];
    for name in &names {
        assert!(allowed.contains(&name.as_str()), "engine dependency {name} is not on the list of allowed crates");
    }
}

/// Every Cairn crate a layer depends on is below it.
#[test]
fn layers_depend_only_on_layers_below() {
    let layers = [
        ("engine", "cairn-engine", vec![]),
        ("store", "cairn-store", vec!["cairn-engine"]),
        ("platform", "cairn-platform", vec!["cairn-store"]),
        ("sync", "cairn-sync", vec!["cairn-store"]),
        ("server", "cairn-server", vec!["cairn-engine", "cairn-store", "cairn-platform", "cairn-sync"]),
    ];
    for (dir, name, below) in &layers {
        let cairn: Vec<String> = dependencies(dir).into_iter().filter(|d| d.starts_with("cairn")).collect();
        for dep in &cairn {
            assert!(below.contains(&dep.as_str()), "{name} depends on {dep}, which is not below it");
        }
        assert_eq!(cairn.len(), below.len(), "{name} depends on {cairn:?}, expected {below:?}");
    }
    for banned in ["tokio", "axum", "hyper", "reqwest", "object_store", "tokio-postgres"] {
        for dir in ["engine", "store", "platform"] {
            assert!(!dependencies(dir).iter().any(|d| d == banned), "{dir} must not depend on {banned}");
        }
    }
}
