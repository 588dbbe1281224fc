//! The on-disk format fixture: proof that `docs/format/` is complete.
//!
//! `tests/fixtures/v1/` holds a small database written by Cairn through its public API (see [`script`]), and
//! `tests/fixtures/v2/` one whose table has a zstd dictionary, which only version 2 of the table format holds
//! (see [`dictionary_script`]).
//! [`fixture_decodes_from_the_spec_alone`] decodes every file in it with a reader written in this file from
//! the specification alone: no engine internals are used, every magic number, size, offset and tag below is a
//! literal copied from the spec, and the checksum is computed bit by bit from the CRC parameters the spec
//! names. The reader rebuilds the logical content (the live key/value pairs) and checks it against the
//! script. [`fixture_opens_through_the_api`] checks the same content through `cairn_engine::Db`.
//!
//! If the engine changes a format, these tests fail on the committed files: bump the format version, keep a
//! reader for the old one, and add a `tests/fixtures/vN/`.
//!
//! To rewrite a fixture (only when its script below changes; a rewritten `v1` is no longer what earlier builds
//! wrote):
//!
//! ```text
//! cargo test -p cairn-tests --test format_fixture -- --ignored regenerate_v2
//! ```

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cairn_engine::{Compression, Db, WriteBatch};

/// Where the fixture of `version` (`"v1"`, `"v2"`) lives.
fn fixture_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(version)
}

// ---------------------------------------------------------------------------------------------------------
// The script: what the fixture database holds.
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Step {
    /// Opens the fixture directory with this table compression (block size 256 bytes, so tables hold several
    /// data blocks).
    Open(Compression),
    /// Commits one batch.
    Write(Vec<Op>),
    Flush,
    Compact,
    TakeSnapshot,
    ReleaseSnapshot,
    Close,
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:02}").into_bytes()
}

/// A value zstd shrinks well.
fn compressible(i: u32) -> Vec<u8> {
    format!("value-{i:02}-").repeat(4).into_bytes()
}

/// 100 bytes zstd cannot shrink by an eighth (splitmix64, so the same on every run).
fn incompressible(i: u32) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(i) + 1);
    let mut out = Vec::with_capacity(104);
    while out.len() < 100 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(100);
    out
}

fn put(i: u32, value: Vec<u8>) -> Op {
    Op::Put(key(i), value)
}

fn del(i: u32) -> Op {
    Op::Delete(key(i))
}

/// Two sessions. The first writes zstd-compressed level-0 table and leaves a WAL behind; the second replays
/// it, compacts everything into level 1 while a snapshot keeps an old version alive, flushes a table whose
/// blocks do not compress, and leaves a WAL of four records. The manifest of the second session holds a
/// snapshot edit, two flush edits and a compaction edit: every tag.
fn script() -> Vec<Step> {
    let zstd = Compression::Zstd { level: 3 };
    vec![
        Step::Open(zstd),
        Step::Write((0..12).map(|i| put(i, compressible(i))).collect()),
        Step::Write(vec![put(12, compressible(12))]),
        Step::Write(vec![put(13, compressible(13))]),
        Step::Write(vec![del(5)]),
        Step::Flush,
        Step::Write(vec![put(1, b"second-01".to_vec())]),
        Step::Write(vec![del(3)]),
        Step::Close,
        Step::Open(zstd),
        Step::TakeSnapshot,
        Step::Write(vec![put(2, b"second-02".to_vec()), del(4), put(14, compressible(14))]),
        Step::Compact,
        Step::ReleaseSnapshot,
        Step::Write((20..24).map(|i| put(i, incompressible(i))).collect()),
        Step::Write(vec![put(3, b"third-03".to_vec())]),
        Step::Flush,
        Step::Write(vec![put(24, compressible(24))]),
        Step::Write(vec![del(1)]),
        Step::Write(vec![put(25, b"x".to_vec()), del(20)]),
        Step::Close,
    ]
}

/// A JSON-like record, alike its neighbours but for a few fields: what a table's dictionary is for.
fn record(i: u32) -> Vec<u8> {
    format!(
        r#"{{"id":"job-{i:04}","owner":"user{}","status":"{}","image":"registry.local/ml/pytorch"}}"#,
        i % 7,
        ["PENDING", "RUNNING"][i as usize % 2]
    )
    .into_bytes()
}

