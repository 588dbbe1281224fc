//! Round trips through builder and reader, and corruption detection, on an in-memory file system.

use std::path::Path;
use std::sync::Arc;

use super::slots::BlockSlots;
use super::{BlockCache, BlockValue, Compression, TableBuilder, TableIter, TableReader};
use crate::format::key::{self, internal_key, make_trailer, ValueKind};
use crate::io::{MemStorage, Storage};
use crate::iter::Source;
use crate::memtable::Lookup;

fn entries(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let kind = if i % 7 == 3 { ValueKind::Delete } else { ValueKind::Put };
            let value = if kind == ValueKind::Put {
                format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()
            } else {
                Vec::new()
            };
            (internal_key(format!("key{i:06}").as_bytes(), make_trailer(u64::from(i) + 1, kind)), value)
        })
        .collect()
}

fn build(fs: &MemStorage, path: &Path, items: &[(Vec<u8>, Vec<u8>)], compression: Compression) -> super::TableSummary {
    let mut b = TableBuilder::create(fs, path, 256, compression, 10).unwrap();
    for (k, v) in items {
        b.add(k, v).unwrap();
    }
    b.finish().unwrap()
}

fn setup() -> (MemStorage, &'static Path) {
    let fs = MemStorage::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    (fs, Path::new("/t/000001.sst"))
}

#[test]
fn roundtrip_point_reads_and_both_directions() {
    for compression in [Compression::None, Compression::Zstd { level: 1 }] {
        let (fs, path) = setup();
        let items = entries(2000);
        let summary = build(&fs, path, &items, compression);
        assert_eq!(summary.entries, 2000);
        assert_eq!(summary.smallest, items[0].0);
        assert_eq!(summary.largest, items[1999].0);
        let reader = Arc::new(TableReader::open(&fs, path, 1, Arc::new(BlockCache::new(1 << 20))).unwrap());
        assert!(reader.block_count() > 10);
        assert_eq!(reader.verify().unwrap(), 2000);
        for (i, (k, v)) in items.iter().enumerate() {
            let ukey = key::user_key(k);
            let found = reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
            let seq = i as u64 + 1;
            let want = if v.is_empty() && i % 7 == 3 { Lookup::Deleted(seq) } else { Lookup::Found(v.clone(), seq) };
            assert_eq!(found, want, "key {i}");
            // Not visible before it was written.
            assert_eq!(reader.get(ukey, i as u64, key::key_hash(ukey)).map(Lookup::owned).unwrap(), Lookup::Absent);
        }
        assert_eq!(reader.get(b"nope", 1 << 40, key::key_hash(b"nope")).map(Lookup::owned).unwrap(), Lookup::Absent);

        let mut fwd = TableIter::new(reader.clone(), false);
        fwd.seek(None).unwrap();
        let mut n = 0;
        while let Some(k) = fwd.key() {
            assert_eq!(k, &items[n].0[..]);
            n += 1;
            fwd.advance().unwrap();
        }
        assert_eq!(n, items.len());
        let mut rev = TableIter::new(reader.clone(), true);
        rev.seek(Some(&items[1000].0)).unwrap();
        let mut i = 1000;
        while let Some(k) = rev.key() {
            assert_eq!(k, &items[i].0[..]);
            rev.advance().unwrap();
            if i == 0 {
                assert!(rev.key().is_none());
                break;
            }
            i -= 1;
        }
    }
}

/// Entries as `entries` makes them: internal key and value.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// `n` puts of `len` bytes of xorshift noise from `seed`, which nothing compresses.
fn random_entries(n: u32, len: usize, seed: u64) -> Entries {
    let mut state = seed;
    (0..n)
        .map(|i| {
            let value = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            (internal_key(format!("key{i:06}").as_bytes(), make_trailer(u64::from(i) + 1, ValueKind::Put)), value)
        })
        .collect()
}

/// A table of `n` entries (zstd), open as table 1 with a block cache of its own.
fn cached_table(n: u32) -> (Entries, Arc<BlockCache>, Arc<TableReader>) {
    let (fs, path) = setup();
    let items = entries(n);
    build(&fs, path, &items, Compression::Zstd { level: 1 });
    let cache = Arc::new(BlockCache::new(1 << 20));
    let reader = Arc::new(TableReader::open(&fs, path, 1, cache.clone()).unwrap());
    (items, cache, reader)
}

