//! The blob file format fixture: proof that `docs/format/blob.md` is complete.
//!
//! `tests/fixtures/blob-v1/` holds two blob files written by `cairn_engine::BlobStore` (see [`script`]):
//! `000001.blob`, the shared file with three small blobs (the spec's worked example), and `000002.blob`, one
//! blob streamed into a file of its own. [`blob_fixture_decodes_from_the_spec_alone`] decodes them with a
//! reader written from the specification alone: every magic number, size, offset and tag below is a literal
//! copied from the spec, and the CRC is computed bit by bit from the parameters the spec names.
//! [`blob_fixture_reads_through_the_api`] reads the same blobs through `BlobStore`.
//!
//! To rewrite the fixture (only when the script changes):
//!
//! ```text
//! cargo test -p cairn-tests --test blob_fixture -- --ignored regenerate
//! ```

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::{BlobOptions, BlobRef, BlobStore, FsStorage};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("blob-v1")
}

/// The blobs, in the order written, with chunk size 8.
fn script() -> Vec<Vec<u8>> {
    vec![b"hello, blob!".to_vec(), Vec::new(), b"0123456789abcdef".to_vec(), streamed()]
}

/// 130 bytes: more than 16 chunks of 8, so the writer streams it into a file of its own.
fn streamed() -> Vec<u8> {
    (0..130u32).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
#[ignore = "rewrites the committed fixture"]
fn regenerate() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = BlobStore::open(Arc::new(FsStorage), &dir, BlobOptions::default().chunk_size(8)).unwrap();
    for blob in script() {
        let mut w = store.writer().unwrap();
        w.write_all(&blob).unwrap();
        w.finish().unwrap();
    }
    drop(store);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// A reader from the spec alone.
// ---------------------------------------------------------------------------------------------------------

/// CRC-32/ISO-HDLC, bit by bit: reflected polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    crc ^ 0xFFFF_FFFF
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A decoded blob: its header's offset and its bytes.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    offset: usize,
    chunk_size: u32,
    bytes: Vec<u8>,
}

/// Decodes every blob of a file, checking every field and checksum the spec defines.
fn decode_file(file: &[u8]) -> Vec<Decoded> {
    assert_eq!(&file[0..8], b"CAIRNBLB", "magic");
    assert_eq!(u32_at(file, 8), 1, "version");
    let mut out = Vec::new();
    let mut o = 16;
    while o < file.len() {
        // Blob header: tag[4] | chunk_size u32 | len u64 | synced_through u64 | crc u32 (28 bytes).
        let h = &file[o..o + 28];
        assert_eq!(&h[0..4], b"BLOB");
        let header_crc = u32_at(h, 24);
        assert_eq!(crc32(&h[0..24]), header_crc, "header crc at {o}");
        let chunk_size = u32_at(h, 4) as usize;
        assert!(chunk_size > 0);
        let synced_through = u64_at(h, 16);
        assert!(synced_through as usize <= o);
        let streamed = u64_at(h, 8) == u64::MAX;
        let len = if streamed {
            // The trailer is the file's last 24 bytes.
            let t = &file[file.len() - 24..];
            u64_at(t, 4) as usize
        } else {
            u64_at(h, 8) as usize
        };
        // Chunks: ceil(len / chunk_size) of them, each data then crc u32 of the data.
        let mut bytes = Vec::new();
        let mut crcs = Vec::new();
        let mut p = o + 28;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk_size);
            let data = &file[p..p + n];
            let crc = u32_at(file, p + n);
            assert_eq!(crc32(data), crc, "chunk crc at {p}");
            bytes.extend_from_slice(data);
            crcs.extend_from_slice(&crc.to_le_bytes());
            p += n + 4;
            left -= n;
        }
        // Trailer: tag[4] | len u64 | chunks_crc u32 | header_crc u32 | crc u32 (24 bytes).
        let t = &file[p..p + 24];
        assert_eq!(&t[0..4], b"BEND");
        assert_eq!(u64_at(t, 4) as usize, len);
        assert_eq!(u32_at(t, 12), crc32(&crcs), "chunks crc");
        assert_eq!(u32_at(t, 16), header_crc);
        assert_eq!(crc32(&t[0..20]), u32_at(t, 20), "trailer crc");
        assert_eq!(p + 24 - o, 28 + len + 4 * len.div_ceil(chunk_size) + 24, "the spec's size formula");
        out.push(Decoded { offset: o, chunk_size: chunk_size as u32, bytes });
        o = p + 24;
        if streamed {
            assert_eq!(o, file.len(), "a streamed blob ends its file");
        }
    }
    out
}

#[test]
fn crc_is_the_zlib_crc32() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn blob_fixture_decodes_from_the_spec_alone() {
    let dir = fixture_dir();
    let shared = std::fs::read(dir.join("000001.blob")).unwrap();
    let own = std::fs::read(dir.join("000002.blob")).unwrap();
    let script = script();
    let decoded = decode_file(&shared);
    assert_eq!(decoded.iter().map(|d| d.bytes.clone()).collect::<Vec<_>>(), script[..3].to_vec());
    assert_eq!(decoded.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![16, 88, 140]);
    assert!(decoded.iter().all(|d| d.chunk_size == 8));
    assert_eq!(shared.len(), 140 + 28 + 16 + 2 * 4 + 24, "the worked example's length");
    let streamed = decode_file(&own);
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].bytes, script[3]);
    // The worked example's header bytes.
    assert_eq!(&shared[16..28], b"BLOB\x08\x00\x00\x00\x0c\x00\x00\x00");
    assert_eq!(u64_at(&shared, 16 + 16), 16, "synced_through of the first blob: the file header");
    assert_eq!(u64_at(&shared, 88 + 16), 88, "each blob was synced before the next was appended");
}

#[test]
fn blob_fixture_reads_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["000001.blob", "000002.blob"] {
        std::fs::copy(fixture_dir().join(name), tmp.path().join(name)).unwrap();
    }
    let store = BlobStore::open(Arc::new(FsStorage), tmp.path(), BlobOptions::default()).unwrap();
    let mut refs = store.blobs_in(1).unwrap();
    refs.extend(store.blobs_in(2).unwrap());
    assert_eq!(refs[3], BlobRef { file: 2, offset: 16, len: 130 });
    let read: Vec<Vec<u8>> = refs.iter().map(|r| store.read_all(r).unwrap()).collect();
    assert_eq!(read, script());
    let report = store.check();
    assert!(report.is_healthy() && report.incomplete.is_empty(), "{report:?}");
    assert_eq!((report.files, report.blobs), (2, 4));
}