/// One session that flushes a table of records compressed against a dictionary: version 2 of the table
/// format.
fn dictionary_script() -> Vec<Step> {
    vec![
        Step::Open(Compression::ZstdDictionary { level: 3, dictionary_size: 1024 }),
        Step::Write((0..120).map(|i| put(i, record(i))).collect()),
        Step::Write(vec![del(7)]),
        Step::Flush,
        Step::Close,
    ]
}

/// What the script leaves behind.
struct Model {
    /// The live pairs.
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every key the script ever wrote or deleted.
    touched: BTreeSet<Vec<u8>>,
    /// Number of operations, which is also the last sequence number.
    ops: u64,
}

fn model(script: Vec<Step>) -> Model {
    let mut m = Model { live: BTreeMap::new(), touched: BTreeSet::new(), ops: 0 };
    for step in script {
        if let Step::Write(batch) = step {
            for op in batch {
                m.ops += 1;
                match op {
                    Op::Put(k, v) => {
                        m.touched.insert(k.clone());
                        m.live.insert(k, v);
                    }
                    Op::Delete(k) => {
                        m.touched.insert(k.clone());
                        m.live.remove(&k);
                    }
                }
            }
        }
    }
    m
}

/// Rewrites `tests/fixtures/v1/`. Run with
/// `cargo test -p cairn-tests --test format_fixture -- --ignored regenerate_v1`, then commit the files.
#[test]
#[ignore = "rewrites the committed fixture; run explicitly"]
fn regenerate_v1() {
    write_fixture("v1", script());
}

/// Rewrites `tests/fixtures/v2/`, as [`regenerate_v1`] does the first.
#[test]
#[ignore = "rewrites the committed fixture; run explicitly"]
fn regenerate_v2() {
    write_fixture("v2", dictionary_script());
}

fn write_fixture(version: &str, script: Vec<Step>) {
    let dir = fixture_dir(version);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove old fixture");
    }
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let mut db: Option<Db> = None;
    let mut snapshot = None;
    for step in script {
        match step {
            Step::Open(compression) => {
                let opened = Db::builder().compression(compression).block_size(256).open(&dir).expect("open");
                db = Some(opened);
            }
            Step::Write(ops) => {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op {
                        Op::Put(k, v) => batch.put(k, v),
                        Op::Delete(k) => batch.delete(k),
                    };
                }
                db.as_ref().expect("open db").write(batch).expect("write");
            }
            Step::Flush => db.as_ref().expect("open db").flush().expect("flush"),
            Step::Compact => db.as_ref().expect("open db").compact().expect("compact"),
            Step::TakeSnapshot => snapshot = Some(db.as_ref().expect("open db").snapshot()),
            Step::ReleaseSnapshot => snapshot = None,
            Step::Close => {
                drop(snapshot.take());
                db.take().expect("open db").close().expect("close");
            }
        }
    }
    // The lock file is empty and means nothing once the database is closed.
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

// ---------------------------------------------------------------------------------------------------------
// An independent reader, written from docs/format/ alone.
// ---------------------------------------------------------------------------------------------------------

/// CRC-32/ISO-HDLC (the zlib / Ethernet CRC): reflected polynomial 0xEDB88320, initial value 0xFFFFFFFF,
/// final XOR 0xFFFFFFFF. README.md, "Conventions".
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A bounds-checked little-endian cursor; every shortfall is a test failure naming what was being read.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize, what: &str) -> &'a [u8] {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else { panic!("{what}: need {n} bytes at {} of {}", self.pos, self.buf.len()) };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        out
    }

    fn u8(&mut self, what: &str) -> u8 {
        self.take(1, what)[0]
    }

    fn u32(&mut self, what: &str) -> u32 {
        u32::from_le_bytes(self.take(4, what).try_into().expect("4 bytes"))
    }

    fn u64(&mut self, what: &str) -> u64 {
        u64::from_le_bytes(self.take(8, what).try_into().expect("8 bytes"))
    }

    /// Unsigned LEB128, at most 5 bytes, value fits a u32.
    fn varint32(&mut self, what: &str) -> u32 {
        let mut v = 0u64;
        for i in 0..5 {
            let b = self.u8(what);
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).unwrap_or_else(|_| panic!("{what}: varint overflows u32"));
            }
        }
        panic!("{what}: varint longer than 5 bytes")
    }

    /// u32 length, then that many bytes.
    fn len_prefixed(&mut self, what: &str) -> &'a [u8] {
        let n = self.u32(what) as usize;
        self.take(n, what)
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