/// A point read whose data block's cache shard is held (by a thread preempted inside it) reads the block
/// itself instead of waiting, and leaves it out of the cache.
#[test]
fn a_read_does_not_wait_for_a_busy_cache_shard() {
    let (items, cache, reader) = cached_table(500);
    let (k, v) = &items[0];
    let ukey = key::user_key(k);
    let read = || reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
    let first_block = reader.index().unwrap().block_offset(0).unwrap();
    let held = cache.hold_shard(1, first_block);
    assert_eq!(read(), Lookup::Found(v.clone(), 1));
    drop(held);
    assert_eq!(cache.usage(), cache.index_filter_usage(), "nothing cached while the shard was held");
    let (hits, misses) = (cache.hits(), cache.misses());
    assert_eq!(read(), Lookup::Found(v.clone(), 1));
    assert_eq!(read(), Lookup::Found(v.clone(), 1));
    assert_eq!((cache.hits() - hits, cache.misses() - misses), (1, 1), "cached once the shard is free");
}

/// A compaction's cursor and `verify` read a whole table without caching its blocks (the table is about to
/// be deleted, or read once); a reader's cursor caches what it reads, and a compaction takes what is cached.
#[test]
fn compactions_and_checks_read_tables_without_filling_the_cache() {
    let (items, cache, reader) = cached_table(2000);
    let data_cached = || cache.usage() - cache.index_filter_usage();
    let walk = |mut it: TableIter| {
        it.seek(None).unwrap();
        let mut n = 0;
        while it.key().is_some() {
            n += 1;
            it.advance().unwrap();
        }
        n
    };
    assert_eq!(walk(TableIter::for_compaction(reader.clone())), items.len());
    assert_eq!(reader.verify().unwrap(), 2000);
    assert_eq!(data_cached(), 0);
    assert_eq!(walk(TableIter::new(reader.clone(), false)), items.len());
    let filled = data_cached();
    assert!(filled > 0);
    let hits = cache.hits();
    assert_eq!(walk(TableIter::for_compaction(reader.clone())), items.len());
    assert_eq!(cache.hits() - hits, reader.block_count() as u64, "the compaction took the cached blocks");
    assert_eq!(data_cached(), filled);
}

/// Every block a reader's slot holds is the very block the cache holds under its key, so that the slots
/// keep no block alive that the cache has let go: checked after reads that evicted each other's blocks.
fn assert_slots_hold_only_cached_blocks(reader: &TableReader) -> usize {
    let held = reader.slot_blocks();
    for (block, cached) in &held {
        assert!(cached, "a slot holds a block the cache does not ({} holders)", block.holders());
    }
    held.len()
}

/// What a reader of the table at `path` pins when its cache has room: its index, filter and block slots
/// (measured through a reader whose cache is disabled, which holds the first two uncharged).
fn pinned_charge(fs: &MemStorage, path: &Path) -> usize {
    let alone = TableReader::open(fs, path, 1, Arc::new(BlockCache::new(0))).unwrap();
    alone.index().unwrap().charge() + alone.filter_charge().unwrap() + BlockSlots::new(alone.block_count()).charge()
}

/// A pinned table reads its cached blocks through its slots: the second read of a block does not look it
/// up in the cache (it counts as a hit all the same), and a block the cache evicts leaves its slot and is
/// freed, however many times a slot served it.
#[test]
fn cached_blocks_are_read_through_slots_and_leave_them_when_evicted() {
    let (fs, path) = setup();
    let items = entries(4000);
    build(&fs, path, &items, Compression::None);
    let pinned = pinned_charge(&fs, path);
    // Room in each shard for a few data blocks beside the pinned index, filter and slots.
    let cache = Arc::new(BlockCache::new(2 * pinned + 16 * 3 * 4200));
    let reader = TableReader::open(&fs, path, 1, cache.clone()).unwrap();
    assert!(reader.is_pinned());
    let read = |i: usize| {
        let (k, v) = &items[i];
        let ukey = key::user_key(k);
        let seq = i as u64 + 1;
        let want = if i % 7 == 3 { Lookup::Deleted(seq) } else { Lookup::Found(v.clone(), seq) };
        assert_eq!(reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap(), want);
    };

    read(0);
    let mut held = reader.slot_blocks();
    assert!(held.len() == 1 && held[0].1, "the block read is in its slot, and cached");
    let (first, _) = held.remove(0);
    // The cache's entry, the slot, and `first`.
    assert_eq!(first.holders(), 3);
    let (hits, misses) = (cache.hits(), cache.misses());
    for _ in 0..10 {
        read(0);
    }
    assert_eq!((cache.hits() - hits, cache.misses() - misses), (10, 0));

    // Reading the whole table through a cache of a few blocks a shard evicts the first block.
    for i in 0..items.len() {
        read(i);
    }
    assert_eq!(first.holders(), 1, "the evicted block is held by neither the cache nor the slot");
    let filled = assert_slots_hold_only_cached_blocks(&reader);
    assert!(filled > 0 && filled < reader.block_count(), "{filled} of {} slots", reader.block_count());
    assert!(cache.usage() <= 2 * pinned + 16 * 3 * 4200);
}

