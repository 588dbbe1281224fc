//! Change-feed size and disk use over a long update-heavy run: `cargo run --release -p cairn-store --example
//! feed_retention -- DIR UPDATES [RETENTION_BYTES]`. Updates 1,000 records with 1 KB incompressible documents, from 4
//! threads, and prints the feed's bytes and the directory's size every 10% and at the end (peaks too).
//! Buffered durability (synced every 100 ms), so that the run measures retention rather than fsync.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_store::engine::{Db, Durability};
use cairn_store::{CollectionSpec, Store, StoreOptions};

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).ok_or("usage: feed_retention DIR UPDATES [RETENTION_BYTES]")?);
    let updates: u64 = args.get(2).map_or(Ok(200_000), |s| s.parse())?;
    let mut opts = StoreOptions::default();
    if let Some(bytes) = args.get(3) {
        opts = opts.change_retention_bytes(bytes.parse()?);
    }
    let db = Db::builder().durability(Durability::Buffered).open(dir)?;
    let store = Store::with_db(db, opts)?;
    store.declare(CollectionSpec::new("docs", vec![]))?;
    let done = Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    let (mut peak_feed, mut peak_disk) = (0, 0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let docs = store.collection_dyn("docs").expect("the collection is declared");
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                loop {
                    let i = done.fetch_add(1, Ordering::Relaxed);
                    if i >= updates {
                        break;
                    }
                    // 1,000 hex digits of a xorshift sequence: documents that do not compress.
                    let mut pad = String::with_capacity(1000);
                    while pad.len() < 1000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        pad.push_str(&format!("{x:016x}"));
                    }
                    pad.truncate(1000);
                    let id = format!("d{}", (i * 4 + t) % 1000);
                    docs.upsert(&id, serde_json::json!({"i": i, "pad": pad})).expect("update");
                }
            })
        })
        .collect();
    let mut next_report = updates / 10;
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let feed = store.feed_stats()?.bytes;
        let disk = dir_bytes(dir);
        peak_feed = peak_feed.max(feed);
        peak_disk = peak_disk.max(disk);
        let n = done.load(Ordering::Relaxed).min(updates);
        if n >= next_report {
            println!("{n:>8} updates  feed {:>8.1} MiB  disk {:>8.1} MiB", mib(feed), mib(disk));
            next_report += updates / 10;
        }
    }
    for t in threads {
        t.join().map_err(|_| "writer panicked")?;
    }
    store.trim_changes()?;
    let stats = store.feed_stats()?;
    println!(
        "end: {updates} updates in {:.0} s; feed {:.1} MiB (peak {:.1}), disk {:.1} MiB (peak {:.1}), {} events trimmed",
        start.elapsed().as_secs_f64(),
        mib(stats.bytes),
        mib(peak_feed),
        mib(dir_bytes(dir)),
        mib(peak_disk),
        stats.trimmed_events
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