// --- internal keys (README.md) ---

/// `(user key, sequence, kind)`; kind 0 = Delete, 1 = Put.
fn split_ikey(ikey: &[u8]) -> (&[u8], u64, u8) {
    assert!(ikey.len() >= 8, "internal key shorter than its 8-byte trailer");
    let (user, trailer) = ikey.split_at(ikey.len() - 8);
    let trailer = u64::from_le_bytes(trailer.try_into().expect("8 bytes"));
    let kind = (trailer & 0xff) as u8;
    assert!(kind <= 1, "unknown kind {kind}");
    (user, trailer >> 8, kind)
}

/// User key ascending (bytewise), then trailer descending.
fn ikey_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (ua, ta) = a.split_at(a.len() - 8);
    let (ub, tb) = b.split_at(b.len() - 8);
    let ta = u64::from_le_bytes(ta.try_into().expect("8 bytes"));
    let tb = u64::from_le_bytes(tb.try_into().expect("8 bytes"));
    ua.cmp(ub).then(tb.cmp(&ta))
}

// --- the log container (wal.md) ---

/// The payloads of a WAL or manifest file, which must be whole (the fixture has no torn tail).
fn read_log(bytes: &[u8], magic: &[u8; 8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 16, "file shorter than the 16-byte header");
    assert_eq!(&bytes[0..8], magic, "magic");
    assert_eq!(le_u32(bytes, 8), 1, "format version");
    assert_eq!(le_u32(bytes, 12), 0, "reserved");
    let mut out = Vec::new();
    let mut offset = 16;
    while offset < bytes.len() {
        assert!(bytes.len() - offset >= 8, "record header cut short at {offset}");
        let crc = le_u32(bytes, offset);
        let len = le_u32(bytes, offset + 4) as usize;
        let end = offset + 8 + len;
        assert!(end <= bytes.len(), "record at {offset} runs past the end");
        assert_eq!(crc32(&bytes[offset + 4..end]), crc, "record checksum at {offset}");
        out.push(bytes[offset + 8..end].to_vec());
        offset = end;
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Put(Vec<u8>),
    Delete,
}

/// A WAL batch: first sequence, then `(kind, key, value)` entries.
fn decode_batch(payload: &[u8]) -> (u64, Vec<(Vec<u8>, Entry)>) {
    let mut c = Cur::new(payload);
    let first_seq = c.u64("batch sequence");
    let count = c.u32("batch count");
    assert!(count >= 1, "empty batch");
    let mut entries = Vec::new();
    for _ in 0..count {
        let kind = c.u8("entry kind");
        let key = c.len_prefixed("entry key").to_vec();
        let entry = match kind {
            1 => Entry::Put(c.len_prefixed("entry value").to_vec()),
            0 => Entry::Delete,
            k => panic!("unknown entry kind {k}"),
        };
        entries.push((key, entry));
    }
    assert!(c.done(), "bytes after the last entry");
    (first_seq, entries)
}

// --- the manifest (manifest.md) ---

#[derive(Debug, Clone, PartialEq, Eq)]
struct TableMeta {
    number: u64,
    size: u64,
    entries: u64,
    min_seq: u64,
    max_seq: u64,
    smallest: Vec<u8>,
    largest: Vec<u8>,
}

#[derive(Debug, Default)]
struct Edit {
    log_number: Option<u64>,
    next_file: Option<u64>,
    last_sequence: Option<u64>,
    added: Vec<(u8, TableMeta)>,
    removed: Vec<(u8, u64)>,
    tags: Vec<u8>,
}

fn decode_edit(payload: &[u8]) -> Edit {
    let mut c = Cur::new(payload);
    let mut e = Edit::default();
    while !c.done() {
        let tag = c.u8("tag");
        e.tags.push(tag);
        match tag {
            1 => e.log_number = Some(c.u64("log number")),
            2 => e.next_file = Some(c.u64("next file")),
            3 => e.last_sequence = Some(c.u64("last sequence")),
            4 | 6 => {
                let level = c.u8("level");
                assert!(level < 7, "level {level}");
                let meta = TableMeta {
                    number: c.u64("number"),
                    size: c.u64("size"),
                    entries: c.u64("entries"),
                    min_seq: c.u64("min seq"),
                    max_seq: c.u64("max seq"),
                    smallest: c.len_prefixed("smallest").to_vec(),
                    largest: c.len_prefixed("largest").to_vec(),
                };
                if tag == 6 {
                    // Tag 6 is tag 4 plus the table's tombstone count (the v1 fixture predates it).
                    let deletions = c.u64("deletions");
                    assert!(deletions <= meta.entries, "more deletions than entries");
                }
                e.added.push((level, meta));
            }
            5 => {
                let level = c.u8("level");
                assert!(level < 7, "level {level}");
                e.removed.push((level, c.u64("number")));
            }
            t => panic!("unknown tag {t}"),
        }
    }
    e
}

#[derive(Debug, Default)]
struct ManifestState {
    log_number: u64,
    next_file: u64,
    last_sequence: u64,
    /// level -> table number -> meta
    levels: BTreeMap<u8, BTreeMap<u64, TableMeta>>,
    tags_seen: BTreeSet<u8>,
    edits: usize,
}

fn rebuild(payloads: &[Vec<u8>]) -> ManifestState {
    assert!(!payloads.is_empty(), "a manifest holds at least one edit");
    let mut s = ManifestState::default();
    for p in payloads {
        let e = decode_edit(p);
        s.edits += 1;
        s.tags_seen.extend(e.tags.iter().copied());
        s.log_number = e.log_number.unwrap_or(s.log_number);
        s.next_file = e.next_file.unwrap_or(s.next_file);
        s.last_sequence = e.last_sequence.unwrap_or(s.last_sequence);
        for (level, number) in &e.removed {
            let gone = s.levels.entry(*level).or_default().remove(number);
            assert!(gone.is_some(), "edit removes table {number} not at level {level}");
        }
        for (level, meta) in e.added {
            let old = s.levels.entry(level).or_default().insert(meta.number, meta);
            assert!(old.is_none(), "table added twice");
        }
    }
    s
}

// --- tables (table.md) ---

struct Table {
    /// `(internal key, value)` in file order.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    data_blocks: usize,
    zstd_blocks: usize,
    stored_blocks: usize,
    /// Whether the table has a zstd dictionary (version 2).
    dictionary: bool,
}

/// Where a table's blocks end and what they may need: the footer's start, and the dictionary's bytes.
struct Frame<'a> {
    footer_at: usize,
    dictionary: Option<&'a [u8]>,
}