/// A block a flush put in the cache has no release for the reader's slot: the first read that finds it
/// replaces its entry with one that has, and the next reads take it from the slot.
#[test]
fn blocks_a_flush_cached_get_their_slot_on_their_first_read() {
    let (fs, path) = setup();
    let items = entries(500);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let mut b = TableBuilder::create(&fs, path, 256, Compression::None, 10).unwrap();
    b.cache_blocks(cache.clone(), 1);
    for (k, v) in &items {
        b.add(k, v).unwrap();
    }
    b.finish().unwrap();
    let reader = TableReader::open(&fs, path, 1, cache.clone()).unwrap();
    let (k, v) = &items[0];
    let ukey = key::user_key(k);
    let read = || reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
    assert!(reader.slot_blocks().is_empty());
    let (hits, misses) = (cache.hits(), cache.misses());
    assert_eq!(read(), Lookup::Found(v.clone(), 1));
    assert_eq!((cache.hits() - hits, cache.misses() - misses), (1, 0), "the flush's block was cached");
    // `slot_blocks` looks each block up in the cache: one hit.
    let held = reader.slot_blocks();
    assert!(held.len() == 1 && held[0].1, "the block is in its slot, and is the cache's");
    drop(held);
    let usage = cache.usage();
    let lookups = cache.hits();
    assert_eq!(read(), Lookup::Found(v.clone(), 1));
    assert_eq!(cache.hits() - lookups, 1);
    assert_eq!(cache.usage(), usage, "the entry was replaced, not added");
}

