//! Version edits: the records of the manifest.
//!
//! An edit is a sequence of tagged fields; tags never change meaning. See `docs/format/manifest.md`.
//!
//! | tag | field          | body                                                                  |
//! |-----|----------------|-----------------------------------------------------------------------|
//! | 1   | log number     | u64: WALs numbered below it are obsolete                              |
//! | 2   | next file      | u64: next unused file number                                          |
//! | 3   | last sequence  | u64                                                                   |
//! | 4   | add table      | level u8, number u64, size u64, entries u64, min_seq u64, max_seq u64, smallest (u32 len + bytes), largest (u32 len + bytes) |
//! | 5   | remove table   | level u8, number u64                                                  |
//! | 6   | add table with deletions | the body of tag 4, then deletions u64 (tombstones among the entries) |

#![deny(clippy::indexing_slicing)]

use crate::format::coding::{put_len_prefixed, put_u64, Cursor, DecodeError};
use crate::version::{TableMeta, NUM_LEVELS};

const TAG_LOG_NUMBER: u8 = 1;
const TAG_NEXT_FILE: u8 = 2;
const TAG_LAST_SEQUENCE: u8 = 3;
const TAG_ADD_TABLE: u8 = 4;
const TAG_REMOVE_TABLE: u8 = 5;
const TAG_ADD_TABLE_WITH_DELETIONS: u8 = 6;

/// One record of the manifest: a change to the version set's counters and to the live tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    pub log_number: Option<u64>,
    pub next_file: Option<u64>,
    pub last_sequence: Option<u64>,
    pub added: Vec<(usize, TableMeta)>,
    pub removed: Vec<(usize, u64)>,
}

impl VersionEdit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, v) in [
            (TAG_LOG_NUMBER, self.log_number),
            (TAG_NEXT_FILE, self.next_file),
            (TAG_LAST_SEQUENCE, self.last_sequence),
        ] {
            if let Some(v) = v {
                out.push(tag);
                put_u64(&mut out, v);
            }
        }
        for (level, m) in &self.added {
            // A table without tombstones keeps the original record, so such edits are byte-identical to
            // those of earlier versions.
            out.push(if m.deletions == 0 { TAG_ADD_TABLE } else { TAG_ADD_TABLE_WITH_DELETIONS });
            out.push(*level as u8);
            for v in [m.number, m.size, m.entries, m.min_seq, m.max_seq] {
                put_u64(&mut out, v);
            }
            put_len_prefixed(&mut out, &m.smallest);
            put_len_prefixed(&mut out, &m.largest);
            if m.deletions != 0 {
                put_u64(&mut out, m.deletions);
            }
        }
        for (level, number) in &self.removed {
            out.push(TAG_REMOVE_TABLE);
            out.push(*level as u8);
            put_u64(&mut out, *number);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let mut edit = VersionEdit::default();
        while !c.is_empty() {
            let at = c.pos();
            match c.u8("tag")? {
                TAG_LOG_NUMBER => edit.log_number = Some(c.u64("log number")?),
                TAG_NEXT_FILE => edit.next_file = Some(c.u64("next file")?),
                TAG_LAST_SEQUENCE => edit.last_sequence = Some(c.u64("last sequence")?),
                tag @ (TAG_ADD_TABLE | TAG_ADD_TABLE_WITH_DELETIONS) => {
                    let level = level(&mut c)?;
                    let mut meta = TableMeta {
                        number: c.u64("table number")?,
                        size: c.u64("table size")?,
                        entries: c.u64("table entries")?,
                        deletions: 0,
                        min_seq: c.u64("table min sequence")?,
                        max_seq: c.u64("table max sequence")?,
                        smallest: c.len_prefixed("table smallest key")?.to_vec(),
                        largest: c.len_prefixed("table largest key")?.to_vec(),
                    };
                    if tag == TAG_ADD_TABLE_WITH_DELETIONS {
                        let at = c.pos();
                        meta.deletions = c.u64("table deletions")?;
                        if meta.deletions > meta.entries {
                            return Err(DecodeError::new(at, "table deletions exceed its entries"));
                        }
                    }
                    edit.added.push((level, meta));
                }
                TAG_REMOVE_TABLE => {
                    let level = level(&mut c)?;
                    edit.removed.push((level, c.u64("table number")?));
                }
                _ => return Err(DecodeError::new(at, "unknown tag")),
            }
        }
        Ok(edit)
    }
}

fn level(c: &mut Cursor<'_>) -> Result<usize, DecodeError> {
    let at = c.pos();
    let level = c.u8("level")? as usize;
    if level >= NUM_LEVELS {
        return Err(DecodeError::new(at, "level out of range"));
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncations() {
        let edit = VersionEdit {
            log_number: Some(4),
            next_file: Some(9),
            last_sequence: Some(1000),
            added: vec![(
                1,
                TableMeta {
                    number: 7,
                    size: 4096,
                    entries: 10,
                    deletions: 0,
                    min_seq: 1,
                    max_seq: 10,
                    smallest: b"a".to_vec(),
                    largest: b"z".to_vec(),
                },
            )],
            removed: vec![(0, 5), (0, 6)],
        };
        let bytes = edit.encode();
        assert_eq!(VersionEdit::decode(&bytes).unwrap(), edit);
        for cut in 1..bytes.len() {
            // A cut inside a field fails; a cut between fields decodes to a prefix, which the record
            // checksum of the manifest guards against.
            let _ = VersionEdit::decode(&bytes[..cut]);
        }
        assert!(VersionEdit::decode(&[99]).is_err());
        assert!(VersionEdit::decode(&[TAG_REMOVE_TABLE, 7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    fn table(deletions: u64) -> TableMeta {
        TableMeta {
            number: 7,
            size: 4096,
            entries: 10,
            deletions,
            min_seq: 1,
            max_seq: 10,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
        }
    }

    #[test]
    fn deletions_use_tag_6_and_tables_without_keep_tag_4() {
        let without = VersionEdit { added: vec![(2, table(0))], ..VersionEdit::default() };
        let with = VersionEdit { added: vec![(2, table(3))], ..VersionEdit::default() };
        let (a, b) = (without.encode(), with.encode());
        assert_eq!(a.first(), Some(&TAG_ADD_TABLE));
        assert_eq!(b.first(), Some(&TAG_ADD_TABLE_WITH_DELETIONS));
        // Tag 6 is tag 4's body plus the count.
        assert_eq!(b.get(1..a.len()), a.get(1..));
        assert_eq!(b.get(a.len()..), Some(&3u64.to_le_bytes()[..]));
        assert_eq!(VersionEdit::decode(&a).unwrap(), without);
        assert_eq!(VersionEdit::decode(&b).unwrap(), with);
        let mut bad = b.clone();
        let n = bad.len();
        bad.splice(n - 8.., 11u64.to_le_bytes());
        assert!(VersionEdit::decode(&bad).is_err(), "more deletions than entries");
        assert!(VersionEdit::decode(&b[..b.len() - 1]).is_err());
    }
}