/// Reads the block at `offset` with payload `size`: checks the 5-byte trailer and undoes compression.
fn read_block(file: &[u8], frame: &Frame<'_>, offset: u64, size: u64, stats: &mut (usize, usize)) -> Vec<u8> {
    let (offset, size) = (offset as usize, size as usize);
    assert!(offset + size + 5 <= frame.footer_at, "block at {offset} runs into the footer");
    let payload = &file[offset..offset + size];
    let kind = file[offset + size];
    let crc = le_u32(file, offset + size + 1);
    assert_eq!(crc32(&file[offset..offset + size + 1]), crc, "block checksum at {offset}");
    match kind {
        0 => {
            stats.1 += 1;
            payload.to_vec()
        }
        1 => {
            stats.0 += 1;
            let raw_len = le_u32(payload, 0) as usize;
            // Kept compressed only when that saves at least an eighth.
            assert!(size <= raw_len - raw_len / 8, "compressed block at {offset} saves too little");
            let raw = zstd::bulk::decompress(&payload[4..], raw_len).expect("zstd frame");
            assert_eq!(raw.len(), raw_len, "raw_len");
            raw
        }
        2 => {
            stats.0 += 1;
            let dictionary = frame.dictionary.expect("a block compressed with a dictionary needs the table's");
            let raw_len = le_u32(payload, 0) as usize;
            assert!(size <= raw_len - raw_len / 8, "compressed block at {offset} saves too little");
            let mut d = zstd::bulk::Decompressor::with_dictionary(dictionary).expect("dictionary");
            let raw = d.decompress(&payload[4..], raw_len).expect("zstd frame with the dictionary");
            assert_eq!(raw.len(), raw_len, "raw_len");
            raw
        }
        k => panic!("unknown block compression {k}"),
    }
}