/// Threads reading one table through a cache too small for it, while each other's reads evict what they
/// read, get every value right, and leave no slot holding a block the cache let go.
#[test]
fn concurrent_reads_through_slots_under_eviction() {
    let (fs, path) = setup();
    let items = Arc::new(entries(4000));
    build(&fs, path, &items, Compression::Zstd { level: 1 });
    let cache = Arc::new(BlockCache::new(1 << 20));
    let reader = Arc::new(TableReader::open(&fs, path, 1, cache.clone()).unwrap());
    assert!(reader.is_pinned());
    // A second table, read by the same threads, competes for the same cache.
    let other = Path::new("/t/000002.sst");
    build(&fs, other, &items, Compression::None);
    let other = Arc::new(TableReader::open(&fs, other, 2, cache.clone()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (items, reader, other) = (items.clone(), reader.clone(), other.clone());
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % items.len() as u64) as usize;
                    let (k, v) = &items[i];
                    let ukey = key::user_key(k);
                    let seq = i as u64 + 1;
                    let want = if i % 7 == 3 { Lookup::Deleted(seq) } else { Lookup::Found(v.clone(), seq) };
                    for table in [&reader, &other] {
                        let got = table.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
                        assert_eq!(got, want, "key {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(cache.usage() <= 1 << 20);
    let blocks = (reader.block_count() + other.block_count()) as u64;
    assert!(cache.misses() > blocks, "blocks were evicted and read again ({} misses)", cache.misses());
    assert!(assert_slots_hold_only_cached_blocks(&reader) > 0);
    assert!(assert_slots_hold_only_cached_blocks(&other) > 0);
}

/// Regression: when the last entry exactly filled a block, the table's largest key was recorded wrongly,
/// which let level-1 tables overlap and lookups miss.
#[test]
fn largest_key_is_right_when_the_last_block_is_cut_exactly() {
    let (fs, path) = setup();
    let mut b = TableBuilder::create(&fs, path, 64, Compression::None, 10).unwrap();
    let big = vec![b'v'; 100];
    let k1 = internal_key(b"a", make_trailer(1, ValueKind::Put));
    let k2 = internal_key(b"b", make_trailer(2, ValueKind::Put));
    b.add(&k1, &big).unwrap();
    b.add(&k2, &big).unwrap();
    let s = b.finish().unwrap();
    assert_eq!((s.smallest, s.largest), (k1, k2));
}

#[test]
fn every_flipped_byte_is_an_error_or_harmless_never_a_wrong_value() {
    let (fs, path) = setup();
    let items = entries(120);
    build(&fs, path, &items, Compression::Zstd { level: 1 });
    assert_every_flipped_byte_is_an_error_or_harmless(&fs, path, &items);
    // Values past the block size, whose blocks point reads take in place from the map.
    let (fs, path) = setup();
    let items = random_entries(12, 600, 3);
    build(&fs, path, &items, Compression::Zstd { level: 1 });
    assert_every_flipped_byte_is_an_error_or_harmless(&fs, path, &items);
}

/// Flips each byte of the table at `path` in turn: opening it, or reading any of `items` (all it holds),
/// either fails with a corruption error or answers as before, never wrongly.
fn assert_every_flipped_byte_is_an_error_or_harmless(fs: &MemStorage, path: &Path, items: &[(Vec<u8>, Vec<u8>)]) {
    let len = fs.read(path).unwrap().len();
    for offset in 0..len {
        fs.mutate_byte(path, offset, |b| b ^ 0x10).unwrap();
        match TableReader::open(fs, path, 1, Arc::new(BlockCache::new(1 << 20))) {
            Err(e) => assert!(e.is_corruption(), "offset {offset}: {e}"),
            Ok(reader) => {
                for (i, (k, v)) in items.iter().enumerate() {
                    let (ukey, trailer) = key::split(k);
                    let seq = key::trailer_seq(trailer);
                    let want = if key::trailer_kind(trailer) == Some(ValueKind::Delete) {
                        Lookup::Deleted(seq)
                    } else {
                        Lookup::Found(v.clone(), seq)
                    };
                    match reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned) {
                        Err(e) => assert!(e.is_corruption(), "offset {offset}: {e}"),
                        Ok(found) => assert_eq!(found, want, "offset {offset} key {i}"),
                    }
                }
            }
        }
        fs.mutate_byte(path, offset, |b| b ^ 0x10).unwrap();
    }
}

/// After a run of incompressible blocks the builder only probes now and then, and compresses again as soon
/// as the data allows; every entry reads back either way.
#[test]
fn compression_backs_off_on_incompressible_data_and_resumes() {
    let (fs, path) = setup();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let mut items = Vec::new();
    for i in 0..4000u32 {
        // 2,000 random values (incompressible), then 2,000 of one repeated byte.
        let value = if i < 2000 { noise(100) } else { vec![b'z'; 100] };
        items.push((
            internal_key(format!("key{i:06}").as_bytes(), make_trailer(u64::from(i) + 1, ValueKind::Put)),
            value,
        ));
    }
    let plain = build(&fs, Path::new("/t/000002.sst"), &items, Compression::None);
    let summary = build(&fs, path, &items, Compression::Zstd { level: 1 });
    // The repetitive half holds about 2,000 x 110 bytes; compressed, it shrinks to a fraction.
    assert!(summary.size + 150_000 < plain.size, "the repetitive half compressed: {} of {}", summary.size, plain.size);
    let reader = Arc::new(TableReader::open(&fs, path, 1, Arc::new(BlockCache::new(1 << 20))).unwrap());
    assert_eq!(reader.verify().unwrap(), 4000);
    for (i, (k, v)) in items.iter().enumerate() {
        let ukey = key::user_key(k);
        assert_eq!(
            reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap(),
            Lookup::Found(v.clone(), i as u64 + 1)
        );
    }
}

/// Readers pin their index and filter while the cache has room for them, charged to it: a point read then
/// looks up only its data block. Past the pin limit, readers keep theirs in the cache; a closed reader gives
/// its charge back, and the next one opened pins in its place.
#[test]
fn readers_pin_their_index_and_filter_within_the_pin_limit() {
    let fs = MemStorage::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    let items = entries(2000);
    let tables = 6u64;
    for t in 1..=tables {
        build(&fs, &Path::new("/t").join(format!("{t:06}.sst")), &items, Compression::None);
    }
    let alone = TableReader::open(&fs, Path::new("/t/000001.sst"), 1, Arc::new(BlockCache::new(0))).unwrap();
    let per_table = alone.index().unwrap().charge() + alone.filter_charge().unwrap();
    // A pinned table is charged its block slots too.
    let pinned_per_table = pinned_charge(&fs, Path::new("/t/000001.sst"));
    // Room to pin four tables' index and filter (a half of the budget); the pool holds the rest.
    let capacity = 8 * pinned_per_table + 1000;
    let cache = Arc::new(BlockCache::new(capacity));
    let open = |t: u64| TableReader::open(&fs, &Path::new("/t").join(format!("{t:06}.sst")), t, cache.clone()).unwrap();
    let mut readers: Vec<TableReader> = (1..=tables).map(open).collect();
    let pinned: Vec<bool> = readers.iter().map(TableReader::is_pinned).collect();
    assert_eq!(pinned, [true, true, true, true, false, false]);
    assert_eq!(cache.pinned_usage(), 4 * pinned_per_table);
    assert_eq!(cache.index_filter_usage(), 4 * pinned_per_table + 2 * per_table);
    assert!(cache.usage() <= capacity);

    // A point read of a pinned table looks up its data block only; of the others, filter, index and block.
    for (t, reader) in readers.iter().enumerate() {
        let lookups = cache.hits() + cache.misses();
        for (i, (k, v)) in items.iter().enumerate().step_by(101) {
            let ukey = key::user_key(k);
            let seq = i as u64 + 1;
            let want = if i % 7 == 3 { Lookup::Deleted(seq) } else { Lookup::Found(v.clone(), seq) };
            assert_eq!(reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap(), want);
        }
        let per_read = if reader.is_pinned() { 1 } else { 3 };
        assert_eq!(cache.hits() + cache.misses() - lookups, per_read * items.len().div_ceil(101) as u64, "table {t}");
    }
    assert!(cache.usage() <= capacity);
    // Preparing a seek looks nothing up in the cache: a pinned table reads its slots, another nothing.
    let lookups = cache.hits() + cache.misses();
    for reader in &readers {
        reader.prepare_seek(&items[1000].0);
    }
    assert_eq!(cache.hits() + cache.misses(), lookups);

    // Closing a pinned reader frees its pin for the next reader opened.
    drop(readers.swap_remove(0));
    assert_eq!(cache.pinned_usage(), 3 * pinned_per_table);
    readers.push(open(1));
    assert!(readers.last().unwrap().is_pinned());
    assert_eq!(cache.pinned_usage(), 4 * pinned_per_table);
    // Closing an unpinned one takes its index and filter out of the pool.
    let unpinned = readers.iter().position(|r| !r.is_pinned()).unwrap();
    drop(readers.swap_remove(unpinned));
    assert_eq!(cache.index_filter_usage(), 4 * pinned_per_table + per_table);
    drop(readers);
    assert_eq!((cache.pinned_usage(), cache.index_filter_usage()), (0, 0));
}

/// Every table's index and filter are charged to the one block cache: many open tables keep the cache
/// within its capacity, index and filter blocks that were evicted are read again, and reads stay right.
#[test]
fn index_and_filter_blocks_are_charged_to_the_cache_and_read_again_after_eviction() {
    let fs = MemStorage::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    let items = entries(2000);
    let tables = 30u64;
    for t in 1..=tables {
        build(&fs, &Path::new("/t").join(format!("{t:06}.sst")), &items, Compression::None);
    }
    // What one table's index and filter take, as held by a reader whose cache is disabled.
    let alone = TableReader::open(&fs, Path::new("/t/000001.sst"), 1, Arc::new(BlockCache::new(0))).unwrap();
    let per_table = alone.index().unwrap().charge() + alone.filter_charge().unwrap();
    let capacity = 16 * per_table * 3 / 2; // room for about 24 tables' index and filter, and nothing else
    assert!(per_table as u64 * tables > capacity as u64);

    let cache = Arc::new(BlockCache::new(capacity));
    let readers: Vec<TableReader> = (1..=tables)
        .map(|t| TableReader::open(&fs, &Path::new("/t").join(format!("{t:06}.sst")), t, cache.clone()).unwrap())
        .collect();
    assert!(cache.usage() <= capacity, "{} > {capacity}", cache.usage());
    assert!(cache.index_filter_usage() > 0);
    // Some tables' index and filter were evicted by the others'.
    assert!(cache.index_filter_usage() < per_table * tables as usize);
    let misses = cache.misses();
    for round in 0..2 {
        for (t, reader) in readers.iter().enumerate() {
            for (i, (k, v)) in items.iter().enumerate().step_by(97) {
                let ukey = key::user_key(k);
                let seq = i as u64 + 1;
                let want = if i % 7 == 3 { Lookup::Deleted(seq) } else { Lookup::Found(v.clone(), seq) };
                let got = reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
                assert_eq!(got, want, "round {round} table {t} key {i}");
            }
            assert!(cache.usage() <= capacity, "{} > {capacity}", cache.usage());
        }
    }
    assert!(cache.misses() > misses, "evicted index and filter blocks were read again");
}

/// Index and filter blocks outlive data blocks that a scan reads once.
#[test]
fn a_scan_does_not_evict_the_index_and_filter_of_a_table_in_use() {
    let (fs, path) = setup();
    let items = entries(4000);
    build(&fs, path, &items, Compression::None);
    let held = pinned_charge(&fs, path);
    // Room in each shard for this table's index and filter (and block slots) and a few data blocks.
    let cache = Arc::new(BlockCache::new(16 * (held + 4 * 1024)));
    let reader = Arc::new(TableReader::open(&fs, path, 1, cache.clone()).unwrap());
    let ukey = key::user_key(&items[0].0);
    reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
    assert_eq!(cache.index_filter_usage(), held);
    let mut scan = TableIter::new(reader.clone(), false);
    scan.seek(None).unwrap();
    let mut n = 0;
    while scan.key().is_some() {
        n += 1;
        scan.advance().unwrap();
    }
    assert_eq!(n, items.len());
    assert_eq!(cache.index_filter_usage(), held);
}

/// An index read again after its eviction is verified again: a damaged block is a corruption error naming
/// the file and the block's offset, never a wrong answer or a panic.
#[test]
fn an_index_damaged_after_open_is_reported_when_read_again() {
    use crate::io::FsStorage;
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000001.sst");
    let items = entries(500);
    build_on(&FsStorage, &path, &items);
    // No room to pin: the index lives in the cache, and can be evicted.
    let cache = Arc::new(BlockCache::with_pin_limit(1 << 20, 0));
    let reader = TableReader::open(&FsStorage, &path, 1, cache.clone()).unwrap();
    assert!(!reader.is_pinned());
    let index_at = reader.index_offset();
    // Damage the index block in place: the table is mapped, so the reader sees the change.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, index_at + 3).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], index_at + 3).unwrap();
    // While the index is cached, reads are answered from it.
    let ukey = key::user_key(&items[0].0);
    assert!(reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).is_ok());
    // Evicted (as by other tables' blocks), the index is read from the file again, and checked.
    cache.clear();
    match reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned) {
        Err(crate::error::StorageError::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (path.clone(), index_at));
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// Point reads through `reader` find every one of `items` (puts at sequences 1, 2, ... as `random_entries`
/// and `records` make them).
fn assert_gets(reader: &TableReader, items: &[(Vec<u8>, Vec<u8>)]) {
    for (i, (k, v)) in items.iter().enumerate() {
        let ukey = key::user_key(k);
        let found = reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned).unwrap();
        assert_eq!(found, Lookup::Found(v.clone(), i as u64 + 1), "key {i}");
    }
}

/// A reader's cursor over the whole table reads `items`, in order, and nothing else.
fn assert_scans(reader: &Arc<TableReader>, items: &[(Vec<u8>, Vec<u8>)]) {
    let mut scan = TableIter::new(reader.clone(), false);
    scan.seek(None).unwrap();
    let mut scanned = 0;
    while let Some(k) = scan.key() {
        assert_eq!((k, scan.value()), (&items[scanned].0[..], &items[scanned].1[..]));
        scanned += 1;
        scan.advance().unwrap();
    }
    assert_eq!(scanned, items.len());
}

/// A table of `items` in uncompressed blocks of 256 bytes (`build_on`) on the real file system at `path`,
/// opened as table 1 through a cache of `capacity` bytes that may pin its index and filter.
fn mapped_table(path: &Path, items: &[(Vec<u8>, Vec<u8>)], capacity: usize) -> (Arc<BlockCache>, Arc<TableReader>) {
    use crate::io::FsStorage;
    build_on(&FsStorage, path, items);
    let cache = Arc::new(BlockCache::with_pin_limit(capacity, capacity));
    let reader = Arc::new(TableReader::open(&FsStorage, path, 1, cache.clone()).unwrap());
    assert!(reader.is_pinned());
    (cache, reader)
}

/// A block of one entry stored uncompressed (here a 600-byte value of noise, past the 256-byte block size)
/// is cached by a point read while its cache shard has room for it; once the shard has none, point reads
/// take it from the table's map instead: the first read asks the cache and misses, later reads ask neither
/// the cache nor a slot, and none of them caches the block or evicts another. A scan still decodes it.
/// Damaged after its first read, the block is a corruption error naming the file and the block's offset on
/// every read.
#[test]
fn point_reads_take_blocks_of_one_large_value_from_the_map_when_the_cache_is_full() {
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000001.sst");
    let items = random_entries(40, 600, 11);
    // Whether every item's value is read from the table's map (not from a decoded block).
    let all_mapped = |reader: &TableReader| {
        items.iter().all(|(k, _)| {
            let ukey = key::user_key(k);
            matches!(reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)), Ok(Lookup::Found(BlockValue::Mapped(_), _)))
        })
    };

    // With room, the blocks are cached and then read through their slots.
    let (cache, reader) = mapped_table(&dir.path().join("000002.sst"), &items, 1 << 20);
    assert_gets(&reader, &items);
    let (hits, misses) = (cache.hits(), cache.misses());
    assert_gets(&reader, &items);
    assert_eq!((cache.hits() - hits, cache.misses() - misses), (40, 0));
    assert!(!all_mapped(&reader));
    assert!(cache.usage() > cache.index_filter_usage() + 40 * 600);

    // Without room (shards of some 300 bytes), in place.
    let (cache, reader) = mapped_table(&path, &items, 8 << 10);
    assert_eq!(reader.block_count(), 40, "a block a value");
    let at = |i: usize| reader.index().unwrap().block_offset(i).unwrap();
    assert!(!cache.has_room_unless_busy(1, at(0), 600));
    let get = |i: usize| {
        let ukey = key::user_key(&items[i].0);
        reader.get(ukey, u64::MAX >> 8, key::key_hash(ukey)).map(Lookup::owned)
    };
    let counts = || (cache.hits(), cache.misses());
    let before = counts();
    assert_gets(&reader, &items);
    assert_eq!((counts().0 - before.0, counts().1 - before.1), (0, 40), "each block missed once");
    assert_gets(&reader, &items);
    assert_eq!((counts().0 - before.0, counts().1 - before.1), (0, 40), "then not asked for");
    assert_eq!(cache.usage(), cache.index_filter_usage(), "no block cached");
    assert!(all_mapped(&reader), "read in place, not decoded");
    let missing = internal_key(b"key000010x", 0);
    assert_eq!(reader.get(key::user_key(&missing), u64::MAX >> 8, 0).map(Lookup::owned).unwrap(), Lookup::Absent);

    assert_scans(&reader, &items);

    let at = at(7);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at + 100).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at + 100).unwrap();
    cache.clear();
    for _ in 0..2 {
        match get(7) {
            Err(crate::error::StorageError::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (path.clone(), at))
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }
    assert_eq!(get(8).unwrap(), Lookup::Found(items[8].1.clone(), 9), "the other blocks read on");
}

/// Reads cache a block of one large value only where its shard has room for it without evicting: once point
/// reads have filled the shards, a scan of the whole table changes nothing in the cache, and the blocks the
/// point reads cached stay in their slots.
#[test]
fn blocks_of_one_large_value_evict_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let items = random_entries(200, 600, 5);
    // Shards of some 4 KiB: a few of the 200 blocks each.
    let (cache, reader) = mapped_table(&dir.path().join("000001.sst"), &items, 64 << 10);
    let slotted = || {
        let mut ids: Vec<usize> = reader.slot_blocks().iter().map(|(b, _)| b.identity()).collect();
        ids.sort_unstable();
        ids
    };
    assert_gets(&reader, &items);
    let (cached, usage) = (slotted(), cache.usage());
    assert!(cached.len() > 20 && cached.len() < 150, "{} blocks cached", cached.len());

    assert_scans(&reader, &items);
    assert_eq!(slotted(), cached, "the blocks point reads cached are still cached");
    assert_eq!(cache.usage(), usage);
}

fn build_on(fs: &dyn Storage, path: &Path, items: &[(Vec<u8>, Vec<u8>)]) {
    let mut b = TableBuilder::create(fs, path, 256, Compression::None, 10).unwrap();
    for (k, v) in items {
        b.add(k, v).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn a_large_table_is_written_back_as_it_is_built() {
    let (fs, path) = setup();
    // About 4 MiB of values that do not compress.
    let items = random_entries(4096, 1024, 0x2545_f491_4f6c_dd1d);
    let summary = build(&fs, path, &items, Compression::Zstd { level: 1 });
    assert!(summary.size > 4 << 20, "{} bytes", summary.size);
    // About one hint per MiB written (each after the write buffer that crosses the MiB), not one sync for the
    // whole table.
    let hints = fs.writebacks(path);
    assert!((3..=summary.size >> 20).contains(&hints), "{hints} hints for {} bytes", summary.size);
    let small = Path::new("/t/000002.sst");
    build(&fs, small, &entries(100), Compression::None);
    assert_eq!(fs.writebacks(small), 0);
}

/// Records alike but for a few fields, as a collection's documents are: `n` of some 230 bytes.
fn records(n: u32) -> Entries {
    let statuses = ["PENDING", "RUNNING", "COMPLETED"];
    (0..n)
        .map(|i| {
            let key = internal_key(format!("r/jobs/job-{i:08}").as_bytes(), make_trailer(u64::from(i) + 1, ValueKind::Put));
            let value = format!(
                r#"{{"id":"job-{i:08}","name":"train-model-{}","owner":"user{}","status":"{}","priority":{},"image":"registry.local/ml/pytorch:2.4-cuda12","command":["python","train.py","--epochs","90"]}}"#,
                i % 97,
                i % 50,
                statuses[i as usize % 3],
                (i * 7919) % 1000
            );
            (key, value.into_bytes())
        })
        .collect()
}

fn build_in_blocks_of(
    fs: &MemStorage,
    path: &Path,
    items: &[(Vec<u8>, Vec<u8>)],
    block: usize,
    compression: Compression,
) {
    let mut b = TableBuilder::create(fs, path, block, compression, 10).unwrap();
    for (k, v) in items {
        b.add(k, v).unwrap();
    }
    b.finish().unwrap();
}

/// The format version in a table's footer (16 bytes before its end).
fn format_version(fs: &MemStorage, path: &Path) -> u32 {
    let bytes = fs.read(path).unwrap();
    u32::from_le_bytes(bytes[bytes.len() - 16..bytes.len() - 12].try_into().unwrap())
}

/// Every entry of `items` read back from the table at `path`, by point reads and by a forward walk.
fn assert_reads_back(fs: &MemStorage, path: &Path, items: &[(Vec<u8>, Vec<u8>)]) {
    let reader = Arc::new(TableReader::open(fs, path, 1, Arc::new(BlockCache::new(1 << 20))).unwrap());
    assert_eq!(reader.verify().unwrap(), items.len() as u64);
    assert_gets(&reader, items);
    assert_scans(&reader, items);
}

#[test]
fn a_dictionary_trained_on_the_first_blocks_compresses_alike_records_smaller() {
    let items = records(3000);
    let dictionary = Compression::ZstdDictionary { level: 1, dictionary_size: 4096 };
    let (fs, path) = setup();
    build_in_blocks_of(&fs, path, &items, 2048, Compression::Zstd { level: 1 });
    let plain = fs.read(path).unwrap().len();
    assert_eq!(format_version(&fs, path), 1);
    let (fs, path) = setup();
    build_in_blocks_of(&fs, path, &items, 2048, dictionary);
    let with = fs.read(path).unwrap().len();
    assert_eq!(format_version(&fs, path), 2, "the table has a dictionary");
    assert!(with * 10 < plain * 7, "{with} bytes with a dictionary, {plain} without");
    assert_reads_back(&fs, path, &items);

    // Too few blocks to train on: no dictionary, and a version 1 table.
    let (fs, path) = setup();
    build_in_blocks_of(&fs, path, &items[..40], 2048, dictionary);
    assert_eq!(format_version(&fs, path), 1);
    assert_reads_back(&fs, path, &items[..40]);
}

#[test]
fn values_with_nothing_in_common_get_no_dictionary() {
    let items = random_entries(2000, 200, 0x9e37_79b9_7f4a_7c15);
    let (fs, path) = setup();
    build_in_blocks_of(&fs, path, &items, 2048, Compression::ZstdDictionary { level: 1, dictionary_size: 4096 });
    assert_eq!(format_version(&fs, path), 1);
    assert_reads_back(&fs, path, &items);
}

#[test]
fn every_flipped_byte_of_a_dictionary_table_is_an_error_or_harmless() {
    let (fs, path) = setup();
    let items = records(160);
    build_in_blocks_of(&fs, path, &items, 512, Compression::ZstdDictionary { level: 1, dictionary_size: 1024 });
    assert_eq!(format_version(&fs, path), 2, "the table has a dictionary");
    assert_every_flipped_byte_is_an_error_or_harmless(&fs, path, &items);
}

/// A table whose footer no longer names its dictionary (rewritten as version 1, checksum and all) fails to
/// open with a corruption error at its index block, which was compressed with the dictionary.
#[test]
fn blocks_compressed_with_a_dictionary_the_table_lacks_are_corrupt() {
    let (fs, path) = setup();
    build_in_blocks_of(
        &fs,
        path,
        &records(2000),
        2048,
        Compression::ZstdDictionary { level: 1, dictionary_size: 4096 },
    );
    let bytes = fs.read(path).unwrap();
    let footer = super::footer::Footer::decode_end(&bytes).unwrap();
    let at = bytes.len() - footer.len();
    assert!(footer.dictionary.is_some());
    let mut rewritten = bytes[..at].to_vec();
    rewritten.extend_from_slice(&super::footer::Footer { dictionary: None, ..footer }.encode());
    fs.create(path).unwrap().append(&rewritten).unwrap();
    let err = TableReader::open(&fs, path, 1, Arc::new(BlockCache::new(1 << 20))).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("000001.sst") && shown.contains(&footer.index.offset.to_string()), "{shown}");
    assert!(shown.contains("dictionary the table does not have"), "{shown}");
}