/// Decodes a data or index block: prefix-compressed entries, then entry_count u32.
fn decode_block(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    assert!(block.len() >= 4, "block shorter than its count");
    let count = le_u32(block, block.len() - 4) as usize;
    assert!(count >= 1, "empty block");
    let mut c = Cur::new(&block[..block.len() - 4]);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count);
    for _ in 0..count {
        let shared = c.varint32("shared") as usize;
        let unshared = c.varint32("unshared") as usize;
        let value_len = c.varint32("value_len") as usize;
        let prev = out.last().map(|e| e.0.as_slice()).unwrap_or_default();
        assert!(shared <= prev.len(), "shared prefix longer than the previous key");
        if out.is_empty() {
            assert_eq!(shared, 0, "first entry shares nothing");
        }
        let mut k = prev[..shared].to_vec();
        k.extend_from_slice(c.take(unshared, "key suffix"));
        let v = c.take(value_len, "value").to_vec();
        out.push((k, v));
    }
    assert!(c.done(), "bytes after the last entry");
    out
}

/// The bloom filter of `filter` answers "maybe" for `user_key`.
fn bloom_may_contain(filter: &[u8], user_key: &[u8]) -> bool {
    let (&k, bits) = filter.split_last().expect("filter has a probe count");
    let h = xxhash_rust::xxh3::xxh3_64(user_key); // seed 0
    let h1 = h & 0xffff_ffff;
    let h2 = h >> 32;
    let nbits = bits.len() as u64 * 8;
    (0..u64::from(k)).all(|i| {
        let bit = (h1 + i * h2) % nbits;
        bits[(bit / 8) as usize] >> (bit % 8) & 1 == 1
    })
}

fn read_table(file: &[u8], bits_per_key: u32) -> Table {
    assert!(file.len() >= 16, "file shorter than the footer");
    // The version sits 16 bytes before the end: 56-byte footers at version 1, 72 at version 2.
    let version = le_u32(file, file.len() - 16);
    let footer_len = match version {
        1 => 56,
        2 => 72,
        v => panic!("table format version {v}"),
    };
    assert!(file.len() >= footer_len, "file shorter than the footer");
    let footer_at = file.len() - footer_len;
    let full = &file[footer_at..];
    assert_eq!(&full[footer_len - 8..], b"CAIRNSST", "table magic");
    assert_eq!(crc32(&full[..footer_len - 12]), le_u32(full, footer_len - 12), "footer checksum");
    // Version 2 puts the dictionary's handle before the fields of version 1.
    let (dictionary_handle, footer) =
        if version == 2 { (Some((le_u64(full, 0), le_u64(full, 8))), &full[16..]) } else { (None, full) };
    let (index_off, index_size) = (le_u64(footer, 0), le_u64(footer, 8));
    let (filter_off, filter_size) = (le_u64(footer, 16), le_u64(footer, 24));
    let entry_count = le_u64(footer, 32);

    let mut stats = (0, 0);
    let mut frame = Frame { footer_at, dictionary: None };
    // Blocks are laid out back to back: the dictionary (version 2), data blocks, filter, index, footer.
    let mut next = 0u64;
    let mut dictionary = None;
    if let Some((off, size)) = dictionary_handle {
        assert_eq!(off, 0, "the dictionary starts the file");
        dictionary = Some(read_block(file, &frame, off, size, &mut stats));
        assert_eq!(file[size as usize], 0, "the dictionary block is never compressed");
        assert_eq!(&dictionary.as_deref().expect("read")[..4], &[0x37, 0xa4, 0x30, 0xec], "zstd dictionary magic");
        next = size + 5;
    }
    frame.dictionary = dictionary.as_deref();
    let index = decode_block(&read_block(file, &frame, index_off, index_size, &mut stats));
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let (mut zstd_blocks, mut stored_blocks) = (0, 0);
    for (last_key, handle) in &index {
        assert_eq!(handle.len(), 16, "index value is a 16-byte handle");
        let (off, size) = (le_u64(handle, 0), le_u64(handle, 8));
        assert_eq!(off, next, "data blocks are contiguous from offset 0 or the dictionary's end");
        next = off + size + 5;
        let mut s = (0, 0);
        let block = decode_block(&read_block(file, &frame, off, size, &mut s));
        zstd_blocks += s.0;
        stored_blocks += s.1;
        assert_eq!(&block.last().expect("non-empty").0, last_key, "index key = last key of its block");
        entries.extend(block);
    }
    assert_eq!(filter_off, next, "filter follows the data blocks");
    let filter = read_block(file, &frame, filter_off, filter_size, &mut stats);
    assert_eq!(file[(filter_off + filter_size) as usize], 0, "filter block is never compressed");
    assert_eq!(index_off, filter_off + filter_size + 5, "index follows the filter");
    assert_eq!(index_off + index_size + 5, footer_at as u64, "footer follows the index and ends the file");

    assert_eq!(entries.len() as u64, entry_count, "footer entry count");
    for w in entries.windows(2) {
        assert_eq!(ikey_cmp(&w[0].0, &w[1].0), std::cmp::Ordering::Less, "entries strictly ascending");
    }
    for (_, v) in entries.iter().filter(|(k, _)| split_ikey(k).2 == 0) {
        assert!(v.is_empty(), "a tombstone has an empty value");
    }

    // Bloom filter over the distinct user keys.
    let distinct: BTreeSet<&[u8]> = entries.iter().map(|(k, _)| split_ikey(k).0).collect();
    let k = ((f64::from(bits_per_key) * 0.69).floor() as u32).clamp(1, 30);
    let nbytes = (distinct.len() * bits_per_key as usize).div_ceil(8).max(8);
    assert_eq!(filter.len(), nbytes + 1, "filter size");
    assert_eq!(u32::from(*filter.last().expect("probe count")), k, "probe count");
    for user_key in &distinct {
        assert!(bloom_may_contain(&filter, user_key), "bloom filter misses a present key");
    }
    Table { entries, data_blocks: index.len(), zstd_blocks, stored_blocks, dictionary: dictionary.is_some() }
}

/// Parses `NNNNNN.ext` (at least six digits).
fn numbered(name: &str, ext: &str) -> Option<u64> {
    let n = name.strip_suffix(ext)?;
    (n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok()).flatten()
}

// ---------------------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------------------

#[test]
fn crc_is_the_zlib_crc32() {
    // The standard check value of CRC-32/ISO-HDLC.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b"123456789"), crc32fast::hash(b"123456789"));
}

/// What the independent reader found in a data directory.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    /// The live pairs: for each user key, its newest version across tables and WALs, if a put.
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Highest sequence number seen.
    max_seq: u64,
    /// The manifest's rebuilt state.
    last_sequence: u64,
    /// Coverage of format features, so the fixture provably exercises them.
    tags_seen: BTreeSet<u8>,
    edits: usize,
    tables: usize,
    tables_below_level0: usize,
    zstd_blocks: usize,
    stored_data_blocks: usize,
    multi_block_tables: usize,
    dictionary_tables: usize,
    table_tombstones: usize,
    wal_files: usize,
    wal_records: usize,
    wal_tombstones: usize,
    keys_with_several_versions: usize,
}

/// Decodes a whole data directory, given as file name -> contents, checking every structural rule of the
/// spec on the way. Panics on anything the spec does not allow.
fn decode_dir(files: &BTreeMap<String, Vec<u8>>) -> Decoded {
    let read = |name: &str| files.get(name).unwrap_or_else(|| panic!("{name} is missing"));

    // CURRENT names the manifest.
    let current = std::str::from_utf8(read("CURRENT")).expect("CURRENT is ASCII");
    let manifest_name = current.strip_suffix('\n').expect("CURRENT ends with a newline");
    let manifest_number = manifest_name
        .strip_prefix("MANIFEST-")
        .filter(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("CURRENT holds MANIFEST-NNNNNN");
    let manifests: Vec<&String> = files.keys().filter(|n| n.starts_with("MANIFEST-")).collect();
    assert_eq!(manifests, vec![manifest_name], "one manifest, the one CURRENT names");

    let state = rebuild(&read_log(read(manifest_name), b"CAIRNMAN"));

    // Every file in the directory is accounted for.
    let live_tables: BTreeMap<u64, (u8, TableMeta)> =
        state.levels.iter().flat_map(|(l, ts)| ts.values().map(move |m| (m.number, (*l, m.clone())))).collect();
    let mut tables = BTreeSet::new();
    let mut wals = BTreeSet::new();
    for name in files.keys() {
        if let Some(n) = numbered(name, ".sst") {
            tables.insert(n);
        } else if let Some(n) = numbered(name, ".wal") {
            wals.insert(n);
        } else {
            assert!(name == "CURRENT" || name == manifest_name || name == "LOCK", "unexpected file {name}");
        }
    }
    assert_eq!(tables, live_tables.keys().copied().collect(), "the .sst files are exactly the live tables");
    let max_number = tables.iter().chain(&wals).copied().chain([manifest_number]).max().unwrap_or(0);
    assert!(state.next_file > 0 && state.next_file <= max_number + 1, "next file number");
    assert!(wals.iter().all(|n| *n >= state.log_number), "no obsolete WAL is left");

    // Every version of every key: user key -> sequence -> entry.
    let mut versions: BTreeMap<Vec<u8>, BTreeMap<u64, Entry>> = BTreeMap::new();
    let mut record = |user_key: &[u8], seq: u64, entry: Entry| {
        let slot = versions.entry(user_key.to_vec()).or_default();
        if let Some(old) = slot.insert(seq, entry.clone()) {
            assert_eq!(old, entry, "two different entries for one sequence");
        }
    };

    let (mut zstd_blocks, mut stored_data_blocks, mut table_tombstones, mut multi_block_tables) = (0, 0, 0, 0);
    let mut dictionary_tables = 0;
    for (number, (level, meta)) in &live_tables {
        let bytes = read(&format!("{number:06}.sst"));
        let t = read_table(bytes, 10);
        zstd_blocks += t.zstd_blocks;
        stored_data_blocks += t.stored_blocks;
        multi_block_tables += usize::from(t.data_blocks > 1);
        dictionary_tables += usize::from(t.dictionary);
        assert_eq!(meta.size, bytes.len() as u64, "manifest size of table {number}");
        assert_eq!(meta.entries, t.entries.len() as u64, "manifest entries of table {number}");
        assert_eq!(meta.smallest, t.entries.first().expect("entries").0, "smallest of table {number}");
        assert_eq!(meta.largest, t.entries.last().expect("entries").0, "largest of table {number}");
        let seqs: Vec<u64> = t.entries.iter().map(|(k, _)| split_ikey(k).1).collect();
        assert_eq!(meta.min_seq, seqs.iter().copied().min().unwrap_or(0), "min_seq of table {number}");
        assert_eq!(meta.max_seq, seqs.iter().copied().max().unwrap_or(0), "max_seq of table {number}");
        assert!(*level < 7);
        for (ikey, value) in &t.entries {
            let (user_key, seq, kind) = split_ikey(ikey);
            let entry = if kind == 1 { Entry::Put(value.clone()) } else { Entry::Delete };
            table_tombstones += usize::from(kind == 0);
            record(user_key, seq, entry);
        }
    }
    // Levels 1 and deeper hold tables with disjoint user-key ranges.
    for (level, ts) in state.levels.iter().filter(|(l, _)| **l > 0) {
        let mut ranges: Vec<(&[u8], &[u8])> =
            ts.values().map(|m| (split_ikey(&m.smallest).0, split_ikey(&m.largest).0)).collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "level {level} tables overlap");
        }
    }

    // WALs numbered >= log_number, oldest first; sequences ascend across records and files.
    let mut last_seq = 0u64;
    let (mut wal_tombstones, mut wal_records) = (0, 0);
    for number in &wals {
        for payload in read_log(read(&format!("{number:06}.wal")), b"CAIRNWAL") {
            // A sync marker (wal.md, "Sync markers"): exactly 12 bytes with count 0; no entries. A clean
            // close ends the WAL with one.
            if payload.len() == 12 && le_u32(&payload, 8) == 0 {
                continue;
            }
            wal_records += 1;
            let (first, entries) = decode_batch(&payload);
            assert!(first > last_seq, "batch sequences ascend");
            last_seq = first + entries.len() as u64 - 1;
            for (i, (user_key, entry)) in entries.into_iter().enumerate() {
                wal_tombstones += usize::from(entry == Entry::Delete);
                record(&user_key, first + i as u64, entry);
            }
        }
    }

    // The newest version of each key decides.
    let live = versions
        .iter()
        .filter_map(|(k, vs)| match vs.values().next_back() {
            Some(Entry::Put(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let max_seq = versions.values().flat_map(|vs| vs.keys().copied()).max().unwrap_or(0);
    assert!(state.last_sequence <= max_seq, "the manifest's last sequence is a lower bound");
    Decoded {
        live,
        max_seq,
        last_sequence: state.last_sequence,
        tags_seen: state.tags_seen.clone(),
        edits: state.edits,
        tables: live_tables.len(),
        tables_below_level0: live_tables.values().filter(|(l, _)| *l > 0).count(),
        zstd_blocks,
        stored_data_blocks,
        multi_block_tables,
        dictionary_tables,
        table_tombstones,
        wal_files: wals.len(),
        wal_records,
        wal_tombstones,
        keys_with_several_versions: versions.values().filter(|vs| vs.len() > 1).count(),
    }
}

/// The committed fixture of `version`, file name -> contents.
fn fixture_files(version: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = fixture_dir(version);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run the ignored `regenerate` test", dir.display()))
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().into_string().expect("utf-8 name");
            let bytes = std::fs::read(e.path()).expect("read fixture file");
            (name, bytes)
        })
        .collect()
}

#[test]
fn fixture_decodes_from_the_spec_alone() {
    let d = decode_dir(&fixture_files("v1"));
    let m = model(script());
    assert_eq!(d.live, m.live, "logical content");
    assert_eq!(d.max_seq, m.ops, "one sequence number per operation, from 1");
    assert!(d.last_sequence > 0);

    // What the fixture exercises.
    assert_eq!(d.tags_seen, (1..=5).collect(), "every edit tag");
    assert!(d.edits >= 2, "several edits to replay");
    assert!(d.tables >= 2 && d.tables_below_level0 >= 1, "tables at level 0 and below");
    assert!(d.zstd_blocks > 0, "some block is zstd-compressed");
    assert!(d.stored_data_blocks > 0, "some data block is stored uncompressed");
    assert!(d.multi_block_tables > 0, "some table has several data blocks");
    assert!(d.table_tombstones > 0 && d.wal_tombstones > 0, "tombstones in tables and WAL");
    assert!(d.wal_files >= 1 && d.wal_records >= 2, "WAL records");
    assert!(d.keys_with_several_versions > 0, "some key has several versions");
    assert_eq!(d.dictionary_tables, 0, "version 1 tables only");
}

#[test]
fn dictionary_fixture_decodes_from_the_spec_alone() {
    let d = decode_dir(&fixture_files("v2"));
    let m = model(dictionary_script());
    assert_eq!(d.live, m.live, "logical content");
    assert_eq!(d.max_seq, m.ops, "one sequence number per operation, from 1");
    assert_eq!((d.tables, d.dictionary_tables), (1, 1), "one table, with a dictionary");
    assert!(d.zstd_blocks > 8 && d.multi_block_tables == 1, "many blocks compressed against it");
}

/// Every byte of every file is covered by a check the spec prescribes (a checksum, a magic number, the
/// CURRENT syntax): flipping any one bit makes the reader reject the directory.
#[test]
fn every_bit_flip_is_detected() {
    let fixtures = [("v1", fixture_files("v1")), ("v2", fixture_files("v2"))];
    let handle = std::thread::Builder::new()
        .name("format-fixture-flips".to_owned())
        .spawn(move || {
            // Keep the expected panics of this thread quiet; other threads report as usual.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if std::thread::current().name() != Some("format-fixture-flips") {
                    previous(info);
                }
            }));
            let mut undetected = Vec::new();
            for (version, files) in &fixtures {
                for (name, bytes) in files {
                    for i in 0..bytes.len() {
                        let mut damaged = files.clone();
                        damaged.get_mut(name).expect("file")[i] ^= 1 << (i % 8);
                        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_dir(&damaged)));
                        if decoded.is_ok() {
                            undetected.push(format!("{version}/{name}@{i}"));
                        }
                    }
                }
            }
            undetected
        })
        .expect("spawn");
    let undetected = handle.join().expect("flip thread");
    assert!(undetected.is_empty(), "flips not detected: {undetected:?}");
}

#[test]
fn fixture_opens_through_the_api() {
    for (version, script) in [("v1", script()), ("v2", dictionary_script())] {
        // Opening writes a new manifest and WAL: work on a copy.
        let src = fixture_dir(version);
        let tmp = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(&src).expect("fixture dir") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy");
        }
        let db = Db::open(tmp.path()).expect("open fixture copy");
        let m = model(script);
        let all: BTreeMap<Vec<u8>, Vec<u8>> = db.iter().expect("iter").map(|kv| kv.expect("entry")).collect();
        assert_eq!(all, m.live, "{version}");
        for k in &m.touched {
            assert_eq!(db.get(k).expect("get"), m.live.get(k).cloned(), "{version}: {}", String::from_utf8_lossy(k));
        }
        assert_eq!(db.last_sequence(), m.ops);
        assert!(db.verify().expect("verify") > 0);
        db.close().expect("close");
    }
}
